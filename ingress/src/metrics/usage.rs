//! Live usage per customer and tool, for `GET /v1/usage`: calls, allowed,
//! denied, refused by a limit, tool errors — counted exactly as `toolgate
//! usage` counts them from the audit log, since the process started.
//! Bounded: the first [`CAP`] (customer, tool) pairs have their own row,
//! later ones are counted under customer `_other`. Lock-free: a pair's
//! counters are found by the hash of its names and claimed with one
//! compare-and-swap.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Pairs with their own row.
pub const CAP: usize = 16_384;
/// Slots probed before a pair goes to `_other`.
const PROBE: usize = 16;

/// What one finished `tools/call` was, for usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Allowed.
    pub allowed: bool,
    /// Refused by a rate or a quota.
    pub limited: bool,
    /// Allowed, and the tool reported an error.
    pub tool_error: bool,
}

#[derive(Default)]
struct Slot {
    hash: AtomicU64,
    names: OnceLock<(Box<str>, Box<str>)>,
    counts: Counts,
}

/// calls, allowed, denied, limited, tool errors.
#[derive(Default)]
struct Counts([AtomicU64; 5]);

impl Counts {
    fn add(&self, c: Counted) {
        let bump = |i: usize| self.0[i].fetch_add(1, Ordering::Relaxed);
        bump(0);
        if c.allowed {
            bump(1);
            if c.tool_error {
                bump(4);
            }
        } else {
            bump(2);
            if c.limited {
                bump(3);
            }
        }
    }

    fn read(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The counters.
pub struct Usage {
    slots: Box<[Slot]>,
    used: AtomicUsize,
    other: Counts,
    hasher: std::hash::RandomState,
    /// When counting started, µs since the Unix epoch.
    pub since_us: u64,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("pairs", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            slots: (0..(CAP * 2).next_power_of_two())
                .map(|_| Slot::default())
                .collect(),
            used: AtomicUsize::new(0),
            other: Counts::default(),
            hasher: std::hash::RandomState::new(),
            since_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
        }
    }
}

impl Usage {
    /// Counts one finished call of `tool` by `customer`.
    pub fn record(&self, customer: &str, tool: &str, c: Counted) {
        let h = self.hasher.hash_one((customer, tool)).max(1);
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        for _ in 0..PROBE {
            let s = &self.slots[i];
            let k = s.hash.load(Ordering::Acquire);
            if k == h {
                return s.counts.add(c);
            }
            if k == 0 {
                if self.used.fetch_add(1, Ordering::Relaxed) >= CAP {
                    self.used.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                match s
                    .hash
                    .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        let _ = s.names.set((Box::from(customer), Box::from(tool)));
                        return s.counts.add(c);
                    }
                    Err(seen) => {
                        self.used.fetch_sub(1, Ordering::Relaxed);
                        if seen == h {
                            return s.counts.add(c);
                        }
                    }
                }
            }
            i = (i + 1) & mask;
        }
        self.other.add(c);
    }

    /// `(customer, tool, [calls, allowed, denied, limited, tool_errors])`
    /// of every pair, sorted, then `_other` when it counted anything.
    pub fn rows(&self) -> Vec<(String, String, [u64; 5])> {
        let mut out: Vec<(String, String, [u64; 5])> = self
            .slots
            .iter()
            .filter_map(|s| {
                let (c, t) = s.names.get()?;
                Some((c.to_string(), t.to_string(), s.counts.read()))
            })
            .collect();
        out.sort();
        let other = self.other.read();
        if other[0] > 0 {
            out.push(("_other".to_owned(), "*".to_owned(), other));
        }
        out
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (the
/// usage reports' CSV, live and from the log).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_customer_and_tool_as_the_usage_report_counts_them() {
        let u = Usage::default();
        let ok = Counted {
            allowed: true,
            limited: false,
            tool_error: false,
        };
        u.record("acme", "crm__a", ok);
        u.record(
            "acme",
            "crm__a",
            Counted {
                tool_error: true,
                ..ok
            },
        );
        u.record(
            "acme",
            "crm__a",
            Counted {
                allowed: false,
                limited: true,
                tool_error: false,
            },
        );
        u.record(
            "acme",
            "crm__b",
            Counted {
                allowed: false,
                ..ok
            },
        );
        u.record("globex", "crm__a", ok);
        assert_eq!(
            u.rows(),
            vec![
                ("acme".into(), "crm__a".into(), [3, 2, 1, 1, 1]),
                ("acme".into(), "crm__b".into(), [1, 0, 1, 0, 0]),
                ("globex".into(), "crm__a".into(), [1, 1, 0, 0, 0]),
            ]
        );
    }
}

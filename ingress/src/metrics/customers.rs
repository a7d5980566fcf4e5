//! Calls per customer for `/metrics`, with bounded cardinality: the first
//! [`CAP`] customers seen have their own series, every later one is counted
//! under `customer="_other"`. Lock-free: a customer's counters are found by
//! the hash of its id and claimed with one compare-and-swap.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Customers with their own series.
pub const CAP: usize = 1000;
/// Slots probed before a customer goes to `_other`.
const PROBE: usize = 16;

#[derive(Default)]
struct Slot {
    hash: AtomicU64,
    name: OnceLock<Box<str>>,
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// The counters.
pub struct CustomerCalls {
    slots: Box<[Slot]>,
    used: AtomicUsize,
    other: [AtomicU64; 2],
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for CustomerCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerCalls")
            .field("customers", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for CustomerCalls {
    fn default() -> Self {
        Self {
            slots: (0..(CAP * 2).next_power_of_two())
                .map(|_| Slot::default())
                .collect(),
            used: AtomicUsize::new(0),
            other: [AtomicU64::new(0), AtomicU64::new(0)],
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl CustomerCalls {
    /// Counts one tool call of `customer`, allowed or not.
    pub fn record(&self, customer: &str, allowed: bool) {
        let pick = |s: &Slot| {
            if allowed {
                s.allowed.fetch_add(1, Ordering::Relaxed);
            } else {
                s.denied.fetch_add(1, Ordering::Relaxed);
            }
        };
        let h = self.hasher.hash_one(customer).max(1);
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        for _ in 0..PROBE {
            let s = &self.slots[i];
            let k = s.hash.load(Ordering::Acquire);
            if k == h {
                return pick(s);
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
                        let _ = s.name.set(Box::from(customer));
                        return pick(s);
                    }
                    Err(seen) => {
                        self.used.fetch_sub(1, Ordering::Relaxed);
                        if seen == h {
                            return pick(s);
                        }
                    }
                }
            }
            i = (i + 1) & mask;
        }
        self.other[usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(customer, allowed, denied)` of every series, `_other` last.
    pub fn series(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> = self
            .slots
            .iter()
            .filter_map(|s| {
                let name = s.name.get()?;
                Some((
                    name.to_string(),
                    s.allowed.load(Ordering::Relaxed),
                    s.denied.load(Ordering::Relaxed),
                ))
            })
            .collect();
        out.sort();
        out.push((
            "_other".to_owned(),
            self.other[0].load(Ordering::Relaxed),
            self.other[1].load(Ordering::Relaxed),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_customer_is_counted_apart_up_to_the_cap_then_as_other() {
        let c = CustomerCalls::default();
        c.record("acme", true);
        c.record("acme", false);
        c.record("globex", true);
        let s = c.series();
        assert_eq!(s[0], ("acme".to_owned(), 1, 1));
        assert_eq!(s[1], ("globex".to_owned(), 1, 0));
        for i in 0..CAP + 50 {
            c.record(&format!("c{i}"), true);
        }
        let s = c.series();
        assert_eq!(s.len(), CAP + 1);
        let other = s.last().unwrap();
        assert_eq!(other.0, "_other");
        assert_eq!(other.1, 52);
    }
}

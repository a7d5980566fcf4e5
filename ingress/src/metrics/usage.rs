//! Live usage per customer and tool, for `GET /v1/usage`: calls, allowed,
//! denied, refused by a limit, tool errors — counted exactly as `toolgate
//! usage` counts them from the audit log, since the process started.
//! Bounded: the first [`CAP`] (customer, tool) pairs have their own row,
//! later ones are counted under customer `_other` (a [`Bounded`] table).

use std::sync::atomic::Ordering;

use super::bounded::Bounded;

/// Pairs with their own row.
pub const CAP: usize = 16_384;

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

/// The counters: calls, allowed, denied, limited and tool errors per
/// (customer, tool).
#[derive(Debug)]
pub struct Usage {
    rows: Bounded<(Box<str>, Box<str>), 5>,
    /// When counting started, µs since the Unix epoch.
    pub since_us: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            rows: Bounded::new(CAP),
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
        let row = self
            .rows
            .row((customer, tool), || (Box::from(customer), Box::from(tool)));
        let bump = |i: usize| row[i].fetch_add(1, Ordering::Relaxed);
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

    /// `(customer, tool, [calls, allowed, denied, limited, tool_errors])`
    /// of every pair, sorted, then `_other` when it counted anything.
    pub fn rows(&self) -> Vec<(String, String, [u64; 5])> {
        let mut out: Vec<(String, String, [u64; 5])> = self
            .rows
            .rows()
            .map(|((c, t), n)| (c.to_string(), t.to_string(), n))
            .collect();
        out.sort();
        let other = self.rows.other();
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

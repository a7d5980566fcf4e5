//! Live usage per customer and tool, for `GET /v1/usage`: calls, allowed,
//! denied, refused by a limit, tool errors, quota units — counted exactly
//! as `toolgate usage` counts them from the audit log, since the process
//! started, and written by the same [`Counts`].
//! Bounded: the first [`CAP`] (customer, tool) pairs have their own row,
//! later ones are counted under customer `_other` (a [`Bounded`] table).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

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
    /// The quota units it was charged.
    pub units: u64,
}

/// Counts of one customer's calls of one tool: a row of either usage
/// report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Calls of the tool (`tools/call` on `/mcp`, and REST door calls).
    pub calls: u64,
    /// Allowed (forwarded).
    pub allowed: u64,
    /// Denied, for any reason.
    pub denied: u64,
    /// Denied by a `[limits]` rate or quota.
    pub limited: u64,
    /// Allowed, and the tool reported an error.
    pub tool_errors: u64,
    /// Quota units charged (tool costs counted).
    pub units: u64,
}

/// The CSV header line of a usage report.
pub const CSV_HEADER: &str = "customer,tool,calls,allowed,denied,limited,tool_errors,units\n";

impl Counts {
    /// Adds one finished call.
    pub fn add(&mut self, c: Counted) {
        self.calls += 1;
        if c.allowed {
            self.allowed += 1;
            self.tool_errors += u64::from(c.tool_error);
            self.units += c.units;
        } else {
            self.denied += 1;
            self.limited += u64::from(c.limited);
        }
    }

    /// The row as JSON.
    pub fn json(&self, customer: &str, tool: &str) -> Value {
        json!({"customer": customer, "tool": tool, "calls": self.calls, "allowed": self.allowed,
               "denied": self.denied, "limited": self.limited, "tool_errors": self.tool_errors,
               "units": self.units})
    }

    /// Appends the row as a CSV line.
    pub fn csv(&self, customer: &str, tool: &str, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_field(customer),
            csv_field(tool),
            self.calls,
            self.allowed,
            self.denied,
            self.limited,
            self.tool_errors,
            self.units
        );
    }

    fn from_array(n: [u64; 6]) -> Self {
        let [calls, allowed, denied, limited, tool_errors, units] = n;
        Self {
            calls,
            allowed,
            denied,
            limited,
            tool_errors,
            units,
        }
    }
}

/// The counters: [`Counts`] per (customer, tool).
#[derive(Debug)]
pub struct Usage {
    rows: Bounded<(Box<str>, Box<str>), 6>,
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
            if c.units > 0 {
                row[5].fetch_add(c.units, Ordering::Relaxed);
            }
        } else {
            bump(2);
            if c.limited {
                bump(3);
            }
        }
    }

    /// `(customer, tool, counts)` of every pair, sorted, then `_other`
    /// when it counted anything.
    pub fn rows(&self) -> Vec<(String, String, Counts)> {
        let mut out: Vec<(String, String, [u64; 6])> = self
            .rows
            .rows()
            .map(|((c, t), n)| (c.to_string(), t.to_string(), n))
            .collect();
        out.sort();
        let other = self.rows.other();
        if other[0] > 0 {
            out.push(("_other".to_owned(), "*".to_owned(), other));
        }
        out.into_iter()
            .map(|(c, t, n)| (c, t, Counts::from_array(n)))
            .collect()
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
            units: 0,
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
                units: 0,
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
        u.record("globex", "crm__a", Counted { units: 10, ..ok });
        let rows = u.rows();
        let mut counted = Counts::default();
        for c in [
            ok,
            Counted {
                tool_error: true,
                ..ok
            },
        ] {
            counted.add(c);
        }
        counted.add(Counted {
            allowed: false,
            limited: true,
            ..ok
        });
        assert_eq!(
            rows.iter()
                .map(|(c, t, n)| (c.as_str(), t.as_str(), *n))
                .collect::<Vec<_>>(),
            vec![
                ("acme", "crm__a", counted),
                (
                    "acme",
                    "crm__b",
                    Counts {
                        calls: 1,
                        denied: 1,
                        ..Counts::default()
                    }
                ),
                (
                    "globex",
                    "crm__a",
                    Counts {
                        calls: 1,
                        allowed: 1,
                        units: 10,
                        ..Counts::default()
                    }
                ),
            ]
        );
        assert_eq!(
            (
                counted.calls,
                counted.allowed,
                counted.denied,
                counted.limited,
                counted.tool_errors
            ),
            (3, 2, 1, 1, 1)
        );
        let mut line = String::new();
        rows[2].2.csv("globex", "crm__a", &mut line);
        assert_eq!(line, "globex,crm__a,1,1,0,0,0,10\n");
    }
}

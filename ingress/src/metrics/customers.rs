//! Calls per customer for `/metrics`, with bounded cardinality: the first
//! [`CAP`] customers seen have their own series, every later one is counted
//! under `customer="_other"` (a [`Bounded`] table).

use std::sync::atomic::Ordering;

use super::bounded::Bounded;

/// Customers with their own series.
pub const CAP: usize = 1000;

/// The counters: allowed and denied calls per customer.
#[derive(Debug)]
pub struct CustomerCalls(Bounded<Box<str>, 2>);

impl Default for CustomerCalls {
    fn default() -> Self {
        Self(Bounded::new(CAP))
    }
}

impl CustomerCalls {
    /// Counts one tool call of `customer`, allowed or not.
    pub fn record(&self, customer: &str, allowed: bool) {
        self.0.row(customer, || Box::from(customer))[usize::from(!allowed)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `(customer, allowed, denied)` of every series, `_other` last.
    pub fn series(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> = self
            .0
            .rows()
            .map(|(name, [allowed, denied])| (name.to_string(), allowed, denied))
            .collect();
        out.sort();
        let [allowed, denied] = self.0.other();
        out.push(("_other".to_owned(), allowed, denied));
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

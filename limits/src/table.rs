//! The counters: a fixed-size open-addressing table of atomics, shared by
//! every shard. A counter is found by its 64-bit key and claimed with one
//! compare-and-swap; its value changes with one compare-and-swap per call,
//! so counts are exact across shards without a lock. The table never
//! grows: when `max_counters` are in use, a call that needs a new counter
//! is refused rather than let through uncounted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots probed before a key counts as not placeable.
const MAX_PROBE: usize = 64;

/// One counter.
#[derive(Default)]
pub struct Slot {
    /// Its key; 0: free.
    key: AtomicU64,
    /// Its value (a quota's window and use, or a rate's arrival time).
    pub value: AtomicU64,
    /// Shared quotas: the window and the units this replica may use in it.
    pub granted: AtomicU64,
    /// Shared quotas: the window, and whether more units are asked for
    /// (bit 0) or none are left in Redis (bit 1).
    pub flags: AtomicU64,
}

/// The table.
pub struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    used: AtomicUsize,
    max: usize,
}

impl Table {
    /// A table for at most `max_counters` counters (half full at most).
    pub fn new(max_counters: usize) -> Self {
        let n = (max_counters.max(16) * 2).next_power_of_two();
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            used: AtomicUsize::new(0),
            max: max_counters.max(16),
        }
    }

    /// The counter at `index` (as [`Table::slot`] gave it).
    pub fn at(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    /// The counter of `key` (never 0) and its index, claimed if new;
    /// `None` when the table is full.
    pub fn slot(&self, key: u64) -> Option<(usize, &Slot)> {
        let key = key.max(1);
        let mut i = (key as usize) & self.mask;
        for _ in 0..MAX_PROBE {
            let s = &self.slots[i];
            let k = s.key.load(Ordering::Acquire);
            if k == key {
                return Some((i, s));
            }
            if k == 0 {
                if self.used.fetch_add(1, Ordering::Relaxed) >= self.max {
                    self.used.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                match s
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Some((i, s)),
                    Err(seen) => {
                        self.used.fetch_sub(1, Ordering::Relaxed);
                        if seen == key {
                            return Some((i, s));
                        }
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Counters in use.
    pub fn len(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether no counter is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_counter_and_a_full_table_says_so() {
        let t = Table::new(16);
        let (i, _) = t.slot(42).unwrap();
        assert_eq!(t.slot(42).unwrap().0, i);
        assert!(t.at(i).is_some());
        for k in 100..115 {
            assert!(t.slot(k).is_some());
        }
        assert_eq!(t.len(), 16);
        assert!(t.slot(9_999).is_none());
        assert!(t.slot(42).is_some(), "existing counters stay reachable");
    }
}

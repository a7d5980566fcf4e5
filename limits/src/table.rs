//! The counters: a fixed-size open-addressing table of atomics, shared by
//! every shard. A counter is found by its 64-bit key and claimed with one
//! compare-and-swap; its value changes with one compare-and-swap per call,
//! so counts are exact across shards without a lock. The table never
//! grows: when `max_counters` are in use, a call that needs a new counter
//! is refused rather than let through uncounted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Slots probed before a key counts as not placeable.
const MAX_PROBE: usize = 64;

/// One counter: 32 bytes, two to a cache line, never straddling two.
#[derive(Default)]
#[repr(align(32))]
pub struct Slot {
    /// Its key; 0: free.
    key: AtomicU64,
    /// Its value (a quota's window and use, or a rate's arrival time).
    pub value: AtomicU64,
    /// Shared quotas: the window and the units this replica may use in it.
    /// Shared rates: the calls Redis let this replica make, and the second
    /// until which they may be made.
    pub granted: AtomicU64,
    /// Shared quotas: the window, and whether more units are asked for
    /// (bit 0) or none are left in Redis (bit 1). Shared rates: whether
    /// more calls are asked for (bit 0).
    pub flags: AtomicU64,
}

/// What a counter of a rate shared on Redis keeps besides its [`Slot`]
/// (kept apart so the slots of a table without Redis stay small).
#[derive(Default)]
pub struct RateShare {
    /// Unix ns until which Redis has no room for another call (nothing is
    /// asked for before then).
    pub hold: AtomicU64,
    /// Calls let through on this replica's share and not yet paid for in
    /// Redis.
    pub owed: AtomicU64,
}

/// What a quota's counter counts: its rule and the values of the rule's
/// selectors, kept when the counter is placed so usage can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterName {
    /// The rule's id.
    pub rule: Arc<str>,
    /// The selectors' names and the call's values (`customer`, `tool`…).
    pub key: Vec<(&'static str, String)>,
}

/// The table.
pub struct Table {
    slots: Box<[Slot]>,
    /// With limits shared on Redis: one per slot, else none.
    shares: Box<[RateShare]>,
    mask: usize,
    used: AtomicUsize,
    max: usize,
    /// Quota counters' names by key: written once per counter placed (never
    /// on a call whose counters exist), read by usage reports.
    names: Mutex<HashMap<u64, CounterName>>,
}

impl Table {
    /// A table for at most `max_counters` counters (half full at most),
    /// with room for shared rates when `shared`.
    pub fn new(max_counters: usize, shared: bool) -> Self {
        let n = (max_counters.max(16) * 2).next_power_of_two();
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            shares: (0..if shared { n } else { 0 })
                .map(|_| RateShare::default())
                .collect(),
            mask: n - 1,
            used: AtomicUsize::new(0),
            max: max_counters.max(16),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Names the counter of `key` (a quota's, when placed).
    pub fn name(&self, key: u64, name: CounterName) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() < self.max {
            names.entry(key.max(1)).or_insert(name);
        }
    }

    /// Every named counter: its key, name and counter.
    pub fn named(&self) -> Vec<(CounterName, &Slot)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .iter()
            .filter_map(|(&key, name)| Some((name.clone(), self.find(key)?)))
            .collect()
    }

    /// The counter of `key`, if placed (never claims one).
    pub fn find(&self, key: u64) -> Option<&Slot> {
        let key = key.max(1);
        let mut i = (key as usize) & self.mask;
        for _ in 0..MAX_PROBE {
            let s = &self.slots[i];
            match s.key.load(Ordering::Acquire) {
                k if k == key => return Some(s),
                0 => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The counter at `index` (as [`Table::slot`] gave it).
    pub fn at(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    /// The shared-rate state of the counter at `index` (none unless the
    /// table was made `shared`).
    pub fn share(&self, index: usize) -> Option<&RateShare> {
        self.shares.get(index)
    }

    /// The counter of `key` (never 0) and its index, claimed if new;
    /// `None` when the table is full. The flag says it was claimed now.
    pub fn slot(&self, key: u64) -> Option<(usize, &Slot, bool)> {
        let key = key.max(1);
        let mut i = (key as usize) & self.mask;
        for _ in 0..MAX_PROBE {
            let s = &self.slots[i];
            let k = s.key.load(Ordering::Acquire);
            if k == key {
                return Some((i, s, false));
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
                    Ok(_) => return Some((i, s, true)),
                    Err(seen) => {
                        self.used.fetch_sub(1, Ordering::Relaxed);
                        if seen == key {
                            return Some((i, s, false));
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
        let t = Table::new(16, false);
        let (i, _, fresh) = t.slot(42).unwrap();
        assert!(fresh);
        let (again, _, fresh) = t.slot(42).unwrap();
        assert_eq!((again, fresh), (i, false));
        assert!(t.find(42).is_some() && t.find(43).is_none());
        assert!(t.at(i).is_some());
        for k in 100..115 {
            assert!(t.slot(k).is_some());
        }
        assert_eq!(t.len(), 16);
        assert!(t.slot(9_999).is_none());
        assert!(t.slot(42).is_some(), "existing counters stay reachable");
    }
}

//! A bounded, lock-free table of named counters: the first `cap` names
//! have their own row, every later one is counted in one `other` row. A
//! name's row is found by the hash of the name and claimed with one
//! compare-and-swap; its counters are atomics. Shared by the per-customer
//! metrics and the live usage report.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Slots probed before a name goes to the `other` row.
const PROBE: usize = 16;

struct Slot<K, const N: usize> {
    hash: AtomicU64,
    name: OnceLock<K>,
    counts: [AtomicU64; N],
}

/// Rows of `N` counters, named by `K`.
pub struct Bounded<K, const N: usize> {
    slots: Box<[Slot<K, N>]>,
    used: AtomicUsize,
    cap: usize,
    other: [AtomicU64; N],
    hasher: std::hash::RandomState,
}

impl<K, const N: usize> std::fmt::Debug for Bounded<K, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("rows", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K, const N: usize> Bounded<K, N> {
    /// A table with its own row for at most `cap` names.
    pub fn new(cap: usize) -> Self {
        Self {
            slots: (0..(cap.max(1) * 2).next_power_of_two())
                .map(|_| Slot {
                    hash: AtomicU64::new(0),
                    name: OnceLock::new(),
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            used: AtomicUsize::new(0),
            cap,
            other: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The counters of the row named by `key` (`name` makes its name when
    /// the row is new), or of the `other` row once the table is full.
    pub fn row(&self, key: impl Hash, name: impl FnOnce() -> K) -> &[AtomicU64; N] {
        let h = self.hasher.hash_one(key).max(1);
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        for _ in 0..PROBE {
            let s = &self.slots[i];
            let k = s.hash.load(Ordering::Acquire);
            if k == h {
                return &s.counts;
            }
            if k == 0 {
                if self.used.fetch_add(1, Ordering::Relaxed) >= self.cap {
                    self.used.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                match s
                    .hash
                    .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        let _ = s.name.set(name());
                        return &s.counts;
                    }
                    Err(seen) => {
                        self.used.fetch_sub(1, Ordering::Relaxed);
                        if seen == h {
                            return &s.counts;
                        }
                    }
                }
            }
            i = (i + 1) & mask;
        }
        &self.other
    }

    /// Every named row and its counts, in table order.
    pub fn rows(&self) -> impl Iterator<Item = (&K, [u64; N])> {
        self.slots.iter().filter_map(|s| {
            let name = s.name.get()?;
            Some((name, read(&s.counts)))
        })
    }

    /// The counts of the names that found no row.
    pub fn other(&self) -> [u64; N] {
        read(&self.other)
    }
}

fn read<const N: usize>(counts: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counts[i].load(Ordering::Relaxed))
}

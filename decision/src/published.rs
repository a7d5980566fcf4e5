//! Lock-free-on-read publication of immutable values to shards.
//!
//! A writer replaces the value under a mutex and bumps a generation; a
//! reader compares the generation with one atomic load per request and only
//! touches the mutex when it changed, i.e. once per publication per shard.
//! The reader hands out `Rc` clones, so per-request snapshot handles never
//! bounce a shared reference count between cores.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A value published to many readers.
pub struct Published<T> {
    generation: AtomicU64,
    slot: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    /// Publishes `value` as generation 1.
    pub fn new(value: T) -> Arc<Self> {
        Arc::new(Self {
            generation: AtomicU64::new(1),
            slot: Mutex::new(Arc::new(value)),
        })
    }

    /// Replaces the value; returns the new generation.
    pub fn publish(&self, value: T) -> u64 {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(value);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Replaces the value with `f(current)`, atomically with respect to other
    /// writers; returns the new generation.
    pub fn update(&self, f: impl FnOnce(&T) -> T) -> u64 {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(f(&slot));
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current value (takes the mutex: not for the request path).
    pub fn load(&self) -> Arc<T> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A per-shard reader.
    pub fn reader(self: &Arc<Self>) -> Reader<T> {
        let generation = self.generation();
        Reader {
            source: Arc::clone(self),
            generation,
            current: Rc::new(self.load()),
        }
    }
}

/// A shard's view of a [`Published`] value.
///
/// Holds `Rc<Arc<T>>` on purpose: per-request clones bump a shard-local
/// count instead of the `Arc`'s shared one, which every shard would contend on.
#[expect(
    clippy::redundant_allocation,
    reason = "shard-local refcount on the hot path"
)]
pub struct Reader<T> {
    source: Arc<Published<T>>,
    generation: u64,
    current: Rc<Arc<T>>,
}

impl<T> Reader<T> {
    /// The newest value; cheap when nothing was published since the last call.
    pub fn current(&mut self) -> Rc<Arc<T>> {
        let g = self.source.generation();
        if g != self.generation {
            self.current = Rc::new(self.source.load());
            self.generation = g;
        }
        Rc::clone(&self.current)
    }

    /// The generation last seen by [`Reader::current`].
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_sees_new_generation_and_old_handles_stay_valid() {
        let p = Published::new(1u32);
        let mut r = p.reader();
        let old = r.current();
        assert_eq!(**old, 1);
        assert_eq!(p.publish(2), 2);
        let new = r.current();
        assert_eq!((**old, **new), (1, 2));
        assert_eq!(r.generation(), 2);
    }

    #[test]
    fn update_applies_to_latest_value() {
        let p = Published::new(vec![1]);
        p.update(|v| v.iter().chain([&2]).copied().collect());
        p.update(|v| v.iter().chain([&3]).copied().collect());
        assert_eq!(*p.load(), vec![1, 2, 3]);
    }

    #[test]
    fn publication_is_seen_across_threads() {
        let p = Published::new(0u64);
        let writer = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for i in 1..=1000 {
                    p.publish(i);
                }
            })
        };
        let mut r = p.reader();
        let mut last = 0;
        loop {
            let v = **r.current();
            assert!(v >= last, "values never go backwards");
            last = v;
            if v == 1000 {
                break;
            }
            std::thread::yield_now();
        }
        let _ = writer.join();
    }
}

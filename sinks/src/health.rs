//! What the audit thread tells the shards: whether the log can be written,
//! and how far each shard's records have reached it.
//!
//! Shards read these atomics on the request path; only the audit thread
//! writes them. No lock on either side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::thread::Thread;

use futures_util::task::AtomicWaker;

use toolgate_core::config::Durability;

/// State shared between the audit thread and the shards' producers.
#[derive(Debug)]
pub struct AuditHealth {
    log_ok: AtomicBool,
    /// Per shard: every record with a shard `seq` below this is written.
    written: Box<[AtomicU64]>,
    /// Per shard: every record with a shard `seq` below this is fsynced.
    synced: Box<[AtomicU64]>,
    durability: Durability,
    writer: OnceLock<Thread>,
    /// Set by the first wake after the audit thread's last look at the
    /// rings; later wakes skip the futex call until the thread looks again.
    wake_pending: AtomicBool,
    /// Per shard: the task waiting for that shard's marks to move (its ack
    /// poller), woken by the audit thread when they do.
    ack_wakers: Box<[AtomicWaker]>,
}

impl AuditHealth {
    /// State for `shards` rings, answering calls at `durability`.
    pub fn new(shards: usize, durability: Durability) -> Arc<Self> {
        let zeros = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Self {
            log_ok: AtomicBool::new(true),
            written: zeros(),
            synced: zeros(),
            durability,
            writer: OnceLock::new(),
            wake_pending: AtomicBool::new(false),
            ack_wakers: (0..shards).map(|_| AtomicWaker::new()).collect(),
        })
    }

    /// Whether the log accepted its last write. While false, new calls are
    /// refused (fail closed).
    pub fn log_ok(&self) -> bool {
        self.log_ok.load(Ordering::Acquire)
    }

    /// Whether shard `shard`'s record `seq` is as durable as the configured
    /// durability asks before its call is answered.
    pub fn recorded(&self, shard: u16, seq: u64) -> bool {
        let marks = match self.durability {
            Durability::Batch => &self.written,
            Durability::Record => &self.synced,
        };
        marks
            .get(usize::from(shard))
            .is_some_and(|m| m.load(Ordering::Acquire) > seq)
    }

    /// Wakes the audit thread for a newly queued record. Only the first
    /// wake since the thread last looked at the rings makes the futex call:
    /// under load, one wake covers every record queued meanwhile.
    pub fn wake_writer(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.unpark_writer();
        }
    }

    /// Wakes the audit thread whatever it was told before (shutdown).
    pub(crate) fn unpark_writer(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Called by the audit thread before it looks at the rings: records
    /// queued from here on need a new wake. (Acquire: every record whose
    /// wake was skipped since the last look is visible to this look.)
    pub(crate) fn writer_looking(&self) {
        self.wake_pending.swap(false, Ordering::AcqRel);
    }

    pub(crate) fn set_writer(&self, t: Thread) {
        let _ = self.writer.set(t);
    }

    pub(crate) fn set_log_ok(&self, ok: bool) -> bool {
        self.log_ok.swap(ok, Ordering::AcqRel)
    }

    /// Registers `waker` to be woken when shard `shard`'s marks move (the
    /// shard's ack poller: it waits on this rather than on a timer).
    pub fn register_ack(&self, shard: u16, waker: &Waker) {
        if let Some(w) = self.ack_wakers.get(usize::from(shard)) {
            w.register(waker);
        }
    }

    pub(crate) fn mark_written(&self, upto: &[u64]) {
        Self::advance(
            &self.written,
            upto,
            self.durability == Durability::Batch,
            &self.ack_wakers,
        );
    }

    pub(crate) fn mark_synced(&self, upto: &[u64]) {
        Self::advance(
            &self.synced,
            upto,
            self.durability == Durability::Record,
            &self.ack_wakers,
        );
    }

    /// Moves `marks` to `upto`; when these are the marks answers wait on,
    /// wakes the waiter of every shard whose mark moved.
    fn advance(marks: &[AtomicU64], upto: &[u64], answers_wait: bool, wakers: &[AtomicWaker]) {
        for ((m, &u), w) in marks.iter().zip(upto).zip(wakers) {
            let before = m.swap(u, Ordering::AcqRel);
            if answers_wait && before != u {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_durability_waits_for_sync_not_write() {
        let h = AuditHealth::new(2, Durability::Record);
        h.mark_written(&[5, 0]);
        assert!(!h.recorded(0, 4));
        h.mark_synced(&[5, 0]);
        assert!(h.recorded(0, 4));
        assert!(!h.recorded(0, 5));
        assert!(!h.recorded(1, 0));
        assert!(!h.recorded(9, 0), "an unknown shard is never recorded");
    }

    #[test]
    fn batch_durability_waits_for_write() {
        let h = AuditHealth::new(1, Durability::Batch);
        h.mark_written(&[1]);
        assert!(h.recorded(0, 0));
    }
}

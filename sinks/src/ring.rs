//! The per-shard audit ring and its slot reservations.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use toolgate_core::audit::AuditRecord;

use crate::health::AuditHealth;

/// The audit pipeline cannot take a record: the request must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    /// The ring has no free slot (the audit thread is behind).
    #[error("the audit ring is full")]
    RingFull,
    /// The log's last write failed; nothing is admitted until one succeeds.
    #[error("the audit log cannot be written")]
    LogDown,
}

/// A reserved ring slot. Only [`AuditProducer::admit`] creates one, and only
/// [`AuditProducer::commit`] consumes it, so a request that holds one is
/// guaranteed its record a place.
#[must_use = "every admitted request must commit its audit record"]
#[derive(Debug)]
pub struct Admission {
    reserved: Rc<Cell<usize>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.reserved.set(self.reserved.get().saturating_sub(1));
    }
}

/// A shard's write end of its audit ring.
pub struct AuditProducer {
    producer: rtrb::Producer<AuditRecord>,
    reserved: Rc<Cell<usize>>,
    shard: u16,
    next_seq: u64,
    lost: u64,
    health: Arc<AuditHealth>,
    wake_on_commit: bool,
}

/// The consumer end, handed to the audit thread.
pub type AuditConsumer = rtrb::Consumer<AuditRecord>;

/// The write end before it is bound to its shard thread (it can cross threads).
pub type RingWriter = rtrb::Producer<AuditRecord>;

/// A ring of `capacity` records.
pub fn audit_ring(capacity: usize) -> (RingWriter, AuditConsumer) {
    rtrb::RingBuffer::new(capacity)
}

impl AuditProducer {
    /// Binds a ring's write end to `shard`, on the shard's own thread.
    pub fn new(shard: u16, producer: RingWriter, health: Arc<AuditHealth>) -> Self {
        Self {
            producer,
            reserved: Rc::new(Cell::new(0)),
            shard,
            next_seq: 0,
            lost: 0,
            health,
            wake_on_commit: true,
        }
    }

    /// Whether a commit wakes the audit thread (default). A shard that
    /// writes its records itself ([`crate::InlineWriter`]) wakes it only
    /// when it cannot; a record nobody waits for is then written by the
    /// next write, or by the thread within its nap (at most 5 ms).
    pub fn set_wake_on_commit(&mut self, wake: bool) {
        self.wake_on_commit = wake;
    }

    /// Reserves a slot for one record; refuses while the log cannot be written.
    pub fn admit(&mut self) -> Result<Admission, AuditUnavailable> {
        if !self.health.log_ok() {
            return Err(AuditUnavailable::LogDown);
        }
        // Slots only grow between our own pushes (the consumer frees them), so
        // a reservation made here is still valid at commit time.
        if self.producer.slots() > self.reserved.get() {
            self.reserved.set(self.reserved.get() + 1);
            Ok(Admission {
                reserved: Rc::clone(&self.reserved),
            })
        } else {
            Err(AuditUnavailable::RingFull)
        }
    }

    /// Writes the record into the reserved slot, stamping shard and sequence,
    /// and wakes the audit thread; returns the sequence ([`Self::recorded`]
    /// tells when it is in the log).
    pub fn commit(&mut self, admission: Admission, mut record: AuditRecord) -> u64 {
        let seq = self.next_seq;
        record.shard = self.shard;
        record.seq = seq;
        self.next_seq += 1;
        let pushed = self.producer.push(record);
        drop(admission);
        if self.wake_on_commit {
            self.health.wake_writer();
        }
        if pushed.is_err() {
            // Unreachable while reservations are honoured; counted, never silent.
            self.lost += 1;
            tracing::error!(
                shard = self.shard,
                lost = self.lost,
                "audit record could not be queued"
            );
        }
        seq
    }

    /// The audit thread's progress marks, for waiting outside the producer.
    pub fn health(&self) -> Arc<AuditHealth> {
        Arc::clone(&self.health)
    }

    /// Whether this shard's record `seq` has reached the log as durably as
    /// configured.
    pub fn recorded(&self, seq: u64) -> bool {
        self.health.recorded(self.shard, seq)
    }

    /// Records in the ring not yet taken by the audit thread.
    pub fn occupancy(&self) -> usize {
        self.producer.buffer().capacity() - self.producer.slots()
    }

    /// Slots reserved by requests in flight.
    pub fn reserved(&self) -> usize {
        self.reserved.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::config::Durability;

    fn producer(shard: u16, w: RingWriter) -> (AuditProducer, Arc<AuditHealth>) {
        let h = AuditHealth::new(usize::from(shard) + 1, Durability::Batch);
        (AuditProducer::new(shard, w, Arc::clone(&h)), h)
    }

    pub(crate) fn record() -> AuditRecord {
        AuditRecord::new(0, toolgate_core::audit::Reason::Answered)
    }

    #[test]
    fn full_ring_refuses_admission_and_reservations_count() {
        let (p, mut c) = audit_ring(2);
        let (mut p, _h) = producer(3, p);
        let a = p.admit();
        let b = p.admit();
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(
            p.admit().err(),
            Some(AuditUnavailable::RingFull),
            "two in flight fill a ring of two"
        );
        if let Ok(a) = a {
            p.commit(a, record());
        }
        assert_eq!(
            p.admit().err(),
            Some(AuditUnavailable::RingFull),
            "the committed record still occupies its slot"
        );
        let r = c.pop().unwrap();
        assert_eq!((r.shard, r.seq), (3, 0));
        let d = p.admit();
        assert!(d.is_ok(), "a consumed record frees a slot");
        drop(b);
        drop(d);
        assert_eq!(p.reserved(), 0);
    }

    #[test]
    fn log_down_refuses_admission_until_it_recovers() {
        let (p, _c) = audit_ring(4);
        let (mut p, h) = producer(0, p);
        h.set_log_ok(false);
        assert_eq!(p.admit().err(), Some(AuditUnavailable::LogDown));
        h.set_log_ok(true);
        assert!(p.admit().is_ok());
    }

    #[test]
    fn sequence_numbers_are_gap_free() {
        let (p, mut c) = audit_ring(8);
        let (mut p, _h) = producer(0, p);
        for _ in 0..5 {
            let a = p.admit().unwrap();
            p.commit(a, record());
        }
        let seqs: Vec<u64> = std::iter::from_fn(|| c.pop().ok()).map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    }
}

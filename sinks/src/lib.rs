//! toolgate-sinks: the audit path, from shard to disk.
//!
//! Each shard owns an [`AuditProducer`], the write end of a lock-free SPSC
//! ring (rtrb). A request reserves a ring slot before anything else happens
//! ([`AuditProducer::admit`]); only an [`Admission`] lets the request proceed,
//! and every exit commits exactly one record into the reserved slot. A full
//! ring therefore refuses the call up front: no call is forwarded unaudited
//! and no record is dropped.
//!
//! One audit thread ([`AuditWriter`]) drains all rings, encodes records as
//! JSON lines and appends them to the log with batched `fdatasync`. If the
//! log cannot be written, the thread keeps its batch and retries; rings then
//! fill up and shards refuse new calls (fail closed) until the disk recovers.

pub mod ring;
pub mod writer;

pub use ring::{audit_ring, Admission, AuditConsumer, AuditFull, AuditProducer, RingWriter};
pub use writer::{AuditStats, AuditWriter, WriterConfig};

//! toolgate-sinks: the audit path, from shard to disk to collectors.
//!
//! Each shard owns an [`AuditProducer`], the write end of a lock-free SPSC
//! ring (rtrb). A request reserves a ring slot before anything else happens
//! ([`AuditProducer::admit`]); only an [`Admission`] lets the request proceed,
//! and every exit commits exactly one record into the reserved slot. A full
//! ring, or a log that cannot be written ([`AuditHealth`]), refuses the call
//! up front: no call is forwarded unaudited and no record is dropped.
//!
//! One audit thread ([`AuditWriter`]) drains all rings, chains each record
//! to the previous one with SHA-256 ([`chain`]) and appends it to the open
//! segment of the log ([`appender`], [`segment`]), with batched `fdatasync`.
//! How long each `fdatasync` took is kept in a lock-free [`latency`]
//! histogram for the metrics endpoint.
//! A call is answered only once its record is in the log
//! ([`AuditProducer::recorded`]), so a crash cannot lose an answered call's
//! record.
//!
//! Everything downstream reads the log files, never the rings: [`verify`]
//! proves the chain and seals, [`query`] filters records, and each [`sink`]
//! delivers records to a collector (syslog over UDP, TCP or TLS, [`syslog`],
//! [`transport`]; Splunk HEC, Elasticsearch `_bulk` or an NDJSON webhook,
//! [`siem`] over [`http`], records mapped to OCSF by [`ocsf`]) from its own
//! persisted [`cursor`]; [`soar`] evaluates trigger rules over the records
//! and POSTs alerts; both HTTP sinks follow one retry policy (`retry`). A
//! collector outage therefore never slows or refuses a call: the log is the
//! buffer.
//! [`retention`] removes old sealed segments once every sink is past them,
//! leaving a MACed anchor so `verify` still proves the kept log.
//! [`build`] turns the configuration's `[[audit.sinks]]` entries into
//! running sinks.
//!
//! Never here: decisions about calls, or any I/O on a shard's thread.

#![warn(missing_docs)]

pub mod appender;
pub mod build;
pub mod chain;
pub mod cursor;
pub mod health;
pub mod http;
pub mod key;
pub mod latency;
pub mod ocsf;
pub mod query;
pub mod reader;
pub mod retention;
pub(crate) mod retry;
pub mod ring;
pub mod sched;
pub mod segment;
pub mod siem;
pub mod sink;
pub mod soar;
pub mod syslog;
pub mod tls;
pub mod transport;
pub mod verify;
pub mod writer;

pub use build::{build_sink, start_sinks, BuildError, BuiltSink};
pub use health::AuditHealth;
pub use ring::{audit_ring, Admission, AuditConsumer, AuditProducer, AuditUnavailable, RingWriter};
pub use writer::{AuditStats, AuditWriter, InlineWriter, WriterConfig};

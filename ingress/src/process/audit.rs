//! The audit side of the process: one ring per shard (and one for the
//! admin API), the checkpoint key, the thread that writes the log, and the
//! retention thread.

use std::sync::Arc;
use std::time::Duration;

use toolgate_core::config::{ValidConfig, WriterPriority};
use toolgate_sinks::key::{load_key, KeySource};
use toolgate_sinks::retention::{Policy as RetentionPolicy, Retainer};
use toolgate_sinks::{audit_ring, AuditHealth, AuditWriter, RingWriter, WriterConfig};

use super::{StartError, LOG_TARGET};

/// The running audit log and the write ends of its rings.
pub(super) struct Audit {
    /// One ring writer per ring, in ring order.
    pub writers: Vec<RingWriter>,
    /// The thread draining the rings into the log.
    pub writer: AuditWriter,
    /// Whether the log can take records, shared with every ring writer.
    pub health: Arc<AuditHealth>,
    /// The checkpoint key that seals segments.
    pub key: Vec<u8>,
}

/// Creates `rings` audit rings, loads (or generates) the checkpoint key and
/// starts the audit thread on the log in `[audit] dir`.
pub(super) fn start(cfg: &ValidConfig, rings: usize) -> Result<Audit, StartError> {
    let mut writers = Vec::with_capacity(rings);
    let mut consumers = Vec::with_capacity(rings);
    for _ in 0..rings {
        let (w, c) = audit_ring(cfg.config.audit.ring_capacity);
        writers.push(w);
        consumers.push(c);
    }
    let a = &cfg.config.audit;
    let key_source = match (&a.checkpoint_key_env, &cfg.checkpoint_key_file) {
        (Some(var), _) => KeySource::Env(var.get_ref().clone()),
        (None, Some(file)) => KeySource::File(file.clone()),
        (None, None) => KeySource::Generated(cfg.audit_dir.clone()),
    };
    let key = load_key(&key_source).map_err(StartError::Key)?;
    if let Some(path) = &key.generated {
        tracing::warn!(target: LOG_TARGET, key = %path.display(), "generated a checkpoint key for audit segment seals; keep a copy apart from the log, or set `checkpoint_key_file`/`checkpoint_key_env`");
    }
    let health = AuditHealth::new(rings, a.durability);
    let writer = AuditWriter::spawn(
        WriterConfig {
            dir: cfg.audit_dir.clone(),
            fsync_interval: Duration::from_millis(a.fsync_interval_ms),
            segment_bytes: a.segment_bytes,
            segment_max_age: a.segment_max_age_s.map(Duration::from_secs),
            durability: a.durability,
            background: a.writer_priority == WriterPriority::Background,
            key: key.bytes.clone(),
        },
        consumers,
        Arc::clone(&health),
    )
    .map_err(StartError::AuditLog)?;
    Ok(Audit {
        writers,
        writer,
        health,
        key: key.bytes,
    })
}

/// Starts the retention thread when `retain_days` or `retain_bytes` is set.
pub(super) fn start_retention(
    cfg: &ValidConfig,
    key: Vec<u8>,
) -> Result<Option<Retainer>, StartError> {
    let a = &cfg.config.audit;
    if a.retain_days.is_none() && a.retain_bytes.is_none() {
        return Ok(None);
    }
    let policy = RetentionPolicy {
        max_age: a
            .retain_days
            .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
        max_bytes: a.retain_bytes,
    };
    let sinks = a.sinks.iter().map(|s| s.name.get_ref().clone()).collect();
    let r = Retainer::spawn(cfg.audit_dir.clone(), policy, sinks, key)
        .map_err(StartError::Retention)?;
    tracing::info!(
        target: LOG_TARGET,
        retain_days = a.retain_days,
        retain_bytes = a.retain_bytes,
        "audit retention on"
    );
    Ok(Some(r))
}

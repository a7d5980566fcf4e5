//! Defaults of the file format, named by the structs' `serde(default = …)`.

use std::path::PathBuf;

use toml::Spanned;

use super::*;

pub(crate) fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_owned())
}
pub(crate) fn default_max_header_bytes() -> usize {
    16 * 1024
}
pub(crate) fn default_max_headers() -> usize {
    64
}
pub(crate) fn default_max_body_bytes() -> usize {
    1024 * 1024
}
pub(crate) fn default_header_timeout_ms() -> u64 {
    10_000
}
pub(crate) fn default_body_timeout_ms() -> u64 {
    30_000
}
pub(crate) fn default_idle_timeout_ms() -> u64 {
    60_000
}
pub(crate) fn default_max_connections() -> usize {
    10_000
}
pub(crate) fn default_upstream_timeout_ms() -> u64 {
    30_000
}
pub(crate) fn default_max_response_bytes() -> usize {
    16 * 1024 * 1024
}
pub(crate) fn default_pool_size() -> usize {
    64
}
pub(crate) fn default_audit_dir() -> PathBuf {
    PathBuf::from("audit")
}
pub(crate) fn default_ring_capacity() -> usize {
    65_536
}
pub(crate) fn default_fsync_interval_ms() -> u64 {
    10
}
pub(crate) fn default_true() -> bool {
    true
}
pub(crate) fn default_judge_timeout_ms() -> u64 {
    2_000
}
pub(crate) fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
pub(crate) fn default_ack_timeout_ms() -> u64 {
    5_000
}
pub(crate) fn default_facility() -> u8 {
    13
}
pub(crate) fn default_app_name() -> String {
    "toolgate".to_owned()
}
pub(crate) fn default_batch_records() -> usize {
    256
}
pub(crate) fn default_poll_interval_ms() -> u64 {
    200
}
pub(crate) fn default_retry_initial_ms() -> u64 {
    200
}
pub(crate) fn default_retry_max_ms() -> u64 {
    30_000
}
pub(crate) fn default_soar_max_keys() -> usize {
    10_000
}
pub(crate) fn default_io_timeout_ms() -> u64 {
    5_000
}
pub(crate) fn default_max_message_bytes() -> usize {
    8192
}
pub(crate) fn default_batch_bytes() -> usize {
    1024 * 1024
}
pub(crate) fn default_sourcetype() -> String {
    "toolgate:audit".to_owned()
}

pub(crate) fn default_log_level() -> String {
    "info".to_owned()
}
pub(crate) fn default_log_format() -> String {
    "pretty".to_owned()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            shards: None,
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_body_bytes: default_max_body_bytes(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections_per_shard: default_max_connections(),
            tls: None,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: default_audit_dir(),
            ring_capacity: default_ring_capacity(),
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_bytes: default_segment_bytes(),
            segment_max_age_s: None,
            durability: Durability::default(),
            writer_priority: WriterPriority::default(),
            writer: AuditWriterMode::default(),
            ack_timeout_ms: default_ack_timeout_ms(),
            checkpoint_key_env: None,
            checkpoint_key_file: None,
            retain_days: None,
            retain_bytes: None,
            arguments: AuditArguments::default(),
            sinks: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

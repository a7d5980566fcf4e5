//! `[audit]`, its `[[audit.sinks]]` and SOAR rules.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::defaults::*;

/// `[audit]`: the append-only audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the audit log, relative to the config file. Default `audit`.
    #[serde(default = "default_audit_dir")]
    pub dir: PathBuf,
    /// Records each shard may have in flight to the audit thread. Default 65536;
    /// when full, new calls are refused rather than forwarded unaudited.
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: usize,
    /// Longest time a written record waits for fsync, ms. Default 10.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// A log segment is sealed and the next one started once it holds this
    /// many bytes. Default 67108864 (64 MiB); at least 1024.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// A segment is also sealed once it has been open this many seconds
    /// (and holds a record), so a quiet log is sealed within a bounded time.
    /// Default: off (by size only).
    #[serde(default)]
    pub segment_max_age_s: Option<u64>,
    /// When a call's answer may leave: `batch` (default) once its record is
    /// written to the log file (it then survives a toolgate crash, and is
    /// fsynced within `fsync_interval_ms`), or `record` once its record is
    /// fsynced (it then survives a power loss).
    #[serde(default)]
    pub durability: Durability,
    /// How the audit thread shares a CPU with the shards: `background`
    /// (default) never preempts a shard when woken — it writes when a CPU is
    /// free, which keeps more CPU for calls under load but can hold answers
    /// while a shard is busy — or `normal`, which writes at once (lower
    /// latency at moderate load, fewer calls per second at saturation).
    #[serde(default)]
    pub writer_priority: WriterPriority,
    /// Who writes records to the log with `batch` durability: `shards`
    /// (default) — a shard about to wait for its calls' records writes
    /// every queued record itself when no one else is writing, so no other
    /// thread has to run before the answers leave (syncs, new segments and
    /// failures stay with the audit thread) — or `thread`: always the audit
    /// thread, so a shard never makes a file system call (a write that
    /// stalls in the file system then holds only the answers, not the
    /// shard). `record` durability always writes from the audit thread.
    #[serde(default)]
    pub writer: AuditWriterMode,
    /// Longest an answer waits for its record to reach the log, ms. Default
    /// 5000. Past it the answer leaves anyway (the record stays queued) and a
    /// warning is logged: a stuck disk must not hang agents forever, and new
    /// calls are refused meanwhile.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Environment variable holding the segment checkpoint key. At most one
    /// of this and `checkpoint_key_file`; with neither, a random key is
    /// generated at first start into `<dir>/checkpoint.key` (mode 0600).
    #[serde(default)]
    pub checkpoint_key_env: Option<Spanned<String>>,
    /// File holding the segment checkpoint key, relative to the config file.
    #[serde(default)]
    pub checkpoint_key_file: Option<Spanned<PathBuf>>,
    /// Remove sealed segments sealed more than this many days ago (never
    /// one a sink has not delivered). Default: keep forever.
    #[serde(default)]
    pub retain_days: Option<u64>,
    /// Remove the oldest sealed segments while the log is larger than this,
    /// bytes (never one a sink has not delivered, never the newest sealed
    /// one). Default: no limit.
    #[serde(default)]
    pub retain_bytes: Option<u64>,
    /// What a `tools/call` record keeps of the call's arguments:
    /// `redacted` (default: the arguments with every detector's matches
    /// masked, cut to 4 KiB — what `toolgate policy simulate` re-decides
    /// calls from), `digest` (SHA-256 of the arguments as forwarded), or
    /// `omit`. Never the raw arguments.
    #[serde(default)]
    pub arguments: AuditArguments,
    /// `[[audit.sinks]]`: where records are delivered from the log, each with
    /// its own cursor. Default: none.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// What an audit record keeps of a call's arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditArguments {
    /// SHA-256 (hex) of the argument bytes as forwarded to the upstream.
    Digest,
    /// Nothing.
    Omit,
    /// The arguments JSON with every built-in detector's matches masked,
    /// cut to [`crate::audit::MAX_REDACTED_ARGS`] bytes.
    #[default]
    Redacted,
}

/// How durable a record is before its call is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written to the log file; fsynced in batches.
    #[default]
    Batch,
    /// Fsynced.
    Record,
}

/// Scheduling of the audit thread (`[audit] writer_priority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterPriority {
    /// Linux `SCHED_BATCH`: woken, it waits for a free CPU.
    #[default]
    Background,
    /// The normal class: woken, it may preempt a shard.
    Normal,
}

/// Who writes audit records to the log (`[audit] writer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditWriterMode {
    /// A shard waiting for its records writes them when the log is free.
    #[default]
    Shards,
    /// Only the audit thread writes.
    Thread,
}

/// `[[audit.sinks]]`: one delivery of the audit log to a remote collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name; the sink's cursor is `<audit dir>/cursors/<name>`.
    pub name: Spanned<String>,
    /// What the sink speaks: `syslog` (RFC 5424), `splunk_hec`,
    /// `elasticsearch` (`_bulk`) or `webhook` (NDJSON POST).
    pub kind: SinkKind,
    /// Syslog only: `udp` (RFC 5426, one message per datagram), `tcp`
    /// (RFC 6587 octet-counting framing) or `tls` (RFC 5425).
    #[serde(default)]
    pub transport: Option<Spanned<SinkTransport>>,
    /// Syslog only: collector address, e.g. `127.0.0.1:5514`.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    /// HTTP sinks only: `http://` or `https://` URL (for `elasticsearch` the
    /// cluster's base URL; `/_bulk` is appended).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Syslog facility, 0–23. Default 13 (log audit).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// APP-NAME of each message. Default `toolgate`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// HOSTNAME of each message (syslog) or `host` of each event (HEC).
    /// Default: this host's name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Most records read from the log and sent per batch. Default 256.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// HTTP sinks: largest request body before compression, bytes; a batch
    /// that would be larger is sent as several requests. A single record
    /// larger than this is sent alone. Default 1048576.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// How often the sink looks for new records when it has caught up, ms. Default 200.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// First wait before retrying after a failed delivery, ms; doubles per
    /// failure up to `retry_max_ms`. Default 200.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest wait between retries, ms. Default 30000.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Longest a connect, a send, or (HTTP) a whole request and its
    /// response may take, ms. Default 5000.
    #[serde(default = "default_io_timeout_ms")]
    pub io_timeout_ms: u64,
    /// Largest message sent, bytes; longer messages have their free-form MSG
    /// part cut (the structured data is kept whole). Default 8192.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// HTTP sinks: `ocsf` (default; OCSF API Activity, class 6003) or
    /// `toolgate` (the log record as written).
    #[serde(default)]
    pub format: SinkFormat,
    /// HTTP sinks: gzip request bodies (`Content-Encoding: gzip`). Default false.
    #[serde(default)]
    pub gzip: bool,
    /// HTTP sinks: the secret sent in the auth header. Required for
    /// `splunk_hec`.
    #[serde(default)]
    pub token: Option<SinkTokenConfig>,
    /// HTTP sinks: extra request headers (not secret: they may be logged).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `elasticsearch`: index (or data stream) written to; `splunk_hec`:
    /// `index` of each event (default: the token's default index).
    /// Default for `elasticsearch`: `toolgate-audit`.
    #[serde(default)]
    pub index: Option<String>,
    /// `splunk_hec`: `source` of each event. Default `toolgate`.
    #[serde(default = "default_app_name")]
    pub source: String,
    /// `splunk_hec`: `sourcetype` of each event. Default `toolgate:audit`.
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// TLS (`https://` URLs, syslog `tls`): PEM file of the CA certificates
    /// trusted for the collector, relative to the config file. Default: the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// TLS: name the collector's certificate must carry. Default: the URL's
    /// or address's host.
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    /// TLS: PEM client certificate chain presented to the collector.
    #[serde(default)]
    pub cert_file: Option<Spanned<PathBuf>>,
    /// TLS: PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<Spanned<PathBuf>>,
    /// `soar` only: `[[audit.sinks.rules]]`, the triggers; at least one.
    #[serde(default)]
    pub rules: Vec<SoarRuleConfig>,
    /// `soar` only: most keys the sink tracks at once per kind of state
    /// (cool-downs, rate windows, seen agent/tool pairs), so memory stays
    /// bounded whatever the traffic. Default 10000.
    #[serde(default = "default_soar_max_keys")]
    pub max_keys: usize,
}

/// `[[audit.sinks.rules]]`: one SOAR trigger of a `soar` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoarRuleConfig {
    /// Unique name within the sink; sent as the alert's `rule`.
    pub name: Spanned<String>,
    /// `deny`, `judge`, `deny_rate`, `call_rate` or `first_use`.
    pub kind: SoarRuleKind,
    /// Only records of these agents (globs, `*` any run). Default: any.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Only records of these tools (globs). Default: any.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Only records whose `reason` matches one of these globs (e.g.
    /// `policy:*`). Default: any.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// `judge` only: only these judge outcomes (`allow`, `deny`, `timeout`,
    /// `unavailable`, `invalid`). Default: any.
    #[serde(default)]
    pub judge_outcomes: Vec<String>,
    /// `deny_rate`, `call_rate`: fire when an agent has at least this many
    /// matching records within `window_s`.
    #[serde(default)]
    pub threshold: Option<u64>,
    /// `deny_rate`, `call_rate`: the window, seconds of record time.
    #[serde(default)]
    pub window_s: Option<u64>,
    /// No second alert for the same key (rule and agent; with the tool for
    /// `deny`, `judge` and `first_use`) within this many seconds of record
    /// time. Default: `window_s` for rate rules, 0 (every match) otherwise.
    #[serde(default)]
    pub cooldown_s: Option<u64>,
}

/// What a SOAR rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoarRuleKind {
    /// Every denied record.
    Deny,
    /// Every call escalated to the judge, whatever it said.
    Judge,
    /// An agent's denials reaching `threshold` within `window_s`.
    DenyRate,
    /// An agent's `tools/call` records reaching `threshold` within `window_s`.
    CallRate,
    /// An agent calling a tool for the first time.
    FirstUse,
}

/// `[audit.sinks.token]`: where an HTTP sink's secret comes from (exactly one
/// of `env`, `file`, `command`, read like upstream credentials) and how it is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTokenConfig {
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<Spanned<String>>,
    /// File holding the secret (trimmed), relative to the config file; read at start.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// Command printing the secret on stdout (trimmed), run once at start.
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    /// Header carrying the secret. Default `Authorization`.
    #[serde(default)]
    pub header: Option<String>,
    /// Text put before the secret. Default `Splunk ` for `splunk_hec`,
    /// `ApiKey ` for `elasticsearch`, `Bearer ` for `webhook`.
    #[serde(default)]
    pub value_prefix: Option<String>,
}

/// The format a sink delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// RFC 5424 syslog.
    Syslog,
    /// Splunk HTTP Event Collector (`/services/collector/event`).
    SplunkHec,
    /// Elasticsearch / OpenSearch `_bulk`.
    Elasticsearch,
    /// NDJSON POST to any URL.
    Webhook,
    /// SOAR triggers: one JSON alert POSTed per rule firing.
    Soar,
}

impl SinkKind {
    /// Whether the sink speaks HTTP.
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Syslog)
    }
}

/// The transport a syslog sink uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkTransport {
    /// One message per datagram (RFC 5426): loses messages the network drops.
    Udp,
    /// A stream with octet-counting framing (RFC 6587 §3.4.1).
    Tcp,
    /// TLS with octet-counting framing (RFC 5425).
    Tls,
}

/// How an HTTP sink renders each record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// OCSF API Activity (class 6003).
    #[default]
    Ocsf,
    /// The log record as written.
    Toolgate,
}

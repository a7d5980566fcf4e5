//! `[sessions]` and `[tool_labels]`: what a decision may know of the calls
//! before it in the same session, and the labels that summarise tools.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LimitsBackend;

/// `[sessions]`: how sessions are kept for `context.session` in policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Seconds without a call after which a session is over and its state
    /// may be reused. Default 1800.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Most sessions kept at once. A call whose session finds no room sees
    /// `context.session.known == false`. Default 8192. Read at start.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Top-level argument names whose distinct values a session counts
    /// over the last hour (`context.session.distinct_last_hour.<name>`),
    /// at most 4.
    #[serde(default)]
    pub distinct: Vec<String>,
    /// Derive `read_only`, `destructive` and `open_world` labels from the
    /// MCP tool annotations an upstream sends. Default true.
    #[serde(default = "yes")]
    pub annotation_labels: bool,
    /// Where session state lives: `local` (this process; default) or
    /// `redis` (shared by the replicas through `[limits.redis]`, where the
    /// quota counters live; needs `limits.backend = "redis"`).
    #[serde(default)]
    pub backend: LimitsBackend,
}

fn default_idle_timeout_s() -> u64 {
    1800
}

fn default_max_sessions() -> usize {
    8192
}

fn yes() -> bool {
    true
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_s: default_idle_timeout_s(),
            max_sessions: default_max_sessions(),
            distinct: Vec::new(),
            annotation_labels: true,
            backend: LimitsBackend::Local,
        }
    }
}

/// `[tool_labels]`: exposed tool name (or glob, `*` any run) → labels,
/// e.g. `"billing__refund*" = ["money"]`. A tool's labels are every
/// matching entry's, plus those from its annotations.
pub type ToolLabelsConfig = BTreeMap<String, Vec<String>>;

//! What a `kind = "stdio"` upstream adds to `[[upstreams]]`: the child's
//! environment and `[upstreams.sandbox]`, the confinement it runs in.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::defaults::default_true;

/// One variable of a stdio upstream's environment: written out, or read
/// from a secret source when toolgate starts (so the configuration never
/// holds the credential).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// The value as written.
    Literal(String),
    /// Read from toolgate's environment or a file.
    Secret(EnvSecret),
}

/// `{ env = "VAR" }` or `{ file = "path" }`: where a variable's value is
/// read from. Exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSecret {
    /// A variable of toolgate's own environment.
    #[serde(default)]
    pub env: Option<String>,
    /// A file (trimmed), relative to the configuration file.
    #[serde(default)]
    pub file: Option<String>,
}

/// The variables a stdio upstream's process sees, by name; nothing of
/// toolgate's own environment is passed on but `PATH`.
pub type EnvConfig = BTreeMap<String, EnvValue>;

/// `[upstreams.sandbox]`: what a stdio upstream's process may reach. On by
/// default; each relaxation is written here and shown by `toolgate check`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Confine the process (default true). `false` runs it with
    /// toolgate's own rights: only for servers as trusted as toolgate.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Share the host's network. Default false: the process has a network
    /// namespace of its own with nothing in it, not even toolgate's
    /// loopback listeners.
    #[serde(default)]
    pub network: bool,
    /// Hosts the process may reach although its network is its own:
    /// `host`, `host:port`, `*.domain[:port]` or an IP address. Reached
    /// only through toolgate's egress proxy (`HTTPS_PROXY` and friends in
    /// the process's environment), which refuses every other host.
    #[serde(default)]
    pub allow_hosts: Vec<Spanned<String>>,
    /// Absolute paths the process sees read-only, at the same place (its
    /// code, data it serves). `/usr` and a few files of `/etc` are always
    /// visible read-only.
    #[serde(default)]
    pub read_only: Vec<Spanned<String>>,
    /// Absolute paths the process may write, at the same place.
    #[serde(default)]
    pub read_write: Vec<Spanned<String>>,
    /// Address space, MiB (`RLIMIT_AS`; Node.js needs at least 1024).
    /// Default 2048.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// CPU time, seconds (`RLIMIT_CPU`): a process past it is killed and
    /// restarted. Default 0, no limit.
    #[serde(default)]
    pub cpu_s: u64,
    /// Processes and threads (`RLIMIT_NPROC`). Default 256.
    #[serde(default = "default_processes")]
    pub processes: u64,
    /// Open files (`RLIMIT_NOFILE`). Default 1024.
    #[serde(default = "default_open_files")]
    pub open_files: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            network: false,
            allow_hosts: Vec::new(),
            read_only: Vec::new(),
            read_write: Vec::new(),
            memory_mb: default_memory_mb(),
            cpu_s: 0,
            processes: default_processes(),
            open_files: default_open_files(),
        }
    }
}

fn default_memory_mb() -> u64 {
    2048
}

fn default_processes() -> u64 {
    256
}

fn default_open_files() -> u64 {
    1024
}

/// How many processes a stdio upstream runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instances {
    /// One process for every call (default).
    #[default]
    Shared,
    /// One process per end user (servers that keep per-user state); calls
    /// with no end user, and the catalog, go to a process of their own.
    PerUser,
}

pub(crate) fn default_max_instances() -> usize {
    16
}

pub(crate) fn default_idle_timeout_s() -> u64 {
    300
}

pub(crate) fn default_max_in_flight() -> usize {
    64
}

pub(crate) fn default_ping_interval_s() -> u64 {
    10
}

//! `[admin]`: the admin API, its tokens and the control-state store.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::*;

/// `[admin]`: the admin API on a listener of its own, and the control state
/// it writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API, e.g. `127.0.0.1:9091`. A non-loopback
    /// address needs `[admin.tls]` (and, as always, `[[admin.tokens]]`).
    /// Default: none (off).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// `[admin.tls]`: TLS on the admin listener, the same keys as
    /// `[server.tls]`. Default: plain HTTP (loopback only).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// The control-state store, relative to the config file. Default
    /// `state/control.redb`.
    #[serde(default = "default_admin_state_file")]
    pub state_file: Spanned<PathBuf>,
    /// Largest admin request body, bytes; larger gets 413. Default 1048576.
    #[serde(default = "default_admin_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest a write waits for every shard to run the new snapshot, ms;
    /// then it answers 202 naming the shards that had not. Default 5000.
    #[serde(default = "default_admin_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Admin credentials; at least one when `listen` is set.
    #[serde(default)]
    pub tokens: Vec<AdminTokenConfig>,
    /// Where the control state is kept: `embedded` (`state_file`, one
    /// gateway) or `postgres` (shared by several replicas). Default `embedded`.
    #[serde(default = "default_admin_backend")]
    pub backend: Spanned<StateBackend>,
    /// `postgres`: the database, as `postgres://user@host:port/dbname`,
    /// without a password (`postgres_password` gives it).
    #[serde(default)]
    pub postgres_url: Option<Spanned<String>>,
    /// `postgres`: where the database password comes from (exactly one of
    /// `env`, `file`, `command`). Default: none (trust or peer authentication).
    #[serde(default)]
    pub postgres_password: Option<SecretSourceConfig>,
    /// `postgres`: how often a replica checks the shared revision besides
    /// listening for notifications, ms (10..=1000). Default 100.
    #[serde(default = "default_admin_poll_interval_ms")]
    pub poll_interval_ms: Spanned<u64>,
}

/// `[admin] backend`: where the control state is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// One redb file in the data directory, for one gateway.
    #[default]
    Embedded,
    /// A PostgreSQL database shared by several gateway replicas.
    Postgres,
}

/// Where a secret is read from: exactly one of `env`, `file`, `command`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSourceConfig {
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<Spanned<String>>,
    /// File holding the secret (trimmed), relative to the config file.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// Command printing the secret on stdout (trimmed).
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
}

/// `[[admin.tokens]]`: one admin credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    /// Who holds it; audit records of changes name it.
    pub name: Spanned<String>,
    /// Hex SHA-256 of the token (`toolgate key new` prints a token and its hash).
    pub token_sha256: Spanned<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls: None,
            state_file: default_admin_state_file(),
            max_body_bytes: default_admin_max_body_bytes(),
            publish_timeout_ms: default_admin_publish_timeout_ms(),
            tokens: Vec::new(),
            backend: default_admin_backend(),
            postgres_url: None,
            postgres_password: None,
            poll_interval_ms: default_admin_poll_interval_ms(),
        }
    }
}

pub(crate) fn default_admin_state_file() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from("state/control.redb"))
}
pub(crate) fn default_admin_max_body_bytes() -> usize {
    1024 * 1024
}
pub(crate) fn default_admin_publish_timeout_ms() -> u64 {
    5000
}
pub(crate) fn default_admin_backend() -> Spanned<StateBackend> {
    Spanned::new(0..0, StateBackend::Embedded)
}
pub(crate) fn default_admin_poll_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}

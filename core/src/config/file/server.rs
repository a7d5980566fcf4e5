//! `[server]` (with `[server.tls]`), `[metrics]` and `[log]`.

use serde::Deserialize;
use toml::Spanned;

use super::defaults::*;

/// `[server]`: the agent-facing listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Number of shards (one pinned thread each). Default: available cores.
    #[serde(default)]
    pub shards: Option<Spanned<usize>>,
    /// Largest accepted request head (request line + headers), bytes. Default 16384; larger → 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most headers accepted in one request. Default 64; more → 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest accepted request body, bytes. Default 1048576; larger → 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time allowed to receive a complete request head once its first byte arrived, ms.
    /// Default 10000; slower → 408 and the connection is closed.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Time allowed to receive a request body, ms. Default 30000; slower → 408.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Keep-alive connections idle longer than this are closed, ms. Default 60000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most open agent connections per shard; further connections are closed at accept. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections_per_shard: usize,
    /// `[server.tls]`: TLS on the agent listener. Default: plain HTTP (for a
    /// listener behind a TLS-terminating load balancer, or loopback).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: the agent listener's certificate, and optionally the CA
/// that agents' client certificates must chain to (mTLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first, relative to the config file.
    pub cert_file: Spanned<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), relative to the config file.
    pub key_file: Spanned<String>,
    /// PEM CA certificates that agents' client certificates must chain to.
    /// Setting it turns on client-certificate verification. Default none.
    #[serde(default)]
    pub client_ca_file: Option<Spanned<String>>,
    /// With `client_ca_file`: `required` (default; a handshake without a
    /// valid client certificate fails) or `optional` (a certificate, when
    /// presented, must be valid; agents without one use a bearer token).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_tls_min_version")]
    pub min_version: Spanned<String>,
}

/// Whether agents must present a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every handshake needs a valid client certificate.
    #[default]
    Required,
    /// A presented certificate must be valid; none is also accepted.
    Optional,
}

pub(crate) fn default_tls_min_version() -> Spanned<String> {
    Spanned::new(0..0, "1.2".to_owned())
}

/// `[log]`: the gateway's own diagnostic log (never carries secrets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax; the `RUST_LOG` variable wins. Default `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `pretty` or `json`. Default `pretty`.
    #[serde(default = "default_log_format")]
    pub format: String,
}

/// `[metrics]`: Prometheus metrics on a listener of their own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics`, e.g. `127.0.0.1:9464`. Default: none (off).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
}

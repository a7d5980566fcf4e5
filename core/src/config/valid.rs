//! The checked form: a configuration that passed every check, with what
//! it names parsed and resolved, and the errors of one that did not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::output::OutputRule;
use crate::toolname::ToolNamer;
use crate::upstream_url::UpstreamUrl;

use super::*;

/// A sink's endpoint and files, resolved by validation.
#[derive(Debug, Clone, Default)]
pub struct SinkTarget {
    /// Syslog: the collector's address.
    pub address: Option<SocketAddr>,
    /// HTTP sinks: the URL, parsed.
    pub url: Option<SinkUrl>,
    /// Where the token comes from.
    pub token: Option<crate::secret::SecretSource>,
    /// `ca_file`, resolved.
    pub ca_file: Option<PathBuf>,
    /// `cert_file`, resolved.
    pub cert_file: Option<PathBuf>,
    /// `key_file`, resolved.
    pub key_file: Option<PathBuf>,
    /// TLS server name: `server_name`, else the URL's or address's host.
    pub server_name: String,
}

/// An HTTP sink's URL: `http[s]://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkUrl {
    /// Whether to speak TLS.
    pub https: bool,
    /// Host, port, path and authority (port defaults to 443 for https).
    pub url: UpstreamUrl,
}

impl SinkUrl {
    /// Parses `http://…` or `https://…` (port 443 by default).
    pub fn parse(s: &str) -> Result<Self, String> {
        let url = UpstreamUrl::parse(s)?;
        Ok(Self {
            https: url.tls,
            url,
        })
    }

    /// Host without IPv6 brackets, for TLS names.
    pub fn bare_host(&self) -> String {
        self.url.server_name().to_owned()
    }
}

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// What is wrong, lowercase, offending input in backticks.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are in (for messages).
    pub origin: String,
    /// The errors, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match e.line {
                Some(l) => write!(f, "{}: line {l}: {}", self.origin, e.message)?,
                None => write!(f, "{}: {}", self.origin, e.message)?,
            }
        }
        Ok(())
    }
}

/// A configuration that parsed and passed every check, with its derived parts.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The configuration as written.
    pub config: Config,
    /// `server.listen`, parsed.
    pub listen: SocketAddr,
    /// The upstreams, each resolved into one record, in file order. (Their
    /// entries are moved here: `config.upstreams` is empty once checked.)
    pub upstreams: Vec<ResolvedUpstream>,
    /// `audit.dir` resolved against the config file's directory.
    pub audit_dir: PathBuf,
    /// `audit.checkpoint_key_file` resolved against the config file's directory.
    pub checkpoint_key_file: Option<PathBuf>,
    /// `[[audit.sinks]]` endpoints and files, resolved, index-aligned with
    /// `config.audit.sinks`.
    pub sink_targets: Vec<SinkTarget>,
    /// How exposed tool names map to upstreams.
    pub namer: ToolNamer,
    /// Cedar policy files, resolved and expanded, in order.
    pub policy_files: Vec<PathBuf>,
    /// The judge endpoint, parsed.
    pub judge_url: Option<UpstreamUrl>,
    /// The file this configuration was read from, when read from a file.
    pub path: Option<PathBuf>,
    /// `output_rules`, parsed, in file order.
    pub output_rules: Vec<OutputRule>,
    /// `metrics.listen`, parsed.
    pub metrics_listen: Option<SocketAddr>,
    /// `[auth.jwt]` with its JWKS parsed, when configured.
    pub jwt: Option<std::sync::Arc<crate::jwt::Verifier>>,
    /// `auth.jwt.jwks_file` resolved against the config file's directory.
    pub jwks_file: Option<PathBuf>,
    /// `auth.jwt.jwks_url`, parsed.
    pub jwks_url: Option<UpstreamUrl>,
    /// `auth.jwt.jwks_ca_file`, resolved.
    pub jwks_ca_file: Option<PathBuf>,
    /// `admin.listen`, parsed (a loopback address unless `[admin.tls]` is set).
    pub admin_listen: Option<SocketAddr>,
    /// `[admin.tls]` files resolved against the config file's directory.
    pub admin_tls: Option<TlsFiles>,
    /// `admin.state_file` resolved against the config file's directory.
    pub admin_state_file: PathBuf,
    /// `admin.postgres_password`, resolved (`postgres` backend only).
    pub admin_postgres_password: Option<crate::secret::SecretSource>,
    /// `[limits.redis]`, with `limits.backend = "redis"`.
    pub limits_redis: Option<RedisSetup>,
    /// `[server.tls]` files resolved against the config file's directory.
    pub tls: Option<TlsFiles>,
    /// The judge's `ca_file`, resolved.
    pub judge_ca_file: Option<PathBuf>,
    /// `auth.subtokens.dir` resolved against the config file's directory.
    pub subtoken_dir: Option<PathBuf>,
    /// The directory relative paths in the configuration resolve against.
    pub base: PathBuf,
    /// `tool_pins.file`, resolved.
    pub pins_file: Option<PathBuf>,
    /// `[identity_assertions]`, resolved.
    pub assertion_keys: Option<AssertionKeys>,
    /// `[connected_accounts]`, resolved.
    pub connected_accounts: Option<ConnectedAccounts>,
}

/// `[connected_accounts]` as toolgate loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedAccounts {
    /// Where the sealing key is read.
    pub key: crate::secret::SecretSource,
    /// The agent listener's public URL, without a trailing `/`.
    pub public_url: String,
    /// Seconds a connect link stays usable.
    pub link_lifetime_s: u64,
    /// The header an authenticating proxy names the browser's user in,
    /// lower-cased.
    pub user_header: Option<String>,
}

/// The provider of one upstream's connected accounts, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// Where the user's browser goes to consent.
    pub authorize_url: String,
    /// The token endpoint.
    pub token_url: UpstreamUrl,
    /// PEM CA bundle for it, resolved.
    pub ca_file: Option<PathBuf>,
    /// toolgate's client id there.
    pub client_id: String,
    /// Where its client secret is read (at start).
    pub client_secret: crate::secret::SecretSource,
    /// The `scope` asked for, if any.
    pub scope: Option<String>,
    /// The `resource` asked for, if any.
    pub resource: Option<String>,
}

/// `[identity_assertions]` as toolgate loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionKeys {
    /// Where the signing key's PEM is read.
    pub current: crate::secret::SecretSource,
    /// Earlier keys' files, published (public halves) for overlap.
    pub previous: Vec<PathBuf>,
    /// `iss`.
    pub issuer: String,
    /// `exp - iat`, seconds.
    pub lifetime_s: u64,
}

/// How one upstream learns the end user of each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityTarget {
    /// The mode.
    pub mode: crate::config::IdentityMode,
    /// The header carrying the assertion or the exchanged token.
    pub header: String,
    /// Whom the identity is for: an assertion's `aud`; for an exchange,
    /// the `resource` asked for (RFC 8707).
    pub audience: String,
    /// `token_exchange`: where and how the user's token is exchanged.
    pub exchange: Option<ExchangeTarget>,
    /// `connected_account`: where users connect their accounts.
    pub connect: Option<ConnectTarget>,
}

/// Where one upstream's end-user tokens are exchanged (RFC 8693), resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeTarget {
    /// The IdP's token endpoint.
    pub token_url: UpstreamUrl,
    /// PEM CA bundle for it, resolved.
    pub ca_file: Option<PathBuf>,
    /// toolgate's client id there.
    pub client_id: String,
    /// Where its client secret is read (at start).
    pub client_secret: crate::secret::SecretSource,
    /// The `audience` parameter, if any.
    pub audience: Option<String>,
    /// The `scope` parameter, if any.
    pub scope: Option<String>,
    /// Whether the agent goes as the actor (`actor_token`).
    pub actor: bool,
    /// What a call gets when the exchange fails.
    pub fallback: crate::config::ExchangeFallback,
}

impl ValidConfig {
    /// The directory relative paths in the configuration resolve against.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The upstream named `name`, with its place in file order.
    pub fn upstream(&self, name: &str) -> Option<(usize, &ResolvedUpstream)> {
        self.upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| u.entry.name.get_ref() == name)
    }
}

/// One upstream as the configuration resolves it: the entry as written,
/// its endpoint parsed and its files resolved against the configuration's
/// directory. Everything built per upstream (clients, credentials, TLS)
/// starts from this one record.
#[derive(Debug, Clone)]
pub struct ResolvedUpstream {
    /// The `[[upstreams]]` entry (or the admin API's document).
    pub entry: UpstreamConfig,
    /// `url`, parsed.
    pub url: UpstreamUrl,
    /// `ca_file`, resolved.
    pub ca_file: Option<PathBuf>,
    /// `credential.file`, resolved.
    pub credential_file: Option<PathBuf>,
    /// `spec` of an `openapi` upstream, resolved.
    pub spec: Option<SpecSource>,
    /// A `stdio` upstream's process, resolved.
    pub stdio: Option<StdioSpec>,
    /// Where its end-user assertions go, with `[upstreams.identity]`.
    pub identity: Option<IdentityTarget>,
}

/// A `stdio` upstream's process as toolgate starts it: the program found,
/// the environment's sources, the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioSpec {
    /// The program, an absolute path (found on `PATH` when written as a name).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The environment, by name: literal values and where secrets are read.
    pub env: Vec<(String, StdioEnv)>,
    /// `[upstreams.sandbox]`, its paths checked absolute.
    pub sandbox: crate::config::SandboxConfig,
    /// `sandbox.allow_hosts`, read: what the egress proxy lets through
    /// (empty: no egress proxy, no network).
    pub allow_hosts: Vec<crate::host_rule::HostRule>,
    /// Calls waiting on the process at once.
    pub max_in_flight: usize,
    /// Between liveness pings.
    pub ping_interval: std::time::Duration,
    /// One process, or one per end user.
    pub instances: crate::config::Instances,
    /// `per_user`: processes at most.
    pub max_instances: usize,
    /// `per_user`: a user's idle process is stopped after this.
    pub idle_timeout: std::time::Duration,
}

/// One variable of a stdio upstream's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioEnv {
    /// As written.
    Literal(String),
    /// Read when the process starts (never kept in the configuration).
    Secret(crate::secret::SecretSource),
}

/// Where an `openapi` upstream's document is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecSource {
    /// A file, resolved against the configuration's directory.
    File(PathBuf),
    /// An `http(s)://` URL, fetched at start and on every refresh.
    Url(UpstreamUrl),
}

impl std::fmt::Display for SpecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Url(u) => write!(
                f,
                "{}://{}{}",
                if u.tls { "https" } else { "http" },
                u.authority,
                u.path
            ),
        }
    }
}

impl ResolvedUpstream {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        self.entry.name.get_ref()
    }
}

/// A listener's TLS material (`[server.tls]`, `[admin.tls]`), as resolved paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (mTLS), when configured.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with `client_ca`).
    pub client_auth: ClientAuth,
    /// Whether TLS 1.2 is refused (1.3 only).
    pub tls13_only: bool,
}

/// `[limits.redis]`, checked: where the replicas share quota counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSetup {
    /// Host as written.
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// `rediss://`: TLS, verifying `host`.
    pub tls: bool,
    /// Database number (`SELECT`).
    pub db: u32,
    /// With TLS: the CA bundle, resolved.
    pub ca_file: Option<PathBuf>,
    /// The `AUTH` password's source.
    pub password: Option<crate::secret::SecretSource>,
    /// Units taken from Redis at a time.
    pub lease: u64,
    /// Replicas sharing the quotas.
    pub replicas: u64,
    /// Time allowed for one exchange.
    pub timeout: std::time::Duration,
}

impl RedisSetup {
    /// Parses `redis[s]://host[:port][/db]`: no user or password in it.
    pub fn parse_url(url: &str) -> Result<(String, u16, bool, u32), String> {
        let (rest, tls) = if let Some(r) = url.strip_prefix("redis://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (r, true)
        } else {
            return Err(format!(
                "`{url}` is not a `redis://host:port/db` (or `rediss://`) URL"
            ));
        };
        let (authority, db) = match rest.split_once('/') {
            Some((a, d)) => (a, d),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{url}`: no password in the URL; give it with `[limits.redis.password]`"
            ));
        }
        let db = if db.is_empty() {
            0
        } else {
            db.parse::<u32>()
                .map_err(|_| format!("`{url}`: the database must be a number"))?
        };
        // `[v6]` alone has no port; `host:port` and `[v6]:port` do.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !authority.ends_with(']') => (
                h.to_owned(),
                p.parse::<u16>()
                    .map_err(|_| format!("`{url}`: `{p}` is not a port"))?,
            ),
            _ => (authority.to_owned(), 6379),
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        Ok((host, port, tls, db))
    }
}

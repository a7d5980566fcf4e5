//! The operator's configuration file, mirrored one to one.
//!
//! These structs are the low level of configuration: what the TOML says, with
//! every default documented. `decision` compiles them into the immutable
//! snapshot the shards serve from. Unknown keys are errors, and every error
//! names its line so `toolgate check` can point at it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::output::{self, Condition, Detector, FieldPath, MaskStyle, OutputRule};
use crate::toolname::ToolNamer;
use crate::upstream_url::UpstreamUrl;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The agent-facing listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Upstream MCP servers whose tools toolgate aggregates.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Agents allowed to call through toolgate, each with its attached tools.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// End users agents may act for, with their groups (for policies).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Cedar policies deciding calls beyond the permission map.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Where audit records go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The Prometheus metrics listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Limits of output filtering.
    #[serde(default)]
    pub output: OutputConfig,
    /// Output rules: what agents may not see of tool results.
    #[serde(default)]
    pub output_rules: Vec<OutputRuleConfig>,
    /// How agents authenticate besides API keys.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Pinning of tool definitions against silent changes (rug pulls).
    #[serde(default)]
    pub tool_pins: Option<ToolPinsConfig>,
    /// The admin API: run-time control of agents, users and policies.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// `[tool_pins]`: each tool definition's SHA-256 is pinned; a definition
/// that changes behind the gateway's back is quarantined until an operator
/// approves it (`toolgate tools approve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPinsConfig {
    /// The pins file, relative to the config file. Default `tool-pins.json`.
    #[serde(default = "default_pins_file")]
    pub file: PathBuf,
    /// Whether a tool seen for the first time is pinned as it is (trust on
    /// first use). Default true; false keeps new tools quarantined too.
    #[serde(default = "default_true")]
    pub pin_new: bool,
    /// What a changed definition does: `quarantine` (default: hidden from
    /// `tools/list`, calls refused) or `warn` (logged, still served).
    #[serde(default)]
    pub on_change: PinAction,
}

/// What a changed tool definition does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinAction {
    /// Hidden and refused until approved.
    #[default]
    Quarantine,
    /// Logged loudly, still served.
    Warn,
}

fn default_pins_file() -> PathBuf {
    PathBuf::from("tool-pins.json")
}

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

fn default_admin_state_file() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from("state/control.redb"))
}
fn default_admin_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_admin_publish_timeout_ms() -> u64 {
    5000
}
fn default_admin_backend() -> Spanned<StateBackend> {
    Spanned::new(0..0, StateBackend::Embedded)
}
fn default_admin_poll_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}

/// `[auth]`: identity providers toolgate trusts besides API keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// JWT bearer tokens from the organisation's IdP. Default: none (API keys only).
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Sub-tokens minted by `toolgate token mint`. Default: none accepted.
    #[serde(default)]
    pub subtokens: Option<SubtokensConfig>,
}

/// `[auth.subtokens]`: bearer tokens an operator mints for one agent,
/// narrowed to a user, tools and an expiry, revocable at run time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtokensConfig {
    /// Directory of the signing key (`signing.key`, generated 0600 at first
    /// use), the ledger of minted tokens (`minted.jsonl`) and the revocation
    /// list (`revoked`), relative to the config file. Default `subtokens`.
    #[serde(default = "default_subtokens_dir")]
    pub dir: PathBuf,
    /// Longest lifetime `token mint` grants, seconds. Default 2592000 (30 days).
    #[serde(default = "default_subtoken_max_ttl_s")]
    pub max_ttl_s: u64,
}

fn default_subtokens_dir() -> PathBuf {
    PathBuf::from("subtokens")
}

fn default_subtoken_max_ttl_s() -> u64 {
    30 * 24 * 3600
}

/// `[auth.jwt]`: JWT bearer tokens signed by the IdP's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`, and the authorization server advertised in the
    /// protected resource metadata.
    pub issuer: Spanned<String>,
    /// toolgate's own resource URI (RFC 8707): tokens whose `aud` does not
    /// contain it are refused.
    pub audience: Spanned<String>,
    /// The IdP's JWKS, relative to the config file; re-read on reload.
    /// Exactly one of this and `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    /// The IdP's JWKS endpoint (`https://`, or `http://` on loopback only),
    /// fetched off the request path at start, every `jwks_refresh_s`, and
    /// when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    /// With `jwks_url`: PEM CA bundle for the IdP's certificate. Default:
    /// the system's trusted roots.
    #[serde(default)]
    pub jwks_ca_file: Option<Spanned<String>>,
    /// With `jwks_url`: how often the JWKS is fetched again, seconds. Default 300.
    #[serde(default = "default_jwks_refresh_s")]
    pub jwks_refresh_s: u64,
    /// With `jwks_url`: the soonest a token with an unknown `kid` triggers
    /// another fetch, seconds (so random `kid`s cannot flood the IdP). Default 10.
    #[serde(default = "default_jwks_refetch_min_s")]
    pub jwks_refetch_min_s: u64,
    /// Claim naming the agent (a configured `[[agents]] id`). Default `azp`;
    /// `client_id` is tried when it is absent.
    #[serde(default = "default_agent_claim")]
    pub agent_claim: String,
    /// Claim holding the end user's groups. Default none.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds. Default 30.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
}

fn default_jwks_refresh_s() -> u64 {
    300
}

fn default_jwks_refetch_min_s() -> u64 {
    10
}

fn default_agent_claim() -> String {
    "azp".to_owned()
}

fn default_leeway_s() -> u64 {
    30
}

/// `[upstreams.credential]`: a secret toolgate adds to every request it sends
/// an upstream. Exactly one of `env`, `file` and `command`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Header carrying the secret. Default `Authorization`.
    #[serde(default = "default_credential_header")]
    pub header: Spanned<String>,
    /// Text put before the secret, e.g. `Bearer `. Default empty.
    #[serde(default)]
    pub value_prefix: String,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<Spanned<String>>,
    /// File holding the secret (trimmed), relative to the config file;
    /// re-read when it changes.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// Command printing the secret on stdout (trimmed), run once at start.
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    /// An OAuth 2.0 client-credentials grant: toolgate fetches the access
    /// token, caches it and refreshes it before expiry, off the request path.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
}

/// `[upstreams.credential.oauth]`: where and how toolgate obtains an access
/// token for the upstream (RFC 6749 §4.4), sent as `Bearer <token>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The authorization server's token endpoint (`https://`, or `http://`
    /// on loopback only).
    pub token_url: Spanned<String>,
    /// The client id toolgate authenticates as.
    pub client_id: String,
    /// Environment variable holding the client secret. Exactly one of this
    /// and `client_secret_file`.
    #[serde(default)]
    pub client_secret_env: Option<Spanned<String>>,
    /// File holding the client secret, relative to the config file.
    #[serde(default)]
    pub client_secret_file: Option<Spanned<String>>,
    /// `scope` to request. Default none.
    #[serde(default)]
    pub scope: Option<String>,
    /// `resource` indicator (RFC 8707) to request, e.g. the upstream's URL.
    /// Default none.
    #[serde(default)]
    pub resource: Option<String>,
    /// PEM CA bundle for the token endpoint. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

fn default_credential_header() -> Spanned<String> {
    Spanned::new(0..0, "Authorization".to_owned())
}

/// `[output]`: limits of output filtering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Largest upstream result an output rule is applied to, bytes. Default
    /// 4194304; a larger result of a tool with output rules is refused rather
    /// than forwarded unfiltered.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            max_result_bytes: default_max_result_bytes(),
        }
    }
}

fn default_max_result_bytes() -> usize {
    4 * 1024 * 1024
}

/// `[[output_rules]]`: one output rule, applied to the results of the tools
/// (and agents) it names before they reach the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRuleConfig {
    /// Rule name, unique; appears in audit records.
    pub name: Spanned<String>,
    /// Exposed tool names the rule covers; `*` matches any run of
    /// characters (`crm__*` covers an upstream). Required, non-empty.
    pub tools: Vec<Spanned<String>>,
    /// Agent ids the rule applies to. Default: every agent.
    #[serde(default)]
    pub agents: Vec<Spanned<String>>,
    /// Paths removed from structured results (`$.card`, `$.customers[*].ssn`). Default none.
    #[serde(default)]
    pub drop_fields: Vec<Spanned<String>>,
    /// Paths whose value is replaced by a mask. Default none.
    #[serde(default)]
    pub mask_fields: Vec<Spanned<String>>,
    /// Detectors whose matches are masked anywhere in the result: `card`,
    /// `email`, `phone`, `iban`, `aws_key`, `github_token`, `slack_token`,
    /// `private_key`, `jwt`, or `secrets` for the last five. Default none.
    #[serde(default)]
    pub detectors: Vec<Spanned<String>>,
    /// Operator patterns masked anywhere in the result. Default none.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// Mask style: `label` (default), `last4` or `hash`.
    #[serde(default)]
    pub style: Option<Spanned<String>>,
    /// Conditions dropping array elements (`tier == "internal"`). Default none.
    #[serde(default)]
    pub drop_where: Vec<Spanned<String>>,
    /// Conditions refusing the whole result (`detected(private_key)`). Default none.
    #[serde(default)]
    pub refuse_when: Vec<Spanned<String>>,
    /// What the rule filters: `"results"` (default: what tools return),
    /// `"arguments"` (what agents send: data-loss prevention on outgoing
    /// calls; field paths are rooted at the arguments object) and/or
    /// `"descriptions"` (tool definitions in `tools/list`, e.g. to hide
    /// internal host names; paths rooted at the definition).
    #[serde(default)]
    pub applies_to: Vec<Spanned<String>>,
}

/// One operator pattern of an output rule: `{ name = "employee_id", regex = "EMP-[0-9]{6}" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Name in mask labels and audit records.
    pub name: Spanned<String>,
    /// Regular expression, Rust `regex` syntax.
    pub regex: Spanned<String>,
}

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

fn default_tls_min_version() -> Spanned<String> {
    Spanned::new(0..0, "1.2".to_owned())
}

/// `[[upstreams]]`: one upstream MCP server reached over streamable HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in audit records and, by default, as the tool-name prefix.
    pub name: Spanned<String>,
    /// Endpoint URL, e.g. `http://127.0.0.1:9101/mcp`.
    pub url: Spanned<String>,
    /// Prefix of this upstream's tools as agents see them: `{prefix}__{tool}`.
    /// Default: `name`. An empty prefix exposes bare tool names (one upstream at most).
    #[serde(default)]
    pub prefix: Option<Spanned<String>>,
    /// Time allowed for one call to this upstream, connect to last byte, ms. Default 30000.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest upstream response accepted, bytes. Default 16777216.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Idle keep-alive connections kept per shard. Default 64.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// MCP era to speak: `auto` (default: probe `server/discover`, fall back
    /// to the `initialize` handshake), `handshake`, or `stateless` (2026-07-28).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Credential toolgate injects into every request to this upstream.
    /// Default none. The agent's own `Authorization` is never forwarded.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
    /// For an `https://` URL: PEM CA certificates the upstream's
    /// certificate must chain to, relative to the config file. Default: the
    /// system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// How often the upstream's tool catalog is fetched again, seconds
    /// (changed definitions are caught by `[tool_pins]` at the next fetch).
    /// Default 300.
    #[serde(default = "default_catalog_refresh_s")]
    pub catalog_refresh_s: u64,
}

fn default_catalog_refresh_s() -> u64 {
    300
}

/// Which MCP era toolgate speaks to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// Probe, then fall back.
    #[default]
    Auto,
    /// `initialize` handshake and sessions (2024-11-05 … 2025-11-25).
    Handshake,
    /// Per-request envelope (2026-07-28).
    Stateless,
}

/// `[[agents]]`: one agent identity and its permission map entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Stable agent id, as it appears in audit records.
    pub id: Spanned<String>,
    /// Hex SHA-256 of the agent's API key (`toolgate key new` prints both).
    /// Optional for an agent that proves itself by client certificate or JWT.
    #[serde(default)]
    pub api_key_sha256: Option<Spanned<String>>,
    /// Names that identify the agent by its TLS client certificate: a DNS
    /// or URI subject alternative name (e.g. a SPIFFE id), or the subject
    /// common name. Needs `server.tls.client_ca_file`. Default none.
    #[serde(default)]
    pub client_cert_names: Vec<Spanned<String>>,
    /// Tools attached to the agent, by exposed name (`{prefix}__{tool}`).
    #[serde(default)]
    pub tools: Vec<Spanned<String>>,
    /// Groups the agent belongs to (`Toolgate::Group` in policies). Default none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the agent may name the end user it acts for in the
    /// `Toolgate-On-Behalf-Of` header. Default false: the header is refused.
    #[serde(default)]
    pub act_for_users: bool,
    /// Most `tools/call`s the agent may make, across all shards. Default:
    /// no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Attached tools usable only on behalf of some end users: (exposed
    /// tool, scope). Not a file key: set through the admin API.
    #[serde(skip)]
    pub scopes: Vec<(String, ToolScope)>,
}

/// A rate limit: a sustained rate and a burst allowance (GCRA, the
/// token-bucket equivalent that needs one atomic per limit).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained calls per second.
    pub calls_per_s: f64,
    /// Calls allowed back to back above the rate. Default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The end users an attached tool may be called for: any listed user, or
/// any user in a listed group. A call naming no user is out of scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolScope {
    /// User ids.
    pub users: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
}

/// `[[users]]`: an end user known to policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User id as agents name it.
    pub id: Spanned<String>,
    /// Groups the user belongs to (`Toolgate::Group` in policies).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[policies]`: Cedar policy files and the judge for escalations.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Cedar files, or directories whose `*.cedar` files are all read, relative
    /// to the config file. Default none: the permission map alone decides.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// Reload policies when a file changes (checked every second) and on SIGHUP. Default true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Endpoint asked to decide calls a `@judge` policy escalates.
    #[serde(default)]
    pub judge: Option<JudgeConfig>,
}

/// `[policies.judge]`: an approval service or reviewer for escalated calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// `http[s]://host:port/path` receiving a JSON description of the call.
    pub url: Spanned<String>,
    /// Time allowed for the answer, ms; no answer in time is a deny. Default 2000.
    #[serde(default = "default_judge_timeout_ms")]
    pub timeout_ms: u64,
    /// For an `https://` URL: PEM CA certificates the judge's certificate
    /// must chain to. Default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

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
    /// What a `tools/call` record keeps of the call's arguments: `digest`
    /// (default; SHA-256 of the arguments as forwarded), `omit`, or
    /// `redacted` (the arguments with every detector's matches masked,
    /// cut to 4 KiB). Never the raw arguments.
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
    #[default]
    Digest,
    /// Nothing.
    Omit,
    /// The arguments JSON with every built-in detector's matches masked,
    /// cut to [`crate::audit::MAX_REDACTED_ARGS`] bytes.
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

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_owned())
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    64
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_upstream_timeout_ms() -> u64 {
    30_000
}
fn default_max_response_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_pool_size() -> usize {
    64
}
fn default_audit_dir() -> PathBuf {
    PathBuf::from("audit")
}
fn default_ring_capacity() -> usize {
    65_536
}
fn default_fsync_interval_ms() -> u64 {
    10
}
fn default_true() -> bool {
    true
}
fn default_judge_timeout_ms() -> u64 {
    2_000
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_ack_timeout_ms() -> u64 {
    5_000
}
fn default_facility() -> u8 {
    13
}
fn default_app_name() -> String {
    "toolgate".to_owned()
}
fn default_batch_records() -> usize {
    256
}
fn default_poll_interval_ms() -> u64 {
    200
}
fn default_retry_initial_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_soar_max_keys() -> usize {
    10_000
}
fn default_io_timeout_ms() -> u64 {
    5_000
}
fn default_max_message_bytes() -> usize {
    8192
}
fn default_batch_bytes() -> usize {
    1024 * 1024
}
fn default_sourcetype() -> String {
    "toolgate:audit".to_owned()
}
/// `[metrics]`: Prometheus metrics on a listener of their own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics`, e.g. `127.0.0.1:9464`. Default: none (off).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
}

fn default_log_level() -> String {
    "info".to_owned()
}
fn default_log_format() -> String {
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
    /// Parsed upstream URLs, index-aligned with `config.upstreams`.
    pub upstream_urls: Vec<UpstreamUrl>,
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
    /// `credential.file` of each upstream resolved against the config
    /// file's directory, index-aligned with `config.upstreams`.
    pub credential_files: Vec<Option<PathBuf>>,
    /// `admin.listen`, parsed (a loopback address unless `[admin.tls]` is set).
    pub admin_listen: Option<SocketAddr>,
    /// `[admin.tls]` files resolved against the config file's directory.
    pub admin_tls: Option<TlsFiles>,
    /// `admin.state_file` resolved against the config file's directory.
    pub admin_state_file: PathBuf,
    /// `admin.postgres_password`, resolved (`postgres` backend only).
    pub admin_postgres_password: Option<crate::secret::SecretSource>,
    /// `[server.tls]` files resolved against the config file's directory.
    pub tls: Option<TlsFiles>,
    /// `ca_file` of each upstream, resolved, index-aligned with `upstream_urls`.
    pub upstream_ca_files: Vec<Option<PathBuf>>,
    /// The judge's `ca_file`, resolved.
    pub judge_ca_file: Option<PathBuf>,
    /// `auth.subtokens.dir` resolved against the config file's directory.
    pub subtoken_dir: Option<PathBuf>,
    /// The directory relative paths in the configuration resolve against.
    pub base: PathBuf,
    /// `tool_pins.file`, resolved.
    pub pins_file: Option<PathBuf>,
}

impl ValidConfig {
    /// The directory relative paths in the configuration resolve against.
    pub fn base_dir(&self) -> &Path {
        &self.base
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

/// Reads, parses and checks a configuration file.
pub fn load(path: &Path) -> Result<ValidConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        origin: origin.clone(),
        errors: vec![ConfigError {
            line: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut v = parse(&text, &origin, &base)?;
    v.path = Some(path.to_path_buf());
    Ok(v)
}

/// Parses and checks configuration text; `base` resolves relative paths.
pub fn parse(text: &str, origin: &str, base: &Path) -> Result<ValidConfig, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        origin: origin.to_owned(),
        errors,
    };
    let config: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        fail(vec![ConfigError {
            line,
            message: first_line(e.message()),
        }])
    })?;
    validate(config, text, base).map_err(fail)
}

fn first_line(m: &str) -> String {
    m.lines().next().unwrap_or(m).trim().to_owned()
}

/// 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn validate(config: Config, text: &str, base: &Path) -> Result<ValidConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let at = |s: &std::ops::Range<usize>| {
        if s.end == 0 {
            None
        } else {
            Some(line_of(text, s.start))
        }
    };
    let mut err = |line: Option<usize>, message: String| errors.push(ConfigError { line, message });

    let listen = match config.server.listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                at(&config.server.listen.span()),
                format!(
                    "`{}` is not an address and port such as `127.0.0.1:8080`",
                    config.server.listen.get_ref()
                ),
            );
            None
        }
    };
    if let Some(s) = &config.server.shards {
        if *s.get_ref() == 0 || *s.get_ref() > 1024 {
            err(
                at(&s.span()),
                format!("`shards = {}` must be between 1 and 1024", s.get_ref()),
            );
        }
    }
    if config.server.max_header_bytes < 1024 {
        err(
            None,
            "`server.max_header_bytes` must be at least 1024".to_owned(),
        );
    }
    if config.server.max_headers == 0 {
        err(None, "`server.max_headers` must be at least 1".to_owned());
    }

    let mut upstream_urls = Vec::new();
    let mut upstream_ca_files = Vec::new();
    let mut credential_files = Vec::new();
    let mut namer = ToolNamer::default();
    for u in &config.upstreams {
        let name = u.name.get_ref();
        if config
            .upstreams
            .iter()
            .filter(|o| o.name.get_ref() == name)
            .count()
            > 1
        {
            err(
                at(&u.name.span()),
                format!("upstream name `{name}` is used more than once"),
            );
        }
        let checked = check_upstream_entry(u, base, &mut err, &at);
        if let Some(url) = checked.url {
            upstream_urls.push(url);
            upstream_ca_files.push(checked.ca_file);
        }
        let (prefix, pspan) = match &u.prefix {
            Some(p) => (p.get_ref().clone(), p.span()),
            None => (name.clone(), u.name.span()),
        };
        if let Err(e) = namer.add(&prefix) {
            err(at(&pspan), e);
        }
        credential_files.push(checked.credential_file);
    }

    for a in &config.agents {
        let id = a.id.get_ref();
        if id.is_empty() {
            err(at(&a.id.span()), "agent id must not be empty".to_owned());
        }
        if config
            .agents
            .iter()
            .filter(|o| o.id.get_ref() == id)
            .count()
            > 1
        {
            err(
                at(&a.id.span()),
                format!("agent id `{id}` is used more than once"),
            );
        }
        if let Some(key) = &a.api_key_sha256 {
            let h = key.get_ref();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                err(
                    at(&key.span()),
                    format!("agent `{id}`: `api_key_sha256` must be 64 hex digits (`toolgate key new` prints one)"),
                );
            } else if config
                .agents
                .iter()
                .filter_map(|o| o.api_key_sha256.as_ref())
                .filter(|o| o.get_ref().eq_ignore_ascii_case(h))
                .count()
                > 1
            {
                err(
                    at(&key.span()),
                    format!("agent `{id}`: the same API key hash is given to another agent"),
                );
            }
        } else if a.client_cert_names.is_empty()
            && config.auth.jwt.is_none()
            && config.auth.subtokens.is_none()
        {
            err(
                at(&a.id.span()),
                format!("agent `{id}` has no way to prove itself: give it `api_key_sha256`, `client_cert_names` (with `server.tls.client_ca_file`), or configure `[auth.jwt]` or `[auth.subtokens]`"),
            );
        }
        let mtls = config
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        for n in &a.client_cert_names {
            if !mtls {
                err(
                    at(&n.span()),
                    format!("agent `{id}`: `client_cert_names` needs `server.tls.client_ca_file` (client certificates are not verified otherwise)"),
                );
                break;
            }
            if n.get_ref().is_empty() {
                err(
                    at(&n.span()),
                    format!("agent `{id}`: empty client certificate name"),
                );
            } else if config
                .agents
                .iter()
                .flat_map(|o| &o.client_cert_names)
                .filter(|o| o.get_ref() == n.get_ref())
                .count()
                > 1
            {
                err(
                    at(&n.span()),
                    format!("agent `{id}`: client certificate name `{}` is given to more than one agent", n.get_ref()),
                );
            }
        }
        if let Some(r) = &a.rate_limit {
            if !(r.calls_per_s.is_finite() && r.calls_per_s > 0.0) || r.burst == Some(0) {
                err(
                    at(&a.id.span()),
                    format!("agent `{id}`: `rate_limit` needs `calls_per_s` above 0 and `burst` of at least 1"),
                );
            }
        }
        for t in &a.tools {
            if namer.route(t.get_ref()).is_none() {
                err(
                    at(&t.span()),
                    format!(
                        "agent `{id}`: tool `{}` names no configured upstream (expected `{{prefix}}__{{tool}}`)",
                        t.get_ref()
                    ),
                );
            }
        }
    }

    let mut policy_files = Vec::new();
    for f in &config.policies.files {
        let p = Path::new(f.get_ref());
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|x| x.extension().is_some_and(|e| e == "cedar"))
                .collect();
            found.sort();
            if found.is_empty() {
                err(
                    at(&f.span()),
                    format!("policy directory `{}` has no `.cedar` files", f.get_ref()),
                );
            }
            policy_files.extend(found);
        } else if p.is_file() {
            policy_files.push(p);
        } else {
            err(
                at(&f.span()),
                format!("policy file `{}` does not exist", f.get_ref()),
            );
        }
    }
    let mut judge_ca_file = None;
    let judge_url = match &config.policies.judge {
        Some(j) => match UpstreamUrl::parse(j.url.get_ref()) {
            Ok(u) => {
                judge_ca_file = ca_file(&j.ca_file, u.tls, base, &mut err, &at);
                Some(u)
            }
            Err(e) => {
                err(at(&j.url.span()), format!("judge: {e}"));
                None
            }
        },
        None => None,
    };
    for u in &config.users {
        if u.id.get_ref().is_empty() {
            err(at(&u.id.span()), "user id must not be empty".to_owned());
        }
        if config
            .users
            .iter()
            .filter(|o| o.id.get_ref() == u.id.get_ref())
            .count()
            > 1
        {
            err(
                at(&u.id.span()),
                format!("user id `{}` is used more than once", u.id.get_ref()),
            );
        }
    }
    let jwt = config
        .auth
        .jwt
        .as_ref()
        .and_then(|j| validate_jwt(j, base, &mut err, &at));
    let mut jwks_ca_file = None;
    let jwks_url = match config
        .auth
        .jwt
        .as_ref()
        .and_then(|j| j.jwks_url.as_ref().map(|u| (j, u)))
    {
        Some((j, u)) => match UpstreamUrl::parse(u.get_ref()) {
            Ok(url) if !url.tls && !is_loopback(url.server_name()) => {
                err(
                    at(&u.span()),
                    "`jwks_url` must be https:// (plain http only to a loopback address): keys fetched in the clear could be replaced".to_owned(),
                );
                None
            }
            Ok(url) => {
                jwks_ca_file = ca_file(&j.jwks_ca_file, url.tls, base, &mut err, &at);
                Some(url)
            }
            Err(e) => {
                err(at(&u.span()), format!("`jwks_url`: {e}"));
                None
            }
        },
        None => None,
    };
    let output_rules = validate_output_rules(&config, &namer, &mut |l, m| err(l, m), &at);

    if config.audit.ring_capacity < 16 {
        err(None, "`audit.ring_capacity` must be at least 16".to_owned());
    }
    if config.audit.segment_bytes < 1024 {
        err(
            None,
            "`audit.segment_bytes` must be at least 1024".to_owned(),
        );
    }
    if config.audit.segment_max_age_s == Some(0) {
        err(
            None,
            "`audit.segment_max_age_s` must be above 0 (leave it out to rotate by size only)"
                .to_owned(),
        );
    }
    if config.audit.retain_days == Some(0) || config.audit.retain_bytes == Some(0) {
        err(
            None,
            "`audit.retain_days` and `audit.retain_bytes` must be above 0 (leave them out to keep everything)".to_owned(),
        );
    }
    if let (Some(e), Some(_)) = (
        &config.audit.checkpoint_key_env,
        &config.audit.checkpoint_key_file,
    ) {
        err(
            at(&e.span()),
            "set at most one of `checkpoint_key_env` and `checkpoint_key_file`".to_owned(),
        );
    }
    let mut sink_targets = Vec::new();
    for (i, s) in config.audit.sinks.iter().enumerate() {
        let name = s.name.get_ref();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            || name.starts_with('.')
        {
            err(
                at(&s.name.span()),
                format!("sink name `{name}` must be letters, digits, `_`, `-` or `.`, not starting with `.`"),
            );
        }
        if config.audit.sinks[..i]
            .iter()
            .any(|o| o.name.get_ref() == name)
        {
            err(
                at(&s.name.span()),
                format!("sink name `{name}` is used more than once"),
            );
        }
        sink_targets.push(validate_sink(s, base, &mut err, &at));
    }
    match config.log.format.as_str() {
        "pretty" | "json" => {}
        other => err(
            None,
            format!("`log.format = \"{other}\"` must be `pretty` or `json`"),
        ),
    }

    if let Some(t) = &config.server.tls {
        check_tls(t, base, &mut err, &at);
    }
    let metrics_listen = match &config.metrics.listen {
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    at(&l.span()),
                    format!(
                        "`{}` is not an address and port such as `127.0.0.1:9464`",
                        l.get_ref()
                    ),
                );
                None
            }
        },
        None => None,
    };
    let admin_listen = validate_admin(&config.admin, base, &mut err, &at);
    let admin_postgres_password = validate_admin_backend(&config.admin, base, &mut err, &at);
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    match listen {
        Some(listen) if errors.is_empty() => {
            let audit_dir = if config.audit.dir.is_absolute() {
                config.audit.dir.clone()
            } else {
                base.join(&config.audit.dir)
            };
            let checkpoint_key_file = config.audit.checkpoint_key_file.as_ref().map(|f| {
                let f = f.get_ref();
                if f.is_absolute() {
                    f.clone()
                } else {
                    base.join(f)
                }
            });
            let config_admin_state_file = config.admin.state_file.get_ref().clone();
            let jwks_file = config
                .auth
                .jwt
                .as_ref()
                .and_then(|j| j.jwks_file.as_ref())
                .map(|f| base.join(f.get_ref()));
            let subtoken_dir = config.auth.subtokens.as_ref().map(|s| base.join(&s.dir));
            let pins_file = config.tool_pins.as_ref().map(|p| base.join(&p.file));
            let tls = config.server.tls.as_ref().map(|t| tls_files(t, base));
            let admin_tls = config.admin.tls.as_ref().map(|t| tls_files(t, base));
            Ok(ValidConfig {
                config,
                listen,
                upstream_urls,
                audit_dir,
                checkpoint_key_file,
                sink_targets,
                namer,
                policy_files,
                judge_url,
                path: None,
                output_rules,
                metrics_listen,
                jwt,
                jwks_file,
                jwks_url,
                jwks_ca_file,
                credential_files,
                tls,
                upstream_ca_files,
                judge_ca_file,
                subtoken_dir,
                base: base.to_path_buf(),
                pins_file,
                admin_listen,
                admin_tls,
                admin_state_file: resolve(base, config_admin_state_file),
                admin_postgres_password,
            })
        }
        _ => Err(errors),
    }
}

/// Checks one `[[audit.sinks]]` entry beyond its name; returns its resolved
/// endpoint and files.
fn validate_sink(
    s: &SinkConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> SinkTarget {
    let name = s.name.get_ref();
    let line = at(&s.name.span());
    let resolve = |p: &Spanned<PathBuf>| {
        let p = p.get_ref();
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let mut t = SinkTarget {
        ca_file: s.ca_file.as_ref().map(resolve),
        cert_file: s.cert_file.as_ref().map(resolve),
        key_file: s.key_file.as_ref().map(resolve),
        ..SinkTarget::default()
    };
    if s.cert_file.is_some() != s.key_file.is_some() {
        err(
            line,
            format!("sink `{name}`: set both `cert_file` and `key_file`, or neither"),
        );
    }
    let mut host = None;
    if s.kind.is_http() {
        for (key, set) in [
            ("transport", s.transport.is_some()),
            ("address", s.address.is_some()),
        ] {
            if set {
                err(
                    line,
                    format!("sink `{name}`: `{key}` is for syslog sinks; HTTP sinks take `url`"),
                );
            }
        }
        match &s.url {
            None => err(line, format!("sink `{name}`: `url` is required")),
            Some(u) => match SinkUrl::parse(u.get_ref()) {
                Ok(url) => {
                    host = Some(url.bare_host());
                    t.url = Some(url);
                }
                Err(e) => err(at(&u.span()), format!("sink `{name}`: {e}")),
            },
        }
        if s.batch_records == 0 || s.batch_bytes < 1024 {
            err(
                line,
                format!("sink `{name}`: `batch_records` must be at least 1 and `batch_bytes` at least 1024"),
            );
        }
        if let Some(tok) = &s.token {
            let sources = tok.env.is_some() as usize
                + tok.file.is_some() as usize
                + tok.command.is_some() as usize;
            if sources != 1 {
                err(
                    line,
                    format!(
                        "sink `{name}`: `token` needs exactly one of `env`, `file` and `command`"
                    ),
                );
            }
            let header = tok.header.as_deref().unwrap_or("Authorization");
            if header.is_empty()
                || !header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                || RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str())
            {
                err(
                    line,
                    format!("sink `{name}`: token header `{header}` is not a header name toolgate may send"),
                );
            }
            if tok
                .value_prefix
                .as_deref()
                .is_some_and(|p| p.bytes().any(|b| b.is_ascii_control()))
            {
                err(
                    line,
                    format!("sink `{name}`: token `value_prefix` must not hold control characters"),
                );
            }
            t.token = match (&tok.env, &tok.file, &tok.command) {
                (Some(v), _, _) => Some(crate::secret::SecretSource::Env(v.get_ref().clone())),
                (None, Some(f), _) => {
                    Some(crate::secret::SecretSource::File(base.join(f.get_ref())))
                }
                (None, None, Some(c)) => {
                    Some(crate::secret::SecretSource::Command(c.get_ref().clone()))
                }
                (None, None, None) => None,
            };
        } else if s.kind == SinkKind::SplunkHec {
            err(
                line,
                format!("sink `{name}`: `splunk_hec` needs a `token` (`[audit.sinks.token]` with `env`, `file` or `command`)"),
            );
        }
        for (h, v) in &s.headers {
            let bad_name = h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                || RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str())
                || h.eq_ignore_ascii_case("content-encoding");
            if bad_name || v.bytes().any(|b| b.is_ascii_control()) {
                err(
                    line,
                    format!("sink `{name}`: header `{h}` is not a header toolgate may send with that value"),
                );
            }
        }
    } else {
        if s.url.is_some() || s.token.is_some() || !s.headers.is_empty() || s.gzip {
            err(
                line,
                format!("sink `{name}`: `url`, `token`, `headers` and `gzip` are for HTTP sinks; syslog sinks take `transport` and `address`"),
            );
        }
        let transport = s.transport.as_ref().map(|t| *t.get_ref());
        if transport.is_none() {
            err(
                line,
                format!("sink `{name}`: `transport` is required (`udp`, `tcp` or `tls`)"),
            );
        }
        match &s.address {
            None => err(line, format!("sink `{name}`: `address` is required")),
            Some(a) => match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => {
                    host = Some(addr.ip().to_string());
                    t.address = Some(addr);
                }
                Err(_) => err(
                    at(&a.span()),
                    format!(
                        "sink `{name}`: `{}` is not an address and port such as `127.0.0.1:5514`",
                        a.get_ref()
                    ),
                ),
            },
        }
        if transport != Some(SinkTransport::Tls)
            && (s.ca_file.is_some() || s.cert_file.is_some() || s.server_name.is_some())
        {
            err(
                line,
                format!("sink `{name}`: `ca_file`, `server_name`, `cert_file` and `key_file` need `transport = \"tls\"`"),
            );
        }
        if s.facility > 23 {
            err(
                line,
                format!("sink `{name}`: `facility = {}` must be 0 to 23", s.facility),
            );
        }
        if s.batch_records == 0 || s.max_message_bytes < 480 {
            err(
                line,
                format!("sink `{name}`: `batch_records` must be at least 1 and `max_message_bytes` at least 480"),
            );
        }
    }
    validate_soar_rules(s, err, at);
    t.server_name = match &s.server_name {
        Some(n) => n.get_ref().clone(),
        None => host.unwrap_or_default(),
    };
    t
}

/// Checks a sink's `[[audit.sinks.rules]]`: only `soar` sinks have them,
/// and those need at least one, each complete for its kind.
fn validate_soar_rules(
    s: &SinkConfig,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) {
    let name = s.name.get_ref();
    let line = at(&s.name.span());
    if s.kind != SinkKind::Soar {
        if !s.rules.is_empty() {
            err(line, format!("sink `{name}`: `rules` are for `soar` sinks"));
        }
        return;
    }
    if s.rules.is_empty() {
        err(
            line,
            format!("sink `{name}`: a `soar` sink needs at least one `[[audit.sinks.rules]]`"),
        );
    }
    if s.max_keys == 0 {
        err(
            line,
            format!("sink `{name}`: `max_keys` must be at least 1"),
        );
    }
    if s.format != SinkFormat::Ocsf || s.gzip {
        err(
            line,
            format!(
                "sink `{name}`: `format` and `gzip` do not apply to `soar` sinks (alerts are JSON)"
            ),
        );
    }
    for (i, r) in s.rules.iter().enumerate() {
        let rule = r.name.get_ref();
        let rline = at(&r.name.span());
        if rule.is_empty() || rule.len() > 128 || rule.chars().any(char::is_control) {
            err(
                rline,
                format!("sink `{name}`: rule name `{rule}` must be 1 to 128 printable characters"),
            );
        }
        if s.rules[..i].iter().any(|o| o.name.get_ref() == rule) {
            err(
                rline,
                format!("sink `{name}`: rule name `{rule}` is used more than once"),
            );
        }
        let rate = matches!(r.kind, SoarRuleKind::DenyRate | SoarRuleKind::CallRate);
        if rate {
            if r.threshold.is_none_or(|t| t == 0) || r.window_s.is_none_or(|w| w == 0) {
                err(
                    rline,
                    format!("sink `{name}`: rule `{rule}` needs `threshold` and `window_s`, both at least 1"),
                );
            }
            if r.threshold.is_some_and(|t| t > 10_000) {
                err(
                    rline,
                    format!("sink `{name}`: rule `{rule}`: `threshold` must be at most 10000"),
                );
            }
        } else if r.threshold.is_some() || r.window_s.is_some() {
            err(
                rline,
                format!("sink `{name}`: rule `{rule}`: `threshold` and `window_s` are for `deny_rate` and `call_rate` rules"),
            );
        }
        if !r.judge_outcomes.is_empty() && r.kind != SoarRuleKind::Judge {
            err(
                rline,
                format!("sink `{name}`: rule `{rule}`: `judge_outcomes` is for `judge` rules"),
            );
        }
        for o in &r.judge_outcomes {
            if !["allow", "deny", "timeout", "unavailable", "invalid"].contains(&o.as_str()) {
                err(
                    rline,
                    format!("sink `{name}`: rule `{rule}`: judge outcome `{o}` is not one of allow, deny, timeout, unavailable, invalid"),
                );
            }
        }
    }
}

/// Whether `host` (a name or an IP address, unbracketed) is this machine.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a `ca_file` key (only for `https://`, must exist) and resolves it.
fn ca_file(
    f: &Option<Spanned<String>>,
    tls: bool,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<PathBuf> {
    let f = f.as_ref()?;
    if !tls {
        err(
            at(&f.span()),
            "`ca_file` is only used with an `https://` URL".to_owned(),
        );
        return None;
    }
    let path = base.join(f.get_ref());
    if let Err(e) = std::fs::metadata(&path) {
        err(
            at(&f.span()),
            format!("cannot read `{}`: {e}", path.display()),
        );
        return None;
    }
    Some(path)
}

/// Checks a `[server.tls]` or `[admin.tls]` table: the TLS version, and
/// that every file it names exists.
fn check_tls(
    t: &ServerTlsConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) {
    if !matches!(t.min_version.get_ref().as_str(), "1.2" | "1.3") {
        err(
            at(&t.min_version.span()),
            format!(
                "`min_version` must be \"1.2\" or \"1.3\", not `{}`",
                t.min_version.get_ref()
            ),
        );
    }
    let files = [
        Some(&t.cert_file),
        Some(&t.key_file),
        t.client_ca_file.as_ref(),
    ];
    for f in files.into_iter().flatten() {
        let path = base.join(f.get_ref());
        if let Err(e) = std::fs::metadata(&path) {
            err(
                at(&f.span()),
                format!("cannot read `{}`: {e}", path.display()),
            );
        }
    }
}

/// A TLS table's files resolved against `base`.
fn tls_files(t: &ServerTlsConfig, base: &Path) -> TlsFiles {
    TlsFiles {
        cert: base.join(t.cert_file.get_ref()),
        key: base.join(t.key_file.get_ref()),
        client_ca: t.client_ca_file.as_ref().map(|c| base.join(c.get_ref())),
        client_auth: t.client_auth,
        tls13_only: t.min_version.get_ref() == "1.3",
    }
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Checks `[admin]`: a loopback listener unless `[admin.tls]` is set (an
/// admin token must never cross a network in clear), and well-formed,
/// distinct credentials whenever it is on.
fn validate_admin(
    admin: &AdminConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<SocketAddr> {
    if let Some(t) = &admin.tls {
        check_tls(t, base, err, at);
    }
    let Some(listen) = admin.listen.as_ref() else {
        if admin.tls.is_some() {
            err(
                None,
                "`[admin.tls]` is set but `admin.listen` is not: the admin API is off".to_owned(),
            );
        }
        return None;
    };
    let addr = match listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            err(
                at(&listen.span()),
                format!(
                    "`{}` is not an address and port such as `127.0.0.1:9091`",
                    listen.get_ref()
                ),
            );
            return None;
        }
    };
    if !addr.ip().is_loopback() && admin.tls.is_none() {
        err(
            at(&listen.span()),
            format!(
                "`admin.listen = \"{}\"` is not a loopback address: that needs `[admin.tls]` (`cert_file`, `key_file`), so admin tokens never cross the network in clear; or listen on `127.0.0.1`",
                listen.get_ref()
            ),
        );
    }
    if admin.tokens.is_empty() {
        err(
            at(&listen.span()),
            "`admin.listen` is set but no `[[admin.tokens]]` is configured: the admin API needs a credential".to_owned(),
        );
    }
    if admin.max_body_bytes < 1024 {
        err(
            None,
            "`admin.max_body_bytes` must be at least 1024".to_owned(),
        );
    }
    for (i, t) in admin.tokens.iter().enumerate() {
        let name = t.name.get_ref();
        if name.is_empty() {
            err(
                at(&t.name.span()),
                "admin token name must not be empty".to_owned(),
            );
        }
        if admin.tokens[..i].iter().any(|o| o.name.get_ref() == name) {
            err(
                at(&t.name.span()),
                format!("admin token name `{name}` is used more than once"),
            );
        }
        let h = t.token_sha256.get_ref();
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            err(
                at(&t.token_sha256.span()),
                format!("admin token `{name}`: `token_sha256` must be 64 hex digits (`toolgate key new` prints one)"),
            );
        } else if admin.tokens[..i]
            .iter()
            .any(|o| o.token_sha256.get_ref().eq_ignore_ascii_case(h))
        {
            err(
                at(&t.token_sha256.span()),
                format!(
                    "admin token `{name}`: the same token hash is given to another admin token"
                ),
            );
        }
    }
    Some(addr)
}

/// Checks the control-state backend keys of `[admin]`; returns the
/// Postgres password's source.
fn validate_admin_backend(
    admin: &AdminConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<crate::secret::SecretSource> {
    let backend = &admin.backend;
    if *backend.get_ref() == StateBackend::Embedded {
        if let Some(u) = &admin.postgres_url {
            err(
                at(&u.span()),
                "`admin.postgres_url` is set but `admin.backend` is not `\"postgres\"`".to_owned(),
            );
        }
        if admin.postgres_password.is_some() {
            err(
                None,
                "`[admin.postgres_password]` is set but `admin.backend` is not `\"postgres\"`"
                    .to_owned(),
            );
        }
        return None;
    }
    if admin.listen.is_none() {
        err(
            at(&backend.span()),
            "`admin.backend = \"postgres\"` needs `admin.listen`: the control state applies only with the admin API on".to_owned(),
        );
    }
    match &admin.postgres_url {
        None => err(
            at(&backend.span()),
            "`admin.backend = \"postgres\"` needs `admin.postgres_url`, such as `postgres://toolgate@127.0.0.1:5432/toolgate`".to_owned(),
        ),
        Some(u) => {
            let url = u.get_ref();
            let rest = url
                .strip_prefix("postgres://")
                .or_else(|| url.strip_prefix("postgresql://"));
            match rest {
                None => err(
                    at(&u.span()),
                    "`admin.postgres_url` must start with `postgres://`, such as `postgres://toolgate@127.0.0.1:5432/toolgate`".to_owned(),
                ),
                Some(rest) => {
                    let authority = rest.split(['/', '?']).next().unwrap_or("");
                    let has_password = authority
                        .rsplit_once('@')
                        .is_some_and(|(user, _)| user.contains(':'));
                    let query_password = rest
                        .split_once('?')
                        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
                    if has_password || query_password {
                        err(
                            at(&u.span()),
                            "`admin.postgres_url` must not hold a password: give it with `[admin.postgres_password]` (`env`, `file` or `command`)".to_owned(),
                        );
                    }
                }
            }
        }
    }
    let poll = *admin.poll_interval_ms.get_ref();
    if !(10..=1000).contains(&poll) {
        err(
            at(&admin.poll_interval_ms.span()),
            format!("`admin.poll_interval_ms = {poll}` must be between 10 and 1000"),
        );
    }
    let p = admin.postgres_password.as_ref()?;
    match (&p.env, &p.file, &p.command) {
        (Some(v), None, None) => Some(crate::secret::SecretSource::Env(v.get_ref().clone())),
        (None, Some(f), None) => Some(crate::secret::SecretSource::File(base.join(f.get_ref()))),
        (None, None, Some(c)) if !c.get_ref().is_empty() => {
            Some(crate::secret::SecretSource::Command(c.get_ref().clone()))
        }
        _ => {
            err(
                None,
                "`[admin.postgres_password]` needs exactly one of `env`, `file` or a non-empty `command`".to_owned(),
            );
            None
        }
    }
}

/// Checks `[auth.jwt]` and parses its JWKS.
fn validate_jwt(
    j: &JwtConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<std::sync::Arc<crate::jwt::Verifier>> {
    for (key, v) in [("issuer", &j.issuer), ("audience", &j.audience)] {
        if v.get_ref().is_empty() {
            err(at(&v.span()), format!("`auth.jwt.{key}` must not be empty"));
        }
    }
    if j.agent_claim.is_empty() {
        err(None, "`auth.jwt.agent_claim` must not be empty".to_owned());
    }
    let rules = crate::jwt::ClaimRules {
        issuer: j.issuer.get_ref().clone(),
        audience: j.audience.get_ref().clone(),
        agent_claim: j.agent_claim.clone(),
        groups_claim: j.groups_claim.clone(),
        leeway_s: j.leeway_s,
    };
    let (file, text) = match (&j.jwks_file, &j.jwks_url) {
        (Some(f), None) => {
            let path = base.join(f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(t) => (f, t),
                Err(e) => {
                    err(
                        at(&f.span()),
                        format!("cannot read the JWKS file `{}`: {e}", f.get_ref()),
                    );
                    return None;
                }
            }
        }
        // Keys arrive from the URL once running; until then none verify.
        (None, Some(_)) => {
            return Some(std::sync::Arc::new(crate::jwt::Verifier::without_keys(
                rules,
            )));
        }
        _ => {
            err(
                at(&j.issuer.span()),
                "`[auth.jwt]` needs exactly one of `jwks_file` and `jwks_url`".to_owned(),
            );
            return None;
        }
    };
    if j.jwks_refresh_s == 0 {
        err(None, "`auth.jwt.jwks_refresh_s` must be above 0".to_owned());
    }
    match crate::jwt::Verifier::from_jwks(&text, rules) {
        Ok(v) => Some(std::sync::Arc::new(v)),
        Err(e) => {
            err(at(&file.span()), format!("JWKS `{}` {e}", file.get_ref()));
            None
        }
    }
}

/// Headers toolgate writes itself: a credential may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "accept",
    "transfer-encoding",
    "connection",
    "mcp-protocol-version",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
];

/// One `[[upstreams]]` entry, checked on its own: its parsed URL (when it
/// parses) and resolved files.
#[derive(Debug, Clone)]
pub struct CheckedUpstream {
    /// The endpoint, `None` when the URL does not parse.
    pub url: Option<UpstreamUrl>,
    /// `ca_file`, resolved.
    pub ca_file: Option<PathBuf>,
    /// `credential.file`, resolved.
    pub credential_file: Option<PathBuf>,
}

/// What the configuration requires of one upstream entry by itself (name
/// syntax, URL, `ca_file`, prefix, limits, credential); clashes with other
/// upstreams are checked by the caller.
fn check_upstream_entry(
    u: &UpstreamConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> CheckedUpstream {
    let name = u.name.get_ref();
    if !is_upstream_name(name) {
        err(
            at(&u.name.span()),
            format!("upstream name `{name}` must be non-empty letters, digits, `_`, `-` or `.`"),
        );
    }
    let mut checked = CheckedUpstream {
        url: None,
        ca_file: None,
        credential_file: None,
    };
    match UpstreamUrl::parse(u.url.get_ref()) {
        Ok(url) => {
            checked.ca_file = ca_file(&u.ca_file, url.tls, base, err, at);
            checked.url = Some(url);
        }
        Err(e) => err(at(&u.url.span()), format!("upstream `{name}`: {e}")),
    }
    let (prefix, pspan) = match &u.prefix {
        Some(p) => (p.get_ref().as_str(), p.span()),
        None => (name.as_str(), u.name.span()),
    };
    if prefix.contains("__") {
        err(
            at(&pspan),
            format!("prefix `{prefix}` must not contain `__`"),
        );
    }
    if u.catalog_refresh_s == 0 {
        err(
            at(&u.name.span()),
            format!("upstream `{name}`: `catalog_refresh_s` must be above 0"),
        );
    }
    if u.timeout_ms == 0 {
        err(
            at(&u.name.span()),
            format!("upstream `{name}`: `timeout_ms` must be above 0"),
        );
    }
    checked.credential_file = validate_credential(u, base, err, at);
    checked
}

/// Whether `name` is a valid upstream name: letters, digits, `_`, `-`, `.`.
pub fn is_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Checks one upstream entry that does not come from the file (the admin
/// API's), exactly as the configuration loader checks a `[[upstreams]]`
/// entry, relative paths resolving against `base`. Errors: one message per
/// problem.
pub fn check_upstream(u: &UpstreamConfig, base: &Path) -> Result<CheckedUpstream, Vec<String>> {
    let mut errors = Vec::new();
    let checked = check_upstream_entry(
        u,
        base,
        &mut |_, m| errors.push(m),
        &|_: &std::ops::Range<usize>| None,
    );
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

/// Checks an upstream's `[upstreams.credential]`; returns its resolved file.
fn validate_credential(
    u: &UpstreamConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<PathBuf> {
    let c = u.credential.as_ref()?;
    let name = u.name.get_ref();
    let header = c.header.get_ref();
    let line = at(&c.header.span()).or(at(&u.name.span()));
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        err(
            line,
            format!("upstream `{name}`: credential header `{header}` is not a header name"),
        );
    } else if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
        err(
            line,
            format!("upstream `{name}`: credential header `{header}` is one toolgate sets itself"),
        );
    }
    if c.value_prefix.bytes().any(|b| b.is_ascii_control()) {
        err(
            line,
            format!(
                "upstream `{name}`: credential `value_prefix` must not hold control characters"
            ),
        );
    }
    let sources = c.env.is_some() as usize
        + c.file.is_some() as usize
        + c.command.is_some() as usize
        + c.oauth.is_some() as usize;
    if sources != 1 {
        err(
            at(&u.name.span()),
            format!(
                "upstream `{name}`: credential needs exactly one of `env`, `file`, `command` and `oauth`"
            ),
        );
    }
    if let Some(o) = &c.oauth {
        if !c.value_prefix.is_empty() {
            err(
                line,
                format!("upstream `{name}`: an `oauth` credential is always sent as `Bearer <token>`; drop `value_prefix`"),
            );
        }
        match UpstreamUrl::parse(o.token_url.get_ref()) {
            Ok(url) if !url.tls && !is_loopback(url.server_name()) => err(
                at(&o.token_url.span()),
                format!("upstream `{name}`: `token_url` must be https:// (plain http only to a loopback address): the client secret would travel in the clear"),
            ),
            Ok(url) => {
                ca_file(&o.ca_file, url.tls, base, err, at);
            }
            Err(e) => err(at(&o.token_url.span()), format!("upstream `{name}`: `token_url`: {e}")),
        }
        if o.client_id.is_empty() {
            err(
                line,
                format!("upstream `{name}`: `oauth.client_id` must not be empty"),
            );
        }
        if o.client_secret_env.is_some() == o.client_secret_file.is_some() {
            err(
                at(&o.token_url.span()),
                format!("upstream `{name}`: `oauth` needs exactly one of `client_secret_env` and `client_secret_file`"),
            );
        }
    }
    if let Some(cmd) = &c.command {
        if cmd.get_ref().first().is_none_or(|p| p.is_empty()) {
            err(
                at(&cmd.span()),
                format!("upstream `{name}`: credential `command` must name a program"),
            );
        }
    }
    c.file.as_ref().map(|f| base.join(f.get_ref()))
}

/// Largest compiled size of one operator pattern, bytes: keeps a pattern
/// from costing the gateway unbounded memory.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

fn validate_output_rules(
    config: &Config,
    namer: &ToolNamer,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Vec<OutputRule> {
    if config.output.max_result_bytes < 1024 {
        err(
            None,
            "`output.max_result_bytes` must be at least 1024".to_owned(),
        );
    }
    let mut rules = Vec::with_capacity(config.output_rules.len());
    for r in &config.output_rules {
        let name = r.name.get_ref();
        let line = at(&r.name.span());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            err(
                line,
                format!(
                    "output rule name `{name}` must be non-empty letters, digits, `_`, `-` or `.`"
                ),
            );
        }
        if config
            .output_rules
            .iter()
            .filter(|o| o.name.get_ref() == name)
            .count()
            > 1
        {
            err(
                line,
                format!("output rule name `{name}` is used more than once"),
            );
        }
        if r.tools.is_empty() {
            err(
                line,
                format!("output rule `{name}`: `tools` must name at least one tool (globs such as `crm__*` allowed)"),
            );
        }
        for t in &r.tools {
            let t_ref = t.get_ref();
            if !t_ref.contains('*') && namer.route(t_ref).is_none() {
                err(
                    at(&t.span()),
                    format!("output rule `{name}`: tool `{t_ref}` names no configured upstream (expected `{{prefix}}__{{tool}}` or a glob)"),
                );
            }
        }
        for a in &r.agents {
            if !config.agents.iter().any(|c| c.id.get_ref() == a.get_ref()) {
                err(
                    at(&a.span()),
                    format!(
                        "output rule `{name}`: agent `{}` is not configured",
                        a.get_ref()
                    ),
                );
            }
        }
        let paths = |list: &[Spanned<String>], err: &mut dyn FnMut(Option<usize>, String)| {
            let mut out = Vec::new();
            for p in list {
                match FieldPath::parse(p.get_ref()) {
                    Ok(fp) => out.push(fp),
                    Err(e) => err(at(&p.span()), format!("output rule `{name}`: {e}")),
                }
            }
            out
        };
        let drop_fields = paths(&r.drop_fields, err);
        let mask_fields = paths(&r.mask_fields, err);
        let mut detectors = Vec::new();
        for d in &r.detectors {
            match Detector::parse(d.get_ref()) {
                Some(ds) => {
                    for d in ds {
                        if !detectors.contains(&d) {
                            detectors.push(d);
                        }
                    }
                }
                None => err(
                    at(&d.span()),
                    format!(
                        "output rule `{name}`: unknown detector `{}`; known: {}, {}",
                        d.get_ref(),
                        Detector::ALL.map(|d| d.name()).join(", "),
                        Detector::GROUPS.join(", ")
                    ),
                ),
            }
        }
        let mut patterns = Vec::new();
        for p in &r.patterns {
            let pname = p.name.get_ref();
            if pname.is_empty()
                || !pname
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                err(
                    at(&p.name.span()),
                    format!("output rule `{name}`: pattern name `{pname}` must be letters, digits, `_` or `-`"),
                );
            } else if Detector::parse(pname).is_some() {
                err(
                    at(&p.name.span()),
                    format!("output rule `{name}`: pattern name `{pname}` is a detector's name"),
                );
            }
            match regex::RegexBuilder::new(p.regex.get_ref())
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
            {
                Ok(re) if re.is_match("") => err(
                    at(&p.regex.span()),
                    format!("output rule `{name}`: pattern `{pname}` matches the empty string"),
                ),
                Ok(_) => patterns.push(output::Pattern {
                    name: pname.clone(),
                    regex: p.regex.get_ref().clone(),
                }),
                Err(e) => err(
                    at(&p.regex.span()),
                    format!(
                        "output rule `{name}`: pattern `{pname}` is not a valid regex: {}",
                        e.to_string().lines().last().unwrap_or("").trim()
                    ),
                ),
            }
        }
        let style = match &r.style {
            None => MaskStyle::default(),
            Some(s) => MaskStyle::parse(s.get_ref()).unwrap_or_else(|| {
                err(
                    at(&s.span()),
                    format!(
                        "output rule `{name}`: `style = \"{}\"` must be `label`, `last4` or `hash`",
                        s.get_ref()
                    ),
                );
                MaskStyle::default()
            }),
        };
        let conditions = |list: &[Spanned<String>], err: &mut dyn FnMut(Option<usize>, String)| {
            let mut out = Vec::new();
            for c in list {
                match Condition::parse(c.get_ref()) {
                    Ok(Condition::Detected(d))
                        if Detector::parse(&d).is_none_or(|v| v.len() != 1)
                            && !patterns.iter().any(|p| p.name == d) =>
                    {
                        err(
                            at(&c.span()),
                            format!("output rule `{name}`: `detected({d})` names no detector and no pattern of this rule"),
                        )
                    }
                    Ok(cond) => out.push((c.get_ref().trim().to_owned(), cond)),
                    Err(e) => err(at(&c.span()), format!("output rule `{name}`: {e}")),
                }
            }
            out
        };
        let drop_where = conditions(&r.drop_where, err);
        let refuse_when = conditions(&r.refuse_when, err);
        if drop_fields.is_empty()
            && mask_fields.is_empty()
            && detectors.is_empty()
            && r.patterns.is_empty()
            && drop_where.is_empty()
            && refuse_when.is_empty()
            && r.drop_where.is_empty()
            && r.refuse_when.is_empty()
        {
            err(
                line,
                format!("output rule `{name}` does nothing: give it fields, detectors, patterns or conditions"),
            );
        }
        let mut results = r.applies_to.is_empty();
        let (mut arguments, mut descriptions) = (false, false);
        for a in &r.applies_to {
            match a.get_ref().as_str() {
                "results" => results = true,
                "arguments" => arguments = true,
                "descriptions" => descriptions = true,
                other => err(
                    at(&a.span()),
                    format!("output rule `{name}`: `applies_to` takes \"results\", \"arguments\" and \"descriptions\", not `{other}`"),
                ),
            }
        }
        rules.push(OutputRule {
            results,
            arguments,
            descriptions,
            name: name.clone(),
            tools: r.tools.iter().map(|t| t.get_ref().clone()).collect(),
            agents: r.agents.iter().map(|a| a.get_ref().clone()).collect(),
            drop_fields,
            mask_fields,
            detectors,
            patterns,
            style,
            drop_where,
            refuse_when,
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
shards = 2

[[upstreams]]
name = "crm"
url = "http://127.0.0.1:9101/mcp"

[[agents]]
id = "support-bot"
api_key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
tools = ["crm__lookup_customer"]

[audit]
dir = "audit"
"#;

    #[test]
    fn issue_contract_config_parses() {
        let v = parse(GOOD, "t.toml", Path::new("/etc/toolgate")).map_err(|e| e.to_string());
        let v = v.unwrap();
        assert_eq!(v.listen.port(), 8080);
        assert_eq!(v.audit_dir, Path::new("/etc/toolgate/audit"));
        assert_eq!(v.config.upstreams[0].timeout_ms, 30_000);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = GOOD.replace("shards = 2", "shards = 2\nshard = 3");
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors);
        let e = e.unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(5));
        assert!(e[0].message.contains("shard"), "{}", e[0].message);
    }

    #[test]
    fn type_error_is_reported_with_its_line() {
        let text = GOOD.replace("shards = 2", "shards = \"two\"");
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e[0].line, Some(4));
    }

    #[test]
    fn tool_of_unknown_upstream_is_an_error_with_its_line() {
        let text = GOOD.replace("crm__lookup_customer", "mail__send");
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(13));
        assert!(e[0].message.contains("`mail__send`"));
    }

    #[test]
    fn bad_hash_and_bad_url_are_both_reported() {
        let text = GOOD
            .replace("9f86d0", "zz")
            .replace("http://127.0.0.1:9101/mcp", "ftp://x");
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].line, Some(8));
        assert_eq!(e[1].line, Some(12));
    }

    const RULES: &str = r#"
[[output_rules]]
name = "pii"
tools = ["crm__*"]
agents = ["support-bot"]
drop_fields = ["$.customers[*].ssn"]
mask_fields = ["$.card"]
detectors = ["card", "email", "secrets"]
patterns = [{ name = "emp", regex = 'EMP-[0-9]{6}' }]
style = "last4"
drop_where = ['tier == "internal"']
refuse_when = ["detected(private_key)", "detected(emp)"]
"#;

    #[test]
    fn output_rules_parse_into_their_vocabulary() {
        let text = format!("{GOOD}{RULES}");
        let v = parse(&text, "t.toml", Path::new(".")).map_err(|e| e.to_string());
        let v = v.unwrap();
        assert_eq!(v.config.output.max_result_bytes, 4 * 1024 * 1024);
        let r = &v.output_rules[0];
        assert_eq!(r.detectors.len(), 7);
        assert_eq!(r.style, MaskStyle::Last4);
        assert_eq!(r.drop_fields[0].text, "$.customers[*].ssn");
        assert_eq!(r.refuse_when.len(), 2);
    }

    #[test]
    fn bad_output_rules_are_reported_with_their_lines() {
        let text = format!("{GOOD}{RULES}")
            .replace("\"secrets\"]", "\"ssn\"]")
            .replace("EMP-[0-9]{6}", "EMP-[0-9")
            .replace("$.customers[*].ssn", "$.customers[x]")
            .replace("\"last4\"", "\"stars\"")
            .replace("detected(emp)", "detected(nope)")
            .replace("agents = [\"support-bot\"]", "agents = [\"ghost\"]");
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        let lines: Vec<_> = e.iter().map(|e| e.line).collect();
        assert_eq!(
            lines,
            vec![Some(21), Some(22), Some(24), Some(25), Some(26), Some(28)],
            "{e:?}"
        );
        assert!(e[0].message.contains("agent `ghost`"), "{}", e[0].message);
        assert!(
            e[2].message.contains("unknown detector `ssn`"),
            "{}",
            e[2].message
        );
        assert!(
            e[3].message.contains("not a valid regex"),
            "{}",
            e[3].message
        );
        assert!(e[5].message.contains("detected(nope)"), "{}", e[5].message);
    }

    #[test]
    fn audit_sinks_parse_with_defaults() {
        let text = format!(
            "{GOOD}segment_bytes = 4096\ndurability = \"record\"\n\n[[audit.sinks]]\nname = \"siem\"\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5514\"\n"
        );
        let v = parse(&text, "t.toml", Path::new(".")).map_err(|e| e.to_string());
        let v = v.unwrap();
        assert_eq!(v.config.audit.durability, Durability::Record);
        assert_eq!(v.config.audit.segment_bytes, 4096);
        assert_eq!(v.config.audit.arguments, AuditArguments::Digest);
        assert_eq!(v.config.audit.segment_max_age_s, None);
        assert_eq!(v.config.audit.writer_priority, WriterPriority::Background);
        let s = &v.config.audit.sinks[0];
        assert_eq!((s.facility, s.batch_records), (13, 256));
        assert_eq!(
            s.transport.as_ref().map(|t| *t.get_ref()),
            Some(SinkTransport::Tcp)
        );
        assert_eq!(v.sink_targets[0].address.map(|a| a.port()), Some(5514));
    }

    #[test]
    fn an_upstream_at_a_metadata_address_is_refused_with_its_line() {
        let text = GOOD.replace(
            "http://127.0.0.1:9101/mcp",
            "http://169.254.169.254/latest/meta-data/",
        );
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("instance-metadata"), "{e}");
        assert!(e.contains("t.toml:"), "{e}");
    }

    #[test]
    fn writer_priority_parses_and_unknown_values_are_refused() {
        let v = parse(
            &format!("{GOOD}writer_priority = \"normal\"\n"),
            "t.toml",
            Path::new("."),
        )
        .map_err(|e| e.to_string());
        assert_eq!(
            v.map(|v| v.config.audit.writer_priority).ok(),
            Some(WriterPriority::Normal)
        );
        let e = parse(
            &format!("{GOOD}writer_priority = \"realtime\"\n"),
            "t.toml",
            Path::new("."),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("realtime"), "{e}");
    }

    #[test]
    fn segment_max_age_parses_and_zero_is_refused() {
        let v = parse(
            &format!("{GOOD}segment_max_age_s = 3600\n"),
            "t.toml",
            Path::new("."),
        );
        let v = v.map_err(|e| e.to_string());
        assert_eq!(
            v.map(|v| v.config.audit.segment_max_age_s).ok(),
            Some(Some(3600))
        );
        let e = parse(
            &format!("{GOOD}segment_max_age_s = 0\n"),
            "t.toml",
            Path::new("."),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("`audit.segment_max_age_s` must be above 0"),
            "{e}"
        );
    }

    #[test]
    fn audit_arguments_modes_parse_and_raw_is_refused() {
        for (text, want) in [
            ("digest", AuditArguments::Digest),
            ("omit", AuditArguments::Omit),
            ("redacted", AuditArguments::Redacted),
        ] {
            let v = parse(
                &format!("{GOOD}arguments = \"{text}\"\n"),
                "t.toml",
                Path::new("."),
            );
            let v = v.map_err(|e| e.to_string());
            assert_eq!(v.map(|v| v.config.audit.arguments).ok(), Some(want));
        }
        let e = parse(
            &format!("{GOOD}arguments = \"raw\"\n"),
            "t.toml",
            Path::new("."),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("`raw`") && e.contains("redacted"), "{e}");
    }

    #[test]
    fn bad_sink_address_and_duplicate_name_are_reported_with_lines() {
        let sink = "\n[[audit.sinks]]\nname = \"s\"\nkind = \"syslog\"\ntransport = \"udp\"\naddress = \"nowhere\"\n";
        let text = format!("{GOOD}{sink}{}", sink.replace("nowhere", "127.0.0.1:1"));
        let e = parse(&text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].line, Some(22));
        assert!(e[0].message.contains("`nowhere`"));
        assert!(e[1].message.contains("more than once"));
    }

    #[test]
    fn soar_sinks_parse_and_their_rules_are_checked() {
        let good = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"soar\"\nkind = \"soar\"\nurl = \"http://127.0.0.1:8080/hook\"\nmax_keys = 50\n\n[[audit.sinks.rules]]\nname = \"burst\"\nkind = \"deny_rate\"\nthreshold = 5\nwindow_s = 60\nagents = [\"billing-*\"]\n\n[[audit.sinks.rules]]\nname = \"judged\"\nkind = \"judge\"\njudge_outcomes = [\"deny\"]\ncooldown_s = 30\n"
        );
        let v = parse(&good, "t.toml", Path::new(".")).map_err(|e| e.to_string());
        let v = v.unwrap();
        let s = &v.config.audit.sinks[0];
        assert_eq!((s.kind, s.max_keys, s.rules.len()), (SinkKind::Soar, 50, 2));
        assert_eq!(s.rules[0].kind, SoarRuleKind::DenyRate);
        assert_eq!(s.rules[1].cooldown_s, Some(30));
        let bad = good
            .replace("threshold = 5\n", "")
            .replace(
                "judge_outcomes = [\"deny\"]",
                "judge_outcomes = [\"maybe\"]",
            )
            .replace("name = \"judged\"", "name = \"burst\"");
        let e = parse(&bad, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        let msgs: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(e.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("needs `threshold` and `window_s`"));
        assert!(msgs[1].contains("used more than once"));
        assert!(msgs[2].contains("judge outcome `maybe`"));
        assert!(e.iter().all(|e| e.line.is_some()));
        let none = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"soar\"\nkind = \"soar\"\nurl = \"http://127.0.0.1:8080/hook\"\n"
        );
        let e = parse(&none, "t.toml", Path::new("."))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("at least one `[[audit.sinks.rules]]`")));
    }

    #[test]
    fn http_sinks_parse_and_are_checked() {
        let text = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"hec\"\nkind = \"splunk_hec\"\nurl = \"https://splunk.example/services/collector/event\"\ngzip = true\n[audit.sinks.token]\nenv = \"HEC_TOKEN\"\n\n[[audit.sinks]]\nname = \"es\"\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9200\"\nformat = \"toolgate\"\n"
        );
        let v = parse(&text, "t.toml", Path::new("/etc/tg")).map_err(|e| e.to_string());
        let v = v.unwrap();
        let hec = &v.sink_targets[0];
        let url = hec.url.clone().unwrap();
        assert!(url.https);
        assert_eq!(
            (url.url.port, url.url.path.as_str()),
            (443, "/services/collector/event")
        );
        assert_eq!(hec.server_name, "splunk.example");
        assert_eq!(
            hec.token,
            Some(crate::secret::SecretSource::Env("HEC_TOKEN".into()))
        );
        assert_eq!(v.config.audit.sinks[1].format, SinkFormat::Toolgate);
        assert_eq!(
            v.sink_targets[1].url.as_ref().map(|u| u.url.port),
            Some(9200)
        );

        let bad = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"hec\"\nkind = \"splunk_hec\"\nurl = \"ftp://x\"\naddress = \"127.0.0.1:1\"\n"
        );
        let e = parse(&bad, "t.toml", Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("`address` is for syslog sinks"), "{e}");
        assert!(
            e.contains("`ftp://x` is not an `http[s]://host:port/path` URL"),
            "{e}"
        );
        assert!(e.contains("`splunk_hec` needs a `token`"), "{e}");
        let bad = format!(
            "{GOOD}\n[[audit.sinks]]\nname = \"s\"\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\nca_file = \"ca.pem\"\n"
        );
        let e = parse(&bad, "t.toml", Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("need `transport = \"tls\"`"), "{e}");
    }

    #[test]
    fn unknown_sink_transport_is_an_error() {
        let text = format!("{GOOD}\n[[audit.sinks]]\nname = \"s\"\nkind = \"syslog\"\ntransport = \"carrier-pigeon\"\naddress = \"127.0.0.1:1\"\n");
        assert!(parse(&text, "t.toml", Path::new(".")).is_err());
    }

    #[test]
    fn two_empty_prefixes_are_refused() {
        let text = r#"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:1/mcp"
prefix = ""
[[upstreams]]
name = "b"
url = "http://127.0.0.1:2/mcp"
prefix = ""
"#;
        let e = parse(text, "t.toml", Path::new("."))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(9));
    }

    fn errors_of(text: &str) -> Vec<ConfigError> {
        parse(text, "t.toml", Path::new("/nonexistent"))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default()
    }

    #[test]
    fn missing_jwks_file_is_reported_with_its_line() {
        let text = "[auth.jwt]\nissuer = \"https://idp\"\naudience = \"https://gate\"\njwks_file = \"jwks.json\"\n";
        let e = errors_of(text);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(4));
        assert!(e[0]
            .message
            .starts_with("cannot read the JWKS file `jwks.json`"));
    }

    #[test]
    fn applies_to_takes_results_and_arguments() {
        let rule = "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[output_rules]]\nname = \"r\"\ntools = [\"crm__*\"]\ndetectors = [\"card\"]\n";
        let e = errors_of(&format!("{rule}applies_to = [\"requests\"]\n"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(8));
        assert!(e[0].message.contains("`applies_to`"));
        let v = parse(
            &format!("{rule}applies_to = [\"arguments\"]\n"),
            "t",
            Path::new("."),
        )
        .unwrap();
        assert!(v.output_rules[0].arguments && !v.output_rules[0].results);
        let v = parse(rule, "t", Path::new(".")).unwrap();
        assert!(!v.output_rules[0].arguments && v.output_rules[0].results);
    }

    #[test]
    fn jwks_needs_exactly_one_source() {
        let head = "[auth.jwt]\nissuer = \"https://idp\"\naudience = \"https://gate\"\n";
        let e = errors_of(head);
        assert!(e[0]
            .message
            .contains("exactly one of `jwks_file` and `jwks_url`"));
        let e = errors_of(&format!(
            "{head}jwks_file = \"j.json\"\njwks_url = \"https://idp/jwks\"\n"
        ));
        assert!(e[0]
            .message
            .contains("exactly one of `jwks_file` and `jwks_url`"));
        let e = errors_of(&format!(
            "{head}jwks_url = \"https://idp/jwks\"\njwks_ca_file = \"nope.pem\"\n"
        ));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(5));
        assert!(e[0].message.contains("nope.pem"));
    }

    #[test]
    fn credential_needs_exactly_one_source_and_a_free_header() {
        let up = "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:1/mcp\"\n[upstreams.credential]\n";
        let e = errors_of(&format!("{up}env = \"A\"\nfile = \"b\"\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0]
            .message
            .contains("exactly one of `env`, `file`, `command` and `oauth`"));
        let e = errors_of(&format!("{up}header = \"Host\"\nenv = \"A\"\n"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(5));
        assert!(e[0].message.contains("`Host` is one toolgate sets itself"));
        assert!(errors_of(&format!("{up}command = []\n"))[0]
            .message
            .contains("must name a program"));
    }

    #[test]
    fn admin_listener_must_be_loopback_and_have_a_credential() {
        let h = "ab".repeat(32);
        let e = errors_of("[admin]\nlisten = \"0.0.0.0:9091\"\n[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"HASH\"\n".replace("HASH", &h).as_str());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(2));
        assert!(e[0]
            .message
            .contains("is not a loopback address: that needs `[admin.tls]`"));
        let e = errors_of("[admin]\nlisten = \"127.0.0.1:9091\"\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("no `[[admin.tokens]]`"));
        let ok = parse(
            &format!("[admin]\nlisten = \"[::1]:9091\"\n[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\n"),
            "t.toml",
            Path::new("/etc/tg"),
        )
        .unwrap();
        assert_eq!(ok.admin_listen.map(|a| a.port()), Some(9091));
        assert_eq!(ok.admin_state_file, Path::new("/etc/tg/state/control.redb"));
        assert_eq!(ok.admin_tls, None);
    }

    #[test]
    fn non_loopback_admin_listener_needs_tls_and_a_credential() {
        let dir = std::env::temp_dir().join(format!("toolgate-admin-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["admin.pem", "admin.key", "ca.pem"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let h = "ab".repeat(32);
        let tls = "[admin.tls]\ncert_file = \"admin.pem\"\nkey_file = \"admin.key\"\n";
        let tokens = format!("[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\n");
        let check = |text: &str| parse(text, "t.toml", &dir);
        // TLS and a token: a non-loopback address is allowed.
        let ok = check(&format!("[admin]\nlisten = \"0.0.0.0:9091\"\n{tls}client_ca_file = \"ca.pem\"\nmin_version = \"1.3\"\n{tokens}"))
            .unwrap();
        let files = ok.admin_tls.unwrap();
        assert_eq!(files.cert, dir.join("admin.pem"));
        assert_eq!(files.client_ca, Some(dir.join("ca.pem")));
        assert!(files.tls13_only);
        assert_eq!(ok.tls, None, "`[server.tls]` is separate");
        // TLS without a token: refused, naming the missing credential.
        let e = check(&format!("[admin]\nlisten = \"0.0.0.0:9091\"\n{tls}"))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("no `[[admin.tokens]]`"));
        // A token without TLS: refused, naming `[admin.tls]`.
        let e = check(&format!("[admin]\nlisten = \"10.0.0.5:9091\"\n{tokens}"))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("`admin.listen = \"10.0.0.5:9091\"` is not a loopback address: that needs `[admin.tls]`"));
        // Neither: both are named.
        let e = check("[admin]\nlisten = \"0.0.0.0:9091\"\n")
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 2, "{e:?}");
        // Missing files and bad versions are named; TLS without a listener is refused.
        let e = check(&format!("[admin]\nlisten = \"127.0.0.1:9091\"\n[admin.tls]\ncert_file = \"nope.pem\"\nkey_file = \"admin.key\"\nmin_version = \"1.1\"\n{tokens}"))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().any(|e| e.message.contains("nope.pem")));
        assert!(e.iter().any(|e| e.message.contains("`min_version`")));
        let e = check(&format!("[admin]\n{tls}"))
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        assert!(
            e.iter().any(|e| e
                .message
                .contains("`[admin.tls]` is set but `admin.listen` is not")),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn postgres_backend_needs_a_url_without_password() {
        let h = "ab".repeat(32);
        let admin = |extra: &str| {
            format!("[admin]\nlisten = \"127.0.0.1:9091\"\n{extra}\n[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\n")
        };
        let e = errors_of(&admin("backend = \"postgres\""));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].message.contains("needs `admin.postgres_url`"));
        for url in [
            "postgres://tg:hunter2@db:5432/tg",
            "postgresql://tg@db/tg?password=hunter2",
        ] {
            let e = errors_of(&admin(&format!(
                "backend = \"postgres\"\npostgres_url = \"{url}\""
            )));
            assert_eq!(e.len(), 1, "{url}");
            assert!(e[0].message.contains("must not hold a password"), "{url}");
        }
        let e = errors_of(&admin(
            "backend = \"postgres\"\npostgres_url = \"mysql://db\"\npoll_interval_ms = 5000",
        ));
        assert_eq!(e.len(), 2);
        let e = errors_of(&admin("postgres_url = \"postgres://tg@db/tg\""));
        assert!(e[0].message.contains("`admin.backend` is not"));
        let e =
            errors_of("[admin]\nbackend = \"postgres\"\npostgres_url = \"postgres://tg@db/tg\"\n");
        assert!(e[0].message.contains("needs `admin.listen`"));
        let ok = parse(
            &admin("backend = \"postgres\"\npostgres_url = \"postgres://tg@db:5432/tg\"\n[admin.postgres_password]\nfile = \"pg.pw\""),
            "t.toml",
            Path::new("/etc/tg"),
        )
        .unwrap();
        assert_eq!(*ok.config.admin.backend.get_ref(), StateBackend::Postgres);
        assert_eq!(
            ok.admin_postgres_password,
            Some(crate::secret::SecretSource::File(PathBuf::from(
                "/etc/tg/pg.pw"
            )))
        );
        assert_eq!(*ok.config.admin.poll_interval_ms.get_ref(), 100);
    }
}

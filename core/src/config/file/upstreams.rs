//! `[[upstreams]]`, their credentials, and `[tool_pins]`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::assertions::UpstreamIdentityConfig;
use super::defaults::*;
use super::stdio::*;

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

pub(crate) fn default_pins_file() -> PathBuf {
    PathBuf::from("tool-pins.json")
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

pub(crate) fn default_credential_header() -> Spanned<String> {
    Spanned::new(0..0, "Authorization".to_owned())
}

/// `[[upstreams]]`: one upstream MCP server reached over streamable HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in audit records and, by default, as the tool-name prefix.
    pub name: Spanned<String>,
    /// What the upstream is: `mcp` (default: an MCP server at `url`) or
    /// `openapi` (a REST API described by the OpenAPI document `spec`,
    /// reached at `base_url`).
    #[serde(default)]
    pub kind: UpstreamKind,
    /// Endpoint URL of an `mcp` upstream, e.g. `http://127.0.0.1:9101/mcp`.
    #[serde(default = "no_url")]
    pub url: Spanned<String>,
    /// `openapi`: the OpenAPI 3.0/3.1 document (JSON or YAML): a path
    /// relative to the config file, or an `http(s)://` URL fetched at start
    /// and every `catalog_refresh_s`.
    #[serde(default)]
    pub spec: Option<Spanned<String>>,
    /// `openapi`: the API's base URL, e.g. `http://127.0.0.1:9301` (its path
    /// is prefixed to every operation's). Default: the document's first
    /// `servers` URL, or for a `spec` URL the origin it is served from.
    #[serde(default)]
    pub base_url: Option<Spanned<String>>,
    /// `openapi`: the operations exposed, by operationId (or derived name)
    /// or `tag:NAME`. Default: every operation.
    #[serde(default)]
    pub include: Vec<String>,
    /// `openapi`: operations left out, as `include` names them. Default none.
    #[serde(default)]
    pub exclude: Vec<String>,
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
    /// `mcp`: plain HTTP routes of the REST door (`/rest/{name}/…`) to this
    /// upstream's tools. Default none: its tools are called on `/mcp` only.
    /// (An `openapi` upstream's routes are its operations.)
    #[serde(default)]
    pub routes: Vec<RestRouteConfig>,
    /// `stdio`: the server's command line, run by toolgate: an absolute
    /// path or a name found on `PATH`, then its arguments.
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    /// `stdio`: the process's environment, by name (literal, or
    /// `{ env = "VAR" }` / `{ file = "path" }`). Nothing else of
    /// toolgate's environment is passed on but `PATH`. Default empty.
    #[serde(default)]
    pub env: EnvConfig,
    /// `stdio`: calls waiting on the process at once; more are refused as
    /// unavailable. Default 64.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `stdio`: seconds between liveness pings; a process that answers
    /// none within 5 s is restarted. Default 10.
    #[serde(default = "default_ping_interval_s")]
    pub ping_interval_s: u64,
    /// `stdio`: `shared` (default: one process) or `per_user` (one per
    /// end user, besides one for the catalog and calls without a user).
    #[serde(default)]
    pub instances: Instances,
    /// `stdio`, `per_user`: processes at most (the catalog's included);
    /// past it the least recently used idle one is stopped. Default 16.
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// `stdio`, `per_user`: a user's process idle this long is stopped,
    /// seconds. Default 300.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// How the end user of each call reaches the upstream
    /// (`[upstreams.identity]`). Default: not at all.
    #[serde(default)]
    pub identity: Option<UpstreamIdentityConfig>,
    /// `stdio`: what the process may reach (`[upstreams.sandbox]`).
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Requests this upstream may send toward the agent's client during a
    /// call, relayed when the agent's client declared the capability:
    /// `elicitation`, `sampling` (the agent's model answers), `roots` (the
    /// client's roots are disclosed). Default `["elicitation"]`; `[]`
    /// relays none.
    #[serde(default = "default_client_requests")]
    pub client_requests: Vec<ClientRequest>,
}

/// A request an upstream sends toward the agent's client during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRequest {
    /// `elicitation/create`: the user is asked for input.
    Elicitation,
    /// `sampling/createMessage`: the agent's model is asked to answer.
    Sampling,
    /// `roots/list`: the client's roots are asked for.
    Roots,
}

impl ClientRequest {
    /// Every kind.
    pub const ALL: [ClientRequest; 3] = [Self::Elicitation, Self::Sampling, Self::Roots];

    /// The JSON-RPC method of such a request.
    pub fn method(self) -> &'static str {
        match self {
            Self::Elicitation => "elicitation/create",
            Self::Sampling => "sampling/createMessage",
            Self::Roots => "roots/list",
        }
    }

    /// The kind of request `method` is.
    pub fn of_method(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.method() == method)
    }

    /// The client capability that offers it (`capabilities.{name}`).
    pub fn capability(self) -> &'static str {
        match self {
            Self::Elicitation => "elicitation",
            Self::Sampling => "sampling",
            Self::Roots => "roots",
        }
    }

    /// Its bit in a set of kinds.
    pub fn bit(self) -> u8 {
        match self {
            Self::Elicitation => 1,
            Self::Sampling => 2,
            Self::Roots => 4,
        }
    }

    /// The set (bits) of `kinds`.
    pub fn set(kinds: &[ClientRequest]) -> u8 {
        kinds.iter().fold(0, |s, k| s | k.bit())
    }
}

pub(crate) fn default_client_requests() -> Vec<ClientRequest> {
    vec![ClientRequest::Elicitation]
}

/// `[[upstreams.routes]]`: one plain HTTP route of the REST door to one
/// tool of an MCP upstream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestRouteConfig {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Path template under `/rest/{upstream}`, e.g. `/customers/{customer_id}`:
    /// each `{name}` is the argument `name`.
    pub path: String,
    /// The tool, as the upstream names it (without the prefix).
    pub tool: String,
}

pub(crate) fn default_catalog_refresh_s() -> u64 {
    300
}

/// What kind of server an upstream is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// An MCP server over streamable HTTP.
    #[default]
    Mcp,
    /// A REST API described by an OpenAPI document.
    Openapi,
    /// An MCP server toolgate runs as a sandboxed child process and speaks
    /// to over its stdin and stdout.
    Stdio,
}

/// An absent `url` (an `openapi` upstream has `base_url` instead).
pub(crate) fn no_url() -> Spanned<String> {
    Spanned::new(0..0, String::new())
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

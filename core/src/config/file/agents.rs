//! `[[agents]]`, `[[users]]` and `[policies]`.

use serde::Deserialize;
use toml::Spanned;

use super::defaults::*;

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
    /// Prompts attached to the agent, by exposed name (`{prefix}__{prompt}`);
    /// `*` matches any run of characters. Default none.
    #[serde(default)]
    pub prompts: Vec<Spanned<String>>,
    /// Resources attached to the agent, by exposed URI
    /// (`toolgate://{upstream}/{uri}`); `*` matches any run of characters,
    /// `/` included. Default none.
    #[serde(default)]
    pub resources: Vec<Spanned<String>>,
    /// Groups the agent belongs to (`Toolgate::Group` in policies). Default none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the agent may name the end user it acts for in the
    /// `Toolgate-On-Behalf-Of` header. Default false: the header is refused.
    #[serde(default)]
    pub act_for_users: bool,
    /// The customer (tenant) this agent's calls are attributed to when its
    /// token names none. Default: the agent's own id.
    #[serde(default)]
    pub customer: Option<String>,
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

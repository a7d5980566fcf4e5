//! The resources of the control state and their documents.
//!
//! Documents are JSON objects with a closed set of fields: an unknown field
//! is an error, so a typo never silently does nothing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest resource id, bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most tools attached to one agent, groups of one agent or user.
pub const MAX_LIST_LEN: usize = 4096;
/// Longest tool or group name, bytes.
pub const MAX_NAME_LEN: usize = 256;

/// A kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `agents/{id}`: attached tools, groups, `act_for_users`.
    Agents,
    /// `users/{id}`: groups.
    Users,
    /// `policies/{name}`: one Cedar policy text.
    Policies,
    /// `subtokens/{id}`: a sub-token's claims and whether it is revoked
    /// (never the token).
    Subtokens,
    /// `upstreams/{name}`: an upstream MCP server (the keys of a
    /// `[[upstreams]]` entry; a credential by reference, never a value).
    Upstreams,
    /// `credentials/{name}`: where a secret is read from (never the
    /// secret), for upstreams to name.
    Credentials,
    /// `limits/{id}`: a rate or quota (the keys of a `[[limits.rules]]`
    /// entry but `id`).
    Limits,
    /// `labels/{tool}`: the labels of an exposed tool (a `[tool_labels]`
    /// entry).
    Labels,
}

impl Kind {
    /// Every kind, in path order.
    pub const ALL: [Kind; 8] = [
        Kind::Agents,
        Kind::Users,
        Kind::Policies,
        Kind::Subtokens,
        Kind::Upstreams,
        Kind::Credentials,
        Kind::Limits,
        Kind::Labels,
    ];

    /// The kind named `s` in a path (`agents`, `users`, `policies`,
    /// `subtokens`, `upstreams`, `credentials`, `limits`, `labels`).
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "agents" => Some(Kind::Agents),
            "users" => Some(Kind::Users),
            "policies" => Some(Kind::Policies),
            "subtokens" => Some(Kind::Subtokens),
            "upstreams" => Some(Kind::Upstreams),
            "credentials" => Some(Kind::Credentials),
            "limits" => Some(Kind::Limits),
            "labels" => Some(Kind::Labels),
            _ => None,
        }
    }

    /// Path form.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agents => "agents",
            Kind::Users => "users",
            Kind::Policies => "policies",
            Kind::Subtokens => "subtokens",
            Kind::Upstreams => "upstreams",
            Kind::Credentials => "credentials",
            Kind::Limits => "limits",
            Kind::Labels => "labels",
        }
    }
}

/// Why a document or id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not JSON, or not the document's shape (unknown field, wrong type).
    #[error("{0}")]
    Invalid(String),
    /// A field holds a value out of its bounds.
    #[error("{0}")]
    Value(String),
}

/// `agents/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Tools attached to the agent, by exposed name (`{prefix}__{tool}`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Prompts attached to the agent, by exposed name; `*` globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// Resources attached to the agent, by exposed URI
    /// (`toolgate://{upstream}/{uri}`); `*` globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Groups of the agent (`Toolgate::Group` in policies).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the agent may name the end user it acts for.
    #[serde(default)]
    pub act_for_users: bool,
    /// Attached tools usable only for some end users: tool → scope. A
    /// scoped call must name its user (`act_for_users`, or a JWT's user).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scopes: std::collections::BTreeMap<String, ScopeSpec>,
    /// Hex SHA-256 of the agent's API key: required for an agent the
    /// configuration file does not define, optional (the file's stays) for
    /// one it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_sha256: Option<String>,
    /// The customer its calls are attributed to when its token names none
    /// (default: the file's `customer` for an agent it defines, else the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// The end users an attached tool may be called for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    /// User ids (each a `users/{id}` or a `[[users]]` entry).
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Groups of the user.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `policies/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Cedar policy text (one or more policies).
    pub text: String,
}

/// `subtokens/{id}`, the id being the token's `jti`: what the token was
/// minted with, and whether it is revoked. The token itself is not kept
/// (it is answered once, to the mint): the claims alone cannot be used to
/// call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtokenSpec {
    /// The agent the token acts as.
    pub agent: String,
    /// The end user it is narrowed to, when narrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The tools it is narrowed to, when narrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// The customer its calls are attributed to, when set at minting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Whether it is revoked: every shard refuses it.
    #[serde(default)]
    pub revoked: bool,
}

/// `upstreams/{name}`: the keys of a `[[upstreams]]` entry but `name` (the
/// id). Left-out keys take the configuration file's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// `mcp` (default) or `openapi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Endpoint URL of an MCP server, `http[s]://host[:port]/path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// `openapi`: the OpenAPI document, a file relative to the
    /// configuration's directory or an `http(s)://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// `openapi`: the API's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `openapi`: operations exposed (operationIds or `tag:NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// `openapi`: operations left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `mcp`: the REST door's routes to its tools (`method`, `path`, `tool`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<toolgate_core::config::RestRouteConfig>,
    /// Prefix of its tools as agents see them; default the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Time allowed for one call, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Largest response accepted, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// Idle keep-alive connections kept per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u64>,
    /// MCP era: `auto`, `handshake` or `stateless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// For `https://`: PEM CA bundle, relative to the configuration file's
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// How often its tool catalog is fetched again, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_refresh_s: Option<u64>,
    /// Requests toward agents' clients it may have relayed during a call
    /// (`elicitation`, `sampling`, `roots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_requests: Option<Vec<toolgate_core::config::ClientRequest>>,
    /// The credential toolgate adds to every request to it: a
    /// `credentials/{name}` resource by name, or where the secret is read
    /// from given in place; never the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// How each call's end user reaches it: the keys of
    /// `[upstreams.identity]` (`mode` `assertion` or `token_exchange`, with
    /// `exchange` naming where its client secret is read, never the
    /// secret). Connected accounts are declared in the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
}

/// An upstream's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CredentialRef {
    /// The name of a `credentials/{name}` resource.
    Named(String),
    /// The source, given in place.
    Inline(UpstreamCredentialSpec),
}

// By hand rather than `untagged`, so that a wrong source says what is
// wrong with it (an unknown field) instead of "did not match any variant".
impl<'de> Deserialize<'de> for CredentialRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => Ok(CredentialRef::Named(name)),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(CredentialRef::Inline)
                .map_err(|e| D::Error::custom(format!("`credential`: {e}"))),
            _ => Err(D::Error::custom(
                "`credential` must name a `credentials/{name}` resource, or be `{\"env\": …}` or `{\"file\": …}`",
            )),
        }
    }
}

/// `credentials/{name}`, or an upstream's `credential` given in place: the
/// keys of `[upstreams.credential]` that name a source (`env` or `file`). A
/// `command` or `oauth` credential is configured in the file only: through
/// the API it would let an admin token run programs on the gateway's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCredentialSpec {
    /// Header carrying the secret; default `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Text put before the secret, e.g. `Bearer `.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_prefix: Option<String>,
    /// Environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File holding the secret, relative to the configuration file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A resource's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// An agent.
    Agent(AgentSpec),
    /// A user.
    User(UserSpec),
    /// A policy text.
    Policy(PolicySpec),
    /// A sub-token's claims.
    Subtoken(SubtokenSpec),
    /// An upstream.
    Upstream(Box<UpstreamSpec>),
    /// A named credential source.
    Credential(UpstreamCredentialSpec),
    /// A rate or quota.
    Limit(Box<LimitSpec>),
    /// A tool's labels.
    Labels(LabelsSpec),
}

/// `labels/{tool}`: the labels of the exposed tool `tool`, replacing the
/// file's `[tool_labels]` entry of that name (other matching entries and
/// the tool's annotations still add theirs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    /// The labels: identifiers, such as `money` or `reads_pii`.
    pub labels: Vec<String>,
}

/// `limits/{id}`: the keys of a `[[limits.rules]]` entry but `id` (the
/// resource id). Checked like the file's rules when written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Customer selector: a value, `*`, or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Agent selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// End-user selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Tool selector (exposed name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Upstream selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A rate: `{"calls_per_s": n, "burst": n}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<serde_json::Map<String, serde_json::Value>>,
    /// A quota: `{"units": n, "per": "minute" | "hour" | "day" | "month"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<serde_json::Map<String, serde_json::Value>>,
    /// Units per tool call, by exposed tool name (default 1).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cost: std::collections::BTreeMap<String, u64>,
}

impl LimitSpec {
    /// The `[[limits.rules]]` entry `id` this document stands for, or why
    /// its `rate` or `quota` is not one.
    pub fn to_rule(&self, id: &str) -> Result<toolgate_core::config::LimitRuleConfig, String> {
        use toolgate_core::config::{LimitRuleConfig, QuotaConfig, RateLimitConfig, Window};
        let only =
            |m: &serde_json::Map<String, serde_json::Value>, keys: &[&str], what: &str| match m
                .keys()
                .find(|k| !keys.contains(&k.as_str()))
            {
                Some(k) => Err(format!("`{what}` takes {}, not `{k}`", keys.join(" and "))),
                None => Ok(()),
            };
        let rate = match &self.rate {
            None => None,
            Some(m) => {
                only(m, &["calls_per_s", "burst"], "rate")?;
                let calls_per_s = m
                    .get("calls_per_s")
                    .and_then(serde_json::Value::as_f64)
                    .ok_or("`rate.calls_per_s` must be a number")?;
                let burst = match m.get("burst") {
                    None => None,
                    Some(b) => Some(
                        b.as_u64()
                            .and_then(|b| u32::try_from(b).ok())
                            .ok_or("`rate.burst` must be a whole number")?,
                    ),
                };
                Some(RateLimitConfig { calls_per_s, burst })
            }
        };
        let quota = match &self.quota {
            None => None,
            Some(m) => {
                only(m, &["units", "per", "time_zone"], "quota")?;
                let units = m
                    .get("units")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or("`quota.units` must be a whole number")?;
                let per = match m.get("per").and_then(serde_json::Value::as_str) {
                    Some("minute") => Window::Minute,
                    Some("hour") => Window::Hour,
                    Some("day") => Window::Day,
                    Some("month") => Window::Month,
                    _ => {
                        return Err("`quota.per` must be `minute`, `hour`, `day` or `month`".into())
                    }
                };
                let time_zone = match m.get("time_zone") {
                    None => None,
                    Some(z) => Some(
                        z.as_str()
                            .ok_or("`quota.time_zone` must be a string (an IANA name)")?
                            .to_owned(),
                    ),
                };
                Some(QuotaConfig {
                    units,
                    per,
                    time_zone,
                })
            }
        };
        Ok(LimitRuleConfig {
            id: toml::Spanned::new(0..0, id.to_owned()),
            customer: self.customer.clone(),
            agent: self.agent.clone(),
            user: self.user.clone(),
            tool: self.tool.clone(),
            upstream: self.upstream.clone(),
            rate,
            quota,
            cost: self.cost.clone(),
        })
    }
}

/// Checks a resource id: 1 to 128 letters, digits, `_`, `-`, `.`, `@`, not
/// starting with `.` (ids are path segments and file names).
pub fn check_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Value(format!(
            "`{}` is not a resource id: use 1 to {MAX_ID_LEN} letters, digits, `_`, `-`, `.` or `@`, not starting with `.`",
            id.chars().take(MAX_ID_LEN).collect::<String>()
        )))
    }
}

fn check_list(field: &str, list: &[String]) -> Result<(), SpecError> {
    if list.len() > MAX_LIST_LEN {
        return Err(SpecError::Value(format!(
            "`{field}` has {} entries; at most {MAX_LIST_LEN}",
            list.len()
        )));
    }
    for (i, v) in list.iter().enumerate() {
        if v.is_empty() || v.len() > MAX_NAME_LEN || v.chars().any(char::is_control) {
            return Err(SpecError::Value(format!(
                "`{field}[{i}]` must be 1 to {MAX_NAME_LEN} bytes without control characters"
            )));
        }
        if list[..i].contains(v) {
            return Err(SpecError::Value(format!(
                "`{field}` lists `{v}` more than once"
            )));
        }
    }
    Ok(())
}

/// A credential source names exactly one of `env` and `file`.
fn check_source(what: &str, c: &UpstreamCredentialSpec) -> Result<(), SpecError> {
    if c.env.is_some() == c.file.is_some() {
        return Err(SpecError::Value(format!(
            "{what} needs exactly one of `env` and `file` (a `command` or `oauth` credential is set in the configuration file only)"
        )));
    }
    Ok(())
}

impl Spec {
    /// Parses and checks a document of `kind` from JSON.
    pub fn parse(kind: Kind, json: &[u8]) -> Result<Spec, SpecError> {
        let invalid = |e: serde_json::Error| SpecError::Invalid(e.to_string());
        let spec = match kind {
            Kind::Agents => Spec::Agent(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Users => Spec::User(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Policies => Spec::Policy(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Subtokens => Spec::Subtoken(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Upstreams => Spec::Upstream(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Credentials => Spec::Credential(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Limits => Spec::Limit(serde_json::from_slice(json).map_err(invalid)?),
            Kind::Labels => Spec::Labels(serde_json::from_slice(json).map_err(invalid)?),
        };
        spec.check()?;
        Ok(spec)
    }

    /// Parses a document of `kind` from a JSON value.
    pub fn from_value(kind: Kind, v: serde_json::Value) -> Result<Spec, SpecError> {
        let bytes = serde_json::to_vec(&v).map_err(|e| SpecError::Invalid(e.to_string()))?;
        Spec::parse(kind, &bytes)
    }

    fn check(&self) -> Result<(), SpecError> {
        match self {
            Spec::Agent(a) => {
                check_list("tools", &a.tools)?;
                check_list("groups", &a.groups)?;
                if let Some(c) = &a.customer {
                    toolgate_core::identity::check_customer(c)
                        .map_err(|why| SpecError::Value(format!("`customer`: {why}")))?;
                }
                for (tool, scope) in &a.scopes {
                    if !a.tools.contains(tool) {
                        return Err(SpecError::Value(format!(
                            "`scopes` names `{tool}`, which `tools` does not attach"
                        )));
                    }
                    check_list("scopes.users", &scope.users)?;
                    check_list("scopes.groups", &scope.groups)?;
                    if scope.users.is_empty() && scope.groups.is_empty() {
                        return Err(SpecError::Value(format!(
                            "the scope of `{tool}` needs `users` or `groups` (to detach it, remove it from `tools`)"
                        )));
                    }
                }
                if let Some(h) = &a.api_key_sha256 {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(SpecError::Value(
                            "`api_key_sha256` must be 64 hex digits (`toolgate key new` prints one)"
                                .into(),
                        ));
                    }
                }
                Ok(())
            }
            Spec::User(u) => check_list("groups", &u.groups),
            Spec::Policy(p) => {
                if p.text.trim().is_empty() {
                    Err(SpecError::Value("`text` must hold a Cedar policy".into()))
                } else {
                    Ok(())
                }
            }
            Spec::Subtoken(t) => {
                check_list("agent", std::slice::from_ref(&t.agent))?;
                if let Some(u) = &t.user {
                    if u.is_empty()
                        || u.len() > MAX_NAME_LEN
                        || !u.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(SpecError::Value(format!(
                            "`user` must be a user id: 1 to {MAX_NAME_LEN} printable characters, no spaces"
                        )));
                    }
                }
                if let Some(tools) = &t.tools {
                    if tools.is_empty() {
                        return Err(SpecError::Value(
                            "`tools` must name at least one tool (leave it out for every tool of the agent)"
                                .into(),
                        ));
                    }
                    check_list("tools", tools)?;
                }
                if t.exp <= t.iat {
                    return Err(SpecError::Value("`exp` must be after `iat`".into()));
                }
                Ok(())
            }
            Spec::Upstream(u) => {
                if u.url.len() > 2048 {
                    return Err(SpecError::Value("`url` is longer than 2048 bytes".into()));
                }
                match &u.credential {
                    Some(CredentialRef::Inline(c)) => check_source("credential", c),
                    Some(CredentialRef::Named(n)) => check_id(n),
                    None => Ok(()),
                }
            }
            Spec::Credential(c) => check_source("the credential", c),
            // The rule's own checks run against the effective configuration
            // when it is written (they need its tools and agents).
            Spec::Limit(l) => match (&l.rate, &l.quota) {
                (Some(_), None) | (None, Some(_)) => Ok(()),
                _ => Err(SpecError::Value(
                    "give exactly one of `rate` and `quota`".into(),
                )),
            },
            Spec::Labels(l) => match l
                .labels
                .iter()
                .find(|n| !toolgate_core::config::validate::is_identifier(n))
            {
                Some(n) => Err(SpecError::Value(format!(
                    "label `{}` must be letters, digits and `_`, starting with a letter or `_`",
                    n.chars().take(MAX_NAME_LEN).collect::<String>()
                ))),
                None if l.labels.len() > toolgate_core::config::validate::MAX_LABELS => {
                    Err(SpecError::Value(format!(
                        "at most {} labels",
                        toolgate_core::config::validate::MAX_LABELS
                    )))
                }
                None => Ok(()),
            },
        }
    }

    /// The kind of resource this document describes.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Agent(_) => Kind::Agents,
            Spec::User(_) => Kind::Users,
            Spec::Policy(_) => Kind::Policies,
            Spec::Subtoken(_) => Kind::Subtokens,
            Spec::Upstream(_) => Kind::Upstreams,
            Spec::Credential(_) => Kind::Credentials,
            Spec::Limit(_) => Kind::Limits,
            Spec::Labels(_) => Kind::Labels,
        }
    }

    /// The document as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        let v = match self {
            Spec::Agent(a) => serde_json::to_value(a),
            Spec::User(u) => serde_json::to_value(u),
            Spec::Policy(p) => serde_json::to_value(p),
            Spec::Subtoken(t) => serde_json::to_value(t),
            Spec::Upstream(u) => serde_json::to_value(u),
            Spec::Credential(c) => serde_json::to_value(c),
            Spec::Limit(l) => serde_json::to_value(l),
            Spec::Labels(l) => serde_json::to_value(l),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    /// SHA-256 (hex) of the document's JSON bytes (fields in declaration order).
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(&self.to_value()).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// A compact diff of two versions of a document, as a JSON object: per
/// changed field, lists as `{"added":[…],"removed":[…]}`, policy texts as
/// digests, other values as `{"old":…,"new":…}`. Key hashes show only that
/// they changed.
pub fn diff(old: Option<&Spec>, new: Option<&Spec>) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    if let (Some(Spec::Policy(_)), _) | (_, Some(Spec::Policy(_))) = (old, new) {
        return json!({"text": {"old_digest": old.map(Spec::digest), "new_digest": new.map(Spec::digest)}});
    }
    let empty = Map::new();
    let o = old.map(Spec::to_value).unwrap_or(Value::Null);
    let n = new.map(Spec::to_value).unwrap_or(Value::Null);
    let (o, n) = (
        o.as_object().unwrap_or(&empty),
        n.as_object().unwrap_or(&empty),
    );
    let mut out = Map::new();
    let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for k in keys {
        let (a, b) = (o.get(k), n.get(k));
        if a == b {
            continue;
        }
        let list = |v: Option<&Value>| -> Option<Vec<Value>> {
            match v {
                None => Some(Vec::new()),
                Some(Value::Array(x)) => Some(x.clone()),
                _ => None,
            }
        };
        if k == "api_key_sha256" {
            out.insert(k.clone(), json!({"changed": true}));
        } else if let (Some(la), Some(lb)) = (list(a), list(b)) {
            let added: Vec<&Value> = lb.iter().filter(|x| !la.contains(x)).collect();
            let removed: Vec<&Value> = la.iter().filter(|x| !lb.contains(x)).collect();
            let mut d = Map::new();
            if !added.is_empty() {
                d.insert("added".into(), json!(added));
            }
            if !removed.is_empty() {
                d.insert("removed".into(), json!(removed));
            }
            if !d.is_empty() {
                out.insert(k.clone(), Value::Object(d));
            }
        } else {
            out.insert(k.clone(), json!({"old": a, "new": b}));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let e = Spec::parse(Kind::Agents, br#"{"tools":[],"tool":["x"]}"#);
        assert!(matches!(e, Err(SpecError::Invalid(m)) if m.contains("unknown field `tool`")));
        assert!(matches!(
            Spec::parse(Kind::Agents, br#"{"tools":["a","a"]}"#),
            Err(SpecError::Value(_))
        ));
        assert!(Spec::parse(Kind::Policies, br#"{"text":"  "}"#).is_err());
        let scoped = br#"{"tools":["a"],"scopes":{"a":{"groups":["admins"]}}}"#;
        assert!(Spec::parse(Kind::Agents, scoped).is_ok());
        for bad in [
            &br#"{"tools":["a"],"scopes":{"b":{"groups":["admins"]}}}"#[..],
            br#"{"tools":["a"],"scopes":{"a":{}}}"#,
            br#"{"tools":["a"],"scopes":{"a":{"group":["x"]}}}"#,
        ] {
            assert!(
                Spec::parse(Kind::Agents, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Spec::parse(Kind::Users, b"not json").is_err());
        assert!(Spec::parse(Kind::Users, br#"{"groups":["ops"]}"#).is_ok());
        assert!(check_id("bot-1@x.y").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_credential_is_a_name_or_a_source() {
        let named = br#"{"url":"http://h/mcp","credential":"ops-token"}"#;
        assert!(matches!(
            Spec::parse(Kind::Upstreams, named),
            Ok(Spec::Upstream(u)) if matches!(&u.credential, Some(CredentialRef::Named(n)) if n == "ops-token")
        ));
        let bad = br#"{"url":"http://h/mcp","credential":{"command":["cat"]}}"#;
        assert!(matches!(
            Spec::parse(Kind::Upstreams, bad),
            Err(SpecError::Invalid(m)) if m.contains("unknown field `command`")
        ));
        let bad = br#"{"url":"http://h/mcp","credential":7}"#;
        assert!(matches!(
            Spec::parse(Kind::Upstreams, bad),
            Err(SpecError::Invalid(_))
        ));
        assert!(Spec::parse(
            Kind::Upstreams,
            br#"{"url":"http://h/mcp","credential":"a/b"}"#
        )
        .is_err());
    }

    #[test]
    fn subtoken_documents_hold_claims_and_are_checked() {
        let ok = br#"{"agent":"bot","tools":["crm__a"],"iat":10,"exp":20}"#;
        let Ok(Spec::Subtoken(t)) = Spec::parse(Kind::Subtokens, ok) else {
            unreachable!()
        };
        assert!(!t.revoked && t.user.is_none());
        for bad in [
            &br#"{"agent":"bot","iat":10,"exp":10}"#[..],
            br#"{"agent":"","iat":1,"exp":2}"#,
            br#"{"agent":"bot","tools":[],"iat":1,"exp":2}"#,
            br#"{"agent":"bot","user":"a b","iat":1,"exp":2}"#,
            br#"{"agent":"bot","iat":1,"exp":2,"token":"tgs_x"}"#,
        ] {
            assert!(
                Spec::parse(Kind::Subtokens, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let revoked = Spec::Subtoken(SubtokenSpec {
            revoked: true,
            ..t.clone()
        });
        assert_eq!(
            diff(Some(&Spec::Subtoken(t)), Some(&revoked)),
            serde_json::json!({"revoked": {"old": false, "new": true}})
        );
        assert_eq!(Kind::parse("subtokens"), Some(Kind::Subtokens));
    }

    #[test]
    fn diff_names_what_changed() {
        let a = Spec::parse(Kind::Agents, br#"{"tools":["t1","t2"]}"#).unwrap();
        let b = Spec::parse(
            Kind::Agents,
            br#"{"tools":["t2","t3"],"act_for_users":true}"#,
        )
        .unwrap();
        assert_eq!(
            diff(Some(&a), Some(&b)),
            serde_json::json!({"tools":{"added":["t3"],"removed":["t1"]},"act_for_users":{"old":false,"new":true}})
        );
        assert_eq!(
            diff(None, Some(&a)),
            serde_json::json!({"tools":{"added":["t1","t2"]},"act_for_users":{"old":null,"new":false}})
        );
        let p = Spec::Policy(PolicySpec {
            text: "permit(principal, action, resource);".into(),
        });
        assert_eq!(
            diff(Some(&p), None)["text"]["new_digest"],
            serde_json::Value::Null
        );
        assert_eq!(p.digest().len(), 64);
    }

    #[test]
    fn a_limit_document_becomes_its_rule_or_says_what_is_wrong() {
        let spec = |j: &str| match Spec::parse(Kind::Limits, j.as_bytes()) {
            Ok(Spec::Limit(l)) => Ok(l),
            Ok(_) => Err("not a limit".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let l =
            spec(r#"{"customer":"acme","quota":{"units":5,"per":"month"},"cost":{"crm__x":2}}"#)
                .unwrap();
        let r = l.to_rule("plan").unwrap();
        assert_eq!(r.id.get_ref(), "plan");
        assert_eq!(r.customer.as_deref(), Some("acme"));
        assert_eq!(
            r.quota.map(|q| (q.units, q.per.as_str())),
            Some((5, "month"))
        );
        assert_eq!(r.cost.get("crm__x"), Some(&2));
        let rate = spec(r#"{"agent":"*","rate":{"calls_per_s":2.5,"burst":4}}"#).unwrap();
        let r = rate.to_rule("r").unwrap();
        assert_eq!(
            r.rate.map(|x| (x.calls_per_s, x.burst)),
            Some((2.5, Some(4)))
        );
        assert!(spec(r#"{"customer":"acme"}"#).is_err());
        assert!(spec(r#"{"quota":{"units":1,"per":"day"},"tier":"gold"}"#).is_err());
        for bad in [
            r#"{"quota":{"units":1,"per":"week"}}"#,
            r#"{"quota":{"units":-1,"per":"day"}}"#,
            r#"{"quota":{"units":1,"per":"day","x":1}}"#,
            r#"{"rate":{"calls_per_s":"fast"}}"#,
        ] {
            assert!(spec(bad).unwrap().to_rule("x").is_err(), "{bad}");
        }
    }
}

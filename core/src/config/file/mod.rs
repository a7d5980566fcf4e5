//! The file format: structs that mirror the TOML one to one, every field
//! documented with its default, unknown keys refused. One file per section.

mod admin;
mod agents;
mod assertions;
mod audit;
mod auth;
mod defaults;
mod limits;
mod rules;
mod server;
mod sessions;
mod stdio;
mod upstreams;

pub use admin::*;
pub use agents::*;
pub use assertions::*;
pub use audit::*;
pub use auth::*;
pub use limits::*;
pub use rules::*;
pub use server::*;
pub use sessions::*;
pub use stdio::*;
pub use upstreams::*;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The agent-facing listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Upstream MCP servers whose tools toolgate aggregates (`[[upstreams]]`).
    /// Checking moves them into [`ValidConfig::upstreams`], resolved; this
    /// list is empty in a checked configuration.
    #[serde(default, rename = "upstreams")]
    pub upstream_entries: Vec<UpstreamConfig>,
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
    /// toolgate's key for signed end-user assertions to upstreams
    /// (`[upstreams.identity] mode = "assertion"`). Default none.
    #[serde(default)]
    pub identity_assertions: Option<IdentityAssertionsConfig>,
    /// Users' own accounts connected to upstreams
    /// (`[upstreams.identity] mode = "connected_account"`). Default none.
    #[serde(default)]
    pub connected_accounts: Option<ConnectedAccountsConfig>,
    /// Pinning of tool definitions against silent changes (rug pulls).
    #[serde(default)]
    pub tool_pins: Option<ToolPinsConfig>,
    /// The admin API: run-time control of agents, users and policies.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Per-customer rates and quotas.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Sessions as policies see them (`context.session`).
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// Labels of tools (`resource.labels` in policies; counted per session).
    #[serde(default)]
    pub tool_labels: ToolLabelsConfig,
}

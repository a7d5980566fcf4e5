//! `[limits]`: per-customer rates and quotas (`[[limits.rules]]`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{RateLimitConfig, SecretSourceConfig};

/// `[limits]`: where limit counters live, and the rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Where quotas are counted: `local` (this process; default) or
    /// `redis` (shared by every replica through `[limits.redis]`).
    #[serde(default)]
    pub backend: LimitsBackend,
    /// The Redis the replicas share, with `backend = "redis"`.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Most counters kept (one per limit and key value, e.g. per customer
    /// and tool). A call that needs a counter beyond this is refused
    /// (`limit_table_full`), never let through unlimited. Default 262144.
    #[serde(default = "default_max_counters")]
    pub max_counters: usize,
    /// The time zone whose calendar quota windows follow (an IANA name
    /// such as `Europe/Paris`), unless a quota names its own. Default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The rules; every one that applies to a call must let it pass.
    #[serde(default)]
    pub rules: Vec<LimitRuleConfig>,
}

fn default_max_counters() -> usize {
    262_144
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimitsBackend::Local,
            redis: None,
            max_counters: default_max_counters(),
            time_zone: None,
            rules: Vec::new(),
        }
    }
}

/// `[[limits.rules]]`: one rate or quota. Each of `customer`, `agent`,
/// `user`, `tool` and `upstream` is a selector: a value (only calls with
/// that value, counted together), `"*"` (every call, one counter per
/// value), or absent (every call, one counter whatever the value).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRuleConfig {
    /// Names the rule in answers, records and usage.
    pub id: Spanned<String>,
    /// Customer selector.
    #[serde(default)]
    pub customer: Option<String>,
    /// Agent selector.
    #[serde(default)]
    pub agent: Option<String>,
    /// End-user selector (a call without a user has none: it matches only
    /// an absent selector).
    #[serde(default)]
    pub user: Option<String>,
    /// Tool selector (exposed name).
    #[serde(default)]
    pub tool: Option<String>,
    /// Upstream selector.
    #[serde(default)]
    pub upstream: Option<String>,
    /// A rate: calls per second with a burst (GCRA).
    #[serde(default)]
    pub rate: Option<RateLimitConfig>,
    /// A quota: units per calendar window (UTC, or a time zone).
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Units a call of a tool costs (exposed name → units); other tools
    /// cost 1. Quotas only.
    #[serde(default)]
    pub cost: BTreeMap<String, u64>,
}

/// A quota: `units` per `per`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Units allowed per window.
    pub units: u64,
    /// The calendar window.
    pub per: Window,
    /// The time zone whose calendar the windows follow (an IANA name);
    /// default `[limits] time_zone`, else UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A calendar window, in UTC or the quota's time zone: it resets at the start of each minute, hour,
/// day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A day (from 00:00, UTC or local).
    Day,
    /// A calendar month (from the 1st, 00:00).
    Month,
}

impl Window {
    /// Its name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

/// Where quota counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In this process only.
    #[default]
    Local,
    /// Shared by the replicas through Redis.
    Redis,
}

/// `[limits.redis]`: the Redis the replicas share quota counts through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or, over TLS, `rediss://host:port/db`. No
    /// password in it: give one with `[limits.redis.password]`.
    pub url: Spanned<String>,
    /// With `rediss://`: PEM CA bundle, relative to the config file.
    /// Default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// The password (`AUTH`): `env`, `file` or `command`.
    #[serde(default)]
    pub password: Option<SecretSourceConfig>,
    /// Units a replica takes from Redis at a time. A replica may go over a
    /// quota by at most this much (its first lease of a window is taken
    /// before Redis confirms it). A rate reserves at most this many calls
    /// at a time (and at most `burst / (2 × replicas)`). Default 20.
    #[serde(default = "default_lease")]
    pub lease: u64,
    /// Replicas sharing the limits: while Redis cannot be reached, each
    /// replica allows at most `units / replicas` of a quota's window, and
    /// `calls_per_s / replicas` of a rate (with a burst of `burst /
    /// replicas`); with Redis, a rate passes calls on that share while its
    /// reservation is on the way. Default 2.
    #[serde(default = "default_replicas")]
    pub replicas: u64,
    /// Time allowed for one Redis exchange, ms. Default 500.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_lease() -> u64 {
    20
}

fn default_replicas() -> u64 {
    2
}

fn default_redis_timeout_ms() -> u64 {
    500
}

//! `[limits]`: per-customer rates and quotas (`[[limits.rules]]`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::RateLimitConfig;

/// `[limits]`: where limit counters live, and the rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most counters kept (one per limit and key value, e.g. per customer
    /// and tool). A call that needs a counter beyond this is refused
    /// (`limit_table_full`), never let through unlimited. Default 262144.
    #[serde(default = "default_max_counters")]
    pub max_counters: usize,
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
            max_counters: default_max_counters(),
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
    /// A quota: units per calendar window (UTC).
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Units a call of a tool costs (exposed name → units); other tools
    /// cost 1. Quotas only.
    #[serde(default)]
    pub cost: BTreeMap<String, u64>,
}

/// A quota: `units` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Units allowed per window.
    pub units: u64,
    /// The calendar window.
    pub per: Window,
}

/// A calendar window, in UTC: it resets at the start of each minute, hour,
/// day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A day (00:00 UTC).
    Day,
    /// A calendar month (the 1st, 00:00 UTC).
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

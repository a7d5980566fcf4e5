//! A window of the audit log, for the commands that read it (`usage`,
//! `policy simulate`): the records whose `time` falls in it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use toolgate_sinks::query::{parse_rfc3339_us, parse_since};

/// From `since` (inclusive) to `until` (exclusive), µs since the Unix
/// epoch; an open end when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Earliest time in it.
    pub since: Option<u64>,
    /// First time after it.
    pub until: Option<u64>,
}

impl Window {
    /// The window of the flags: `since`, a duration ago (`30m`, `7d`) or an
    /// RFC 3339 time; `from`, an RFC 3339 time (when `since` is absent);
    /// `until`, an RFC 3339 time given as `--{until_flag}`.
    pub fn parse(
        since: Option<&str>,
        from: Option<&str>,
        until: Option<&str>,
        until_flag: &str,
    ) -> anyhow::Result<Self> {
        let time = |t: &str, flag: &str| {
            parse_rfc3339_us(t).ok_or_else(|| {
                anyhow::anyhow!(
                    "`--{flag} {t}`: expected an RFC 3339 time such as 2026-12-01T00:00:00Z"
                )
            })
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let since = match (since, from) {
            (Some(s), _) => Some(parse_since(s, now)?),
            (None, Some(f)) => Some(time(f, "from")?),
            (None, None) => None,
        };
        let until = until.map(|u| time(u, until_flag)).transpose()?;
        Ok(Self { since, until })
    }

    /// Whether record `v` is in the window (a record without a readable
    /// time is not, once the window has an end).
    pub fn holds(&self, v: &Value) -> bool {
        let t = v["time"].as_str().and_then(parse_rfc3339_us);
        !(self.since.is_some_and(|s| t.is_none_or(|t| t < s))
            || self.until.is_some_and(|u| t.is_none_or(|t| t >= u)))
    }
}

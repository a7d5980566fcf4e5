//! `toolgate audit query` and `tail`: which records match, and how they print.

use serde_json::Value;

/// Why a query argument is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `--since` is neither a duration nor an RFC 3339 time.
    #[error("`{0}` is neither a duration such as `30m`, `1h`, `2d` nor an RFC 3339 time such as `2026-11-25T01:00:00Z`")]
    Since(String),
    /// `--decision` is not a decision.
    #[error("`{0}` is not a decision: use `allow` or `deny`")]
    Decision(String),
}

/// Record filter; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `agent` equals.
    pub agent: Option<String>,
    /// `user` equals.
    pub user: Option<String>,
    /// `tool` equals.
    pub tool: Option<String>,
    /// `decision` equals.
    pub decision: Option<String>,
    /// `time` at or after, microseconds since the epoch.
    pub since_us: Option<u64>,
}

impl Filter {
    /// Checks and stores a `--decision` value.
    pub fn with_decision(mut self, d: Option<String>) -> Result<Self, QueryError> {
        if let Some(d) = &d {
            if d != "allow" && d != "deny" {
                return Err(QueryError::Decision(d.clone()));
            }
        }
        self.decision = d;
        Ok(self)
    }

    /// Whether record `v` matches.
    pub fn matches(&self, v: &Value) -> bool {
        let eq = |field: &str, want: &Option<String>| {
            want.as_deref().is_none_or(|w| v[field].as_str() == Some(w))
        };
        eq("agent", &self.agent)
            && eq("user", &self.user)
            && eq("tool", &self.tool)
            && eq("decision", &self.decision)
            && self.since_us.is_none_or(|since| {
                v["time"]
                    .as_str()
                    .and_then(parse_rfc3339_us)
                    .is_some_and(|t| t >= since)
            })
    }
}

/// `--since`: `90s`, `30m`, `1h`, `2d` before `now_us`, or an RFC 3339 time.
pub fn parse_since(s: &str, now_us: u64) -> Result<u64, QueryError> {
    if let Some(secs) = parse_duration_s(s) {
        return Ok(now_us.saturating_sub(secs.saturating_mul(1_000_000)));
    }
    parse_rfc3339_us(s).ok_or_else(|| QueryError::Since(s.to_owned()))
}

/// A duration such as `90s`, `30m`, `1h` or `2d`, in seconds.
pub fn parse_duration_s(s: &str) -> Option<u64> {
    let unit = s.chars().last().filter(|c| "smhd".contains(*c))?;
    let n = s[..s.len() - 1].parse::<u64>().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => 86_400,
    };
    Some(n.saturating_mul(secs))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to microseconds since the epoch.
pub fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_us = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 6)];
        frac_us = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    u64::try_from(secs * 1_000_000 + frac_us).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One record as a line for people: time, log_seq, agent, user, tool,
/// decision, reason, status.
pub fn human_line(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!(
        "{} #{} agent={} user={} {} tool={} {} ({}) status={}",
        s("time"),
        s("log_seq"),
        s("agent"),
        s("user"),
        s("method"),
        s("tool"),
        s("decision"),
        s("reason"),
        s("status")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_like_the_record_encoder_writes() {
        let mut out = Vec::new();
        toolgate_core::audit::write_rfc3339_us(1_795_570_070_123_456, &mut out);
        let s = String::from_utf8_lossy(&out);
        assert_eq!(parse_rfc3339_us(&s), Some(1_795_570_070_123_456));
        assert_eq!(
            parse_rfc3339_us("2026-11-25T02:27:50+01:00"),
            Some(1_795_570_070_000_000)
        );
        assert_eq!(parse_rfc3339_us("2026-13-25T02:27:50Z"), None);
        assert_eq!(parse_rfc3339_us("yesterday"), None);
    }

    #[test]
    fn since_accepts_durations_and_times() {
        let now = 10_000_000_000;
        assert_eq!(parse_since("30m", now), Ok(now - 1_800_000_000));
        assert_eq!(parse_since("1h", now), Ok(now - 3_600_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1_000_000));
        assert!(parse_since("1y", now).is_err());
    }

    #[test]
    fn filter_needs_every_field_to_match() {
        let v: Value = serde_json::json!({"agent":"a","user":null,"tool":"t","decision":"deny","time":"2026-01-01T00:00:00.000000Z"});
        let f = Filter {
            agent: Some("a".into()),
            ..Filter::default()
        }
        .with_decision(Some("deny".into()))
        .unwrap_or_default();
        assert!(f.matches(&v));
        let f2 = Filter {
            user: Some("u".into()),
            ..f.clone()
        };
        assert!(!f2.matches(&v));
        let late = Filter {
            since_us: parse_rfc3339_us("2026-01-02T00:00:00Z"),
            ..f
        };
        assert!(!late.matches(&v));
        assert!(Filter::default()
            .with_decision(Some("maybe".into()))
            .is_err());
    }
}

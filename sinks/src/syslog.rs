//! RFC 5424 encoding of audit records.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME - audit [toolgate@32473 lseq="…" …][meta sequenceId="…"] {record JSON}
//! ```
//!
//! PRI is `facility × 8 + severity`, severity 6 (informational) for allowed
//! calls and 4 (warning) for refused ones. TIMESTAMP is the record's `time`.
//! The `toolgate@32473` element carries the record's fields under short
//! names (absent when null; `ad` is the arguments digest, a redacted copy
//! stays in MSG only; `hm`, `hp`, `hs` the HTTP method, path template and
//! status of a call to a REST upstream); `meta sequenceId` is `log_seq` folded into
//! 1..=2147483647 as RFC 5424 §7.3.1 requires, so a collector can spot gaps
//! and duplicates. MSG is the record's JSON line, cut to fit the message
//! size limit. 32473 is the enterprise number RFC 5612 reserves for
//! documentation, used until toolgate has its own.

use serde_json::Value;

/// SD-ID of the record element.
pub const SD_ID: &str = "toolgate@32473";

/// Record field (a JSON pointer into the record) → SD-PARAM name, in the
/// order they are written.
const PARAMS: &[(&str, &str)] = &[
    ("/log_seq", "lseq"),
    ("/shard", "shard"),
    ("/seq", "seq"),
    ("/request_id", "rid"),
    ("/agent", "agent"),
    ("/user", "sub"),
    ("/customer", "cu"),
    ("/method", "m"),
    ("/tool", "tool"),
    ("/target", "tgt"),
    ("/upstream", "up"),
    ("/decision", "dec"),
    ("/reason", "reason"),
    ("/status", "st"),
    ("/outcome", "out"),
    ("/error_code", "err"),
    ("/latency_us", "dur"),
    ("/client", "src"),
    ("/protocol_version", "pv"),
    ("/session/id", "sid"),
    ("/identity/jti", "ij"),
    ("/args_sha256", "ad"),
    ("/http/method", "hm"),
    ("/http/path", "hp"),
    ("/http/status", "hs"),
    ("/prev_hash", "ph"),
    ("/hash", "h"),
];

/// Fixed parts of every message a sink sends.
#[derive(Debug, Clone)]
pub struct SyslogFormat {
    /// Facility, 0–23.
    pub facility: u8,
    /// APP-NAME.
    pub app_name: String,
    /// HOSTNAME.
    pub hostname: String,
    /// Largest message, bytes.
    pub max_message_bytes: usize,
}

/// This machine's host name, or `-` (the RFC 5424 NILVALUE).
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// Keeps printable US-ASCII only (header fields allow nothing else), cut to `max`.
fn header_field(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if t.is_empty() {
        "-".to_owned()
    } else {
        t
    }
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped in PARAM-VALUE.
fn push_param_value(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// `log_seq` as an RFC 5424 `sequenceId` (1..=2147483647, wrapping).
pub fn sequence_id(log_seq: u64) -> u64 {
    (log_seq.saturating_sub(1) % 2_147_483_647) + 1
}

impl SyslogFormat {
    /// Appends the message for record `line` (a JSON line without newline).
    pub fn encode(&self, line: &[u8], out: &mut Vec<u8>) {
        use std::io::Write;
        let start = out.len();
        let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let severity = if v["decision"] == "deny" { 4 } else { 6 };
        let pri = u16::from(self.facility.min(23)) * 8 + severity;
        let time = v["time"]
            .as_str()
            .filter(|t| crate::query::parse_rfc3339_us(t).is_some())
            .unwrap_or("-");
        let _ = write!(
            out,
            "<{pri}>1 {} {} {} - audit [{SD_ID}",
            header_field(time, 64),
            header_field(&self.hostname, 255),
            header_field(&self.app_name, 48)
        );
        for (field, name) in PARAMS {
            let text = match v.pointer(field).unwrap_or(&Value::Null) {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(out, " {name}=\"");
            push_param_value(out, &text);
            out.push(b'"');
        }
        out.push(b']');
        if let Some(seq) = v["log_seq"].as_u64() {
            let _ = write!(out, "[meta sequenceId=\"{}\"]", sequence_id(seq));
        }
        out.push(b' ');
        let room = self.max_message_bytes.saturating_sub(out.len() - start);
        out.extend_from_slice(cut_utf8(line, room));
    }
}

/// The longest prefix of `b` of at most `max` bytes that ends on a UTF-8
/// character boundary.
fn cut_utf8(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    let mut end = max;
    // Continuation bytes are 0b10xxxxxx: back up to a character start.
    while end > 0 && (b[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(max: usize) -> SyslogFormat {
        SyslogFormat {
            facility: 13,
            app_name: "toolgate".into(),
            hostname: "gw-1".into(),
            max_message_bytes: max,
        }
    }

    const LINE: &str = r#"{"time":"2026-11-25T01:46:34.451682Z","shard":0,"seq":2,"agent":"support-bot","user":null,"tool":"crm__x\"]\\","decision":"deny","reason":"tool_not_attached","status":400,"log_seq":7,"prev_hash":"00","hash":"ab"}"#;

    #[test]
    fn record_becomes_an_rfc5424_message_with_escaped_structured_data() {
        let mut out = Vec::new();
        fmt(8192).encode(LINE.as_bytes(), &mut out);
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.starts_with("<108>1 2026-11-25T01:46:34.451682Z gw-1 toolgate - audit [toolgate@32473 lseq=\"7\" shard=\"0\" seq=\"2\" agent=\"support-bot\""),
            "{s}"
        );
        assert!(s.contains(r#" tool="crm__x\"\]\\""#), "{s}");
        assert!(!s.contains(" sub="), "null fields are left out: {s}");
        assert!(s.contains("][meta sequenceId=\"7\"] {"), "{s}");
        assert!(s.ends_with(LINE), "{s}");
    }

    #[test]
    fn a_rest_call_carries_its_http_method_path_and_status() {
        let line = LINE.replace(
            r#","log_seq":7"#,
            r#","http":{"method":"GET","path":"/invoices/{id}","status":404},"log_seq":7"#,
        );
        let mut out = Vec::new();
        fmt(8192).encode(line.as_bytes(), &mut out);
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.contains(r#" hm="GET" hp="/invoices/{id}" hs="404" ph="00""#),
            "{s}"
        );
        let mut plain = Vec::new();
        fmt(8192).encode(LINE.as_bytes(), &mut plain);
        assert!(!String::from_utf8_lossy(&plain).contains(" hm="));
    }

    #[test]
    fn argument_digest_is_the_ad_param_and_a_redacted_copy_stays_in_msg() {
        let line = LINE.replace(
            r#","log_seq":7"#,
            r#","args_sha256":"ba78","args_redacted":"{\"q\":1}","args_truncated":false,"log_seq":7"#,
        );
        let mut out = Vec::new();
        fmt(8192).encode(line.as_bytes(), &mut out);
        let s = String::from_utf8_lossy(&out);
        let sd = &s[..s.find("][meta").unwrap_or(s.len())];
        assert!(sd.contains(r#" ad="ba78" ph="00""#), "{s}");
        assert!(
            !sd.contains('{'),
            "the redacted copy is not a parameter: {s}"
        );
        assert!(s.ends_with(&line), "{s}");
    }

    #[test]
    fn allowed_calls_are_informational_and_long_messages_are_cut() {
        let line = LINE.replace("\"deny\"", "\"allow\"");
        let mut whole = Vec::new();
        fmt(8192).encode(line.as_bytes(), &mut whole);
        assert!(whole.starts_with(b"<110>1 "));
        let mut out = Vec::new();
        fmt(whole.len() - 10).encode(line.as_bytes(), &mut out);
        assert_eq!(out.len(), whole.len() - 10);
        assert_eq!(out[..], whole[..whole.len() - 10]);
    }

    #[test]
    fn sequence_id_wraps_within_its_range() {
        assert_eq!(sequence_id(1), 1);
        assert_eq!(sequence_id(2_147_483_647), 2_147_483_647);
        assert_eq!(sequence_id(2_147_483_648), 1);
    }

    #[test]
    fn cut_respects_utf8() {
        assert_eq!(cut_utf8("aé".as_bytes(), 2), b"a");
    }
}

//! Audit records as OCSF events: API Activity (class 6003, category 6
//! Application Activity), schema 1.3.
//!
//! The mapping is a pure function of the log record, so a record resent
//! after an outage maps to the same event, with the same `metadata.uid`
//! (the record's chain hash) for collectors to deduplicate on. Fields OCSF
//! has no place for go under `unmapped`, so nothing of the record is lost.
//! The "OCSF mapping" table in `docs/audit-and-siem.md` documents every
//! field; change both together.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;
use serde_json::Value;

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// API Activity.
pub const CLASS_UID: u64 = 6003;
/// Application Activity.
pub const CATEGORY_UID: u64 = 6;
/// Activity "Other": an MCP call is none of Create/Read/Update/Delete as far
/// as toolgate can tell; `activity_name` carries the MCP method.
pub const ACTIVITY_OTHER: u64 = 99;

/// A log record, borrowed from its line where it can be (parsing into this
/// rather than a `Value` keeps a sink's per-record cost in microseconds).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Record<'a> {
    /// RFC 3339 time.
    #[serde(borrow)]
    pub time: Option<Cow<'a, str>>,
    /// Shard.
    pub shard: Option<u64>,
    /// Per-shard sequence.
    pub seq: Option<u64>,
    /// JSON-RPC id, any JSON.
    pub request_id: Value,
    /// Agent.
    #[serde(borrow)]
    pub agent: Option<Cow<'a, str>>,
    /// End user.
    #[serde(borrow)]
    pub user: Option<Cow<'a, str>>,
    /// Customer (tenant).
    #[serde(borrow)]
    pub customer: Option<Cow<'a, str>>,
    /// MCP method.
    #[serde(borrow)]
    pub method: Option<Cow<'a, str>>,
    /// Tool.
    #[serde(borrow)]
    pub tool: Option<Cow<'a, str>>,
    /// The prompt or resource URI of a `prompts/get` or `resources/read`.
    #[serde(borrow)]
    pub target: Option<Cow<'a, str>>,
    /// Upstream.
    #[serde(borrow)]
    pub upstream: Option<Cow<'a, str>>,
    /// `allow` or `deny`.
    #[serde(borrow)]
    pub decision: Option<Cow<'a, str>>,
    /// Why.
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
    /// HTTP status.
    pub status: Option<u64>,
    /// `success`, `failure`, `tool_error`.
    #[serde(borrow)]
    pub outcome: Option<Cow<'a, str>>,
    /// JSON-RPC error code.
    pub error_code: Option<i64>,
    /// Latency, µs.
    pub latency_us: Option<u64>,
    /// Client `ip:port`.
    #[serde(borrow)]
    pub client: Option<Cow<'a, str>>,
    /// MCP protocol version.
    #[serde(borrow)]
    pub protocol_version: Option<Cow<'a, str>>,
    /// Deciding policies.
    pub policies: Value,
    /// Judge part.
    pub judge: Value,
    /// Output-rule counts.
    pub redactions: Value,
    /// The HTTP request a call to a REST upstream became.
    pub http: Value,
    /// SHA-256 (hex) of the call's arguments as forwarded.
    #[serde(borrow)]
    pub args_sha256: Option<Cow<'a, str>>,
    /// The call's arguments with detector matches masked (JSON text).
    #[serde(borrow)]
    pub args_redacted: Option<Cow<'a, str>>,
    /// Whether `args_redacted` was cut to fit.
    pub args_truncated: Option<bool>,
    /// The door a request came through (`rest`; absent for `/mcp`).
    #[serde(borrow)]
    pub door: Option<Cow<'a, str>>,
    /// The `[[limits.rules]]` id that refused the call.
    #[serde(borrow)]
    pub limit: Option<Cow<'a, str>>,
    /// The quota units the call was charged.
    pub units: Option<u64>,
    /// The policy verdict of a call that reached policy.
    #[serde(borrow)]
    pub verdict: Option<Cow<'a, str>>,
    /// The session and the facts its decision saw.
    pub session: Value,
    /// The shadow policies' decision.
    pub shadow: Value,
    /// The end-user assertion the call carried.
    pub identity: Value,
    /// The end user's groups from the token.
    pub groups: Value,
    /// Requests the upstream sent toward the agent's client.
    pub client_requests: Value,
    /// Position in the log.
    pub log_seq: Option<u64>,
    /// Previous record's hash.
    #[serde(borrow)]
    pub prev_hash: Option<Cow<'a, str>>,
    /// This record's hash.
    #[serde(borrow)]
    pub hash: Option<Cow<'a, str>>,
}

impl<'a> Record<'a> {
    /// Parses a log line; a line that is not a record gives an empty one
    /// (the reader only hands out chained records, so this is a fallback).
    pub fn parse(line: &'a [u8]) -> Self {
        serde_json::from_slice(line).unwrap_or_default()
    }

    /// Milliseconds since the Unix epoch.
    pub fn time_ms(&self) -> Option<u64> {
        self.time
            .as_deref()
            .and_then(crate::query::parse_rfc3339_us)
            .map(|us| us / 1000)
    }
}

fn s(out: &mut Vec<u8>, v: &str) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b',');
    s(out, k);
    out.push(b':');
}

fn opt_s(out: &mut Vec<u8>, k: &str, v: Option<&str>) {
    if let Some(v) = v {
        key(out, k);
        s(out, v);
    }
}

/// Appends `r` as one OCSF API Activity event (JSON, no newline); with
/// `timestamp`, also an `@timestamp` member (the record's time, for
/// Elasticsearch data streams).
pub fn write_ocsf(r: &Record<'_>, timestamp: bool, out: &mut Vec<u8>) {
    let allowed = r.decision.as_deref() != Some("deny");
    let (disposition_id, disposition) = if allowed {
        (1, "Allowed")
    } else {
        (2, "Blocked")
    };
    let (severity_id, severity) = if allowed {
        (1, "Informational")
    } else {
        (3, "Medium")
    };
    let (status_id, status) = match r.outcome.as_deref() {
        Some("success") => (1, "Success"),
        Some("failure") | Some("tool_error") => (2, "Failure"),
        _ => (0, "Unknown"),
    };
    let method = r.method.as_deref();
    let _ = write!(
        out,
        "{{\"class_uid\":{CLASS_UID},\"class_name\":\"API Activity\",\"category_uid\":{CATEGORY_UID},\"category_name\":\"Application Activity\",\"activity_id\":{ACTIVITY_OTHER},\"activity_name\":"
    );
    s(out, method.unwrap_or("Other"));
    let _ = write!(
        out,
        ",\"type_uid\":{},\"type_name\":\"API Activity: Other\",\"time\":{},\"severity_id\":{severity_id},\"severity\":\"{severity}\",\"disposition_id\":{disposition_id},\"disposition\":\"{disposition}\",\"status_id\":{status_id},\"status\":\"{status}\"",
        CLASS_UID * 100 + ACTIVITY_OTHER,
        r.time_ms().unwrap_or(0)
    );
    if let Some(st) = r.status {
        let _ = write!(out, ",\"status_code\":\"{st}\"");
    }
    opt_s(out, "status_detail", r.reason.as_deref());
    if let Some(us) = r.latency_us {
        let _ = write!(out, ",\"duration\":{}", us / 1000);
    }
    if timestamp {
        opt_s(out, "@timestamp", r.time.as_deref());
    }
    out.extend_from_slice(b",\"actor\":{");
    let mark = out.len();
    if let Some(a) = r.agent.as_deref() {
        out.extend_from_slice(b"\"app_name\":");
        s(out, a);
        out.extend_from_slice(b",\"app_uid\":");
        s(out, a);
    }
    if let Some(u) = r.user.as_deref() {
        if out.len() > mark {
            out.push(b',');
        }
        out.extend_from_slice(b"\"user\":{\"uid\":");
        s(out, u);
        out.extend_from_slice(b",\"name\":");
        s(out, u);
        out.push(b'}');
    }
    out.push(b'}');
    if let Some(c) = r
        .client
        .as_deref()
        .and_then(|c| c.parse::<std::net::SocketAddr>().ok())
    {
        let _ = write!(
            out,
            ",\"src_endpoint\":{{\"ip\":\"{}\",\"port\":{}}}",
            c.ip(),
            c.port()
        );
    }
    out.extend_from_slice(b",\"api\":{\"operation\":");
    s(out, r.tool.as_deref().or(method).unwrap_or(""));
    if let Some(u) = r.upstream.as_deref() {
        out.extend_from_slice(b",\"service\":{\"name\":");
        s(out, u);
        out.push(b'}');
    }
    opt_s(out, "version", r.protocol_version.as_deref());
    let uid = match &r.request_id {
        Value::Null => None,
        Value::String(id) => Some(Cow::Borrowed(id.as_str())),
        other => Some(Cow::Owned(other.to_string())),
    };
    let has_args = r.args_sha256.is_some() || r.args_redacted.is_some();
    if uid.is_some() || has_args {
        out.extend_from_slice(b",\"request\":{");
        let mark = out.len();
        if let Some(id) = uid.as_deref() {
            out.extend_from_slice(b"\"uid\":");
            s(out, id);
        }
        if has_args {
            // What the record keeps of the arguments (never the raw ones),
            // always an object so the field's type never varies.
            if out.len() > mark {
                out.push(b',');
            }
            out.extend_from_slice(b"\"data\":{");
            let data = out.len();
            if let Some(d) = r.args_sha256.as_deref() {
                out.extend_from_slice(b"\"sha256\":");
                s(out, d);
            }
            if let Some(text) = r.args_redacted.as_deref() {
                if out.len() > data {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"redacted\":");
                s(out, text);
                let _ = write!(out, ",\"truncated\":{}", r.args_truncated.unwrap_or(false));
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"response\":{\"code\":");
    match r.status {
        Some(st) => {
            let _ = write!(out, "{st}");
        }
        None => out.extend_from_slice(b"null"),
    }
    if let Some(c) = r.error_code {
        let _ = write!(out, ",\"error\":\"{c}\"");
    }
    out.extend_from_slice(b"}}");
    if let Some(h) = r.http.as_object() {
        let method = h.get("method").and_then(Value::as_str);
        let path = h.get("path").and_then(Value::as_str);
        if let (Some(m), Some(p)) = (method, path) {
            out.extend_from_slice(b",\"http_request\":{\"http_method\":");
            s(out, m);
            out.extend_from_slice(b",\"url\":{\"path\":");
            s(out, p);
            out.extend_from_slice(b"}}");
        }
        if let Some(code) = h.get("status").and_then(Value::as_u64) {
            let _ = write!(out, ",\"http_response\":{{\"code\":{code}}}");
        }
    }
    let resource = match (r.tool.as_deref(), r.target.as_deref()) {
        (Some(t), _) => Some((t, "mcp_tool")),
        (None, Some(t)) if r.method.as_deref() == Some("prompts/get") => Some((t, "mcp_prompt")),
        (None, Some(t)) => Some((t, "mcp_resource")),
        (None, None) => None,
    };
    if let Some((t, kind)) = resource {
        out.extend_from_slice(b",\"resources\":[{\"name\":");
        s(out, t);
        out.extend_from_slice(b",\"type\":");
        s(out, kind);
        if let Some(u) = r.upstream.as_deref() {
            out.extend_from_slice(b",\"group\":{\"name\":");
            s(out, u);
            out.push(b'}');
        }
        out.extend_from_slice(b"}]");
    }
    if let Some(p) = r
        .policies
        .as_array()
        .and_then(|ps| ps.first())
        .and_then(Value::as_str)
    {
        out.extend_from_slice(b",\"policy\":{\"uid\":");
        s(out, p);
        out.extend_from_slice(b",\"name\":");
        s(out, p);
        out.push(b'}');
    }
    let _ = write!(
        out,
        ",\"metadata\":{{\"version\":\"{OCSF_VERSION}\",\"product\":{{\"name\":\"toolgate\",\"vendor_name\":\"toolgate\",\"version\":\"{}\"}},\"log_name\":\"audit\",\"uid\":",
        env!("CARGO_PKG_VERSION")
    );
    s(out, r.hash.as_deref().unwrap_or(""));
    opt_s(out, "tenant_uid", r.customer.as_deref());
    match r.log_seq {
        Some(n) => {
            let _ = write!(out, ",\"sequence\":{n}}}");
        }
        None => out.extend_from_slice(b",\"sequence\":null}"),
    }
    // Everything OCSF has no place for, so nothing of the record is lost.
    out.extend_from_slice(b",\"unmapped\":{");
    let mark = out.len();
    let num = |out: &mut Vec<u8>, k: &str, v: Option<u64>| {
        if let Some(v) = v {
            if out.len() > mark {
                out.push(b',');
            }
            s(out, k);
            let _ = write!(out, ":{v}");
        }
    };
    num(out, "shard", r.shard);
    num(out, "seq", r.seq);
    num(out, "latency_us", r.latency_us);
    num(out, "log_seq", r.log_seq);
    num(out, "units", r.units);
    for (k, v) in [
        ("outcome", r.outcome.as_deref()),
        ("reason", r.reason.as_deref()),
        ("door", r.door.as_deref()),
        ("limit", r.limit.as_deref()),
        ("verdict", r.verdict.as_deref()),
        ("prev_hash", r.prev_hash.as_deref()),
        ("hash", r.hash.as_deref()),
    ] {
        if let Some(v) = v {
            if out.len() > mark {
                out.push(b',');
            }
            s(out, k);
            out.push(b':');
            s(out, v);
        }
    }
    for (k, v) in [
        ("policies", &r.policies),
        ("judge", &r.judge),
        ("redactions", &r.redactions),
        ("session", &r.session),
        ("shadow", &r.shadow),
        ("groups", &r.groups),
        ("identity", &r.identity),
        ("client_requests", &r.client_requests),
    ] {
        if !v.is_null() {
            if out.len() > mark {
                out.push(b',');
            }
            s(out, k);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DENY: &str = r#"{"time":"2026-11-25T01:46:34.451682Z","shard":1,"seq":9,"request_id":7,"agent":"billing-bot","user":"alice","customer":"acme","method":"tools/call","tool":"crm__lookup_customer","upstream":"crm","decision":"deny","reason":"tool_not_attached","status":400,"outcome":"failure","error_code":-32602,"latency_us":2500,"client":"127.0.0.1:5000","protocol_version":"2025-06-18","policies":["@forbid-1"],"judge":null,"redactions":[],"log_seq":42,"prev_hash":"aa","hash":"bb"}"#;

    fn map(line: &str) -> Value {
        let mut out = Vec::new();
        write_ocsf(&Record::parse(line.as_bytes()), false, &mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| unreachable!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn a_rest_call_maps_to_http_request_and_response() {
        let line = DENY.replace(
            r#""log_seq":42"#,
            r#""http":{"method":"POST","path":"/refunds/{id}","status":201},"log_seq":42"#,
        );
        let e = map(&line);
        assert_eq!(
            e["http_request"],
            json!({"http_method": "POST", "url": {"path": "/refunds/{id}"}})
        );
        assert_eq!(e["http_response"], json!({"code": 201}));
        assert!(map(DENY).get("http_request").is_none());
    }

    #[test]
    fn denied_call_maps_to_a_blocked_api_activity() {
        let e = map(DENY);
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["category_uid"], 6);
        assert_eq!(e["type_uid"], 600_399);
        assert_eq!(e["activity_name"], "tools/call");
        assert_eq!(e["time"], 1_795_571_194_451u64);
        assert_eq!(
            (e["disposition_id"].clone(), e["disposition"].clone()),
            (json!(2), json!("Blocked"))
        );
        assert_eq!(
            (e["severity_id"].clone(), e["status_id"].clone()),
            (json!(3), json!(2))
        );
        assert_eq!(e["status_code"], "400");
        assert_eq!(e["status_detail"], "tool_not_attached");
        assert_eq!(e["duration"], 2);
        assert_eq!(e["actor"]["app_name"], "billing-bot");
        assert_eq!(e["actor"]["user"]["uid"], "alice");
        assert_eq!(e["src_endpoint"], json!({"ip": "127.0.0.1", "port": 5000}));
        assert_eq!(e["api"]["operation"], "crm__lookup_customer");
        assert_eq!(e["api"]["service"]["name"], "crm");
        assert_eq!(e["api"]["request"]["uid"], "7");
        assert_eq!(
            e["api"]["response"],
            json!({"code": 400, "error": "-32602"})
        );
        assert_eq!(e["resources"][0]["group"]["name"], "crm");
        assert_eq!(e["policy"]["uid"], "@forbid-1");
        assert_eq!(e["metadata"]["uid"], "bb");
        assert_eq!(e["metadata"]["tenant_uid"], "acme");
        assert_eq!(e["metadata"]["sequence"], 42);
        assert_eq!(e["metadata"]["product"]["name"], "toolgate");
        assert_eq!(e["unmapped"]["policies"], json!(["@forbid-1"]));
        let later = map(&DENY.replace(
            r#""log_seq":42"#,
            r#""door":"rest","limit":"day","units":10,"client_requests":[{"method":"roots/list","outcome":"not_allowed"}],"verdict":"deny","session":{"id":"ab","known":true},"shadow":{"verdict":"allow","agrees":false,"policies":[]},"groups":["admins"],"log_seq":42"#,
        ));
        for k in [
            "door",
            "limit",
            "units",
            "client_requests",
            "verdict",
            "session",
            "shadow",
            "groups",
        ] {
            assert!(!later["unmapped"][k].is_null(), "{k} is lost: {later}");
        }
        assert_eq!(later["unmapped"]["session"]["id"], "ab");
        assert_eq!(e["unmapped"]["log_seq"], 42);
        assert!(e["unmapped"].get("judge").is_none(), "nulls are left out");
    }

    #[test]
    fn allowed_call_without_tool_or_client() {
        let line = DENY
            .replace(r#""deny""#, r#""allow""#)
            .replace(r#""failure""#, r#""success""#)
            .replace(r#""tool":"crm__lookup_customer""#, r#""tool":null"#)
            .replace(r#""client":"127.0.0.1:5000""#, r#""client":null"#);
        let e = map(&line);
        assert_eq!(
            (e["disposition_id"].clone(), e["severity_id"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(e["status"], "Success");
        assert_eq!(e["api"]["operation"], "tools/call");
        assert!(e.get("resources").is_none() && e.get("src_endpoint").is_none());
    }

    #[test]
    fn prompts_and_resources_are_resources_of_their_kind() {
        for (method, target, kind) in [
            ("prompts/get", "docs__summarize", "mcp_prompt"),
            (
                "resources/read",
                "toolgate://docs/file:///a",
                "mcp_resource",
            ),
        ] {
            let e = map(&DENY.replace(
                r#""method":"tools/call","tool":"crm__lookup_customer""#,
                &format!(r#""method":"{method}","tool":null,"target":"{target}""#),
            ));
            assert_eq!(e["api"]["operation"], method);
            assert_eq!(e["resources"][0]["name"], target);
            assert_eq!(e["resources"][0]["type"], kind);
            assert_eq!(e["resources"][0]["group"]["name"], "crm");
        }
    }

    #[test]
    fn arguments_map_to_api_request_data() {
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let e = map(&DENY.replace(
            r#","log_seq":42"#,
            &format!(r#","args_sha256":"{digest}","log_seq":42"#),
        ));
        assert_eq!(
            e["api"]["request"],
            json!({"uid": "7", "data": {"sha256": digest}})
        );
        let e = map(&DENY.replace(r#""request_id":7"#, r#""request_id":null"#).replace(
            r#","log_seq":42"#,
            r#","args_redacted":"{\"q\":\"[REDACTED:card]\"}","args_truncated":true,"log_seq":42"#,
        ));
        assert_eq!(
            e["api"]["request"],
            json!({"data": {"redacted": r#"{"q":"[REDACTED:card]"}"#, "truncated": true}})
        );
        // Without arguments or id: no request object, as before.
        let e = map(&DENY.replace(r#""request_id":7"#, r#""request_id":null"#));
        assert!(e["api"].get("request").is_none());
    }

    #[test]
    fn escapes_and_odd_records_stay_valid_json() {
        let line = DENY
            .replace("billing-bot", "bot\\\"x\\n\\u00e9")
            .replace(r#""user":"alice""#, r#""user":null"#)
            .replace(r#""request_id":7"#, r#""request_id":"r-\"1""#);
        let e = map(&line);
        assert_eq!(e["actor"]["app_name"], "bot\"x\né");
        assert!(e["actor"].get("user").is_none());
        assert_eq!(e["api"]["request"]["uid"], "r-\"1");
        let e = map("{}");
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["actor"], json!({}));
        assert_eq!(e["unmapped"], json!({}));
        let e = map("not json");
        assert_eq!(e["metadata"]["uid"], "");
    }
}

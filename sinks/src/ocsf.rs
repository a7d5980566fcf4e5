//! Audit records as OCSF events: API Activity (class 6003, category 6
//! Application Activity), schema 1.3.
//!
//! The mapping is a pure function of the log record, so a record resent
//! after an outage maps to the same event, with the same `metadata.uid`
//! (the record's chain hash) for collectors to deduplicate on. Fields OCSF
//! has no place for go under `unmapped`, so nothing of the record is lost.
//! The README's "OCSF mapping" table documents every field; change both
//! together.

use serde_json::{json, Map, Value};

/// OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// API Activity.
pub const CLASS_UID: u64 = 6003;
/// Application Activity.
pub const CATEGORY_UID: u64 = 6;
/// Activity "Other": an MCP call is none of Create/Read/Update/Delete as far
/// as toolgate can tell; `activity_name` carries the MCP method.
pub const ACTIVITY_OTHER: u64 = 99;

/// Milliseconds since the Unix epoch of an RFC 3339 record time.
pub fn time_ms(v: &Value) -> Option<u64> {
    v["time"]
        .as_str()
        .and_then(crate::query::parse_rfc3339_us)
        .map(|us| us / 1000)
}

/// Maps one log record (already parsed) to an OCSF API Activity event.
pub fn to_ocsf(r: &Value) -> Value {
    let allowed = r["decision"] != "deny";
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
    let (status_id, status) = match r["outcome"].as_str() {
        Some("success") => (1, "Success"),
        Some("failure") | Some("tool_error") => (2, "Failure"),
        _ => (0, "Unknown"),
    };
    let method = r["method"].as_str();
    let mut e = Map::new();
    e.insert("class_uid".into(), json!(CLASS_UID));
    e.insert("class_name".into(), json!("API Activity"));
    e.insert("category_uid".into(), json!(CATEGORY_UID));
    e.insert("category_name".into(), json!("Application Activity"));
    e.insert("activity_id".into(), json!(ACTIVITY_OTHER));
    e.insert("activity_name".into(), json!(method.unwrap_or("Other")));
    e.insert("type_uid".into(), json!(CLASS_UID * 100 + ACTIVITY_OTHER));
    e.insert("type_name".into(), json!("API Activity: Other"));
    e.insert("time".into(), json!(time_ms(r).unwrap_or(0)));
    e.insert("severity_id".into(), json!(severity_id));
    e.insert("severity".into(), json!(severity));
    e.insert("disposition_id".into(), json!(disposition_id));
    e.insert("disposition".into(), json!(disposition));
    e.insert("status_id".into(), json!(status_id));
    e.insert("status".into(), json!(status));
    e.insert("status_code".into(), json!(r["status"].to_string()));
    e.insert("status_detail".into(), r["reason"].clone());
    if let Some(us) = r["latency_us"].as_u64() {
        e.insert("duration".into(), json!(us / 1000));
    }
    let mut actor = Map::new();
    if let Some(a) = r["agent"].as_str() {
        actor.insert("app_name".into(), json!(a));
        actor.insert("app_uid".into(), json!(a));
    }
    if let Some(u) = r["user"].as_str() {
        actor.insert("user".into(), json!({ "uid": u, "name": u }));
    }
    e.insert("actor".into(), Value::Object(actor));
    if let Some(c) = r["client"]
        .as_str()
        .and_then(|c| c.parse::<std::net::SocketAddr>().ok())
    {
        e.insert(
            "src_endpoint".into(),
            json!({ "ip": c.ip().to_string(), "port": c.port() }),
        );
    }
    let mut api = Map::new();
    let operation = r["tool"].as_str().or(method).unwrap_or("");
    api.insert("operation".into(), json!(operation));
    if let Some(u) = r["upstream"].as_str() {
        api.insert("service".into(), json!({ "name": u }));
    }
    if let Some(v) = r["protocol_version"].as_str() {
        api.insert("version".into(), json!(v));
    }
    if !r["request_id"].is_null() {
        let id = match &r["request_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        api.insert("request".into(), json!({ "uid": id }));
    }
    let mut response = Map::new();
    response.insert("code".into(), r["status"].clone());
    if let Some(c) = r["error_code"].as_i64() {
        response.insert("error".into(), json!(c.to_string()));
    }
    api.insert("response".into(), Value::Object(response));
    e.insert("api".into(), Value::Object(api));
    if let Some(t) = r["tool"].as_str() {
        let mut res = json!({ "name": t, "type": "mcp_tool" });
        if let Some(u) = r["upstream"].as_str() {
            res["group"] = json!({ "name": u });
        }
        e.insert("resources".into(), json!([res]));
    }
    if let Some(p) = r["policies"]
        .as_array()
        .and_then(|ps| ps.first())
        .and_then(Value::as_str)
    {
        e.insert("policy".into(), json!({ "uid": p, "name": p }));
    }
    let uid = r["hash"].as_str().unwrap_or("");
    e.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "toolgate",
                "vendor_name": "toolgate",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "log_name": "audit",
            "uid": uid,
            "sequence": r["log_seq"],
        }),
    );
    let mut unmapped = Map::new();
    for k in [
        "shard",
        "seq",
        "outcome",
        "reason",
        "latency_us",
        "policies",
        "judge",
        "redactions",
        "prev_hash",
        "hash",
        "log_seq",
    ] {
        if !r[k].is_null() {
            unmapped.insert(k.into(), r[k].clone());
        }
    }
    e.insert("unmapped".into(), Value::Object(unmapped));
    Value::Object(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &str = r#"{"time":"2026-11-25T01:46:34.451682Z","shard":1,"seq":9,"request_id":7,"agent":"billing-bot","user":"alice","method":"tools/call","tool":"crm__lookup_customer","upstream":"crm","decision":"deny","reason":"tool_not_attached","status":400,"outcome":"failure","error_code":-32602,"latency_us":2500,"client":"127.0.0.1:5000","protocol_version":"2025-06-18","policies":["@forbid-1"],"judge":null,"redactions":[],"log_seq":42,"prev_hash":"aa","hash":"bb"}"#;

    fn map(line: &str) -> Value {
        to_ocsf(&serde_json::from_str(line).unwrap_or(Value::Null))
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
        assert_eq!(e["metadata"]["sequence"], 42);
        assert_eq!(e["metadata"]["product"]["name"], "toolgate");
        assert_eq!(e["unmapped"]["policies"], json!(["@forbid-1"]));
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
}

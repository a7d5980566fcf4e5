//! One tool call as exactly one HTTP request, and the HTTP answer as an MCP
//! tool result.
//!
//! Arguments are checked against the operation before anything is built:
//! unknown arguments, missing required ones, and values that do not fit
//! their schema (`type`, `enum`, `const`, `anyOf`/`oneOf`/`allOf`, array
//! `items`, object `properties`, OpenAPI 3.0 `nullable`) are refused. A path
//! parameter is percent-encoded into its segment and may not be empty, `.`,
//! `..`, or hold `/` or a control character, so no value adds or climbs a
//! segment (whether or not the API decodes `%2F` before it routes), and `?`
//! and `#` are encoded. The path built must lead back to the operation
//! itself: a value that spells a sibling's literal segment (`id = "export"`
//! beside `/items/export`) would reach an operation the policy never judged.
//! These are the REST door's path rules too, so both doors refuse the same
//! values.
//! Query parameters follow the `form` style (arrays repeated, or joined by
//! commas with `explode: false`; objects as their members); header
//! parameters the `simple` style, and a value with a control character is
//! refused. Only the credential and the headers the operation declares go
//! out.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::surface::{Body, Location, Operation, Surface};

/// Why a call was not turned into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    /// The arguments are not a JSON object.
    #[error("arguments must be an object")]
    NotObject,
    /// An argument the operation does not take.
    #[error("unknown argument `{0}`")]
    Unknown(String),
    /// A required argument is missing.
    #[error("missing required argument `{0}`")]
    Missing(String),
    /// A value that cannot go where it must go.
    #[error("argument `{name}`: {why}")]
    Value {
        /// The argument.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// The request of one call: method, request target (base path + path +
/// query), declared headers, and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: Arc<str>,
    /// Request target.
    pub target: String,
    /// Header parameters.
    pub headers: Vec<(String, String)>,
    /// The JSON body, when the operation has one and the call gives it.
    pub body: Option<Vec<u8>>,
}

/// Builds the request of `op` (an operation of `surface`) for `arguments`,
/// under the base path `base`.
pub fn build(
    surface: &Surface,
    op: &Operation,
    base: &str,
    arguments: &Value,
) -> Result<Request, ArgumentError> {
    let empty = Map::new();
    let args = match arguments {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => return Err(ArgumentError::NotObject),
    };
    let known = |name: &str| {
        op.params.iter().any(|p| p.name == name)
            || match &op.body {
                Body::None => false,
                Body::Flattened { fields, .. } => fields.iter().any(|(a, _)| a == name),
                Body::Whole { .. } => name == "body",
            }
    };
    if let Some(k) = args.keys().find(|k| !known(k)) {
        return Err(ArgumentError::Unknown(k.clone()));
    }
    for (name, v) in args {
        if let Some(schema) = schema_of_argument(op, name) {
            if !fits(v, schema, 0) {
                return Err(ArgumentError::Value {
                    name: name.clone(),
                    why: "does not match its schema",
                });
            }
        }
    }
    let mut path = op.path.to_string();
    // The first path parameter filled in: only a filled template can spell
    // another operation's path.
    let mut filled: Option<&str> = None;
    let mut query = String::new();
    let mut headers = Vec::new();
    for p in &op.params {
        let Some(v) = args.get(&p.name).filter(|v| !v.is_null()) else {
            if p.required {
                return Err(ArgumentError::Missing(p.name.clone()));
            }
            continue;
        };
        let bad = |why| ArgumentError::Value {
            name: p.name.clone(),
            why,
        };
        match p.location {
            Location::Path => {
                let s = scalar(v).ok_or_else(|| bad("a path parameter must be a string, number or boolean"))?;
                if s.is_empty() || s == "." || s == ".." {
                    return Err(bad("a path parameter may not be empty, `.` or `..`"));
                }
                if s.contains('/') || s.chars().any(char::is_control) {
                    return Err(bad(
                        "a path parameter may not hold `/` or a control character",
                    ));
                }
                path = path.replace(&format!("{{{}}}", p.name), &encode(&s));
                filled = filled.or(Some(&p.name));
            }
            Location::Query => {
                for (k, v) in form(&p.name, v, p.explode).ok_or_else(|| bad("a query parameter must be a scalar, an array of scalars or an object of scalars"))? {
                    query.push(if query.is_empty() { '?' } else { '&' });
                    query.push_str(&encode(&k));
                    query.push('=');
                    query.push_str(&encode(&v));
                }
            }
            Location::Header => {
                let s = simple(v).ok_or_else(|| bad("a header parameter must be a scalar or an array of scalars"))?;
                if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return Err(bad("a header value may not hold control characters"));
                }
                headers.push((p.name.clone(), s));
            }
        }
    }
    if let Some(name) = filled.filter(|_| !surface.leads_to(&op.method, &path, op)) {
        return Err(ArgumentError::Value {
            name: name.to_owned(),
            why: "the path it makes belongs to another operation",
        });
    }
    let body = match &op.body {
        Body::None => None,
        Body::Whole { required } => match args.get("body").filter(|v| !v.is_null()) {
            Some(v) => Some(v.to_string().into_bytes()),
            None if *required => return Err(ArgumentError::Missing("body".into())),
            None => None,
        },
        Body::Flattened { fields, required } => {
            let mut obj = Map::new();
            for (arg, prop) in fields {
                if let Some(v) = args.get(arg) {
                    obj.insert(prop.clone(), v.clone());
                }
            }
            if obj.is_empty() && !*required {
                None
            } else {
                Some(Value::Object(obj).to_string().into_bytes())
            }
        }
    };
    let base = base.trim_end_matches('/');
    Ok(Request {
        method: Arc::clone(&op.method),
        target: format!("{base}{path}{query}"),
        headers,
        body,
    })
}

/// The schema of argument `name` in the operation's `inputSchema`.
fn schema_of_argument<'o>(op: &'o Operation, name: &str) -> Option<&'o Value> {
    op.definition
        .get("inputSchema")?
        .get("properties")?
        .get(name)
}

/// How deep a value is checked against its schema; deeper is accepted
/// (the API has the last word on what it takes).
const MAX_CHECK_DEPTH: usize = 16;

/// Whether `v` fits `schema` by the keywords this gateway checks.
fn fits(v: &Value, schema: &Value, depth: usize) -> bool {
    let Some(s) = schema.as_object() else {
        return true;
    };
    if depth > MAX_CHECK_DEPTH {
        return true;
    }
    if v.is_null() && s.get("nullable").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return false;
        }
    }
    if s.get("const").is_some_and(|c| c != v) {
        return false;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            if !alts.iter().any(|a| fits(v, a, depth + 1)) {
                return false;
            }
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        if !all.iter().all(|a| fits(v, a, depth + 1)) {
            return false;
        }
    }
    let typed = match s.get("type") {
        Some(Value::String(t)) => type_is(v, t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(|t| type_is(v, t)),
        _ => true,
    };
    if !typed {
        return false;
    }
    if let (Value::Array(items), Some(item)) = (v, s.get("items")) {
        if !items.iter().all(|i| fits(i, item, depth + 1)) {
            return false;
        }
    }
    if let (Value::Object(members), Some(props)) =
        (v, s.get("properties").and_then(Value::as_object))
    {
        for (k, m) in members {
            if let Some(p) = props.get(k) {
                if !fits(m, p, depth + 1) {
                    return false;
                }
            }
        }
    }
    true
}

/// Whether `v` is of JSON Schema type `t`.
fn type_is(v: &Value, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// A scalar as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `form` style pairs of one query parameter.
fn form(name: &str, v: &Value, explode: bool) -> Option<Vec<(String, String)>> {
    match v {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(scalar).collect::<Option<_>>()?;
            if explode {
                Some(items.into_iter().map(|i| (name.to_owned(), i)).collect())
            } else {
                Some(vec![(name.to_owned(), items.join(","))])
            }
        }
        Value::Object(m) => {
            let pairs: Vec<(String, String)> = m
                .iter()
                .map(|(k, v)| scalar(v).map(|s| (k.clone(), s)))
                .collect::<Option<_>>()?;
            if explode {
                Some(pairs)
            } else {
                let flat: Vec<String> = pairs.into_iter().flat_map(|(k, v)| [k, v]).collect();
                Some(vec![(name.to_owned(), flat.join(","))])
            }
        }
        other => Some(vec![(name.to_owned(), scalar(other)?)]),
    }
}

/// `simple` style value of a header parameter.
fn simple(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => Some(
            items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()?
                .join(","),
        ),
        other => scalar(other),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Largest body excerpt an error result carries, bytes.
const EXCERPT: usize = 1024;

/// The MCP tool result of an HTTP answer: JSON as `structuredContent` and
/// its text; other text as text; 4xx/5xx as `isError` with the status and
/// a bounded excerpt. `Err` for a body that is not text.
pub fn result(status: u16, json_body: bool, body: &[u8]) -> Result<Value, &'static str> {
    if status >= 400 {
        let end = body.len().min(EXCERPT);
        let excerpt = String::from_utf8_lossy(&body[..end]);
        return Ok(json!({
            "content": [{"type": "text", "text": format!("HTTP {status}: {excerpt}")}],
            "isError": true,
        }));
    }
    if json_body && !body.is_empty() {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let text = String::from_utf8_lossy(body).into_owned();
            let structured = if v.is_object() {
                v
            } else {
                json!({ "result": v })
            };
            return Ok(json!({
                "content": [{"type": "text", "text": text}],
                "structuredContent": structured,
            }));
        }
    }
    let text = std::str::from_utf8(body).map_err(|_| "the API answered with binary content")?;
    Ok(json!({ "content": [{"type": "text", "text": text}] }))
}

#[cfg(test)]
mod tests {
    use super::super::surface::Surface;
    use super::*;

    fn billing() -> Surface {
        Surface::parse(super::super::surface::tests::BILLING, &[], &[]).unwrap()
    }

    fn req(tool: &str, args: Value) -> Result<Request, ArgumentError> {
        let s = billing();
        build(&s, s.get(tool).unwrap(), "/api/", &args)
    }

    #[test]
    fn path_query_header_and_body_each_go_where_the_spec_says() {
        let r = req("getInvoice", json!({"id": "inv-1"})).unwrap();
        assert_eq!(
            (&*r.method, r.target.as_str()),
            ("GET", "/api/invoices/inv-1")
        );
        let r = req(
            "listInvoices",
            json!({"status": "open", "ids": ["a", "b c"]}),
        )
        .unwrap();
        assert_eq!(r.target, "/api/invoices?status=open&ids=a%2Cb%20c");
        let r = req(
            "createRefund",
            json!({"invoice_id": "inv-1", "amount": 12.5, "X-Request-Id": "r1"}),
        )
        .unwrap();
        assert_eq!(r.headers, [("X-Request-Id".to_owned(), "r1".to_owned())]);
        let body: Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
        assert_eq!(body, json!({"invoice_id": "inv-1", "amount": 12.5}));
    }

    #[test]
    fn hostile_path_values_never_add_or_climb_a_segment() {
        for (v, want) in [
            ("x?y=1#z", "/api/invoices/x%3Fy%3D1%23z"),
            ("%2e%2e", "/api/invoices/%252e%252e"),
            ("é", "/api/invoices/%C3%A9"),
        ] {
            assert_eq!(
                req("getInvoice", json!({ "id": v })).unwrap().target,
                want,
                "{v}"
            );
        }
        // `/` encoded as `%2F` is still a separator to an API that decodes
        // before it routes; the REST door refuses it the same way.
        for v in ["..", ".", "", "../admin", "a/b", "a\u{0}b", "a\nb"] {
            assert!(
                matches!(
                    req("getInvoice", json!({ "id": v })),
                    Err(ArgumentError::Value { .. })
                ),
                "{v}"
            );
        }
        assert!(matches!(
            req("getInvoice", json!({"id": {"a": 1}})),
            Err(ArgumentError::Value { .. })
        ));
    }

    #[test]
    fn a_value_that_spells_a_siblings_path_is_refused() {
        let doc = r#"{"openapi":"3.1.0","paths":{
            "/items/{id}":{"get":{"operationId":"getItem","parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string"}}]},
                           "delete":{"operationId":"deleteItem","parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string"}}]}},
            "/items/export":{"get":{"operationId":"exportItems"}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        let get = s.get("getItem").unwrap();
        // The API would serve `exportItems`, which the policy never judged.
        assert_eq!(
            build(&s, get, "/", &json!({"id": "export"})),
            Err(ArgumentError::Value {
                name: "id".into(),
                why: "the path it makes belongs to another operation"
            })
        );
        // Encoded, it is a different segment, and still this operation's.
        let r = build(&s, get, "/", &json!({"id": "expor t"})).unwrap();
        assert_eq!(r.target, "/items/expor%20t");
        // No sibling has `export` under DELETE.
        let del = s.get("deleteItem").unwrap();
        assert_eq!(
            build(&s, del, "/v1", &json!({"id": "export"}))
                .unwrap()
                .target,
            "/v1/items/export"
        );
    }

    #[test]
    fn hostile_query_and_header_values_are_encoded_or_refused() {
        let r = req("listInvoices", json!({"status": "open&admin=1"})).unwrap();
        assert_eq!(r.target, "/api/invoices?status=open%26admin%3D1");
        let e = req(
            "createRefund",
            json!({"invoice_id": "i", "amount": 1, "X-Request-Id": "a\r\nX-Evil: 1"}),
        );
        assert!(matches!(e, Err(ArgumentError::Value { .. })));
    }

    #[test]
    fn values_that_do_not_fit_their_schema_are_refused() {
        let bad =
            |tool: &str, args: Value| matches!(req(tool, args), Err(ArgumentError::Value { .. }));
        assert!(bad(
            "createRefund",
            json!({"invoice_id": "i", "amount": "12"})
        ));
        assert!(bad("createRefund", json!({"invoice_id": 7, "amount": 12})));
        assert!(bad("listInvoices", json!({"ids": ["a", 1]})));
        assert!(!bad(
            "createRefund",
            json!({"invoice_id": "i", "amount": 12})
        ));
        let doc = r#"{"openapi":"3.0.3","paths":{"/a":{"get":{"operationId":"a","parameters":[
            {"name":"mode","in":"query","schema":{"type":"string","enum":["fast","slow"]}},
            {"name":"n","in":"query","schema":{"anyOf":[{"type":"integer"},{"type":"null"}]}},
            {"name":"tag","in":"query","schema":{"type":"string","nullable":true}}]}}}}"#;
        let s = Surface::parse(doc, &[], &[]).unwrap();
        let a = s.get("a").unwrap();
        assert!(build(&s, a, "/", &json!({"mode": "fast", "n": 3, "tag": null})).is_ok());
        assert!(build(&s, a, "/", &json!({"mode": "turbo"})).is_err());
        assert!(build(&s, a, "/", &json!({"n": 1.5})).is_err());
    }

    #[test]
    fn unknown_and_missing_arguments_are_refused_before_any_request() {
        assert_eq!(
            req("getInvoice", json!({"id": "1", "x": 1})),
            Err(ArgumentError::Unknown("x".into()))
        );
        assert_eq!(
            req("getInvoice", json!({})),
            Err(ArgumentError::Missing("id".into()))
        );
        assert_eq!(req("getInvoice", json!([1])), Err(ArgumentError::NotObject));
    }

    #[test]
    fn answers_become_results_errors_carry_status_and_binary_is_refused() {
        let r = result(200, true, br#"{"id":"inv-1","total":10}"#).unwrap();
        assert_eq!(r["structuredContent"]["total"], 10);
        assert_eq!(r["content"][0]["text"], r#"{"id":"inv-1","total":10}"#);
        let r = result(200, true, b"[1,2]").unwrap();
        assert_eq!(r["structuredContent"], json!({"result": [1, 2]}));
        let r = result(404, true, br#"{"detail":"Not Found"}"#).unwrap();
        assert_eq!(r["isError"], true);
        assert_eq!(
            r["content"][0]["text"],
            r#"HTTP 404: {"detail":"Not Found"}"#
        );
        assert_eq!(
            result(200, false, b"ok").unwrap()["content"][0]["text"],
            "ok"
        );
        assert!(result(200, false, &[0xff, 0xfe]).is_err());
    }
}

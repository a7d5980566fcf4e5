//! The REST door and the OpenAPI request builder, on one surface whose
//! templates overlap (`/items/{id}` beside `/items/export`, a segment with
//! a suffix, a path parameter and a body property of one name, arrays in
//! both query styles, a header parameter). Never a panic, and whichever
//! door a call comes through, the request the API gets is one the door
//! would route back to the very operation that was checked: its target
//! stays under the base path, holds only unreserved characters,
//! percent-escapes and the query's separators, has no `.`/`..` segment,
//! and no header value carries a control character.
//!
//! The first byte picks the door: even, the REST door (`METHOD target`,
//! a newline, the JSON body); odd, the MCP door (`{"name":…,
//! "arguments":…}`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate_upstream::openapi::request::{build, Request};
use toolgate_upstream::openapi::{Operation, Surface};

const DOC: &str = r#"{"openapi":"3.1.0","paths":{
  "/items/{id}":{
    "get":{"operationId":"getItem","parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string"}},
                                                   {"name":"X-Tenant","in":"header","schema":{"type":"string"}}]},
    "delete":{"operationId":"deleteItem","parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer"}}]},
    "put":{"operationId":"putItem","parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string"}}],
           "requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object",
             "properties":{"id":{"type":"string"},"qty":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"}}}}}}}}},
  "/items/export":{"get":{"operationId":"exportItems","parameters":[
      {"name":"tag","in":"query","schema":{"type":"array","items":{"type":"integer"}}},
      {"name":"ids","in":"query","explode":false,"schema":{"type":"array","items":{"type":"string"}}},
      {"name":"flag","in":"query","schema":{"type":"boolean"}}]}},
  "/items/{id}/notes/{note}":{"get":{"operationId":"getNote","parameters":[
      {"name":"id","in":"path","required":true,"schema":{"type":"string"}},
      {"name":"note","in":"path","required":true,"schema":{"type":"number"}}]}},
  "/files/{name}.json":{"get":{"operationId":"getFile","parameters":[{"name":"name","in":"path","required":true,"schema":{"type":"string"}}]}},
  "/raw":{"post":{"operationId":"postRaw","requestBody":{"content":{"application/json":{"schema":{"type":"array"}}}}}}
}}"#;

const BASE: &str = "/api/v1";

fn surface() -> &'static Surface {
    static S: OnceLock<Surface> = OnceLock::new();
    S.get_or_init(|| Surface::parse(DOC, &[], &[]).expect("the fuzz surface parses"))
}

fn no_header(_: &str) -> Option<String> {
    None
}

/// What every request the builder makes must satisfy.
fn check(s: &Surface, op: &Operation, req: &Request) {
    let rest = req
        .target
        .strip_prefix(BASE)
        .unwrap_or_else(|| panic!("left the base path: {}", req.target));
    assert!(rest.starts_with('/'), "{}", req.target);
    assert!(
        rest.bytes().all(|b| b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%' | b'/' | b'?' | b'&' | b'=')),
        "a raw character in {}",
        req.target
    );
    let (path, _) = rest.split_once('?').unwrap_or((rest, ""));
    assert!(
        path.split('/').skip(1).all(|seg| {
            let lower = seg.to_ascii_lowercase().replace("%2e", ".");
            !seg.is_empty() && lower != "." && lower != ".."
        }),
        "a dot or empty segment in {}",
        req.target
    );
    // The door routes what the builder sent to the operation checked.
    match s.resolve(&req.method, rest, &no_header, b"") {
        Ok(back) => assert_eq!(back.op.tool, op.tool, "{} {}", req.method, req.target),
        Err(e) => panic!("the door refuses what the builder sent ({e}): {}", req.target),
    }
    for (_, v) in &req.headers {
        assert!(!v.bytes().any(|b| b < 0x20 || b == 0x7f), "header {v:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&door, rest)) = data.split_first() else {
        return;
    };
    let s = surface();
    if door % 2 == 0 {
        let (line, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let Some((method, target)) = line.split_once(' ') else {
            return;
        };
        let tenant = |name: &str| (name == "X-Tenant").then(|| "acme".to_owned());
        let Ok(r) = s.resolve(method, target, &tenant, body) else {
            return;
        };
        if let Ok(req) = build(s, r.op, BASE, &r.arguments) {
            check(s, r.op, &req);
        }
    } else {
        let Ok(call) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        let Some(op) = call.get("name").and_then(Value::as_str).and_then(|n| s.get(n)) else {
            return;
        };
        let args = call.get("arguments").unwrap_or(&Value::Null);
        if let Ok(req) = build(s, op, BASE, args) {
            check(s, op, &req);
        }
    }
});

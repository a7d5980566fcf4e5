//! JSON-RPC bodies toolgate writes to agents.

use std::io::Write;

use toolgate_core::jsonrpc::write_str;
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};

/// `{"jsonrpc":"2.0","id":<id>,"result":<result>}`; `id_json` is JSON text.
pub fn result(id_json: Option<&str>, result: &[u8], out: &mut Vec<u8>) {
    result_with(id_json, out, |out| out.extend_from_slice(result));
}

/// [`result`], with the result written in place by `write` (no copy of a
/// large result); what `write` returns is returned.
pub fn result_with<T>(
    id_json: Option<&str>,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> T,
) -> T {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id_json.unwrap_or("null").as_bytes());
    out.extend_from_slice(br#","result":"#);
    let written = write(out);
    out.push(b'}');
    written
}

/// `{"jsonrpc":"2.0","id":<id>,"error":<error>}` with a raw error object.
pub fn error_raw(id_json: Option<&str>, error: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id_json.unwrap_or("null").as_bytes());
    out.extend_from_slice(br#","error":"#);
    out.extend_from_slice(error);
    out.push(b'}');
}

/// The JSON-RPC error for a refusal. `requested` is the protocol version the
/// agent asked for, reported back on an unsupported-version refusal.
pub fn refusal(id_json: Option<&str>, r: &Refusal, requested: Option<&str>, out: &mut Vec<u8>) {
    refusal_with_data(id_json, r, requested, None, out);
}

/// [`refusal`], with `data` (JSON text) as the error's `data` member when
/// given (an unsupported version's data is its own).
pub fn refusal_with_data(
    id_json: Option<&str>,
    r: &Refusal,
    requested: Option<&str>,
    data: Option<&str>,
    out: &mut Vec<u8>,
) {
    let w = r.wire();
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id_json.unwrap_or("null").as_bytes());
    let _ = write!(out, r#","error":{{"code":{},"message":"#, w.code);
    write_str(&w.message, out);
    if r.kind == RefusalKind::UnsupportedProtocolVersion {
        out.extend_from_slice(br#","data":{"supported":["#);
        for (i, v) in protocol::MODERN_VERSIONS.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(v, out);
        }
        out.extend_from_slice(br#"],"requested":"#);
        match requested {
            Some(v) => write_str(v, out),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    } else if let Some(d) = data {
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(d.as_bytes());
    }
    out.extend_from_slice(b"}}");
}

/// HTTP status for a JSON-RPC error code passed through from an upstream,
/// by the same table toolgate's own refusals use.
pub fn status_for_code(code: i64) -> u16 {
    match code {
        protocol::codes::PARSE_ERROR
        | protocol::codes::INVALID_REQUEST
        | protocol::codes::INVALID_PARAMS
        | protocol::codes::HEADER_MISMATCH
        | protocol::codes::UNSUPPORTED_PROTOCOL_VERSION => 400,
        protocol::codes::METHOD_NOT_FOUND => 404,
        _ => 200,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_body_is_valid_json_rpc() {
        let mut out = Vec::new();
        refusal(
            Some("3"),
            &Refusal::with(RefusalKind::UnknownTool, "`a\"b`"),
            None,
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["id"], 3);
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "Unknown tool: `a\"b`");
    }

    #[test]
    fn unsupported_version_names_the_supported_ones() {
        let mut out = Vec::new();
        refusal(
            None,
            &Refusal::new(RefusalKind::UnsupportedProtocolVersion),
            Some("2099-01-01"),
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["data"]["supported"][0], "2026-07-28");
        assert_eq!(v["error"]["data"]["requested"], "2099-01-01");
    }
}

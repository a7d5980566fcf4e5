//! The view of one MCP JSON-RPC request, parsed once with simd-json.
//!
//! The body is parsed into a tape (one flat array of nodes whose strings point
//! into a reused scratch copy of the body); [`RpcRequest`] and [`ToolCall`]
//! are views over that tape, so reading the method, id, tool name and
//! arguments allocates nothing beyond the tape itself.
//!
//! Objects with a repeated key are refused: simd-json keeps the first
//! occurrence where many JSON readers keep the last, and a gateway that
//! decides on one value while the tool acts on another is bypassable.

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};
use simd_json::Buffers;

/// Deepest nesting accepted in a request body: serde_json's limit, since
/// later steps read parts of the same body with serde_json (an OpenAPI
/// call's arguments, a forwarded call's re-encoding), and a body the view
/// accepts must not fail there as something else.
pub const MAX_DEPTH: usize = 127;

/// Why a body is not an acceptable JSON-RPC request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViewErrorKind {
    /// Not JSON (or nested deeper than [`MAX_DEPTH`]).
    #[error("the body is not valid JSON")]
    Parse,
    /// A JSON array: batches were removed from MCP in 2025-06-18.
    #[error("batch requests are not supported")]
    Batch,
    /// An object repeats a key.
    #[error("an object in the request repeats a key")]
    DuplicateKey,
    /// Not an object, or `jsonrpc` is not `"2.0"`.
    #[error("the body is not a JSON-RPC 2.0 request")]
    NotJsonRpc,
    /// `id` is neither a string nor an integer.
    #[error("`id` must be a string or an integer")]
    BadId,
    /// `method` missing or not a string.
    #[error("`method` must be a string")]
    BadMethod,
    /// `params` present but not an object.
    #[error("`params` must be an object")]
    BadParams,
    /// The message is a response, not a request.
    #[error("the body is a JSON-RPC response, not a request")]
    IsResponse,
}

/// A refusal of the body, with the request id when it could be read.
#[derive(Debug, Clone, Copy)]
pub struct ViewError<'t> {
    /// What is wrong.
    pub kind: ViewErrorKind,
    /// The request's id, when it was readable.
    pub id: Option<Value<'t, 't>>,
}

/// Reusable parse state: one per connection (or shard), so steady-state
/// parsing allocates only the tape.
pub struct JsonParser {
    buffers: Buffers,
    scratch: Vec<u8>,
}

impl Default for JsonParser {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonParser {
    /// A parser with empty buffers.
    pub fn new() -> Self {
        Self {
            buffers: Buffers::with_max_depth(4096, MAX_DEPTH),
            scratch: Vec::new(),
        }
    }

    /// Parses `body` into a tape over an internal copy (simd-json unescapes in
    /// place, and the original bytes stay intact for the caller).
    pub fn parse<'s>(&'s mut self, body: &[u8]) -> Result<Tape<'s>, ViewErrorKind> {
        self.scratch.clear();
        self.scratch.extend_from_slice(body);
        let tape = simd_json::to_tape_with_buffers(&mut self.scratch, &mut self.buffers)
            .map_err(|_| ViewErrorKind::Parse)?;
        if has_duplicate_keys(tape.as_value()) {
            return Err(ViewErrorKind::DuplicateKey);
        }
        Ok(tape)
    }
}

/// Whether any object in `v` repeats a key.
pub fn has_duplicate_keys(v: Value<'_, '_>) -> bool {
    if let Some(obj) = v.as_object() {
        let keys: Vec<&str> = if obj.len() > 16 {
            obj.keys().collect()
        } else {
            Vec::new()
        };
        if obj.len() > 16 {
            let mut sorted = keys;
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return true;
            }
        } else {
            let mut seen: [&str; 16] = [""; 16];
            for (i, k) in obj.keys().enumerate() {
                if seen[..i].contains(&k) {
                    return true;
                }
                seen[i] = k;
            }
        }
        obj.values().any(has_duplicate_keys)
    } else if let Some(arr) = v.as_array() {
        arr.iter().any(has_duplicate_keys)
    } else {
        false
    }
}

/// A JSON-RPC request (or notification) viewed in place.
#[derive(Debug, Clone, Copy)]
pub struct RpcRequest<'t> {
    /// `None` for a notification.
    pub id: Option<Value<'t, 't>>,
    /// The method name.
    pub method: &'t str,
    /// `params`, when present (always an object).
    pub params: Option<Value<'t, 't>>,
}

impl<'t> RpcRequest<'t> {
    /// Reads the envelope of a request from its tape.
    pub fn from_tape(tape: &'t Tape<'t>) -> Result<Self, ViewError<'t>> {
        let v = tape.as_value();
        if v.is_array() {
            return Err(ViewError {
                kind: ViewErrorKind::Batch,
                id: None,
            });
        }
        let obj = v.as_object().ok_or(ViewError {
            kind: ViewErrorKind::NotJsonRpc,
            id: None,
        })?;
        let raw_id = obj.get("id");
        let id = match raw_id {
            None => None,
            Some(i) if i.is_str() || i.is_i64() || i.is_u64() => Some(i),
            Some(_) => {
                return Err(ViewError {
                    kind: ViewErrorKind::BadId,
                    id: None,
                })
            }
        };
        let fail = |kind| Err(ViewError { kind, id });
        if obj.get("jsonrpc").and_then(|j| j.into_string()) != Some("2.0") {
            return fail(ViewErrorKind::NotJsonRpc);
        }
        if obj.get("result").is_some() || obj.get("error").is_some() {
            return fail(ViewErrorKind::IsResponse);
        }
        let Some(method) = obj.get("method").and_then(|m| m.into_string()) else {
            return fail(ViewErrorKind::BadMethod);
        };
        let params = match obj.get("params") {
            None => None,
            Some(p) if p.is_object() => Some(p),
            Some(_) => return fail(ViewErrorKind::BadParams),
        };
        Ok(Self { id, method, params })
    }

    /// `params._meta`, when it is an object.
    pub fn meta(&self) -> Option<Value<'t, 't>> {
        self.params
            .and_then(|p| p.get("_meta"))
            .filter(|m| m.is_object())
    }

    /// The stateless-era envelope's protocol version, when present as a string.
    pub fn envelope_version(&self) -> Option<&'t str> {
        self.meta()
            .and_then(|m| m.get(crate::protocol::META_PROTOCOL_VERSION))
            .and_then(|v| v.into_string())
    }

    /// Whether `params._meta` carries any stateless-era envelope key.
    pub fn has_envelope(&self) -> bool {
        self.meta().is_some_and(|m| {
            m.get(crate::protocol::META_PROTOCOL_VERSION).is_some()
                || m.get(crate::protocol::META_CLIENT_CAPABILITIES).is_some()
        })
    }

    /// A string-valued entry of `params`.
    pub fn param_str(&self, key: &str) -> Option<&'t str> {
        self.params
            .and_then(|p| p.get(key))
            .and_then(|v| v.into_string())
    }

    /// Whether this is a notification (no id).
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }
}

/// Why `tools/call` params are unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    /// `params.name` missing, empty or not a string.
    #[error("`params.name` must be a non-empty string naming the tool")]
    MissingName,
    /// `params.arguments` present but not an object.
    #[error("`params.arguments` must be an object")]
    BadArguments,
}

/// The `tools/call` part of a request.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'t> {
    /// The tool name as the agent wrote it.
    pub name: &'t str,
    /// `params.arguments`, when present.
    pub arguments: Option<Value<'t, 't>>,
}

impl<'t> ToolCall<'t> {
    /// Reads `name` and `arguments` from a `tools/call` request.
    pub fn from_request(req: &RpcRequest<'t>) -> Result<Self, ToolCallError> {
        let name = req
            .param_str("name")
            .filter(|n| !n.is_empty())
            .ok_or(ToolCallError::MissingName)?;
        let arguments = match req.params.and_then(|p| p.get("arguments")) {
            None => None,
            Some(a) if a.as_null().is_some() => None,
            Some(a) if a.is_object() => Some(a),
            Some(_) => return Err(ToolCallError::BadArguments),
        };
        Ok(Self { name, arguments })
    }
}

/// Appends `v` as compact JSON.
pub fn write_value(v: Value<'_, '_>, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = v.write(out);
}

/// Appends `s` as a JSON string literal.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The JSON text of a request id, owned, for records that outlive the tape.
pub fn id_text(id: Option<Value<'_, '_>>) -> Option<String> {
    let id = id?;
    let mut out = Vec::with_capacity(16);
    write_value(id, &mut out);
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(body: &str) -> Result<(Option<String>, String), ViewErrorKind> {
        let mut p = JsonParser::new();
        let tape = p.parse(body.as_bytes())?;
        let r = RpcRequest::from_tape(&tape).map_err(|e| e.kind)?;
        Ok((id_text(r.id), r.method.to_owned()))
    }

    #[test]
    fn tools_call_is_viewed_in_place() {
        let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"crm__lookup","arguments":{"id":"c\"1"}}}"#;
        let mut p = JsonParser::new();
        let tape = p.parse(body.as_bytes()).unwrap();
        let r = RpcRequest::from_tape(&tape).unwrap();
        assert_eq!(r.method, "tools/call");
        let c = ToolCall::from_request(&r).unwrap();
        assert_eq!(c.name, "crm__lookup");
        let mut out = Vec::new();
        write_value(c.arguments.unwrap_or(Value::null()), &mut out);
        assert_eq!(out, br#"{"id":"c\"1"}"#);
        assert_eq!(id_text(r.id).as_deref(), Some("7"));
    }

    #[test]
    fn invalid_json_is_a_parse_error() {
        assert_eq!(view("{\"jsonrpc\":").err(), Some(ViewErrorKind::Parse));
        assert_eq!(view("").err(), Some(ViewErrorKind::Parse));
    }

    #[test]
    fn arrays_are_batches() {
        assert_eq!(view("[]").err(), Some(ViewErrorKind::Batch));
        assert_eq!(
            view(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).err(),
            Some(ViewErrorKind::Batch)
        );
    }

    #[test]
    fn non_jsonrpc_json_is_refused() {
        assert_eq!(view(r#"{"foo":1}"#).err(), Some(ViewErrorKind::NotJsonRpc));
        assert_eq!(
            view(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).err(),
            Some(ViewErrorKind::NotJsonRpc)
        );
        assert_eq!(
            view(r#"{"jsonrpc":"2.0","id":1}"#).err(),
            Some(ViewErrorKind::BadMethod)
        );
        assert_eq!(
            view(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).err(),
            Some(ViewErrorKind::BadId)
        );
        assert_eq!(
            view(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).err(),
            Some(ViewErrorKind::BadId)
        );
        assert_eq!(
            view(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#).err(),
            Some(ViewErrorKind::BadParams)
        );
        assert_eq!(
            view(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).err(),
            Some(ViewErrorKind::IsResponse)
        );
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        let top = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#;
        assert_eq!(view(top).err(), Some(ViewErrorKind::DuplicateKey));
        let deep = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[{"to":"a","to":"b"}]}}}"#;
        assert_eq!(view(deep).err(), Some(ViewErrorKind::DuplicateKey));
        let mut wide = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"#);
        for i in 0..40 {
            wide.push_str(&format!("\"k{i}\":1,"));
        }
        wide.push_str("\"k3\":2}}");
        assert_eq!(view(&wide).err(), Some(ViewErrorKind::DuplicateKey));
    }

    #[test]
    fn too_deep_nesting_is_a_parse_error() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_DEPTH + 10),
            "]".repeat(MAX_DEPTH + 10)
        );
        assert_eq!(view(&deep).err(), Some(ViewErrorKind::Parse));
    }

    #[test]
    fn the_depth_limit_is_serde_jsons() {
        // Found by the `jsonrpc_view` fuzz target: 128 levels passed the
        // view and failed in serde_json.
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for (n, ok) in [(MAX_DEPTH, true), (MAX_DEPTH + 1, false)] {
            let body = nested(n);
            assert_eq!(JsonParser::new().parse(body.as_bytes()).is_ok(), ok, "{n}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                ok,
                "{n}"
            );
        }
    }

    #[test]
    fn envelope_is_read_from_meta() {
        let body = r#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let mut p = JsonParser::new();
        let tape = p.parse(body.as_bytes()).unwrap();
        let r = RpcRequest::from_tape(&tape).unwrap();
        assert_eq!(r.envelope_version(), Some("2026-07-28"));
        assert!(r.has_envelope());
        assert_eq!(id_text(r.id).as_deref(), Some("\"a\""));
    }

    #[test]
    fn missing_or_bad_tool_name() {
        for (body, err) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                ToolCallError::MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                ToolCallError::MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#,
                ToolCallError::MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[]}}"#,
                ToolCallError::BadArguments,
            ),
        ] {
            let mut p = JsonParser::new();
            let tape = p.parse(body.as_bytes()).unwrap();
            let r = RpcRequest::from_tape(&tape).unwrap();
            assert_eq!(ToolCall::from_request(&r).err(), Some(err), "{body}");
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str("a\"b\\c\n\u{1}é", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}

//! Progress: the token an agent's request asks progress under, and each
//! progress message of the upstream's turned into the agent's — under the
//! agent's own token, with only the members MCP defines, its message
//! dropped when an output rule of the call would act on it.
//!
//! The upstream is asked for progress under a token of toolgate's (its
//! request's id), never the agent's, so agents sharing an upstream can
//! neither see nor forge each other's progress.

use simd_json::prelude::*;
use toolgate_core::jsonrpc::{id_text, write_str, write_value, JsonParser, RpcRequest};
use toolgate_decision::OutputFilter;

/// The progress token of `rpc` (`params._meta.progressToken`, a string or
/// an integer), as JSON text.
pub(super) fn token(rpc: &RpcRequest<'_>) -> Option<String> {
    let t = rpc.params?.get("_meta")?.get("progressToken")?;
    (t.is_str() || t.is_i64() || t.is_u64())
        .then(|| id_text(Some(t)))
        .flatten()
}

/// The agent's `notifications/progress` for the upstream's `message`,
/// under the agent's `token` (JSON text); `None` when the message is not
/// a progress notification with a numeric `progress`.
pub(super) fn relayed(
    parser: &mut JsonParser,
    message: &[u8],
    token: &str,
    filter: Option<&OutputFilter>,
) -> Option<Vec<u8>> {
    let tape = parser.parse(message).ok()?;
    let params = tape.as_value().get("params")?;
    let number = |v: &simd_json::tape::Value<'_, '_>| v.is_i64() || v.is_u64() || v.is_f64();
    let progress = params.get("progress").filter(number)?;
    let mut out = Vec::with_capacity(128 + token.len());
    out.extend_from_slice(
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"#,
    );
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(br#","progress":"#);
    write_value(progress, &mut out);
    if let Some(total) = params.get("total").filter(number) {
        out.extend_from_slice(br#","total":"#);
        write_value(total, &mut out);
    }
    if let Some(text) = params.get("message").and_then(|m| m.into_string()) {
        let at = out.len();
        out.extend_from_slice(br#","message":"#);
        write_str(text, &mut out);
        if filter.is_some_and(|f| f.needs_walk(&out[at..])) {
            out.truncate(at);
        }
    }
    out.extend_from_slice(b"}}");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(body: &str) -> Option<String> {
        let mut p = JsonParser::new();
        let tape = p.parse(body.as_bytes()).unwrap();
        let rpc = RpcRequest::from_tape(&tape).unwrap();
        token(&rpc)
    }

    #[test]
    fn the_token_is_read_from_meta_as_json_text() {
        let call = |meta: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{meta}}}}}"#
            )
        };
        assert_eq!(
            token_of(&call(r#"{"progressToken":"p-1"}"#)).as_deref(),
            Some("\"p-1\"")
        );
        assert_eq!(
            token_of(&call(r#"{"progressToken":7}"#)).as_deref(),
            Some("7")
        );
        assert_eq!(token_of(&call(r#"{"progressToken":{"a":1}}"#)), None);
        assert_eq!(token_of(&call("{}")), None);
        assert_eq!(
            token_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#),
            None
        );
    }

    #[test]
    fn the_agent_gets_its_own_token_and_only_what_mcp_defines() {
        let mut p = JsonParser::new();
        let upstream = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":12,"progress":1,"total":4.5,"message":"a \"b\"","extra":{"x":1},"_meta":{}}}"#;
        let out = relayed(&mut p, upstream, "\"agent-tok\"", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"agent-tok","progress":1,"total":4.5,"message":"a \"b\""}})
        );
        let no_number = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":12,"progress":"1"}}"#;
        assert_eq!(relayed(&mut p, no_number, "1", None), None);
    }
}

//! Which era a request belongs to, and the checks of each era's envelope.
//!
//! Stateless era (2026-07-28): the body carries the envelope in
//! `params._meta`, and the routing headers must agree with the body. toolgate
//! decides on the body and refuses any disagreement: trusting one and
//! forwarding the other would let a caller steer a header-routing proxy
//! past the decision. Handshake era: a session issued to this agent.

use std::borrow::Cow;

use simd_json::prelude::*;

use toolgate_core::jsonrpc::RpcRequest;
use toolgate_core::protocol::{self, decode_header_value};
use toolgate_core::refusal::{Refusal, RefusalKind};

use crate::http::head::Head;

/// The era of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize` handshake, sessions.
    Handshake,
    /// Per-request envelope.
    Stateless,
}

/// Decides the era: an envelope in the body, or a stateless version header,
/// makes a stateless request; anything else is handshake era.
pub fn era_of(req: &RpcRequest<'_>, head: &Head, buf: &[u8]) -> Era {
    let header_modern = head
        .header(buf, protocol::HEADER_PROTOCOL_VERSION)
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| protocol::is_modern(v.trim()));
    if req.has_envelope() || header_modern {
        Era::Stateless
    } else {
        Era::Handshake
    }
}

fn header_str<'b>(head: &Head, buf: &'b [u8], name: &str) -> Option<&'b str> {
    head.header(buf, name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// Checks a stateless request's envelope and routing headers, in the order
/// the MCP SDKs do; returns the protocol version it speaks.
pub fn check_stateless(
    req: &RpcRequest<'_>,
    head: &Head,
    buf: &[u8],
) -> Result<&'static str, Refusal> {
    let Some(meta) = req.meta() else {
        return Err(Refusal::with(
            RefusalKind::InvalidParams,
            "params._meta must carry the protocol version and client capabilities",
        ));
    };
    let version = meta.get(protocol::META_PROTOCOL_VERSION);
    if version.is_none() || meta.get(protocol::META_CLIENT_CAPABILITIES).is_none() {
        return Err(Refusal::with(
            RefusalKind::InvalidParams,
            "params._meta is missing the protocol version or client capabilities",
        ));
    }
    for name in [
        protocol::HEADER_PROTOCOL_VERSION,
        protocol::HEADER_METHOD,
        protocol::HEADER_NAME,
    ] {
        if head.count(buf, name) > 1 {
            return Err(Refusal::with(
                RefusalKind::HeaderMismatch,
                format!("`{name}` appears more than once"),
            ));
        }
    }
    let version = version.and_then(|v| v.into_string());
    if header_str(head, buf, protocol::HEADER_PROTOCOL_VERSION) != version || version.is_none() {
        return Err(Refusal::with(
            RefusalKind::HeaderMismatch,
            "MCP-Protocol-Version does not match the request envelope",
        ));
    }
    if header_str(head, buf, protocol::HEADER_METHOD) != Some(req.method) {
        return Err(Refusal::with(
            RefusalKind::HeaderMismatch,
            "Mcp-Method does not match the request body",
        ));
    }
    // The parameter a request names its target by, mirrored in `Mcp-Name`.
    let named = match req.method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(key) = named {
        if let Some(name) = req.param_str(key) {
            let header = header_str(head, buf, protocol::HEADER_NAME).and_then(decode_header_value);
            if header.as_deref() != Some(name) {
                return Err(Refusal::with(
                    RefusalKind::HeaderMismatch,
                    "Mcp-Name does not match the request body",
                ));
            }
        }
    }
    let version = version.unwrap_or_default();
    protocol::MODERN_VERSIONS
        .iter()
        .find(|v| **v == version)
        .copied()
        .ok_or_else(|| Refusal::new(RefusalKind::UnsupportedProtocolVersion))
}

/// The handshake-era version header, when present, must be one toolgate speaks.
pub fn check_handshake_version(head: &Head, buf: &[u8]) -> Result<Option<&'static str>, Refusal> {
    match header_str(head, buf, protocol::HEADER_PROTOCOL_VERSION) {
        None => Ok(None),
        Some(v) => protocol::HANDSHAKE_VERSIONS
            .iter()
            .find(|h| **h == v)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                Refusal::with(
                    RefusalKind::UnsupportedProtocolVersion,
                    Cow::Owned(format!("`{}`", short(v))),
                )
            }),
    }
}

fn short(s: &str) -> &str {
    toolgate_core::audit::truncate(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_head, Limits};
    use toolgate_core::jsonrpc::JsonParser;

    const LIMITS: Limits = Limits {
        max_header_bytes: 8192,
        max_headers: 64,
        max_body_bytes: 1 << 20,
    };

    fn check(headers: &str, body: &str) -> Result<&'static str, RefusalKind> {
        let raw = format!(
            "POST /mcp HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let head = parse_head(raw.as_bytes(), &LIMITS).ok().flatten().unwrap();
        let mut p = JsonParser::new();
        let tape = p.parse(body.as_bytes()).unwrap();
        let req = RpcRequest::from_tape(&tape).unwrap();
        assert_eq!(era_of(&req, &head, raw.as_bytes()), Era::Stateless);
        check_stateless(&req, &head, raw.as_bytes()).map_err(|r| r.kind)
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm__lookup","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    const GOOD: &str =
        "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: crm__lookup\r\n";

    #[test]
    fn agreeing_headers_pass() {
        assert_eq!(check(GOOD, CALL), Ok("2026-07-28"));
    }

    #[test]
    fn name_header_naming_another_tool_is_a_mismatch() {
        let h = GOOD.replace("Mcp-Name: crm__lookup", "Mcp-Name: crm__delete");
        assert_eq!(check(&h, CALL), Err(RefusalKind::HeaderMismatch));
    }

    #[test]
    fn method_header_disagreeing_is_a_mismatch() {
        let h = GOOD.replace("Mcp-Method: tools/call", "Mcp-Method: tools/list");
        assert_eq!(check(&h, CALL), Err(RefusalKind::HeaderMismatch));
    }

    #[test]
    fn missing_or_repeated_routing_headers_are_mismatches() {
        let h = GOOD.replace("Mcp-Name: crm__lookup\r\n", "");
        assert_eq!(check(&h, CALL), Err(RefusalKind::HeaderMismatch));
        let h = format!("{GOOD}Mcp-Name: crm__lookup\r\n");
        assert_eq!(check(&h, CALL), Err(RefusalKind::HeaderMismatch));
    }

    #[test]
    fn base64_name_header_is_decoded() {
        let h = GOOD.replace(
            "Mcp-Name: crm__lookup",
            "Mcp-Name: =?base64?Y3JtX19sb29rdXA=?=",
        );
        assert_eq!(check(&h, CALL), Ok("2026-07-28"));
    }

    #[test]
    fn envelope_without_capabilities_is_invalid_params() {
        let body = CALL.replace(r#","io.modelcontextprotocol/clientCapabilities":{}"#, "");
        assert_eq!(check(GOOD, &body), Err(RefusalKind::InvalidParams));
    }

    #[test]
    fn unknown_modern_version_is_unsupported() {
        let body = CALL.replace("2026-07-28", "2099-01-01");
        let h = GOOD.replace("2026-07-28", "2099-01-01");
        assert_eq!(
            check(&h, &body),
            Err(RefusalKind::UnsupportedProtocolVersion)
        );
    }
}

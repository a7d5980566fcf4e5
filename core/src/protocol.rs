//! MCP protocol constants shared by the server side (toward agents) and the
//! client side (toward upstreams).

/// Protocol revisions reached through the `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The newest handshake-era revision; offered to upstreams and to agents that
/// ask for a version toolgate does not know.
pub const LATEST_HANDSHAKE_VERSION: &str = "2025-11-25";

/// Protocol revisions of the stateless era: every request carries its own
/// envelope in `params._meta`, no session.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// The newest stateless-era revision.
pub const LATEST_MODERN_VERSION: &str = "2026-07-28";

/// `params._meta` key carrying the request's protocol version (stateless era).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `params._meta` key carrying the client's capabilities (stateless era).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `params._meta` key carrying the client's implementation info (stateless era).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `result._meta` key carrying the server's implementation info (stateless era).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// HTTP header: negotiated or per-request protocol version.
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// HTTP header: JSON-RPC method mirrored for routing (stateless era).
pub const HEADER_METHOD: &str = "mcp-method";
/// HTTP header: tool name mirrored for routing (stateless era).
pub const HEADER_NAME: &str = "mcp-name";
/// HTTP header prefix: tool arguments mirrored for routing (stateless era).
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";
/// HTTP header: handshake-era session id.
pub const HEADER_SESSION_ID: &str = "mcp-session-id";

/// JSON Schema annotation naming the `Mcp-Param-*` header of a tool argument.
pub const X_MCP_HEADER: &str = "x-mcp-header";

/// Whether `v` is a stateless-era revision.
pub fn is_modern(v: &str) -> bool {
    MODERN_VERSIONS.contains(&v)
}

/// Whether `v` is a handshake-era revision toolgate speaks.
pub fn is_handshake(v: &str) -> bool {
    HANDSHAKE_VERSIONS.contains(&v)
}

/// JSON-RPC and MCP error codes toolgate emits.
pub mod codes {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON that is not a valid JSON-RPC request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad or missing parameters, including unknown tools.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal or upstream failure.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Generic server-side refusal (audit pipeline unavailable).
    pub const SERVER_ERROR: i64 = -32000;
    /// Caller not authenticated.
    pub const UNAUTHENTICATED: i64 = -32001;
    /// A resource that is not attached or does not exist (MCP's code).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Refused by policy, or by the judge of an escalated call.
    pub const FORBIDDEN: i64 = -32003;
    /// Routing headers disagree with the body (stateless era).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// Requested protocol version not served.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// A tool's result was refused by an output rule (toolgate-defined, in
    /// the implementation-defined server-error range).
    pub const OUTPUT_REFUSED: i64 = -32040;
    /// The user must complete a URL-mode elicitation first (MCP's
    /// `URLElicitationRequiredError`): connect their account.
    pub const URL_ELICITATION_REQUIRED: i64 = -32042;
    /// The agent cancelled the call (`notifications/cancelled`) while it
    /// ran; the code JSON-RPC peers use for a cancelled request.
    pub const REQUEST_CANCELLED: i64 = -32800;
}

/// Decodes a routing-header value: plain visible ASCII is taken verbatim,
/// `=?base64?…?=` carries arbitrary UTF-8. `None` for a malformed sentinel, so a
/// corrupt header never matches a body value by accident.
pub fn decode_header_value(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let Some(payload) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Some(std::borrow::Cow::Borrowed(raw));
    };
    let bytes = base64_decode(payload)?;
    String::from_utf8(bytes).ok().map(std::borrow::Cow::Owned)
}

/// Encodes a routing-header value the way [`decode_header_value`] reads it.
pub fn encode_header_value(value: &str) -> std::borrow::Cow<'_, str> {
    let safe = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if safe {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(format!("=?base64?{}?=", base64_encode(value.as_bytes())))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict, canonical standard base64: a value whose re-encoding differs is refused.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    if !input.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let bytes = input.as_bytes();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = (n << 6) | u32::from(v);
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    if base64_encode(&out) != input {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_header_values_pass_verbatim() {
        assert_eq!(encode_header_value("lookup_customer"), "lookup_customer");
        assert_eq!(
            decode_header_value("lookup_customer").as_deref(),
            Some("lookup_customer")
        );
    }

    #[test]
    fn non_ascii_header_values_round_trip_through_base64() {
        let enc = encode_header_value("Zürich ");
        assert!(enc.starts_with("=?base64?"));
        assert_eq!(decode_header_value(&enc).as_deref(), Some("Zürich "));
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        assert_eq!(decode_header_value("=?base64?YR==?="), None);
        assert_eq!(decode_header_value("=?base64?!!!!?="), None);
        assert_eq!(decode_header_value("=?base64?YQ==?=").as_deref(), Some("a"));
    }
}

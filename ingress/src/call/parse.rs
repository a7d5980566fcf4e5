//! Phase: the JSON-RPC view of the body, and the era's envelope.
//!
//! The body is parsed once, zero-copy, into a tape; the request view
//! borrows it. A stateless-era request's envelope and routing headers must
//! agree with the body; a handshake-era request other than `initialize`
//! must carry a live session of the agent.

use simd_json::tape::Tape;
use toolgate_core::audit::{truncate, MAX_METHOD_LEN};
use toolgate_core::jsonrpc::{id_text, JsonParser, RpcRequest, ViewErrorKind};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::Agent;

use super::ctx::CallCtx;
use super::envelope::{self, Era};
use super::Gateway;
use crate::http::server::Request;

/// The body's tape; not JSON (or duplicate keys, too deep) is refused.
pub(super) fn tape<'p>(parser: &'p mut JsonParser, body: &[u8]) -> Result<Tape<'p>, Refusal> {
    parser.parse(body).map_err(|k| match k {
        ViewErrorKind::Parse => Refusal::new(RefusalKind::ParseError),
        other => Refusal::with(RefusalKind::InvalidRequest, other.to_string()),
    })
}

/// The JSON-RPC request on `tape`; its id and method go to the record.
pub(super) fn request<'t>(
    tape: &'t Tape<'t>,
    ctx: &mut CallCtx,
) -> Result<RpcRequest<'t>, Refusal> {
    let rpc = RpcRequest::from_tape(tape).map_err(|e| {
        ctx.request_id = id_text(e.id);
        Refusal::with(RefusalKind::InvalidRequest, e.kind.to_string())
    })?;
    ctx.request_id = id_text(rpc.id);
    ctx.method = Some(truncate(rpc.method, MAX_METHOD_LEN).to_owned());
    Ok(rpc)
}

impl Gateway {
    /// Checks the era's envelope of `rpc`; returns the era.
    pub(super) fn envelope(
        &self,
        rpc: &RpcRequest<'_>,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Era, Refusal> {
        let era = envelope::era_of(rpc, req.head, req.buf);
        match era {
            Era::Stateless => {
                ctx.requested_version = rpc.envelope_version().map(|v| truncate(v, 64).to_owned());
                ctx.version = Some(envelope::check_stateless(rpc, req.head, req.buf)?);
                ctx.url_elicitation = rpc
                    .meta()
                    .and_then(|m| m.get(toolgate_core::protocol::META_CLIENT_CAPABILITIES))
                    .is_some_and(super::ask::takes_url_elicitation);
            }
            Era::Handshake => {
                ctx.version = envelope::check_handshake_version(req.head, req.buf)?;
                if rpc.method != "initialize"
                    && !rpc.is_notification()
                    && rpc.method != "server/discover"
                {
                    let session = self.check_session(agent, req)?;
                    ctx.url_elicitation = session[0] & super::ask::URL_ELICITATION != 0;
                    ctx.mcp_session = Some(session);
                }
            }
        }
        Ok(era)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use toolgate_core::audit::Reason;

    fn ctx() -> CallCtx {
        CallCtx::new(Instant::now(), None, false, Reason::Answered)
    }

    #[test]
    fn id_and_method_are_recorded_from_the_view() {
        let mut p = JsonParser::new();
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
        let t = tape(&mut p, body).unwrap();
        let mut c = ctx();
        let rpc = request(&t, &mut c).unwrap();
        assert_eq!(rpc.method, "tools/list");
        assert_eq!(c.request_id.as_deref(), Some("7"));
        assert_eq!(c.method.as_deref(), Some("tools/list"));
    }

    #[test]
    fn not_json_is_a_parse_error_and_not_json_rpc_an_invalid_request_with_its_id() {
        let mut p = JsonParser::new();
        assert_eq!(
            tape(&mut p, b"{\"jsonrpc\":").map(|_| ()).unwrap_err().kind,
            RefusalKind::ParseError
        );
        let t = tape(&mut p, br#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#).unwrap();
        let mut c = ctx();
        assert_eq!(
            request(&t, &mut c).map(|_| ()).unwrap_err().kind,
            RefusalKind::InvalidRequest
        );
        assert_eq!(c.request_id.as_deref(), Some("\"x\""));
    }

    #[test]
    fn duplicate_keys_are_refused_before_anything_reads_them() {
        let mut p = JsonParser::new();
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#;
        assert_eq!(
            tape(&mut p, body).map(|_| ()).unwrap_err().kind,
            RefusalKind::InvalidRequest
        );
    }
}

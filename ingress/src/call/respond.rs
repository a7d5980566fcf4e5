//! Phase: the upstream's reply becomes the agent's answer.
//!
//! A `result` is re-encoded for the agent (the upstream's `serverInfo`
//! dropped, the era's `resultType` added) through the output rules of the
//! (agent, tool) when any apply; a JSON-RPC `error` is passed on with its
//! code, through the same rules. Anything else is a bad response.

use simd_json::prelude::*;
use toolgate_core::audit::{Outcome, Reason};
use toolgate_core::jsonrpc::write_value;
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::OutputFilter;

use super::ctx::{Answer, CallCtx};
use super::filter::{self, rewrite_result};
use super::{wire, Gateway};

impl Gateway {
    /// Turns the upstream's reply `message` into the agent's answer.
    pub(super) fn respond(
        &self,
        message: &[u8],
        ctx: &mut CallCtx,
        output: Option<&OutputFilter>,
    ) -> Result<Answer, Refusal> {
        if let Some(f) = output {
            // Bounded memory: a result too large to filter is not forwarded unfiltered.
            filter::check_size(f, message)?;
        }
        let mut parser = self.parser.borrow_mut();
        let bad = || Refusal::new(RefusalKind::UpstreamBadResponse);
        let tape = parser.parse(message).map_err(|_| bad())?;
        let msg = tape.as_value();
        let id = ctx.request_id.as_deref();
        let mut body = Vec::with_capacity(message.len() + 32);
        if let Some(result) = msg.get("result").filter(|r| r.is_object()) {
            let stateless = ctx.version.is_some_and(protocol::is_modern);
            let redactions = &mut ctx.redactions;
            wire::result_with(id, &mut body, |out| match output {
                Some(f) => filter::apply(
                    f,
                    message,
                    result,
                    stateless,
                    &mut self.inner_parser.borrow_mut(),
                    out,
                    redactions,
                ),
                None => {
                    rewrite_result(result, stateless, out, &mut |_, v, o| write_value(v, o));
                    Ok(())
                }
            })?;
            let is_error = result.get("isError").and_then(|e| e.as_bool()) == Some(true);
            return Ok(Answer::Message {
                status: 200,
                body,
                session: None,
                outcome: if is_error {
                    Outcome::ToolError
                } else {
                    Outcome::Success
                },
                error_code: None,
            });
        }
        if let Some(error) = msg.get("error").filter(|e| e.is_object()) {
            let code = error.get("code").and_then(|c| c.as_i64()).ok_or_else(bad)?;
            let mut raw = Vec::new();
            match output {
                Some(f) => filter::apply_error(
                    f,
                    message,
                    error,
                    &mut self.inner_parser.borrow_mut(),
                    &mut raw,
                    &mut ctx.redactions,
                )?,
                None => write_value(error, &mut raw),
            }
            wire::error_raw(id, &raw, &mut body);
            ctx.reason = Reason::UpstreamError;
            return Ok(Answer::Message {
                status: wire::status_for_code(code),
                body,
                session: None,
                outcome: Outcome::Failure,
                error_code: Some(code),
            });
        }
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::testing::gateway;
    use super::*;

    /// The answer's status, body, outcome and error code, or the refusal.
    type Answered = Result<(u16, String, Outcome, Option<i64>), RefusalKind>;

    fn respond(message: &str, version: &'static str) -> (Answered, Reason) {
        let gw = gateway("", &[]);
        let mut ctx = CallCtx::new(Instant::now(), None, false, Reason::Attached);
        ctx.request_id = Some("7".to_owned());
        ctx.version = Some(version);
        let out = match gw.respond(message.as_bytes(), &mut ctx, None) {
            Ok(Answer::Message {
                status,
                body,
                outcome,
                error_code,
                ..
            }) => Ok((
                status,
                String::from_utf8(body).unwrap(),
                outcome,
                error_code,
            )),
            Ok(_) => panic!("an upstream reply is answered with a message"),
            Err(r) => Err(r.kind),
        };
        (out, ctx.reason)
    }

    #[test]
    fn a_result_is_answered_under_the_agents_id_without_the_upstreams_server_info() {
        let (out, reason) = respond(
            r#"{"jsonrpc":"2.0","id":99,"result":{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"crm"}}}}"#,
            protocol::LATEST_MODERN_VERSION,
        );
        let (status, body, outcome, code) = out.unwrap();
        assert_eq!((status, outcome, code), (200, Outcome::Success, None));
        assert_eq!(
            body,
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"resultType":"complete"}}"#
        );
        assert_eq!(reason, Reason::Attached);
    }

    #[test]
    fn a_tool_error_result_is_recorded_as_one() {
        let (out, _) = respond(
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
            "2025-06-18",
        );
        assert_eq!(out.unwrap().2, Outcome::ToolError);
    }

    #[test]
    fn an_upstream_error_keeps_its_code_and_is_recorded_as_the_upstreams() {
        let (out, reason) = respond(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad id"}}"#,
            "2025-06-18",
        );
        let (status, body, outcome, code) = out.unwrap();
        assert_eq!(
            (status, outcome, code),
            (400, Outcome::Failure, Some(-32602))
        );
        assert!(body.contains(r#""message":"bad id""#), "{body}");
        assert_eq!(reason, Reason::UpstreamError);
    }

    #[test]
    fn anything_but_a_result_or_an_error_is_a_bad_response() {
        for bad in [
            r#"{"jsonrpc":"2.0","id":1}"#,
            "not json",
            r#"{"error":{"message":"no code"}}"#,
        ] {
            assert_eq!(
                respond(bad, "2025-06-18").0,
                Err(RefusalKind::UpstreamBadResponse),
                "{bad}"
            );
        }
    }
}

//! The REST door: `/rest/{upstream}/{path…}`, for agents that call plain
//! HTTP APIs (function-calling code with `requests`/`httpx`, curl in a
//! shell tool) instead of speaking MCP.
//!
//! A request is resolved to a tool before anything is forwarded: for an
//! `openapi` upstream, its method and path are matched against the
//! document's operations, and the tool is the same `{prefix}__{operationId}`
//! the MCP door exposes. Its path, query and JSON body become the same
//! arguments the MCP door gives that operation, so the call then runs the
//! MCP door's phases unchanged: identity (2), admission with attachment,
//! quarantine, rate limit, scope and policy (6), the judge and the
//! credential (7), the upstream request rebuilt from the checked arguments
//! (never the agent's headers), the output rules on the JSON answer (8),
//! and the audit record (1, 9) with `"door":"rest"`.
//!
//! An MCP upstream takes REST requests only on the routes its operator
//! declared (`[[upstreams.routes]]`: method + path template → tool); its
//! tool's answer goes through the same output rules, then becomes the HTTP
//! answer (`structuredContent`, or the text content). There is no "forward
//! anything": a path that resolves to no operation or route is a 404,
//! audited.
//! Errors keep HTTP semantics: 401 with `WWW-Authenticate`, 403 for a deny,
//! 404 for an unknown or unattached operation (told apart only in the
//! record), 429, 502/504; the body is `{"error": code, "message": …}` and
//! never names a policy.

use std::rc::Rc;
use std::sync::Arc;

use simd_json::prelude::*;
use toolgate_core::audit::{Door, Outcome, Reason};
use toolgate_core::jsonrpc::{write_str, ToolCall};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::{OutputFilter, Snapshot};
use toolgate_sinks::Admission;
use toolgate_upstream::openapi::HttpAnswer;
use toolgate_upstream::path::RouteError;
use toolgate_upstream::{routes, Upstream};

use super::ctx::{Answer, CallCtx};
use super::{filter, forward, media, Gateway};
use crate::http::response::{self, Body};
use crate::http::server::Request;

/// The REST door's path prefix.
pub const REST_PREFIX: &[u8] = b"/rest/";

impl Gateway {
    /// Serves `/rest/{upstream}/{path…}`: every phase, in order.
    pub(super) async fn rest(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let Some(slot) = self.reserve(out) else {
            return;
        };
        let mut ctx = CallCtx::new(req.started, req.peer, false, Reason::Answered);
        ctx.door = Door::Rest;
        ctx.method = Some("tools/call".to_owned());
        let (snapshot, clients) = self.current();
        let result = self
            .serve_rest(&snapshot, &clients, req, &slot, &mut ctx)
            .await;
        self.finish(&snapshot, req, ctx, result, slot, out).await;
    }

    async fn serve_rest(
        &self,
        snap: &Snapshot,
        clients: &[Rc<Upstream>],
        req: &Request<'_>,
        slot: &Admission,
        ctx: &mut CallCtx,
    ) -> Result<Answer, Refusal> {
        let agent = ctx.identified(self.identify(snap, req)?);
        self.prepare_session(snap, agent, req, ctx).await;
        let method = req
            .head
            .method
            .as_str()
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        let target = req
            .head
            .path(req.buf)
            .get(REST_PREFIX.len()..)
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        let split = target.find(['/', '?']).unwrap_or(target.len());
        let (name, rest) = target.split_at(split);
        let rest = if rest.is_empty() { "/" } else { rest };
        let (idx, info) = snap
            .upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| &*u.name == name)
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        ctx.upstream = Some(Arc::clone(&info.name));
        let upstream = clients
            .get(idx)
            .ok_or(Refusal::new(RefusalKind::UpstreamUnavailable))?;
        if !req.body.is_empty() {
            media::json_body(req)?;
        }
        let catalog = snap.catalogs[idx].as_deref();
        // The request resolves to a tool — an operation of the OpenAPI
        // document, or a declared route of an MCP upstream — or nothing is
        // forwarded: there is no "as is".
        let api = upstream.openapi();
        let (tool, arguments) = match api {
            Some(api) => {
                let surface = api.surface();
                let header = |n: &str| {
                    req.head
                        .header(req.buf, n)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned)
                };
                let r = surface
                    .resolve(method, rest, &header, req.body)
                    .map_err(route_refusal)?;
                (r.op.tool.clone(), r.arguments)
            }
            None => {
                let input_schema = |tool: &str| {
                    let def = catalog?.get(tool)?;
                    let v: serde_json::Value = serde_json::from_str(&def.json).ok()?;
                    v.get("inputSchema").cloned()
                };
                let r = routes::resolve(&info.rest_routes, method, rest, &input_schema, req.body)
                    .map_err(route_refusal)?;
                (r.tool.to_owned(), r.arguments)
            }
        };
        let exposed = catalog
            .and_then(|c| c.get(&tool))
            .and_then(|d| d.exposed.clone())
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        let args_value = arguments;
        let arguments = serde_json::to_vec(&args_value)
            .map_err(|e| Refusal::with(RefusalKind::InvalidParams, e.to_string()))?;
        let admitted = {
            let mut parser = self.parser.borrow_mut();
            let tape = parser
                .parse(&arguments)
                .map_err(|_| Refusal::new(RefusalKind::ParseError))?;
            let call = ToolCall {
                name: &exposed,
                arguments: Some(tape.as_value()),
            };
            self.admit_tool(snap, agent, req, &call, false, ctx)
        };
        let admitted = admitted?;
        self.escalate(&admitted, upstream, ctx).await?;
        self.take_limits(ctx)?;
        super::history::record(ctx);
        let credential = self.inject(upstream, &admitted, req, ctx).await?;
        match api {
            Some(api) => {
                // Unless a data-loss rule rewrote them, the arguments
                // forwarded are the ones resolved: no need to parse them again.
                let parsed = (admitted.arguments() == arguments.as_slice())
                    .then_some((tool.as_str(), &args_value));
                let answer =
                    forward::forward_http(api, &admitted, parsed, &credential, slot).await?;
                ctx.http = Some(answer.http.clone());
                self.respond_http(answer, ctx, admitted.filter.as_deref())
            }
            None => {
                let reply = forward::forward(
                    upstream,
                    &admitted,
                    &credential,
                    slot,
                    &toolgate_upstream::Watch::NONE,
                )
                .await?;
                let answer = self.respond(&reply.message, ctx, admitted.filter.as_deref())?;
                tool_result_as_http(answer)
            }
        }
    }

    /// The REST API's answer as the agent's: its status, and its JSON body
    /// through the output rules. A body that is not JSON passes only when
    /// no rule applies to the tool: it is never passed on unscanned.
    fn respond_http(
        &self,
        answer: HttpAnswer,
        ctx: &mut CallCtx,
        output: Option<&OutputFilter>,
    ) -> Result<Answer, Refusal> {
        let outcome = if answer.status >= 400 {
            Outcome::ToolError
        } else {
            Outcome::Success
        };
        let Some(f) = output else {
            return Ok(Answer::Http {
                status: answer.status,
                json: answer.json,
                body: answer.body,
                outcome,
            });
        };
        if !answer.json {
            return Err(Refusal::with(
                RefusalKind::OutputRefused,
                "the answer is not JSON and output rules apply to this tool",
            ));
        }
        filter::check_size(f, &answer.body)?;
        let mut parser = self.parser.borrow_mut();
        let tape = parser
            .parse(&answer.body)
            .map_err(|_| Refusal::new(RefusalKind::UpstreamBadResponse))?;
        let mut body = Vec::with_capacity(answer.body.len());
        filter::apply_body(
            f,
            &answer.body,
            tape.as_value(),
            &mut self.inner_parser.borrow_mut(),
            &mut body,
            &mut ctx.redactions,
        )?;
        Ok(Answer::Http {
            status: answer.status,
            json: true,
            body,
            outcome,
        })
    }
}

/// A route that does not resolve, as the refusal the caller gets.
fn route_refusal(e: RouteError) -> Refusal {
    match e {
        RouteError::NotFound => Refusal::new(RefusalKind::PathNotFound),
        RouteError::BadBody(why) => Refusal::with(RefusalKind::InvalidParams, why),
        e => Refusal::with(RefusalKind::InvalidRequest, e.to_string()),
    }
}

/// An MCP tool's answer (already through the output rules) as the REST
/// caller's: `structuredContent` as the JSON body, else the text content
/// (as JSON when it is JSON); a tool that reported an error is `502` with
/// what it said; a JSON-RPC error keeps its HTTP status and message.
fn tool_result_as_http(answer: Answer) -> Result<Answer, Refusal> {
    let Answer::Message { body, outcome, .. } = answer else {
        return Err(Refusal::new(RefusalKind::UpstreamBadResponse));
    };
    let bad = || Refusal::new(RefusalKind::UpstreamBadResponse);
    let msg: serde_json::Value = serde_json::from_slice(&body).map_err(|_| bad())?;
    if let Some(error) = msg.get("error") {
        let code = error.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
        let text = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
        let body = serde_json::json!({"error": "tool_error", "message": text});
        return Ok(Answer::Http {
            status: super::wire::status_for_code(code),
            json: true,
            body: body.to_string().into_bytes(),
            outcome: Outcome::ToolError,
        });
    }
    let result = msg.get("result").ok_or_else(bad)?;
    let status = if outcome == Outcome::ToolError {
        502
    } else {
        200
    };
    if let Some(structured) = result.get("structuredContent") {
        return Ok(Answer::Http {
            status,
            json: true,
            body: structured.to_string().into_bytes(),
            outcome,
        });
    }
    let text: String = result
        .get("content")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(|t| t.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    let json = serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v.is_object() || v.is_array());
    Ok(Answer::Http {
        status,
        json,
        body: text.into_bytes(),
        outcome,
    })
}

/// Writes a refusal for the REST door — its status, `headers`, and
/// `{"error": code, "message": …}` with the members of `data` (a JSON
/// object's text) — and returns the status.
/// An unattached tool (or one out of a sub-token's or the user's scope)
/// is answered exactly like a path with no operation, 404: the caller
/// learns nothing more; the record keeps the reason.
pub(super) fn write_refusal(
    out: &mut Vec<u8>,
    r: &Refusal,
    headers: &[(&str, &str)],
    data: Option<&str>,
) -> u16 {
    let w = r.wire();
    let mut body = Vec::with_capacity(96);
    body.extend_from_slice(br#"{"error":"#);
    let (status, code, message) = match r.kind {
        RefusalKind::PathNotFound | RefusalKind::UnknownTool => (
            404,
            "not_found",
            "no operation at this path for this agent".into(),
        ),
        kind => (w.status, kind.reason(), w.message),
    };
    write_str(code, &mut body);
    body.extend_from_slice(br#","message":"#);
    write_str(&message, &mut body);
    if let Some(members) = data
        .and_then(|d| d.strip_prefix('{'))
        .and_then(|d| d.strip_suffix('}'))
        .filter(|d| !d.is_empty())
    {
        body.push(b',');
        body.extend_from_slice(members.as_bytes());
    }
    body.push(b'}');
    response::write(out, status, headers, Body::Json(&body), true);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal_of(r: &Refusal, value: Option<&str>) -> (u16, String, String) {
        let mut out = Vec::new();
        let headers: Vec<(&str, &str)> = match (r.wire().header.name(), value) {
            (Some(n), Some(v)) => vec![(n, v)],
            _ => Vec::new(),
        };
        let status = write_refusal(&mut out, r, &headers, None);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    #[test]
    fn an_unattached_tool_reads_exactly_like_a_path_with_no_operation() {
        let unattached = refusal_of(&Refusal::with(RefusalKind::UnknownTool, "`x`"), None);
        let no_route = refusal_of(&Refusal::new(RefusalKind::PathNotFound), None);
        assert_eq!(unattached, no_route);
        assert_eq!(unattached.0, 404);
        assert!(unattached.1.starts_with("HTTP/1.1 404"));
        let v: serde_json::Value = serde_json::from_str(&unattached.2).unwrap();
        assert_eq!(v["error"], "not_found");
    }

    #[test]
    fn refusals_keep_http_semantics_and_their_header() {
        let (status, _, body) = refusal_of(&Refusal::new(RefusalKind::PolicyDenied), None);
        assert_eq!(status, 403);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "denied_by_policy");
        let (status, head, _) = refusal_of(&Refusal::new(RefusalKind::RateLimited), Some("7"));
        assert_eq!(status, 429);
        assert!(head.contains("Retry-After: 7"), "{head}");
        let (status, _, body) = refusal_of(
            &Refusal::with(RefusalKind::InvalidRequest, "bad path: empty path segment"),
            None,
        );
        assert_eq!(status, 400);
        assert!(body.contains("empty path segment"), "{body}");
    }
}

//! The call driver: every request on `/mcp`, start to finish.
//!
//! One function ([`Gateway::mcp`]) runs the phases in order; each lives in
//! its own file, takes and returns typed values, and refuses with a
//! [`Refusal`]:
//!
//! | # | phase | file |
//! |---|---|---|
//! | 1 | reserve the request's audit slot (none free → 503, nothing else runs) | [`finish`] |
//! | 2 | HTTP method; identify the agent and end user | [`identify`] |
//! | 3 | media types (`Content-Type`, `Content-Encoding`, `Accept`) | [`media`] |
//! | 4 | the JSON-RPC view and the era's envelope (or session) | [`parse`], [`envelope`], [`sessions`] |
//! | 5 | toolgate's own answers: `initialize`, `server/discover`, `ping`, `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list` | [`builtin`] |
//! | 6 | admit a `tools/call`: attached, not quarantined, rate, scope, its session's facts, policy; the body rebuilt from the checked view (a `prompts/get` or `resources/read`: attached, well formed, policy) | [`admit`], [`history`], [`decide`], [`params`], [`target`] |
//! | 7 | the judge of an escalated call; the quotas; the call recorded in its session; the upstream's credential; the upstream call | [`forward`], [`judge`], [`limit`], [`history`] |
//! | 8 | the reply as the agent's answer, through the output rules | [`respond`], [`filter`] |
//! | 9 | write the response, commit the record into the slot, await the log | [`finish`], [`ack`] |
//!
//! The slot reserved in phase 1 is what phase 7 needs to forward, and
//! phase 9 commits it on every path, so no call reaches a tool unaudited
//! and no request goes unrecorded.

pub mod ack;
mod admit;
mod args;
mod ask;
mod builtin;
mod cancel;
mod connect;
mod credential;
mod ctx;
mod decide;
pub mod envelope;
pub mod filter;
mod finish;
mod forward;
mod gateway;
mod history;
mod identify;
pub mod judge;
mod limit;
mod listen;
mod media;
pub mod params;
mod parse;
mod progress;
mod respond;
mod rest;
mod routes;
mod sessions;
mod target;
#[cfg(test)]
mod testing;
mod tokens;
pub mod wire;

use std::rc::Rc;

use toolgate_core::audit::Reason;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::{Agent, Snapshot};
use toolgate_sinks::Admission;

use crate::http::head::Method;
use crate::http::server::Request;
use ctx::{Answer, CallCtx};
use envelope::Era;
use forward::Admitted;
use media::Media;
use toolgate_upstream::Upstream;

pub use connect::CONNECT_PREFIX;
pub use gateway::Gateway;
pub use history::CONVERSATION;
pub use identify::{ON_BEHALF_OF, RESOURCE_METADATA_PATH};
pub use rest::REST_PREFIX;

/// What the synchronous phases (4–6) lead to.
enum Plan {
    /// Answered without an upstream.
    Answer(Answer),
    /// A `tools/call` admitted for its upstream.
    Forward(Admitted),
}

impl Gateway {
    /// Serves `/mcp`: every phase, in order.
    async fn mcp(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let Some(slot) = self.reserve(out) else {
            return;
        };
        let media = Media::of(req);
        let mut ctx = CallCtx::new(req.started, req.peer, media.sse, Reason::Answered);
        ctx.streams = media.streams;
        let (snapshot, clients) = self.current();
        let result = self
            .serve(&snapshot, &clients, req, media, &slot, &mut ctx)
            .await;
        let listen = match &result {
            Ok(Answer::Listen(l)) => Some(l.clone()),
            _ => None,
        };
        self.finish(&snapshot, req, ctx, result, slot, out).await;
        drop((snapshot, clients));
        if let (Some(listen), Some(early)) = (listen, req.early) {
            self.stream_changes(listen, early, out).await;
        }
    }

    /// Phases 2–8.
    async fn serve(
        &self,
        snap: &Snapshot,
        clients: &[Rc<Upstream>],
        req: &Request<'_>,
        media: Media,
        slot: &Admission,
        ctx: &mut CallCtx,
    ) -> Result<Answer, Refusal> {
        match req.head.method {
            Method::Post | Method::Delete | Method::Get => {}
            Method::Put | Method::Patch | Method::Other => {
                return Err(Refusal::new(RefusalKind::MethodNotAllowed))
            }
        }
        let agent = ctx.identified(self.identify(snap, req)?);
        self.prepare_session(snap, agent, req, ctx).await;
        if req.head.method == Method::Delete {
            ctx.reason = Reason::SessionTerminated;
            return self.end_session(agent, req);
        }
        if req.head.method == Method::Get {
            return self.listen_get(agent, req, ctx);
        }
        media.check(req)?;
        let call = match self.plan(snap, agent, req, ctx)? {
            Plan::Answer(answer) => return Ok(answer),
            Plan::Forward(call) => call,
        };
        let upstream = clients
            .get(call.upstream)
            .ok_or(Refusal::new(RefusalKind::UpstreamUnavailable))?;
        self.escalate(&call, upstream, ctx).await?;
        self.take_limits(ctx)?;
        history::record(ctx);
        let credential = self.inject(upstream, &call, req, ctx).await?;
        let reply = self
            .forward_watched(
                upstream,
                &call,
                &credential,
                slot,
                ctx,
                req.early,
                media.streams,
            )
            .await?;
        ctx.http = reply.http;
        let mut answer = self.respond(&reply.message, ctx, call.filter.as_deref())?;
        if call.method == "resources/read" {
            target::expose_contents(&mut answer, upstream.name());
        }
        Ok(answer)
    }

    /// Phases 4–6, on the body's one parse: the view, the envelope, then
    /// toolgate's own answer or the admission of a `tools/call`.
    fn plan(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Plan, Refusal> {
        let mut parser = self.parser.borrow_mut();
        let tape = parse::tape(&mut parser, req.body)?;
        if let Some(answered) = self.client_answer(agent, req, &tape, ctx) {
            return answered.map(Plan::Answer);
        }
        let rpc = parse::request(&tape, ctx)?;
        let stateless = self.envelope(&rpc, agent, req, ctx)? == Era::Stateless;
        if rpc.is_notification() {
            if rpc.method == cancel::CANCELLED {
                self.cancel_call(agent, req, &rpc, ctx);
            }
            return Ok(Plan::Answer(Answer::Accepted));
        }
        let admitted = if rpc.method == "tools/call" {
            self.admit(snap, agent, req, &rpc, stateless, ctx)
        } else if target::is_target(rpc.method) {
            self.admit_target(snap, agent, req, &rpc, ctx)
        } else if rpc.method == target::COMPLETE {
            self.admit_completion(snap, agent, &rpc, ctx)
        } else if rpc.method == listen::LISTEN && stateless {
            return self.listen_request(agent, req, &rpc, ctx).map(Plan::Answer);
        } else {
            return self
                .builtin(snap, agent, req, &rpc, stateless, ctx)
                .map(Plan::Answer);
        };
        let mut call = admitted?;
        call.progress = progress::token(&rpc);
        Ok(Plan::Forward(call))
    }
}

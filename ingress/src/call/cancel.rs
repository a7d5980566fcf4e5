//! A call at its upstream, watched: entered in the shard's calls in
//! flight so the agent's `notifications/cancelled` reaches it, with its
//! upstream's progress relayed to the agent as it comes; and the
//! cancellation itself, when an agent sends one.

use simd_json::prelude::*;
use toolgate_core::jsonrpc::{id_text, RpcRequest};
use toolgate_core::protocol;
use toolgate_core::refusal::Refusal;
use toolgate_decision::Agent;
use toolgate_sinks::Admission;
use toolgate_upstream::{Credential, Reply, Upstream, Watch};

use super::ctx::CallCtx;
use super::forward::{forward, Admitted};
use super::{progress, Gateway};
use crate::http::early::Early;
use crate::http::server::Request;
use crate::inflight::CallKey;

/// The method of an agent's cancellation.
pub(super) const CANCELLED: &str = "notifications/cancelled";

impl Gateway {
    /// Sends the admitted call (see [`forward`]) as one the agent can
    /// cancel while it runs. Through `early` (the request's connection),
    /// the upstream's progress goes to the agent ahead of the answer when
    /// the agent asked for it and `streams` (takes event streams), and a
    /// stateless-era agent leaving cancels the call.
    #[expect(clippy::too_many_arguments, reason = "the call and where it came from")]
    pub(super) async fn forward_watched(
        &self,
        upstream: &Upstream,
        call: &Admitted,
        credential: &Credential,
        slot: &Admission,
        ctx: &CallCtx,
        early: Option<&Early>,
        streams: bool,
    ) -> Result<Reply, Refusal> {
        let entered = self
            .in_flight
            .enter(self.shared.cancels.key(&call_key(ctx)));
        // In the stateless era an agent cancels over HTTP by closing its
        // stream (no notification comes); a handshake-era agent that
        // leaves has not cancelled (it may resume), so its call runs on.
        let watched = early.filter(|_| ctx.mcp_session.is_none());
        if let Some(early) = watched {
            early.watch();
        }
        let relay = match (call.progress.as_deref(), early.filter(|_| streams)) {
            (Some(token), Some(early)) => {
                early.allow();
                Some(move |message: &[u8]| {
                    let Ok(mut parser) = self.inner_parser.try_borrow_mut() else {
                        return;
                    };
                    if let Some(m) =
                        progress::relayed(&mut parser, message, token, call.filter.as_deref())
                    {
                        early.send(m);
                    }
                })
            }
            _ => None,
        };
        let asks =
            super::ask::Relay::new(self, ctx, early.filter(|_| streams), call.filter.as_deref());
        let watch = Watch {
            progress: relay.as_ref().map(|r| r as &dyn Fn(&[u8])),
            cancel: Some(entered.cancel()),
            ask: asks.as_ref().map(|a| a as &dyn toolgate_upstream::Ask),
        };
        let left = async {
            if let Some(early) = watched {
                early.gone().await;
                entered.cancel().fire();
            }
            std::future::pending().await
        };
        futures_lite::future::or(forward(upstream, call, credential, slot, &watch), left).await
    }

    /// An agent's `notifications/cancelled`: the call it names, if it is
    /// the same agent's (and end user's, and session's) and still at its
    /// upstream, is cancelled — here, or on the shard running it.
    pub(super) fn cancel_call(
        &self,
        agent: &Agent,
        req: &Request<'_>,
        rpc: &RpcRequest<'_>,
        ctx: &CallCtx,
    ) {
        let Some(id) = rpc
            .params
            .and_then(|p| p.get("requestId"))
            .filter(|v| v.is_str() || v.is_i64() || v.is_u64())
            .and_then(|v| id_text(Some(v)))
        else {
            return;
        };
        // Notifications carry their session without being checked for
        // one; a cancellation names calls of the session it proves, even
        // one just ended (a client closing sends both at once).
        let session = req
            .head
            .header(req.buf, protocol::HEADER_SESSION_ID)
            .and_then(|_| self.session_of(agent, req).ok());
        let key = self.shared.cancels.key(&CallKey {
            agent: &agent.id,
            user: ctx.user.as_deref(),
            session: session.as_ref(),
            id: &id,
        });
        if !self.in_flight.cancel(key) {
            self.shared.cancels.post(usize::from(self.shard), key);
        }
    }
}

/// Who sent the call and its id, as a cancellation must name them.
fn call_key(ctx: &CallCtx) -> CallKey<'_> {
    CallKey {
        agent: ctx.agent.as_deref().unwrap_or(""),
        user: ctx.user.as_deref(),
        session: ctx.mcp_session.as_ref(),
        id: ctx.request_id.as_deref().unwrap_or("null"),
    }
}

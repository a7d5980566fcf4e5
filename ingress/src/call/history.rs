//! What the session did before: a call's place in its session, the facts
//! its decision sees as `context.session`, and its record in the session
//! once every check let it through.
//!
//! Which session a call belongs to:
//! - handshake era: its `Mcp-Session-Id` (each id one session, bound to its agent);
//! - stateless era and the REST door: the agent, the customer, the end user
//!   and the `Toolgate-Conversation` header when the client sends one — so
//!   a client that sends none has one session per (agent, customer, user)
//!   until it idles out.
//!
//! Sessions are kept only while some policy reads `context.session`; the
//! table is shared by every shard ([`toolgate_decision::session`]).

use std::sync::Arc;

use toolgate_core::jsonrpc::ToolCall;
use toolgate_decision::session::{Entry, Recorded, SessionFacts, SessionView};
use toolgate_decision::{Agent, Route, Snapshot};

use super::ctx::{now_secs, CallCtx};
use super::Gateway;
use crate::http::server::Request;

/// The header naming a conversation, for callers without an MCP session.
pub const CONVERSATION: &str = "Toolgate-Conversation";

/// A call's session, from its decision to its record.
pub(super) struct InSession {
    /// Its place in the table; `None` when sessions have no table yet.
    entry: Option<Entry>,
    /// What the call adds to the session once admitted.
    recorded: Recorded,
    /// The facts its decision saw.
    pub(super) facts: SessionFacts,
    /// Label names and counted arguments of the snapshot it was decided on.
    labels: Arc<[Arc<str>]>,
    distinct: Arc<[Arc<str>]>,
}

impl InSession {
    /// The facts with their names.
    pub(super) fn view(&self) -> SessionView<'_> {
        SessionView {
            facts: &self.facts,
            labels: &self.labels,
            distinct: &self.distinct,
        }
    }
}

impl Gateway {
    /// Enters the call in its session, when policies read sessions.
    pub(super) fn enter_session(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        route: &Route,
        call: &ToolCall<'_>,
        ctx: &CallCtx,
    ) -> Option<InSession> {
        if !snap.sessions_used {
            return None;
        }
        let Some(table) = self.shared.sessions.get() else {
            // Published before its table exists: unknown, never empty.
            return Some(InSession {
                entry: None,
                recorded: Recorded::default(),
                facts: SessionFacts::unknown(0),
                labels: Arc::clone(&snap.label_names),
                distinct: Arc::clone(&snap.distinct),
            });
        };
        let key = match &ctx.mcp_session {
            Some(nonce) => table.key(&[b"mcp", nonce.as_slice()]),
            None => {
                let conversation = req
                    .head
                    .header(req.buf, CONVERSATION)
                    .map(<[u8]>::trim_ascii)
                    .unwrap_or(b"");
                table.key(&[
                    b"caller",
                    agent.id.as_bytes(),
                    ctx.customer
                        .as_deref()
                        .unwrap_or(&agent.customer)
                        .as_bytes(),
                    ctx.user.as_deref().unwrap_or("").as_bytes(),
                    &[u8::from(ctx.user.is_some())],
                    conversation,
                ])
            }
        };
        let recorded = table.recorded(route.labels, &route.exposed, &snap.distinct, call.arguments);
        let entry = table.enter(key, now_secs());
        let facts = entry.facts(recorded.tool);
        Some(InSession {
            entry: Some(entry),
            recorded,
            facts,
            labels: Arc::clone(&snap.label_names),
            distinct: Arc::clone(&snap.distinct),
        })
    }
}

/// Records the admitted call in its session: every check let it through
/// and it goes to its upstream now. Refused calls never get here, so they
/// neither advance nor reset anything.
pub(super) fn record(ctx: &mut CallCtx) {
    if let Some(s) = ctx.session.as_mut() {
        if let Some(entry) = s.entry.take() {
            entry.commit(&s.recorded);
        }
    }
}

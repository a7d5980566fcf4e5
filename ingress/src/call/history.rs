//! What the session did before: a call's place in its session, the facts
//! its decision sees as `context.session`, and its record in the session
//! once every check let it through.
//!
//! Which session a call belongs to:
//! - a request with a valid `Mcp-Session-Id` of its agent (handshake era):
//!   that MCP session;
//! - stateless era and the REST door: the agent, the customer, the end user
//!   and the `Toolgate-Conversation` header when the client sends one — so
//!   a client that sends none has one session per (agent, customer, user)
//!   until it idles out.
//!
//! Sessions are kept only while some policy reads `context.session`; the
//! table is shared by every shard ([`toolgate_decision::session`]), and
//! with `sessions.backend = "redis"` by every replica
//! ([`crate::session_sync`]).

use std::sync::Arc;

use toolgate_decision::session::shared::{record_args, shared_key};
use toolgate_decision::session::{Entry, Recorded, SessionFacts, SessionView};
use toolgate_decision::{Agent, Snapshot};

use super::ctx::{now_secs, CallCtx};
use super::identify::user_of;
use super::Gateway;
use crate::http::server::Request;
use crate::session::Nonce;
use crate::session_sync::{Done, Job, SessionSync};

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
    /// Shared sessions: the Redis key, the tool's name and the sync the
    /// record goes to.
    shared: Option<(String, Arc<str>, Arc<SessionSync>)>,
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

/// What names a call's session: its verified `Mcp-Session-Id`, else the
/// caller and the conversation.
struct SessionParts<'a> {
    nonce: Option<Nonce>,
    agent: &'a str,
    customer: &'a str,
    user: Option<&'a str>,
    conversation: &'a [u8],
}

impl SessionParts<'_> {
    fn with<T>(&self, f: impl FnOnce(&[&[u8]]) -> T) -> T {
        match &self.nonce {
            Some(nonce) => f(&[b"mcp", nonce.as_slice()]),
            None => f(&[
                b"caller",
                self.agent.as_bytes(),
                self.customer.as_bytes(),
                self.user.unwrap_or("").as_bytes(),
                &[u8::from(self.user.is_some())],
                self.conversation,
            ]),
        }
    }
}

impl Gateway {
    fn session_parts<'a>(
        &self,
        agent: &'a Agent,
        req: &Request<'a>,
        ctx: &'a CallCtx,
        user: Option<&'a str>,
    ) -> SessionParts<'a> {
        SessionParts {
            nonce: ctx
                .mcp_session
                .or_else(|| self.check_session(agent, req).ok()),
            agent: &agent.id,
            customer: ctx.customer.as_deref().unwrap_or(&agent.customer),
            user,
            conversation: req
                .head
                .header(req.buf, CONVERSATION)
                .map(<[u8]>::trim_ascii)
                .unwrap_or(b""),
        }
    }

    /// Shared sessions: reads the request's session from Redis into this
    /// replica's table when it is not here yet (or is stale), before any
    /// phase decides on it. Its one round trip is the only one a call
    /// waits for; failing, the session is unknown to this call.
    pub(super) async fn prepare_session(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &CallCtx,
    ) {
        if !snap.sessions_used {
            return;
        }
        let (Some(table), Some(sync)) =
            (self.shared.sessions.get(), self.shared.session_sync.get())
        else {
            return;
        };
        let now = now_secs();
        let user = user_of(agent, req, ctx.user.clone()).ok().flatten();
        let parts = self.session_parts(agent, req, ctx, user.as_deref());
        let key = parts.with(|p| table.key(p));
        if !table.needs_state(key, now) || !sync.up.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let done = Arc::new(Done::default());
        let job = Job::Load {
            key,
            shared: parts.with(shared_key),
            now,
            done: Arc::clone(&done),
        };
        if sync.send(job) {
            let timeout = sync.timeout;
            futures_lite::future::or(done.wait(), async {
                glommio::timer::sleep(timeout).await;
                false
            })
            .await;
        }
    }

    /// Enters the call in its session, when policies read sessions: a
    /// call of `name` (an exposed tool, or a prompt or resource URI, which
    /// have no labels) with label bits `labels` and `arguments`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the call's parts, as admission holds them"
    )]
    pub(super) fn enter_session(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        labels: u32,
        name: &Arc<str>,
        arguments: Option<simd_json::tape::Value<'_, '_>>,
        ctx: &CallCtx,
    ) -> Option<InSession> {
        if !snap.sessions_used {
            return None;
        }
        let bits = labels;
        let labels = Arc::clone(&snap.label_names);
        let distinct = Arc::clone(&snap.distinct);
        let Some(table) = self.shared.sessions.get() else {
            // Published before its table exists: unknown, never empty.
            return Some(InSession {
                entry: None,
                recorded: Recorded::default(),
                facts: SessionFacts::unknown(0),
                labels,
                distinct,
                shared: None,
            });
        };
        let parts = self.session_parts(agent, req, ctx, ctx.user.as_deref());
        let key = parts.with(|p| table.key(p));
        let recorded = table.recorded(bits, name, &snap.distinct, arguments);
        let entry = table.enter(key, now_secs());
        let mut facts = entry.facts(recorded.tool);
        let shared = if table.is_shared() {
            let sync = self.shared.session_sync.get();
            if !sync.is_some_and(|s| s.up.load(std::sync::atomic::Ordering::SeqCst)) {
                // Redis unreachable: what other replicas did is not known.
                facts.known = false;
            }
            sync.map(|s| (parts.with(shared_key), Arc::clone(name), Arc::clone(s)))
        } else {
            None
        };
        Some(InSession {
            entry: Some(entry),
            recorded,
            facts,
            labels,
            distinct,
            shared,
        })
    }
}

/// Records the admitted call in its session: every check let it through
/// and it goes to its upstream now. Refused calls never get here, so they
/// neither advance nor reset anything. Shared sessions: the record goes to
/// Redis too, behind the call.
pub(super) fn record(ctx: &mut CallCtx) {
    let Some(s) = ctx.session.as_mut() else {
        return;
    };
    let Some(entry) = s.entry.take() else {
        return;
    };
    let key = entry.key();
    let calls = entry.commit(&s.recorded);
    if let Some((shared, tool, sync)) = &s.shared {
        let labels: Vec<&str> = s
            .labels
            .iter()
            .enumerate()
            .filter(|(i, _)| s.recorded.labels & (1 << i) != 0)
            .map(|(_, n)| &**n)
            .collect();
        let values: Vec<(&str, u32)> = s
            .distinct
            .iter()
            .zip(s.recorded.distinct)
            .filter(|(_, h)| *h != 0)
            .map(|(n, h)| (&**n, h))
            .collect();
        let job = Job::Record {
            key,
            shared: shared.clone(),
            args: record_args(now_secs(), sync.idle_s, tool, &labels, &values),
            calls,
        };
        if !sync.send(job) {
            tracing::warn!("the session sync queue is full: a call is not recorded in Redis");
        }
    }
}

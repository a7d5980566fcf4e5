//! Agents told their lists changed: a long-lived event stream per
//! listening agent, on which toolgate sends `notifications/tools/list_changed`
//! (prompts, resources) when what the agent sees changes — tools attached
//! or detached, an upstream's catalog fetched with new definitions, a tool
//! quarantined or approved.
//!
//! Two doors, one stream: in the handshake era, `GET /mcp` in a session; in
//! the stateless era, a `subscriptions/listen` request, acknowledged first
//! (`notifications/subscriptions/acknowledged`) and each notification
//! carrying the subscription's id. The stream's record is written when it
//! opens; the stream then holds no audit slot, only its connection.
//! Whether a list changed is decided on the agent's lists as the snapshot
//! renders them, when a new snapshot reaches the shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use simd_json::prelude::*;
use toolgate_core::jsonrpc::{write_str, RpcRequest};
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::Agent;

use super::ctx::{Answer, CallCtx};
use super::Gateway;
use crate::http::early::{self, Early};
use crate::http::response::{self, Body};
use crate::http::server::Request;
use crate::session::Nonce;

/// Listening streams one shard holds at most; more are refused (503).
pub(super) const MAX_LISTENERS: usize = 1024;

/// How often a listening stream's connection is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// An idle stream gets a heartbeat (an SSE comment) this often.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The method that opens a stateless-era stream.
pub(super) const LISTEN: &str = "subscriptions/listen";

/// The `_meta` key naming the subscription a notification belongs to.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Which lists a stream reports changes of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
}

impl Filter {
    /// Every list (the handshake era's stream).
    const ALL: Filter = Filter {
        tools: true,
        prompts: true,
        resources: true,
    };
}

/// A stream to open once its record is written.
#[derive(Clone)]
pub(super) struct Listen {
    agent: Arc<str>,
    session: Option<Nonce>,
    filter: Filter,
    /// The `subscriptions/listen` request's id (JSON text), stateless era.
    subscription: Option<String>,
}

/// The agent's lists as one snapshot renders them.
#[derive(Clone, PartialEq, Eq)]
struct Lists {
    tools: Arc<str>,
    prompts: Arc<str>,
    resources: Arc<str>,
    templates: Arc<str>,
}

impl Lists {
    fn of(agent: &Agent) -> Self {
        Self {
            tools: Arc::clone(&agent.tools_list),
            prompts: Arc::clone(&agent.prompts_list),
            resources: Arc::clone(&agent.resources_list),
            templates: Arc::clone(&agent.templates_list),
        }
    }
}

/// Snapshot changes as this shard's listening streams wait for them.
#[derive(Default)]
pub struct Changes {
    /// Bumped each time the shard takes a new snapshot.
    seen: Cell<u64>,
    waiting: RefCell<HashMap<u64, Waker>>,
    next_id: Cell<u64>,
    /// Streams open now.
    open: Cell<usize>,
}

impl Changes {
    /// The shard took a new snapshot: every stream looks.
    pub(super) fn changed(&self) {
        self.seen.set(self.seen.get() + 1);
        for (_, w) in self.waiting.borrow_mut().drain() {
            w.wake();
        }
    }

    /// Streams open now.
    fn open(&self) -> usize {
        self.open.get()
    }
}

impl Gateway {
    /// `GET /mcp` in a handshake-era session: a stream of every list's
    /// changes. Without a session it is refused as before (405): the
    /// stateless era has no GET stream.
    pub(super) fn listen_get(
        &self,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Answer, Refusal> {
        if req
            .head
            .header(req.buf, protocol::HEADER_SESSION_ID)
            .is_none()
        {
            return Err(Refusal::new(RefusalKind::MethodNotAllowed));
        }
        let session = self.check_session(agent, req)?;
        ctx.mcp_session = Some(session);
        self.listen(agent, req, ctx, Some(session), Filter::ALL, None)
    }

    /// `subscriptions/listen` (stateless era): a stream of the lists its
    /// filter names.
    pub(super) fn listen_request(
        &self,
        agent: &Agent,
        req: &Request<'_>,
        rpc: &RpcRequest<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Answer, Refusal> {
        let asked = rpc.params.and_then(|p| p.get("notifications"));
        let wants = |key: &str| {
            asked
                .and_then(|n| n.get(key))
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        };
        let filter = Filter {
            tools: wants("toolsListChanged"),
            prompts: wants("promptsListChanged"),
            resources: wants("resourcesListChanged"),
        };
        let id = ctx.request_id.clone();
        self.listen(agent, req, ctx, None, filter, id)
    }

    fn listen(
        &self,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &CallCtx,
        session: Option<Nonce>,
        filter: Filter,
        subscription: Option<String>,
    ) -> Result<Answer, Refusal> {
        if !ctx.streams || req.early.is_none() {
            return Err(Refusal::new(RefusalKind::NotAcceptable));
        }
        if self.changes.open() >= MAX_LISTENERS {
            return Err(Refusal::new(RefusalKind::Overloaded));
        }
        Ok(Answer::Listen(Listen {
            agent: Arc::clone(&agent.id),
            session,
            filter,
            subscription,
        }))
    }

    /// Runs an opened stream until its agent leaves, is removed, or its
    /// session ends; what is still to write goes into `out`.
    pub(super) async fn stream_changes(&self, listen: Listen, early: &Early, out: &mut Vec<u8>) {
        early.open_now(CHECK_EVERY);
        if let Some(id) = &listen.subscription {
            early.send(acknowledged(id, listen.filter));
        }
        let Some(mut lists) = self.lists_of(&listen) else {
            return finish_stream(early, out);
        };
        let id = self.changes.next_id.get();
        self.changes.next_id.set(id + 1);
        self.changes.open.set(self.changes.open.get() + 1);
        let mut seen = self.changes.seen.get();
        loop {
            let woke = futures_lite::future::or(
                async {
                    poll_fn(|cx| {
                        if self.changes.seen.get() != seen {
                            return Poll::Ready(true);
                        }
                        self.changes
                            .waiting
                            .borrow_mut()
                            .insert(id, cx.waker().clone());
                        Poll::Pending
                    })
                    .await
                },
                futures_lite::future::or(
                    async {
                        early.gone().await;
                        false
                    },
                    async {
                        glommio::timer::sleep(HEARTBEAT).await;
                        early.heartbeat();
                        true
                    },
                ),
            )
            .await;
            if !woke {
                break;
            }
            seen = self.changes.seen.get();
            let Some(now) = self.lists_of(&listen) else {
                break;
            };
            if now != lists {
                for message in notifications(&lists, &now, &listen) {
                    early.send(message);
                }
                lists = now;
            }
        }
        self.changes.waiting.borrow_mut().remove(&id);
        self.changes.open.set(self.changes.open.get() - 1);
        finish_stream(early, out);
    }

    /// The agent's lists now; `None` once the agent is gone from the
    /// snapshot or its session has ended.
    fn lists_of(&self, listen: &Listen) -> Option<Lists> {
        if let Some(n) = &listen.session {
            if self.terminated.borrow_mut().current().contains_key(n) {
                return None;
            }
        }
        let (snap, _) = self.current();
        snap.agent_by_id(&listen.agent).map(Lists::of)
    }
}

/// Ends the stream: what is queued, then the stream's end (or, if its
/// head never went, an empty event stream).
fn finish_stream(early: &Early, out: &mut Vec<u8>) {
    if early.close(out) {
        early::end(out);
    } else {
        response::write(out, 200, &[], Body::NoEvents, true);
    }
}

/// The acknowledgment of a `subscriptions/listen`: the filter honoured
/// (resource subscriptions are not offered).
fn acknowledged(id: &str, filter: Filter) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(
        br#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"#,
    );
    write_str(SUBSCRIPTION_ID, &mut out);
    out.push(b':');
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#"},"notifications":{"#);
    let mut first = true;
    for (on, key) in [
        (filter.tools, "toolsListChanged"),
        (filter.prompts, "promptsListChanged"),
        (filter.resources, "resourcesListChanged"),
    ] {
        if on {
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(key, &mut out);
            out.extend_from_slice(b":true");
        }
    }
    out.extend_from_slice(b"}}}");
    out
}

/// The notifications for what changed between `was` and `now` that the
/// stream reports.
fn notifications(was: &Lists, now: &Lists, listen: &Listen) -> Vec<Vec<u8>> {
    let f = listen.filter;
    let changed = [
        (f.tools && was.tools != now.tools, "tools"),
        (f.prompts && was.prompts != now.prompts, "prompts"),
        (
            f.resources && (was.resources != now.resources || was.templates != now.templates),
            "resources",
        ),
    ];
    changed
        .into_iter()
        .filter(|(c, _)| *c)
        .map(|(_, list)| {
            let mut out = Vec::with_capacity(128);
            out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"notifications/"#);
            out.extend_from_slice(list.as_bytes());
            out.extend_from_slice(br#"/list_changed""#);
            if let Some(id) = &listen.subscription {
                out.extend_from_slice(br#","params":{"_meta":{"#);
                write_str(SUBSCRIPTION_ID, &mut out);
                out.push(b':');
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(b"}}");
            }
            out.push(b'}');
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(tools: &str, prompts: &str) -> Lists {
        Lists {
            tools: Arc::from(tools),
            prompts: Arc::from(prompts),
            resources: Arc::from("[]"),
            templates: Arc::from("[]"),
        }
    }

    fn listen(filter: Filter, subscription: Option<&str>) -> Listen {
        Listen {
            agent: Arc::from("bot"),
            session: None,
            filter,
            subscription: subscription.map(str::to_owned),
        }
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn only_the_lists_that_changed_and_were_asked_for_are_announced() {
        let was = lists(r#"[{"name":"a"}]"#, "[]");
        let now = lists(r#"[{"name":"b"}]"#, r#"[{"name":"p"}]"#);
        let all = notifications(&was, &now, &listen(Filter::ALL, None));
        let methods: Vec<_> = all.iter().map(|m| json(m)["method"].clone()).collect();
        assert_eq!(
            methods,
            [
                "notifications/tools/list_changed",
                "notifications/prompts/list_changed"
            ]
        );
        assert_eq!(json(&all[0]).get("params"), None);

        let tools_only = Filter {
            tools: true,
            prompts: false,
            resources: false,
        };
        let some = notifications(&was, &now, &listen(tools_only, Some("\"s-1\"")));
        assert_eq!(some.len(), 1);
        assert_eq!(json(&some[0])["params"]["_meta"][SUBSCRIPTION_ID], "s-1");
        assert!(notifications(&was, &was, &listen(Filter::ALL, None)).is_empty());
    }

    #[test]
    fn the_acknowledgment_names_what_is_honoured() {
        let f = Filter {
            tools: true,
            prompts: false,
            resources: true,
        };
        let ack = json(&acknowledged("7", f));
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], 7);
        assert_eq!(
            ack["params"]["notifications"],
            serde_json::json!({"toolsListChanged": true, "resourcesListChanged": true})
        );
    }
}

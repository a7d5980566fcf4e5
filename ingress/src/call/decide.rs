//! Phase: the policy verdict for a routed call — precompiled for the
//! (agent, tool) pair when its outcome cannot depend on the call, else
//! from the shard's decision cache, else evaluated by Cedar.
//!
//! The cache key holds everything the evaluation reads: the snapshot
//! generation, agent, tool, end user, customer, the token's groups and the
//! exact argument bytes — and, for a slice whose policies read
//! `context.session`, the session facts they read (the attributes and
//! label counters they name). No engine for a pair that needs one is a deny.

use std::sync::Arc;

use toolgate_core::audit::Reason;
use toolgate_core::jsonrpc::write_value;
use toolgate_decision::policy::{CallFacts, PairDecision, Verdict};
use toolgate_decision::session::SessionView;
use toolgate_decision::{Agent, Route, Snapshot};

use super::Gateway;

/// Whom a call is for, beyond the agent: what policy may look at.
#[derive(Clone, Copy)]
pub(super) struct OnBehalf<'a> {
    /// The end user, when known.
    pub(super) user: Option<&'a str>,
    /// The user's groups from the token.
    pub(super) groups: Option<&'a [Arc<str>]>,
    /// The customer the call is attributed to.
    pub(super) customer: &'a str,
    /// The call's session, when policies read sessions.
    pub(super) session: Option<SessionView<'a>>,
}

/// Which policy set decides: the enforced one, or the shadow one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Set {
    /// Enforced.
    Live,
    /// `@shadow`: evaluated, recorded, never enforced.
    Shadow,
}

impl Gateway {
    /// The policy verdict of the `set` policies for a routed call; `None`
    /// for the shadow set when no policy is marked shadow.
    pub(super) fn decide(
        &self,
        snap: &Snapshot,
        set: Set,
        agent: &Agent,
        route: &Route,
        who: &OnBehalf<'_>,
        args: Option<simd_json::tape::Value<'_, '_>>,
    ) -> Option<Verdict> {
        let OnBehalf {
            user,
            groups,
            customer,
            session,
        } = *who;
        let (pair, engine) = match set {
            Set::Live => (&route.decision, &snap.engine),
            Set::Shadow => (route.shadow.as_ref()?, &snap.shadow),
        };
        let slice = match pair {
            PairDecision::Fixed(v) => return Some(v.clone()),
            PairDecision::Evaluate(slice) => slice,
        };
        let Some(engine) = engine else {
            return Some(Verdict::Deny {
                policies: Arc::from([]),
                reason: Reason::PolicyError,
            });
        };
        let facts = CallFacts {
            agent: &agent.id,
            user,
            groups,
            tool: &route.exposed,
            upstream: &snap.upstreams[route.upstream].name,
            customer,
            args,
            session: session.filter(|_| slice.reads_session()),
        };
        // A verdict that read the session holds for the facts it read: they
        // are part of the key.
        let mut session_bytes = Vec::new();
        if let Some(view) = &facts.session {
            let (fields, labels) = slice.session_fields();
            view.facts.cache_key(fields, labels, &mut session_bytes);
        }
        let mut args_bytes = Vec::new();
        if let Some(a) = args {
            write_value(a, &mut args_bytes);
        }
        // The token's groups decide too: two tokens of one user with
        // different groups must not share a cached verdict.
        let mut group_bytes = Vec::new();
        for g in groups.unwrap_or(&[]) {
            group_bytes.extend_from_slice(&(g.len() as u32).to_le_bytes());
            group_bytes.extend_from_slice(g.as_bytes());
        }
        let generation = self.snapshot.borrow().generation().to_le_bytes();
        Some(self.decisions.borrow_mut().get_or_insert(
            &[
                &[u8::from(set == Set::Shadow)],
                &generation,
                agent.id.as_bytes(),
                route.exposed.as_bytes(),
                user.unwrap_or("").as_bytes(),
                &[u8::from(user.is_some())],
                customer.as_bytes(),
                &group_bytes,
                &[u8::from(groups.is_some())],
                &args_bytes,
                &session_bytes,
            ],
            || engine.evaluate(slice, &facts),
        ))
    }
}

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
use toolgate_decision::policy::{CallFacts, PairDecision, Verdict};
use toolgate_decision::session::SessionView;
use toolgate_decision::{Agent, Route, Snapshot};

use super::ctx::CallCtx;
use super::forward::Escalated;
use super::Gateway;
use toolgate_core::jsonrpc::write_value;
use toolgate_core::refusal::{Refusal, RefusalKind};

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
enum Set {
    /// Enforced.
    Live,
    /// `@shadow`: evaluated, recorded, never enforced.
    Shadow,
}

impl Gateway {
    /// The policy verdicts for a routed call: the enforced set's, and the
    /// shadow set's when any policy is marked shadow. The arguments' JSON
    /// is written once for both cache keys.
    pub(super) fn decide(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        route: &Route,
        who: &OnBehalf<'_>,
        args: Option<simd_json::tape::Value<'_, '_>>,
    ) -> (Verdict, Option<Verdict>) {
        let OnBehalf {
            user,
            groups,
            customer,
            session,
        } = *who;
        let generation = self.snapshot.borrow().generation().to_le_bytes();
        let mut args_json = Vec::new();
        let mut one = |set: Set| -> Option<Verdict> {
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
            // The set and the snapshot's generation lead the key; a verdict
            // that read the session is keyed on the facts it read too.
            let mut prefix = [0u8; 9];
            prefix[0] = u8::from(set == Set::Shadow);
            prefix[1..].copy_from_slice(&generation);
            Some(
                self.decisions
                    .borrow_mut()
                    .decide(&prefix, engine, slice, &facts, &mut args_json),
            )
        };
        let live = one(Set::Live).unwrap_or(Verdict::Deny {
            policies: Arc::from([]),
            reason: Reason::PolicyError,
        });
        (live, one(Set::Shadow))
    }
}

/// Records the policy `verdict` in the call's context and turns it into
/// what the forward needs: nothing more for an allow, the refusal for a
/// deny, and for an escalation what the judge is shown (`args` as sent,
/// `{}` when there are none).
pub(super) fn settle(
    verdict: Verdict,
    args: Option<simd_json::tape::Value<'_, '_>>,
    ctx: &mut CallCtx,
) -> Result<Option<Escalated>, Refusal> {
    ctx.verdict = Some(verdict.as_str());
    match verdict {
        Verdict::Allow { policies } => {
            ctx.policies = (!policies.is_empty()).then_some(policies);
            Ok(None)
        }
        Verdict::Deny { policies, reason } => {
            ctx.policies = (!policies.is_empty()).then_some(policies);
            ctx.reason = reason;
            Err(Refusal::new(RefusalKind::PolicyDenied))
        }
        Verdict::Judge { policies } => {
            ctx.policies = Some(Arc::clone(&policies));
            let mut arguments = Vec::new();
            match args {
                Some(a) => write_value(a, &mut arguments),
                None => arguments.extend_from_slice(b"{}"),
            }
            Ok(Some(Escalated {
                arguments,
                policies,
            }))
        }
    }
}

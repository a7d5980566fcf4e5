//! Phases after admission, in order: the judge of an escalated call, then
//! (after the upstream's credential, [`super::credential`]) the call to the
//! upstream.
//!
//! Forwarding takes the request's reserved audit slot ([`Admission`]):
//! only a request whose record has a place in the audit ring reaches a
//! tool, so an unaudited forward does not compile.

use std::sync::Arc;

use toolgate_core::audit::{JudgeOutcome, Reason};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_decision::OutputFilter;
use toolgate_sinks::Admission;

use super::ctx::CallCtx;
use super::{judge, Gateway};
use toolgate_upstream::openapi::{HttpAnswer, OpenApiClient};
use toolgate_upstream::{Credential, Reply, Upstream, Watch};

/// A `tools/call` (or a `prompts/get`, a `resources/read`) that passed
/// every check, ready for its upstream.
pub(super) struct Admitted {
    /// The method sent upstream.
    pub(super) method: &'static str,
    /// Index of its upstream in the snapshot.
    pub(super) upstream: usize,
    /// The tool's (prompt's) name or the resource's URI on the upstream.
    pub(super) tool: Arc<str>,
    /// `params` members: `"name":…,"arguments":…`, the arguments last
    /// (`"uri":…` for a resource).
    pub(super) params: Vec<u8>,
    /// Where the arguments start in `params` (they run to its end).
    pub(super) args_at: usize,
    /// Routing headers for a stateless-era upstream.
    pub(super) headers: Vec<(String, String)>,
    /// Set when policy escalated the call: the judge must allow it first.
    pub(super) escalation: Option<Escalated>,
    /// Output rules for the result, when any apply.
    pub(super) filter: Option<Arc<OutputFilter>>,
    /// The agent's progress token (JSON text), when it asked for progress.
    pub(super) progress: Option<String>,
}

impl Admitted {
    /// The arguments as forwarded.
    pub(super) fn arguments(&self) -> &[u8] {
        self.params.get(self.args_at..).unwrap_or(b"{}")
    }
}

/// What the judge is shown.
pub(super) struct Escalated {
    /// The arguments as the agent sent them.
    pub(super) arguments: Vec<u8>,
    /// The policies that escalated the call.
    pub(super) policies: Arc<[Arc<str>]>,
}

impl Gateway {
    /// Asks the judge about an escalated call; anything but a clear allow
    /// in time refuses it. A call that was not escalated passes.
    pub(super) async fn escalate(
        &self,
        call: &Admitted,
        upstream: &Upstream,
        ctx: &mut CallCtx,
    ) -> Result<(), Refusal> {
        let Some(esc) = &call.escalation else {
            return Ok(());
        };
        let Some(judge) = &self.judge else {
            return Err(Refusal::new(RefusalKind::JudgeUnavailable));
        };
        let asked = judge::Escalation {
            request_id: ctx.request_id.as_deref(),
            agent: ctx.agent.as_deref().unwrap_or(""),
            user: ctx.user.as_deref(),
            tool: ctx.tool.as_deref().or(ctx.target.as_deref()).unwrap_or(""),
            upstream: upstream.name(),
            arguments: &esc.arguments,
            policies: &esc.policies,
        };
        let record = judge.ask(&asked).await;
        ctx.judge = Some(record);
        match record.outcome {
            JudgeOutcome::Allow => {
                ctx.reason = Reason::AllowedByJudge;
                Ok(())
            }
            JudgeOutcome::Deny => Err(Refusal::new(RefusalKind::JudgeDenied)),
            JudgeOutcome::Timeout | JudgeOutcome::Unavailable | JudgeOutcome::Invalid => {
                Err(Refusal::new(RefusalKind::JudgeUnavailable))
            }
        }
    }
}

/// Sends the admitted call with its credential; the reserved audit slot
/// is the proof that its record will be written. `watch` takes the
/// upstream's progress and carries the agent's cancellation.
pub(super) async fn forward(
    upstream: &Upstream,
    call: &Admitted,
    credential: &Credential,
    _audited: &Admission,
    watch: &Watch<'_>,
) -> Result<Reply, Refusal> {
    // On the heap: the upstream exchange is a request's largest state,
    // and every connection's task would otherwise be as large as it, idle
    // or not.
    Box::pin(upstream.request(call.method, &call.params, &call.headers, credential, watch))
        .await
        .map_err(|e| {
            tracing::debug!(upstream = upstream.name(), error = %e, "upstream call failed");
            Refusal::new(e.refusal_kind())
        })
}

/// Sends the admitted call to a REST API and returns its answer as it
/// came (the REST door); the reserved audit slot is the proof that its
/// record will be written. Arguments that do not fit the operation are
/// refused, and nothing is sent.
/// `parsed` is the call's tool and arguments as the door already holds
/// them, given only when they are what admission forwards (no data-loss
/// rule changed them), so they are not parsed again.
pub(super) async fn forward_http(
    api: &OpenApiClient,
    call: &Admitted,
    parsed: Option<(&str, &serde_json::Value)>,
    credential: &Credential,
    _audited: &Admission,
) -> Result<HttpAnswer, Refusal> {
    let sent = match parsed {
        Some((tool, args)) => api.send(tool, args, credential).await,
        None => api.call_http(&call.params, credential).await,
    };
    match sent {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(why)) => Err(Refusal::with(RefusalKind::InvalidParams, why)),
        Err(e) => {
            tracing::debug!(error = %e, "REST upstream call failed");
            Err(Refusal::new(e.refusal_kind()))
        }
    }
}

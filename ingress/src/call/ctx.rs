//! What a request's audit record needs, gathered as the phases run, and
//! what a request is answered with short of a refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use toolgate_core::audit::{
    AuditArgs, AuditRecord, Decision, Door, HttpCall, JudgeRecord, Outcome, Reason, Redaction,
};

/// What a request is answered with, short of a refusal.
pub(super) enum Answer {
    /// A REST API's answer passed on through the REST door.
    Http {
        /// The API's status.
        status: u16,
        /// Whether the body is JSON (else plain text).
        json: bool,
        /// The body, through the output rules.
        body: Vec<u8>,
        /// How the call ended, for the record.
        outcome: Outcome,
    },
    /// A JSON-RPC message.
    Message {
        /// HTTP status.
        status: u16,
        /// The JSON-RPC message.
        body: Vec<u8>,
        /// A new `Mcp-Session-Id` (handshake-era `initialize`).
        session: Option<String>,
        /// How the call ended, for the record.
        outcome: Outcome,
        /// The JSON-RPC error code passed through, if any.
        error_code: Option<i64>,
    },
    /// `202 Accepted`, no body (notifications).
    Accepted,
    /// `200 OK`, no body (session terminated).
    Done,
    /// A stream of list changes, opened once its record is written.
    Listen(super::listen::Listen),
}

/// What the audit record needs from a request, gathered as it is served.
pub(super) struct CallCtx {
    pub(super) started: Instant,
    pub(super) time_us: u64,
    pub(super) peer: Option<SocketAddr>,
    pub(super) request_id: Option<String>,
    pub(super) agent: Option<Arc<str>>,
    pub(super) method: Option<String>,
    pub(super) tool: Option<String>,
    /// The resource URI or prompt a request other than `tools/call` acts on.
    pub(super) target: Option<String>,
    pub(super) upstream: Option<Arc<str>>,
    pub(super) version: Option<&'static str>,
    pub(super) requested_version: Option<String>,
    /// The agent takes the answer as an SSE stream.
    pub(super) sse: bool,
    /// The agent takes an SSE stream (among other answers).
    pub(super) streams: bool,
    pub(super) reason: Reason,
    pub(super) user: Option<Arc<str>>,
    /// The customer the call is attributed to, once the agent is known.
    pub(super) customer: Option<Arc<str>>,
    /// The user's groups from the token, when its user is the call's.
    pub(super) groups: Option<Arc<[Arc<str>]>>,
    /// The tools a sub-token is narrowed to (within the agent's own).
    pub(super) scope: Option<Vec<String>>,
    /// Seconds a rate-limited agent should wait (`Retry-After`).
    pub(super) retry_after_s: Option<u64>,
    pub(super) policies: Option<Arc<[Arc<str>]>>,
    pub(super) judge: Option<JudgeRecord>,
    pub(super) redactions: Vec<Redaction>,
    /// What the record keeps of a `tools/call`'s arguments.
    pub(super) args: Option<AuditArgs>,
    /// The HTTP request a call to a REST upstream became.
    pub(super) http: Option<HttpCall>,
    /// The door the request came in through.
    pub(super) door: Door,
    /// Where the call stands under its tightest `[limits]` rule, and
    /// whether that rule refused it.
    pub(super) limit: Option<(toolgate_limits::Standing, bool)>,
    /// The units its quotas charged it (0: none).
    pub(super) units: u64,
    /// Requests its upstream sent toward the agent's client, and what
    /// became of them (noted while the call runs).
    pub(super) client_requests: std::cell::RefCell<Vec<toolgate_core::audit::ClientAsk>>,
    /// The handshake-era session the request belongs to.
    pub(super) mcp_session: Option<crate::session::Nonce>,
    /// The call's session as policy sees it, when policies read sessions.
    pub(super) session: Option<super::history::InSession>,
    /// The agent's client takes URL-mode elicitation.
    pub(super) url_elicitation: bool,
    /// The `data` of the call's refusal, when it has some (JSON text).
    pub(super) refusal_data: Option<String>,
    /// Whether the end user was named by the IdP's JWT the request
    /// carries (the token an exchange starts from).
    pub(super) user_token: bool,
    /// How the end user reached the call's upstream (`[upstreams.identity]`).
    pub(super) identity: Option<toolgate_core::audit::IdentityRecord>,
    /// The policy verdict of a call that reached policy.
    pub(super) verdict: Option<&'static str>,
    /// What the shadow policies decided of it, when any are loaded.
    pub(super) shadow: Option<toolgate_decision::policy::Verdict>,
}

impl CallCtx {
    /// Takes what identification found of the caller; returns its agent.
    pub(super) fn identified<'s>(
        &mut self,
        caller: super::identify::Caller<'s>,
    ) -> &'s toolgate_decision::Agent {
        self.agent = Some(Arc::clone(&caller.agent.id));
        self.user = caller.user;
        self.customer = Some(caller.customer);
        self.groups = caller.groups;
        self.scope = caller.scope;
        self.user_token = caller.user_token;
        caller.agent
    }

    /// A context for a request that started at `started`, nothing known yet.
    pub(super) fn new(
        started: Instant,
        peer: Option<SocketAddr>,
        sse: bool,
        reason: Reason,
    ) -> Self {
        Self {
            started,
            time_us: now_us(),
            peer,
            request_id: None,
            agent: None,
            method: None,
            tool: None,
            target: None,
            upstream: None,
            version: None,
            requested_version: None,
            sse,
            streams: sse,
            reason,
            user: None,
            customer: None,
            groups: None,
            scope: None,
            retry_after_s: None,
            policies: None,
            judge: None,
            redactions: Vec::new(),
            args: None,
            http: None,
            door: Door::Mcp,
            limit: None,
            units: 0,
            client_requests: std::cell::RefCell::default(),
            mcp_session: None,
            user_token: false,
            url_elicitation: false,
            refusal_data: None,
            session: None,
            identity: None,
            verdict: None,
            shadow: None,
        }
    }

    /// The audit record of the request as it ended.
    pub(super) fn into_record(
        self,
        shard: u16,
        decision: Decision,
        status: u16,
        outcome: Outcome,
        error_code: Option<i64>,
    ) -> AuditRecord {
        let has_user = self.user.is_some();
        AuditRecord {
            time_us: self.time_us,
            shard,
            seq: 0,
            request_id: self.request_id,
            agent: self.agent,
            user: self.user,
            customer: self.customer,
            method: self.method,
            tool: self.tool,
            target: self.target,
            upstream: self.upstream,
            decision,
            reason: self.reason,
            status,
            outcome,
            error_code,
            latency_us: self.started.elapsed().as_micros() as u64,
            client: self.peer,
            protocol_version: self.version,
            policies: self.policies,
            judge: self.judge,
            redactions: self.redactions,
            args: self.args,
            admin: None,
            http: self.http,
            door: self.door,
            limit: self.limit.and_then(|(s, refused)| refused.then_some(s.id)),
            units: self.units,
            client_requests: self.client_requests.into_inner(),
            session: self.session.as_ref().map(|s| {
                let mut json = Vec::with_capacity(256);
                s.view().write_json(&mut json);
                // Always UTF-8 (strings are written escaped); `null` keeps
                // the line JSON whatever happens.
                String::from_utf8(json)
                    .unwrap_or_else(|_| "null".to_owned())
                    .into_boxed_str()
            }),
            // The token's groups decided only where a verdict was reached
            // for the token's own user.
            groups: self.groups.filter(|_| self.verdict.is_some() && has_user),
            verdict: self.verdict,
            identity: self.identity,
            shadow: self.shadow.map(|v| toolgate_core::audit::ShadowRecord {
                verdict: v.as_str(),
                policies: Arc::clone(v.policies()),
            }),
        }
    }
}

/// Microseconds since the Unix epoch.
pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub(super) fn now_secs() -> u64 {
    now_us() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::refusal::RefusalKind;

    #[test]
    fn record_carries_what_the_phases_gathered() {
        let mut ctx = CallCtx::new(Instant::now(), None, true, Reason::Answered);
        ctx.agent = Some(Arc::from("support-bot"));
        ctx.tool = Some("crm__lookup".to_owned());
        ctx.reason = Reason::Refused(RefusalKind::UnknownTool);
        let r = ctx.into_record(3, Decision::Deny, 400, Outcome::Failure, Some(-32602));
        assert_eq!(r.shard, 3);
        assert_eq!(r.agent.as_deref(), Some("support-bot"));
        assert_eq!(r.tool.as_deref(), Some("crm__lookup"));
        assert_eq!(r.reason.as_str(), "tool_not_attached");
        assert_eq!(
            (r.decision, r.status, r.error_code),
            (Decision::Deny, 400, Some(-32602))
        );
    }
}

//! The audit record: one per request toolgate answers on its MCP endpoint.
//!
//! Built on the shard, moved through the shard's ring to the audit thread,
//! encoded there. Fields hold references to snapshot strings (`Arc<str>`) so
//! building a record copies no agent or upstream names.

use crate::refusal::RefusalKind;
use std::sync::Arc;

/// What toolgate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through (or answered by toolgate itself).
    Allow,
    /// Refused.
    Deny,
}

impl Decision {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a result.
    Success,
    /// Answered with an error (refusal or upstream failure).
    Failure,
    /// The tool ran and reported an error in its result (`isError: true`).
    ToolError,
}

impl Outcome {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::ToolError => "tool_error",
        }
    }
}

/// Longest method name kept in a record; longer ones are cut (they are the
/// caller's input and must not bloat the trail).
pub const MAX_METHOD_LEN: usize = 128;
/// Longest tool name kept in a record.
pub const MAX_TOOL_LEN: usize = 256;

/// Longest redacted copy of a call's arguments kept in a record, bytes;
/// longer copies are cut (on a character boundary) and flagged.
pub const MAX_REDACTED_ARGS: usize = 4096;

/// What a record keeps of a `tools/call`'s arguments (`[audit] arguments`):
/// never the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditArgs {
    /// SHA-256 of the argument bytes exactly as forwarded to the upstream.
    Sha256([u8; 32]),
    /// The arguments JSON with detector matches masked, as text.
    Redacted {
        /// The masked JSON text, at most [`MAX_REDACTED_ARGS`] bytes.
        text: String,
        /// Set when the text was cut to fit.
        truncated: bool,
    },
}

impl AuditArgs {
    /// The digest of `args` (the exact bytes).
    pub fn digest(args: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        AuditArgs::Sha256(Sha256::digest(args).into())
    }

    /// A redacted copy, cut to [`MAX_REDACTED_ARGS`] bytes.
    pub fn redacted(masked: &str) -> Self {
        let text = truncate(masked, MAX_REDACTED_ARGS);
        AuditArgs::Redacted {
            truncated: text.len() < masked.len(),
            text: text.to_owned(),
        }
    }

    /// Appends the record members (each with its leading comma).
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AuditArgs::Sha256(d) => {
                out.extend_from_slice(b",\"args_sha256\":\"");
                let mut buf = [0u8; 64];
                // Cannot fail: the buffer is exactly twice the digest.
                if hex::encode_to_slice(d, &mut buf).is_ok() {
                    out.extend_from_slice(&buf);
                }
                out.push(b'"');
            }
            AuditArgs::Redacted { text, truncated } => {
                out.extend_from_slice(b",\"args_redacted\":");
                crate::jsonrpc::write_str(text, out);
                out.extend_from_slice(if *truncated {
                    b",\"args_truncated\":true"
                } else {
                    b",\"args_truncated\":false"
                });
            }
        }
    }
}

/// What an output rule did to a result, counted (never the matched value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// The output rule's name.
    pub rule: Arc<str>,
    /// Which part of the rule fired.
    pub kind: RedactionKind,
    /// The detector, pattern, field path or condition, as configured.
    pub target: Arc<str>,
    /// How many times it fired on this result.
    pub count: u32,
}

/// The part of an output rule a [`Redaction`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactionKind {
    /// A built-in detector masked substrings.
    Detector,
    /// An operator pattern masked substrings.
    Pattern,
    /// A field was dropped or masked.
    Field,
    /// Array elements were dropped by a `drop_where` condition.
    DropWhere,
    /// The result was refused by a `refuse_when` condition.
    RefuseWhen,
}

impl RedactionKind {
    /// Key of the target in the encoded record.
    pub fn as_str(self) -> &'static str {
        match self {
            RedactionKind::Detector => "detector",
            RedactionKind::Pattern => "pattern",
            RedactionKind::Field => "field",
            RedactionKind::DropWhere => "drop_where",
            RedactionKind::RefuseWhen => "refuse_when",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// Start of the request, microseconds since the Unix epoch.
    pub time_us: u64,
    /// Shard that served the request.
    pub shard: u16,
    /// Per-shard sequence number, gap-free.
    pub seq: u64,
    /// The JSON-RPC id as JSON text, when readable.
    pub request_id: Option<String>,
    /// Authenticated agent id.
    pub agent: Option<Arc<str>>,
    /// End user the agent acts for, when known.
    pub user: Option<Arc<str>>,
    /// Customer (tenant) the call is attributed to, once the agent is known.
    pub customer: Option<Arc<str>>,
    /// JSON-RPC method.
    pub method: Option<String>,
    /// Tool as the agent named it.
    pub tool: Option<String>,
    /// What a request other than `tools/call` acted on: the resource URI
    /// of a `resources/read`, the prompt of a `prompts/get` (as the agent
    /// named them).
    pub target: Option<String>,
    /// Upstream the tool routes to.
    pub upstream: Option<Arc<str>>,
    /// Allow or deny.
    pub decision: Decision,
    /// Why ([`Reason::as_str`] is its wire form).
    pub reason: Reason,
    /// HTTP status returned to the agent.
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// JSON-RPC error code returned, if any.
    pub error_code: Option<i64>,
    /// Time from request head received to response written, microseconds.
    pub latency_us: u64,
    /// Client address.
    pub client: Option<std::net::SocketAddr>,
    /// Agent's MCP protocol version for this request.
    pub protocol_version: Option<&'static str>,
    /// Policies that determined the decision (`@id` or `file.cedar#n`).
    pub policies: Option<Arc<[Arc<str>]>>,
    /// The judge's part, when the call was escalated.
    pub judge: Option<JudgeRecord>,
    /// Output rules that fired on the result, with counts.
    pub redactions: Vec<Redaction>,
    /// Requests the upstream sent toward the agent's client during the
    /// call, in order: each one's method and what became of it.
    pub client_requests: Vec<ClientAsk>,
    /// The call's arguments as `[audit] arguments` says: a digest, a
    /// redacted copy, or nothing (also for requests that are not calls).
    pub args: Option<AuditArgs>,
    /// Set on records of admin-API changes instead of tool calls.
    pub admin: Option<Box<AdminChange>>,
    /// The HTTP request a call to a REST (OpenAPI) upstream became.
    pub http: Option<HttpCall>,
    /// The door the request came in through (written only for the REST door).
    pub door: Door,
    /// The `[[limits.rules]]` id that refused the call, when one did.
    pub limit: Option<Arc<str>>,
    /// The quota units the call was charged (its tool's cost; 0, and not
    /// written, when no quota applied or the call was refused).
    pub units: u64,
    /// The call's session and the facts its decision saw (a JSON object),
    /// when policies read sessions.
    pub session: Option<Box<str>>,
    /// The policy verdict of a `tools/call` that reached policy (`allow`,
    /// `deny` or `judge`), whatever happened after: what a policy
    /// simulation reproduces.
    pub verdict: Option<&'static str>,
    /// The end user's groups as the token gave them, when they decided
    /// (they replace the configured ones): what a simulation needs.
    pub groups: Option<Arc<[Arc<str>]>>,
    /// What the shadow policies (`@shadow`) decided, when any are loaded.
    pub shadow: Option<ShadowRecord>,
    /// The end-user assertion the call carried to its upstream
    /// (`[upstreams.identity]`): its mode and `jti`, never the token.
    pub identity: Option<IdentityRecord>,
}

/// How the call's end user reached its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// `assertion` or `token_exchange`.
    pub mode: &'static str,
    /// The `jti` of the token toolgate signed for the call (the assertion,
    /// or the actor token of an exchange), which its receiver sees too.
    pub jti: Option<Box<str>>,
    /// How the call got the token it carried: for `token_exchange`,
    /// `exchanged` (now), `cached` (an earlier exchange for this user,
    /// agent and upstream), `fallback` (the service credential instead),
    /// `failed`; for `connected_account`, `connected`, `not_connected`,
    /// `reconnect` (the grant expired or was revoked).
    pub token: Option<&'static str>,
    /// Why the exchange failed (the IdP's OAuth error code at most, never
    /// a token).
    pub error: Option<Box<str>>,
}

/// A JSON array of strings.
fn write_str_list(items: &[Arc<str>], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::jsonrpc::write_str(item, out);
    }
    out.push(b']');
}

/// The shadow policies' decision of a call: never enforced, recorded next
/// to the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRecord {
    /// `allow`, `deny` or `judge`.
    pub verdict: &'static str,
    /// The policies that determined it.
    pub policies: Arc<[Arc<str>]>,
}

/// The door a request comes in through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Door {
    /// `/mcp`: MCP JSON-RPC.
    #[default]
    Mcp,
    /// `/rest/{upstream}/…`: a plain HTTP request resolved to a tool.
    Rest,
}

impl Door {
    /// Its wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Mcp => "mcp",
            Door::Rest => "rest",
        }
    }
}

/// The HTTP request one tool call became at a REST (OpenAPI) upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// HTTP method.
    pub method: Arc<str>,
    /// The operation's path template (never the values filled into it).
    pub path: Arc<str>,
    /// The API's status code.
    pub status: u16,
}

/// One change of the control state made through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminChange {
    /// Name of the admin credential that made it; `None` when the request
    /// carried no valid admin credential (a refused request).
    pub actor: Option<String>,
    /// `put` or `delete` for a change; for a refused request its kind
    /// (`put`, `delete`, `transaction`, `get`, `other`).
    pub op: &'static str,
    /// Resource kind: `agents`, `users` or `policies`.
    pub kind: String,
    /// Resource id.
    pub id: String,
    /// Version before the change; `None` when it did not exist in the store.
    pub old_version: Option<u64>,
    /// Version after the change; `None` when deleted.
    pub new_version: Option<u64>,
    /// SHA-256 (hex) of the new document; `None` when deleted.
    pub digest: Option<String>,
    /// A compact JSON diff of old and new document (an object).
    pub diff: String,
    /// Snapshot generation the change was published as.
    pub generation: u64,
}

/// Why a request ended as it did: the `reason` of its record.
///
/// The wire strings live in [`Reason::as_str`] alone; SIEM searches and
/// SOAR rules match on them, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// toolgate answered the request itself (`initialize`, `tools/list`, …).
    Answered,
    /// An attached tool was called with no policy in play.
    Attached,
    /// Cedar policy allowed the call.
    AllowedByPolicy,
    /// The judge allowed an escalated call.
    AllowedByJudge,
    /// The upstream answered the call with a JSON-RPC error.
    UpstreamError,
    /// The agent ended its session (`DELETE /mcp`).
    SessionTerminated,
    /// An attached tool whose scope does not cover the call's end user.
    ToolOutOfScope,
    /// A Cedar `forbid` matched.
    ForbiddenByPolicy,
    /// No Cedar `permit` matched.
    NoPermit,
    /// Cedar could not evaluate a policy: deny.
    PolicyError,
    /// The call's arguments nest too deep to be decided on: deny.
    ArgumentsTooDeep,
    /// The call's arguments cannot be put to Cedar (a repeated key): deny.
    InvalidArguments,
    /// Refused for this reason (its [`RefusalKind::reason`]).
    Refused(RefusalKind),
    /// The agent's answer to a request an upstream sent its client during
    /// a call, passed on to the call.
    ClientAnswer,
    /// A change made through the admin API.
    AdminChange,
    /// An admin API request refused with this error code.
    AdminRefused(&'static str),
    /// A user was sent to a provider to connect their account.
    ConnectStarted,
    /// A user connected their account for an upstream.
    AccountConnected,
    /// A connected account was removed (by its user or an operator).
    AccountDisconnected,
}

impl Reason {
    /// The snake_case reason written to the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Answered => "answered",
            Reason::Attached => "attached",
            Reason::AllowedByPolicy => "allowed_by_policy",
            Reason::AllowedByJudge => "allowed_by_judge",
            Reason::UpstreamError => "upstream_error",
            Reason::SessionTerminated => "session_terminated",
            Reason::ToolOutOfScope => "tool_out_of_scope",
            Reason::ForbiddenByPolicy => "forbidden_by_policy",
            Reason::NoPermit => "no_permit",
            Reason::PolicyError => "policy_error",
            Reason::ArgumentsTooDeep => "arguments_too_deep",
            Reason::InvalidArguments => "invalid_arguments",
            Reason::Refused(kind) => kind.reason(),
            Reason::ClientAnswer => "client_answer",
            Reason::AdminChange => "admin_change",
            Reason::AdminRefused(code) => code,
            Reason::ConnectStarted => "connect_started",
            Reason::AccountConnected => "account_connected",
            Reason::AccountDisconnected => "account_disconnected",
        }
    }

    /// Whether an upstream failed the call (for the failure counter).
    pub fn is_upstream_failure(self) -> bool {
        matches!(
            self,
            Reason::Refused(
                RefusalKind::UpstreamUnavailable
                    | RefusalKind::UpstreamTimeout
                    | RefusalKind::UpstreamBadResponse
            )
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request an upstream sent toward the agent's client during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAsk {
    /// Its method (`elicitation/create`, `sampling/createMessage`,
    /// `roots/list`, or another the upstream sent).
    pub method: &'static str,
    /// What became of it.
    pub outcome: AskOutcome,
}

/// What became of a request an upstream sent toward the agent's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskOutcome {
    /// Relayed to the agent, and its answer to the upstream.
    Answered,
    /// Relayed; no answer came before the call ended.
    Unanswered,
    /// Not relayed: the upstream may not send this kind (`client_requests`).
    NotAllowed,
    /// Not relayed: the agent's client did not declare the capability, or
    /// its answer does not stream.
    NoCapability,
    /// Not relayed: an output rule of the call would act on its text.
    RefusedByOutputRules,
}

impl AskOutcome {
    /// As written to the record.
    pub fn as_str(self) -> &'static str {
        match self {
            AskOutcome::Answered => "answered",
            AskOutcome::Unanswered => "unanswered",
            AskOutcome::NotAllowed => "not_allowed",
            AskOutcome::NoCapability => "no_capability",
            AskOutcome::RefusedByOutputRules => "refused_by_output_rules",
        }
    }
}

/// What the judge of an escalated call said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeOutcome {
    /// A clear allow, in time.
    Allow,
    /// A clear deny.
    Deny,
    /// No answer in time.
    Timeout,
    /// The judge could not be reached.
    Unavailable,
    /// An answer that is neither allow nor deny.
    Invalid,
}

impl JudgeOutcome {
    /// The outcome as written to the record.
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeOutcome::Allow => "allow",
            JudgeOutcome::Deny => "deny",
            JudgeOutcome::Timeout => "timeout",
            JudgeOutcome::Unavailable => "unavailable",
            JudgeOutcome::Invalid => "invalid",
        }
    }
}

/// What the judge said about an escalated call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgeRecord {
    /// What it answered.
    pub outcome: JudgeOutcome,
    /// Time the judge took, microseconds.
    pub latency_us: u64,
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl AuditRecord {
    /// A record at `time_us` of an allowed, successful request with
    /// `reason` and nothing else known yet; callers set what they know
    /// (struct update syntax). The shard and sequence are stamped when the
    /// record is committed to its ring.
    pub fn new(time_us: u64, reason: Reason) -> Self {
        Self {
            time_us,
            shard: 0,
            seq: 0,
            request_id: None,
            agent: None,
            user: None,
            customer: None,
            method: None,
            tool: None,
            target: None,
            upstream: None,
            decision: Decision::Allow,
            reason,
            status: 200,
            outcome: Outcome::Success,
            error_code: None,
            latency_us: 0,
            client: None,
            protocol_version: None,
            policies: None,
            judge: None,
            redactions: Vec::new(),
            client_requests: Vec::new(),
            args: None,
            admin: None,
            http: None,
            door: Door::Mcp,
            limit: None,
            units: 0,
            session: None,
            identity: None,
            verdict: None,
            groups: None,
            shadow: None,
        }
    }

    /// The record of an admin API request `admin/{op}` from `client` that
    /// took `latency_us`: committed (`admin_change`) unless the caller
    /// overrides decision, reason and status for a refusal.
    pub fn admin(
        time_us: u64,
        latency_us: u64,
        client: Option<std::net::SocketAddr>,
        change: AdminChange,
    ) -> Self {
        Self {
            method: Some(format!("admin/{}", change.op)),
            latency_us,
            client,
            admin: Some(Box::new(change)),
            ..Self::new(time_us, Reason::AdminChange)
        }
    }

    /// Appends the record as one JSON line (with the trailing newline).
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        use crate::jsonrpc::write_str;
        use std::io::Write;
        out.extend_from_slice(b"{\"time\":\"");
        write_rfc3339_us(self.time_us, out);
        let _ = write!(
            out,
            "\",\"shard\":{},\"seq\":{},\"request_id\":",
            self.shard, self.seq
        );
        match &self.request_id {
            Some(id) => out.extend_from_slice(id.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        let opt = |key: &str, v: Option<&str>, out: &mut Vec<u8>| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match v {
                Some(s) => write_str(s, out),
                None => out.extend_from_slice(b"null"),
            }
        };
        opt("agent", self.agent.as_deref(), out);
        opt("user", self.user.as_deref(), out);
        opt("customer", self.customer.as_deref(), out);
        opt("method", self.method.as_deref(), out);
        opt("tool", self.tool.as_deref(), out);
        if let Some(t) = &self.target {
            out.extend_from_slice(b",\"target\":");
            write_str(t, out);
        }
        opt("upstream", self.upstream.as_deref(), out);
        opt("decision", Some(self.decision.as_str()), out);
        opt("reason", Some(self.reason.as_str()), out);
        let _ = write!(out, ",\"status\":{}", self.status);
        opt("outcome", Some(self.outcome.as_str()), out);
        match self.error_code {
            Some(c) => {
                let _ = write!(out, ",\"error_code\":{c}");
            }
            None => out.extend_from_slice(b",\"error_code\":null"),
        }
        let _ = write!(out, ",\"latency_us\":{}", self.latency_us);
        let client = self.client.map(|c| c.to_string());
        opt("client", client.as_deref(), out);
        opt("protocol_version", self.protocol_version, out);
        out.extend_from_slice(b",\"policies\":");
        match &self.policies {
            Some(ps) => write_str_list(ps, out),
            None => out.extend_from_slice(b"null"),
        }
        match &self.judge {
            Some(j) => {
                out.extend_from_slice(b",\"judge\":{\"outcome\":");
                write_str(j.outcome.as_str(), out);
                let _ = write!(out, ",\"latency_us\":{}}}", j.latency_us);
            }
            None => out.extend_from_slice(b",\"judge\":null"),
        }
        if self.door != Door::Mcp {
            out.extend_from_slice(b",\"door\":");
            write_str(self.door.as_str(), out);
        }
        if let Some(l) = &self.limit {
            out.extend_from_slice(b",\"limit\":");
            write_str(l, out);
        }
        if self.units > 0 {
            let _ = write!(out, ",\"units\":{}", self.units);
        }
        if let Some(s) = &self.session {
            out.extend_from_slice(b",\"session\":");
            out.extend_from_slice(s.as_bytes());
        }
        if let Some(v) = self.verdict {
            out.extend_from_slice(b",\"verdict\":");
            write_str(v, out);
        }
        if let Some(i) = &self.identity {
            out.extend_from_slice(b",\"identity\":{\"mode\":");
            write_str(i.mode, out);
            if let Some(jti) = &i.jti {
                out.extend_from_slice(b",\"jti\":");
                write_str(jti, out);
            }
            if let Some(e) = i.token {
                out.extend_from_slice(b",\"token\":");
                write_str(e, out);
            }
            if let Some(e) = &i.error {
                out.extend_from_slice(b",\"error\":");
                write_str(e, out);
            }
            out.push(b'}');
        }
        if let Some(gs) = &self.groups {
            out.extend_from_slice(b",\"groups\":");
            write_str_list(gs, out);
        }
        if let Some(s) = &self.shadow {
            out.extend_from_slice(b",\"shadow\":{\"verdict\":");
            write_str(s.verdict, out);
            out.extend_from_slice(b",\"agrees\":");
            out.extend_from_slice(if Some(s.verdict) == self.verdict {
                b"true"
            } else {
                b"false"
            });
            out.extend_from_slice(b",\"policies\":");
            write_str_list(&s.policies, out);
            out.push(b'}');
        }
        if let Some(h) = &self.http {
            out.extend_from_slice(b",\"http\":{\"method\":");
            write_str(&h.method, out);
            out.extend_from_slice(b",\"path\":");
            write_str(&h.path, out);
            let _ = write!(out, ",\"status\":{}}}", h.status);
        }
        out.extend_from_slice(b",\"redactions\":[");
        for (i, r) in self.redactions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"rule\":");
            write_str(&r.rule, out);
            out.extend_from_slice(b",\"");
            out.extend_from_slice(r.kind.as_str().as_bytes());
            out.extend_from_slice(b"\":");
            write_str(&r.target, out);
            let _ = write!(out, ",\"count\":{}}}", r.count);
        }
        out.push(b']');
        if !self.client_requests.is_empty() {
            out.extend_from_slice(b",\"client_requests\":[");
            for (i, c) in self.client_requests.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"method\":");
                write_str(c.method, out);
                out.extend_from_slice(b",\"outcome\":");
                write_str(c.outcome.as_str(), out);
                out.push(b'}');
            }
            out.push(b']');
        }
        if let Some(a) = &self.args {
            a.encode(out);
        }
        if let Some(a) = &self.admin {
            out.extend_from_slice(b",\"admin\":{\"actor\":");
            match &a.actor {
                Some(actor) => write_str(actor, out),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"op\":");
            write_str(a.op, out);
            out.extend_from_slice(b",\"kind\":");
            write_str(&a.kind, out);
            out.extend_from_slice(b",\"id\":");
            write_str(&a.id, out);
            let num = |v: Option<u64>| v.map_or_else(|| "null".to_owned(), |n| n.to_string());
            let _ = write!(
                out,
                ",\"old_version\":{},\"new_version\":{},\"generation\":{}",
                num(a.old_version),
                num(a.new_version),
                a.generation
            );
            out.extend_from_slice(b",\"digest\":");
            match &a.digest {
                Some(d) => write_str(d, out),
                None => out.extend_from_slice(b"null"),
            }
            // The diff is JSON this process produced (serde_json), never input bytes.
            out.extend_from_slice(b",\"diff\":");
            out.extend_from_slice(a.diff.as_bytes());
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Writes `us` (microseconds since the epoch) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn write_rfc3339_us(us: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let secs = us / 1_000_000;
    let frac = us % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        let mut out = Vec::new();
        write_rfc3339_us(0, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
        out.clear();
        // 2026-11-25T01:27:50.123456Z
        write_rfc3339_us(1_795_570_070_123_456, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "2026-11-25T01:27:50.123456Z");
        out.clear();
        // 2024-02-29T23:59:59Z, a leap day
        write_rfc3339_us(1_709_251_199_000_000, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "2024-02-29T23:59:59.000000Z");
    }

    #[test]
    fn record_encodes_as_one_json_line() {
        let r = AuditRecord {
            time_us: 1_000_000,
            shard: 1,
            seq: 9,
            request_id: Some("\"a\"".into()),
            agent: Some(Arc::from("support-bot")),
            user: None,
            customer: Some(Arc::from("acme")),
            method: Some("tools/call".into()),
            tool: Some("crm__lookup\"x".into()),
            target: None,
            upstream: Some(Arc::from("crm")),
            decision: Decision::Deny,
            reason: Reason::Refused(RefusalKind::UnknownTool),
            status: 400,
            outcome: Outcome::Failure,
            error_code: Some(-32602),
            latency_us: 12,
            client: Some("127.0.0.1:5000".parse().unwrap()),
            protocol_version: Some("2026-07-28"),
            policies: Some(Arc::from([Arc::from("p\"1")])),
            judge: Some(JudgeRecord {
                outcome: JudgeOutcome::Allow,
                latency_us: 5,
            }),
            redactions: vec![Redaction {
                rule: Arc::from("pii"),
                kind: RedactionKind::Detector,
                target: Arc::from("card"),
                count: 2,
            }],
            args: None,
            admin: None,
            http: Some(HttpCall {
                method: Arc::from("POST"),
                path: Arc::from("/refunds/{id}"),
                status: 201,
            }),
            door: Door::Rest,
            limit: Some(Arc::from("acme-day")),
            units: 10,
            client_requests: vec![ClientAsk {
                method: "elicitation/create",
                outcome: AskOutcome::Answered,
            }],
            session: Some(Box::from(r#"{"id":"00ab","known":true}"#)),
            verdict: Some("judge"),
            groups: Some(Arc::from([Arc::from("admins")])),
            shadow: Some(ShadowRecord {
                verdict: "deny",
                policies: Arc::from([Arc::from("next-limit")]),
            }),
            identity: Some(IdentityRecord {
                mode: "assertion",
                jti: Some(Box::from("k3-1f")),
                token: None,
                error: None,
            }),
        };
        let mut out = Vec::new();
        r.encode_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["door"], "rest");
        assert_eq!(v["identity"]["mode"], "assertion");
        assert_eq!(v["identity"]["jti"], "k3-1f");
        assert_eq!(v["session"]["id"], "00ab");
        assert_eq!(v["verdict"], "judge");
        assert_eq!(v["groups"], serde_json::json!(["admins"]));
        assert_eq!(
            v["shadow"],
            serde_json::json!({"verdict": "deny", "agrees": false, "policies": ["next-limit"]})
        );
        assert_eq!(v["customer"], "acme");
        assert_eq!(v["limit"], "acme-day");
        assert_eq!(v["units"], 10);
        assert_eq!(
            v["client_requests"],
            serde_json::json!([{"method": "elicitation/create", "outcome": "answered"}])
        );
        assert_eq!(
            v["http"],
            serde_json::json!({"method": "POST", "path": "/refunds/{id}", "status": 201})
        );
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["agent"], "support-bot");
        assert_eq!(v["tool"], "crm__lookup\"x");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["reason"], "tool_not_attached");
        assert_eq!(v["request_id"], "a");
        assert_eq!(v["error_code"], -32602);
        assert_eq!(v["user"], serde_json::Value::Null);
        assert_eq!(v["policies"][0], "p\"1");
        assert_eq!(v["judge"]["outcome"], "allow");
        assert_eq!(
            v["redactions"],
            serde_json::json!([{"rule": "pii", "detector": "card", "count": 2}])
        );
    }

    #[test]
    fn admin_change_encodes_inside_the_record() {
        let r = AuditRecord {
            shard: 2,
            ..AuditRecord::admin(
                1,
                0,
                None,
                AdminChange {
                    actor: Some("ops".into()),
                    op: "put",
                    kind: "agents".into(),
                    id: "bot\"1".into(),
                    old_version: Some(3),
                    new_version: Some(4),
                    digest: Some("ab".into()),
                    diff: r#"{"tools":{"added":["crm__x"]}}"#.into(),
                    generation: 9,
                },
            )
        };
        let mut out = Vec::new();
        r.encode_json(&mut out);
        assert!(out.ends_with(b"}}\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(
            (&v["method"], &v["reason"], &v["shard"]),
            (
                &serde_json::json!("admin/put"),
                &serde_json::json!("admin_change"),
                &serde_json::json!(2)
            )
        );
        assert_eq!(v["admin"]["actor"], "ops");
        assert_eq!(v["admin"]["id"], "bot\"1");
        assert_eq!(v["admin"]["old_version"], 3);
        assert_eq!(v["admin"]["new_version"], 4);
        assert_eq!(v["admin"]["diff"]["tools"]["added"][0], "crm__x");
        assert_eq!(v["redactions"], serde_json::json!([]));
        assert!(v.get("args_sha256").is_none() && v.get("args_redacted").is_none());
    }

    fn call_record(args: Option<AuditArgs>) -> serde_json::Value {
        let r = AuditRecord {
            request_id: Some("1".into()),
            agent: Some(Arc::from("a")),
            method: Some("tools/call".into()),
            tool: Some("crm__x".into()),
            target: None,
            upstream: Some(Arc::from("crm")),
            latency_us: 1,
            args,
            ..AuditRecord::new(1, Reason::Attached)
        };
        let mut out = Vec::new();
        r.encode_json(&mut out);
        serde_json::from_slice(&out).unwrap_or_default()
    }

    #[test]
    fn argument_digest_is_sha256_of_the_exact_bytes() {
        let v = call_record(Some(AuditArgs::digest(b"abc")));
        // FIPS 180-2 test vector.
        assert_eq!(
            v["args_sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(v.get("args_redacted").is_none());
        // Omitted: no member at all.
        let v = call_record(None);
        assert!(v.get("args_sha256").is_none() && v.get("args_truncated").is_none());
    }

    #[test]
    fn redacted_arguments_are_a_json_string_cut_to_the_cap() {
        let v = call_record(Some(AuditArgs::redacted(r#"{"q":"[REDACTED:card]"}"#)));
        assert_eq!(v["args_redacted"], r#"{"q":"[REDACTED:card]"}"#);
        assert_eq!(v["args_truncated"], false);
        let long = format!(r#"{{"q":"{}"}}"#, "é".repeat(MAX_REDACTED_ARGS));
        let a = AuditArgs::redacted(&long);
        let v = call_record(Some(a));
        let text = v["args_redacted"].as_str().unwrap_or_default();
        assert!(text.len() <= MAX_REDACTED_ARGS && text.len() > MAX_REDACTED_ARGS - 4);
        assert!(long.starts_with(text));
        assert_eq!(v["args_truncated"], true);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}

//! The call driver: every request on `/mcp`, start to finish.
//!
//! Order of the phases, each refusing with a [`Refusal`]:
//! 1. reserve an audit slot (the [`Admission`]); none free → 503, nothing else runs;
//! 2. HTTP method and media types;
//! 3. identify the agent by API key;
//! 4. parse the JSON-RPC view and check the era's envelope (or session);
//! 5. dispatch: toolgate answers `initialize`, `server/discover`, `ping` and
//!    `tools/list` itself; `tools/call` is checked against the agent's
//!    permission map and forwarded with the body rebuilt from the decided
//!    view, so the upstream acts on exactly what was checked;
//! 6. filter the upstream's result through the output rules of the (agent,
//!    tool) ([`filter`]): mask, drop, or refuse it;
//! 7. write the response, then commit the audit record into the reserved slot
//!    (with the call's arguments only as `[audit] arguments` says: [`args`]).
//!
//! Only [`Gateway::mcp`] writes responses for `/mcp`, and it commits the
//! record on every path.

pub mod ack;
mod args;
pub mod envelope;
pub mod filter;
pub mod judge;
pub mod params;
mod tokens;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use simd_json::prelude::*;
use toolgate_core::audit::JudgeRecord;
use toolgate_core::audit::{
    truncate, AuditArgs, AuditRecord, Decision, Outcome, Redaction, MAX_METHOD_LEN, MAX_TOOL_LEN,
};
use toolgate_core::identity::{bearer, key_hash, BearerError};
use toolgate_core::jsonrpc::{
    id_text, write_str, write_value, JsonParser, RpcRequest, ToolCall, ViewErrorKind,
};
use toolgate_core::jwt::{looks_like_jwt, TokenError};
use toolgate_core::protocol;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_core::subtoken::looks_like_subtoken;
use toolgate_decision::policy::{CallFacts, DecisionCache, PairDecision, Verdict};
use toolgate_decision::{Agent, OutputFilter, Reader, Route, Snapshot};
use toolgate_sinks::{Admission, AuditProducer};

use crate::http::head::Method;
use crate::http::response::{self, Body};
use crate::http::server::{Handler, Request};
use crate::mcp::upstream::Upstream;
use crate::shared::{Shared, Terminated, SESSION_MAX_AGE};
use envelope::Era;

/// What a request is answered with, short of a refusal.
enum Answer {
    /// A JSON-RPC message.
    Message {
        status: u16,
        body: Vec<u8>,
        session: Option<String>,
        outcome: Outcome,
        error_code: Option<i64>,
    },
    /// `202 Accepted`, no body (notifications).
    Accepted,
    /// `200 OK`, no body (session terminated).
    Done,
}

/// A `tools/call` ready to go to its upstream.
struct Forward {
    upstream: usize,
    /// `params` members: `"name":…,"arguments":…`, the arguments last.
    params: Vec<u8>,
    /// Where the arguments start in `params` (they run to its end).
    args_at: usize,
    headers: Vec<(String, String)>,
    /// Set when policy escalated the call: the judge must allow it first.
    escalation: Option<Escalated>,
    /// Output rules for the result, when any apply.
    filter: Option<Arc<OutputFilter>>,
}

/// What the judge is shown.
struct Escalated {
    arguments: Vec<u8>,
    policies: Arc<[Arc<str>]>,
}

/// Header through which an agent allowed to (`act_for_users`) names the
/// end user it acts for.
pub const ON_BEHALF_OF: &str = "toolgate-on-behalf-of";

/// Audit reason of a call of an attached tool whose scope does not cover
/// the call's end user.
const OUT_OF_SCOPE: &str = "tool_out_of_scope";

enum Plan {
    Answer(Answer),
    Forward(Forward),
}

/// What the audit record needs from a request, gathered as it is served.
struct CallCtx {
    started: Instant,
    time_us: u64,
    peer: Option<SocketAddr>,
    request_id: Option<String>,
    agent: Option<Arc<str>>,
    method: Option<String>,
    tool: Option<String>,
    upstream: Option<Arc<str>>,
    version: Option<&'static str>,
    requested_version: Option<String>,
    sse: bool,
    reason: &'static str,
    user: Option<Arc<str>>,
    /// The user's groups from the token, when its user is the call's.
    groups: Option<Arc<[Arc<str>]>>,
    /// The tools a sub-token is narrowed to (within the agent's own).
    scope: Option<Vec<String>>,
    /// Seconds a rate-limited agent should wait (`Retry-After`).
    retry_after_s: Option<u64>,
    policies: Option<Arc<[Arc<str>]>>,
    judge: Option<JudgeRecord>,
    redactions: Vec<Redaction>,
    /// What the record keeps of a `tools/call`'s arguments.
    args: Option<AuditArgs>,
}

impl CallCtx {
    /// A context for a request that started at `started`, nothing known yet.
    fn new(started: Instant, peer: Option<SocketAddr>, sse: bool, reason: &'static str) -> Self {
        Self {
            started,
            time_us: now_us(),
            peer,
            request_id: None,
            agent: None,
            method: None,
            tool: None,
            upstream: None,
            version: None,
            requested_version: None,
            sse,
            reason,
            user: None,
            groups: None,
            scope: None,
            retry_after_s: None,
            policies: None,
            judge: None,
            redactions: Vec::new(),
            args: None,
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One shard's request handler.
pub struct Gateway {
    shard: u16,
    shared: Arc<Shared>,
    snapshot: RefCell<Reader<Snapshot>>,
    terminated: RefCell<Reader<Terminated>>,
    audit: RefCell<AuditProducer>,
    acks: Rc<ack::Acks>,
    parser: RefCell<JsonParser>,
    /// Parses text content holding JSON while `parser` holds the result.
    inner_parser: RefCell<JsonParser>,
    /// This shard's upstream clients, for the snapshot generation they
    /// were last checked against.
    upstreams: RefCell<Clients>,
    nonce_counter: Cell<u64>,
    judge: Option<judge::Judge>,
    decisions: RefCell<DecisionCache>,
    /// Verified bearer JWTs, so a token's signature is checked once.
    tokens: tokens::TokenCache,
    /// Per-agent rate limits.
    rate_limits: RefCell<Reader<crate::ratelimit::Limits>>,
    /// What records keep of call arguments (`[audit] arguments`).
    args_audit: args::ArgsAudit,
}

/// A shard's clients of the upstreams of one snapshot, index-aligned with
/// its `upstreams`. A call takes the list it started with, so a change of
/// the upstreams (through the admin API) never moves a call in flight to
/// another client; the old clients go when their last call ends.
struct Clients {
    /// The snapshot generation the list was checked against.
    generation: u64,
    /// The clients.
    list: Rc<[Rc<Upstream>]>,
    /// Per client, the admin API parts it was built from (`None`: from the file).
    stored: Vec<Option<Arc<crate::shared::StoredParts>>>,
}

impl Clients {
    /// Clients for `snap`'s upstreams: one whose settings and parts are
    /// unchanged is kept, the others are built anew.
    fn build(shared: &Shared, snap: &Snapshot, generation: u64, old: Option<&Clients>) -> Clients {
        let mut list = Vec::with_capacity(snap.upstreams.len());
        let mut stored = Vec::with_capacity(snap.upstreams.len());
        for info in &snap.upstreams {
            let crate::shared::ClientParts {
                credential,
                tls,
                stored: parts,
            } = shared.upstream_parts(&info.name);
            let kept = old.and_then(|o| {
                o.list
                    .iter()
                    .zip(&o.stored)
                    .find(|(c, p)| c.info() == info && same_parts(p.as_ref(), parts.as_ref()))
            });
            let client = match kept {
                Some((c, _)) => Rc::clone(c),
                None => Rc::new(Upstream::new(
                    info.clone(),
                    credential.map(|c| c.reader()),
                    tls,
                )),
            };
            list.push(client);
            stored.push(parts);
        }
        Clients {
            generation,
            list: list.into(),
            stored,
        }
    }

    /// Whether these clients serve `snap`'s upstreams as they are now.
    fn serve(&self, shared: &Shared, snap: &Snapshot) -> bool {
        self.list.len() == snap.upstreams.len()
            && self
                .list
                .iter()
                .zip(&self.stored)
                .zip(&snap.upstreams)
                .all(|((c, p), info)| {
                    c.info() == info
                        && same_parts(
                            p.as_ref(),
                            shared.upstream_parts(&info.name).stored.as_ref(),
                        )
                })
    }
}

fn same_parts(
    a: Option<&Arc<crate::shared::StoredParts>>,
    b: Option<&Arc<crate::shared::StoredParts>>,
) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Per-shard decision cache size.
const DECISION_CACHE_ENTRIES: usize = 16 * 1024;

impl Gateway {
    /// The handler of shard `shard`.
    pub fn new(shard: u16, shared: Arc<Shared>, audit: AuditProducer) -> Self {
        let mut snapshot = shared.snapshot.reader();
        let upstreams = Clients::build(&shared, &snapshot.current(), snapshot.generation(), None);
        let terminated = shared.terminated.reader();
        let judge = shared.config.judge_url.clone().map(|url| {
            let ms = shared
                .config
                .config
                .policies
                .judge
                .as_ref()
                .map(|j| j.timeout_ms)
                .unwrap_or(2000);
            judge::Judge::new(
                url,
                std::time::Duration::from_millis(ms),
                shared.judge_tls.clone(),
            )
        });
        Self {
            judge,
            args_audit: args::ArgsAudit::new(shared.config.config.audit.arguments),
            decisions: RefCell::new(DecisionCache::new(DECISION_CACHE_ENTRIES)),
            tokens: tokens::TokenCache::default(),
            rate_limits: RefCell::new(shared.rate_limits.reader()),
            acks: Rc::new(ack::Acks::new(shard, audit.health())),
            shard,
            snapshot: RefCell::new(snapshot),
            terminated: RefCell::new(terminated),
            audit: RefCell::new(audit),
            parser: RefCell::new(JsonParser::new()),
            inner_parser: RefCell::new(JsonParser::new()),
            upstreams: RefCell::new(upstreams),
            nonce_counter: Cell::new(0),
            shared,
        }
    }

    /// Picks up the newest snapshot if one was published, and acknowledges
    /// the generation this shard now runs (read by the admin API, which
    /// answers a change once every shard runs it), with the upstream
    /// clients it needs built. Called between requests.
    pub fn refresh_snapshot(&self) {
        drop(self.current());
        let generation = self.upstreams.borrow().generation;
        if let Some(seen) = self.shared.seen.get(usize::from(self.shard)) {
            if seen.load(Ordering::Relaxed) != generation {
                seen.store(generation, Ordering::Release);
            }
        }
    }

    /// This shard's metrics counters.
    fn counters(&self) -> Option<&crate::metrics::ShardCounters> {
        self.shared.metrics.shards.get(usize::from(self.shard))
    }

    /// The newest snapshot and this shard's upstream clients for it
    /// (checked again, and rebuilt where changed, only when the generation
    /// moved).
    #[expect(
        clippy::redundant_allocation,
        reason = "the shard-local handle `Reader` gives out"
    )]
    fn current(&self) -> (Rc<Arc<Snapshot>>, Rc<[Rc<Upstream>]>) {
        let (snapshot, generation) = {
            let mut reader = self.snapshot.borrow_mut();
            let s = reader.current();
            (s, reader.generation())
        };
        let mut clients = self.upstreams.borrow_mut();
        if clients.generation != generation {
            if clients.serve(&self.shared, &snapshot) {
                clients.generation = generation;
            } else {
                let next = Clients::build(&self.shared, &snapshot, generation, Some(&*clients));
                *clients = next;
            }
        }
        let list = Rc::clone(&clients.list);
        (snapshot, list)
    }

    /// This shard's client of the upstream `info` describes, when the
    /// running snapshot has that upstream so.
    pub fn upstream(&self, info: &toolgate_decision::UpstreamInfo) -> Option<Rc<Upstream>> {
        let (_, clients) = self.current();
        clients.iter().find(|c| c.info() == info).cloned()
    }

    fn record(
        &self,
        ctx: CallCtx,
        decision: Decision,
        status: u16,
        outcome: Outcome,
        error_code: Option<i64>,
    ) -> AuditRecord {
        AuditRecord {
            time_us: ctx.time_us,
            shard: self.shard,
            seq: 0,
            request_id: ctx.request_id,
            agent: ctx.agent,
            user: ctx.user,
            method: ctx.method,
            tool: ctx.tool,
            upstream: ctx.upstream,
            decision,
            reason: ctx.reason,
            status,
            outcome,
            error_code,
            latency_us: ctx.started.elapsed().as_micros() as u64,
            client: ctx.peer,
            protocol_version: ctx.version,
            policies: ctx.policies,
            judge: ctx.judge,
            redactions: ctx.redactions,
            args: ctx.args,
            admin: None,
        }
    }

    /// Serves `/mcp`.
    async fn mcp(&self, req: &Request<'_>, out: &mut Vec<u8>) -> bool {
        let admission: Admission = match self.audit.borrow_mut().admit() {
            Ok(a) => a,
            Err(why) => {
                // Fail closed: with no place for the record, nothing runs.
                let n = self.shared.audit_refusals.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(c) = self.counters() {
                    c.audit_refused.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(shard = self.shard, refused = n, "{why}: call refused");
                let r = Refusal::new(RefusalKind::AuditUnavailable);
                let mut body = Vec::new();
                wire::refusal(None, &r, None, &mut body);
                response::write(
                    out,
                    r.wire().status,
                    &[("Retry-After", "1")],
                    Body::Json(&body),
                    true,
                );
                return true;
            }
        };
        let accept = req.head.header(req.buf, "accept").unwrap_or(b"*/*");
        let sse = accepts(accept, b"text/event-stream") && !accepts(accept, b"application/json");
        let mut ctx = CallCtx::new(req.started, req.peer, sse, "answered");
        let (snapshot, clients) = self.current();
        let result = self.drive(&snapshot, &clients, req, &mut ctx).await;
        let (decision, status, outcome, code) = match result {
            Ok(Answer::Message {
                status,
                body,
                session,
                outcome,
                error_code,
            }) => {
                let mut extra: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = &session {
                    extra.push(("Mcp-Session-Id", s));
                }
                let body = if ctx.sse {
                    Body::Sse(&body)
                } else {
                    Body::Json(&body)
                };
                response::write(out, status, &extra, body, true);
                (Decision::Allow, status, outcome, error_code)
            }
            Ok(Answer::Accepted) => {
                response::write(out, 202, &[], Body::Empty, true);
                (Decision::Allow, 202, Outcome::Success, None)
            }
            Ok(Answer::Done) => {
                response::write(out, 200, &[], Body::Empty, true);
                (Decision::Allow, 200, Outcome::Success, None)
            }
            Err(r) => {
                let w = r.wire();
                let mut body = Vec::with_capacity(128);
                wire::refusal(
                    ctx.request_id.as_deref(),
                    &r,
                    ctx.requested_version.as_deref(),
                    &mut body,
                );
                let auth;
                let retry;
                let extra: &[(&str, &str)] = match r.kind {
                    RefusalKind::RateLimited => {
                        retry = ctx.retry_after_s.unwrap_or(1).to_string();
                        &[("Retry-After", retry.as_str())]
                    }
                    RefusalKind::MissingCredential
                    | RefusalKind::UnknownCredential
                    | RefusalKind::InvalidToken(_) => {
                        auth = challenge(&snapshot, req, self.shared.config.listen, r.kind);
                        &[("WWW-Authenticate", auth.as_str())]
                    }
                    RefusalKind::MethodNotAllowed => &[("Allow", "POST, DELETE")],
                    _ => &[],
                };
                let body = if ctx.sse && w.status == 200 {
                    Body::Sse(&body)
                } else {
                    Body::Json(&body)
                };
                response::write(out, w.status, extra, body, true);
                // A policy deny keeps the finer reason the engine gave, an
                // out-of-scope call its own.
                if r.kind != RefusalKind::PolicyDenied && ctx.reason != OUT_OF_SCOPE {
                    ctx.reason = r.kind.reason();
                }
                (r.kind.decision(), w.status, Outcome::Failure, Some(w.code))
            }
        };
        if let Some(c) = self.counters() {
            match decision {
                Decision::Allow => c.allowed.fetch_add(1, Ordering::Relaxed),
                Decision::Deny => c.denied.fetch_add(1, Ordering::Relaxed),
            };
            if matches!(
                ctx.reason,
                "upstream_unavailable" | "upstream_timeout" | "upstream_bad_response"
            ) {
                c.upstream_failures.fetch_add(1, Ordering::Relaxed);
            }
            let cache = self.decisions.borrow();
            c.cache_hits.store(cache.hits, Ordering::Relaxed);
            c.cache_misses.store(cache.misses, Ordering::Relaxed);
        }
        let record = self.record(ctx, decision, status, outcome, code);
        let seq = self.audit.borrow_mut().commit(admission, record);
        if let Some(c) = self.counters() {
            c.ring_occupancy
                .store(self.audit.borrow().occupancy() as u64, Ordering::Relaxed);
        }
        self.await_recorded(seq).await;
        true
    }

    /// Holds the answer until its record is in the log (written, or synced
    /// with `durability = "record"`), so an answered call's record survives
    /// a crash of toolgate. Bounded by `audit.ack_timeout_ms`: a stuck disk
    /// delays answers, it does not hang them (and refuses new calls).
    async fn await_recorded(&self, seq: u64) {
        let limit = Duration::from_millis(self.shared.config.config.audit.ack_timeout_ms);
        if self.acks.recorded(seq) {
            return;
        }
        let waited = glommio::timer::timeout(limit, async {
            self.acks.wait(seq).await;
            Ok(())
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                shard = self.shard,
                seq,
                "audit record not in the log in time; answering anyway (the record stays queued)"
            );
        }
    }

    async fn drive(
        &self,
        snap: &Snapshot,
        clients: &[Rc<Upstream>],
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Answer, Refusal> {
        match req.head.method {
            Method::Post | Method::Delete => {}
            Method::Get | Method::Put | Method::Other => {
                return Err(Refusal::new(RefusalKind::MethodNotAllowed))
            }
        }
        let Caller {
            agent,
            user,
            groups,
            scope,
        } = identify(
            snap,
            req,
            &Tokens {
                cache: &self.tokens,
                generation: self.snapshot.borrow().generation(),
            },
        )
        .inspect_err(|r| {
            if r.kind == RefusalKind::InvalidToken(TokenError::UnknownKey) {
                // Perhaps the IdP rotated its keys: ask for a JWKS fetch
                // (rate-limited off the request path); this call stays refused.
                self.shared.want_jwks();
            }
        })?;
        ctx.agent = Some(Arc::clone(&agent.id));
        ctx.user = user;
        ctx.groups = groups;
        ctx.scope = scope;
        if req.head.method == Method::Delete {
            ctx.reason = "session_terminated";
            return self.end_session(agent, req);
        }
        let content_type = req.head.header(req.buf, "content-type").unwrap_or(b"");
        if !media_is(content_type, b"application/json") {
            return Err(Refusal::new(RefusalKind::UnsupportedMediaType));
        }
        // Policy is decided on the body as read: an encoded body would be
        // decided on bytes that are not what the tool sees.
        if let Some(enc) = req.head.header(req.buf, "content-encoding") {
            if !enc.trim_ascii().eq_ignore_ascii_case(b"identity") {
                return Err(Refusal::with(
                    RefusalKind::UnsupportedMediaType,
                    "request bodies must not be content-encoded",
                ));
            }
        }
        let accept = req.head.header(req.buf, "accept").unwrap_or(b"*/*");
        if !(accepts(accept, b"application/json") || accepts(accept, b"text/event-stream")) {
            return Err(Refusal::new(RefusalKind::NotAcceptable));
        }
        let plan = self.plan(snap, agent, req, ctx)?;
        let fwd = match plan {
            Plan::Answer(a) => return Ok(a),
            Plan::Forward(f) => f,
        };
        let upstream = clients
            .get(fwd.upstream)
            .ok_or(Refusal::new(RefusalKind::UpstreamUnavailable))?;
        if let Some(esc) = &fwd.escalation {
            let Some(judge) = &self.judge else {
                return Err(Refusal::new(RefusalKind::JudgeUnavailable));
            };
            let asked = judge::Escalation {
                request_id: ctx.request_id.as_deref(),
                agent: ctx.agent.as_deref().unwrap_or(""),
                user: ctx.user.as_deref(),
                tool: ctx.tool.as_deref().unwrap_or(""),
                upstream: upstream.name(),
                arguments: &esc.arguments,
                policies: &esc.policies,
            };
            let (allowed, record) = judge.ask(&asked).await;
            ctx.judge = Some(record);
            if !allowed {
                return Err(Refusal::new(if record.outcome == "deny" {
                    RefusalKind::JudgeDenied
                } else {
                    RefusalKind::JudgeUnavailable
                }));
            }
            ctx.reason = "allowed_by_judge";
        }
        let reply = upstream.call("tools/call", &fwd.params, &fwd.headers).await;
        let reply = reply.map_err(|e| {
            tracing::debug!(upstream = upstream.name(), error = %e, "upstream call failed");
            Refusal::new(e.refusal_kind())
        })?;
        self.translate(&reply.message, ctx, fwd.filter.as_deref())
    }

    /// The synchronous part: parse, check, and decide what to do.
    fn plan(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Plan, Refusal> {
        let mut parser = self.parser.borrow_mut();
        let tape = parser.parse(req.body).map_err(|k| match k {
            ViewErrorKind::Parse => Refusal::new(RefusalKind::ParseError),
            other => Refusal::with(RefusalKind::InvalidRequest, other.to_string()),
        })?;
        let rpc = RpcRequest::from_tape(&tape).map_err(|e| {
            ctx.request_id = id_text(e.id);
            Refusal::with(RefusalKind::InvalidRequest, e.kind.to_string())
        })?;
        ctx.request_id = id_text(rpc.id);
        ctx.method = Some(truncate(rpc.method, MAX_METHOD_LEN).to_owned());

        let era = envelope::era_of(&rpc, req.head, req.buf);
        match era {
            Era::Stateless => {
                ctx.requested_version = rpc.envelope_version().map(|v| truncate(v, 64).to_owned());
                ctx.version = Some(envelope::check_stateless(&rpc, req.head, req.buf)?);
            }
            Era::Handshake => {
                ctx.version = envelope::check_handshake_version(req.head, req.buf)?;
                if rpc.method != "initialize"
                    && !rpc.is_notification()
                    && rpc.method != "server/discover"
                {
                    self.check_session(agent, req)?;
                }
            }
        }
        if rpc.is_notification() {
            return Ok(Plan::Answer(Answer::Accepted));
        }
        let stateless = era == Era::Stateless;
        let id = ctx.request_id.as_deref();
        let reply = |result: &[u8]| {
            let mut body = Vec::with_capacity(result.len() + 64);
            wire::result(id, result, &mut body);
            body
        };
        let ok = |body: Vec<u8>| {
            Ok(Plan::Answer(Answer::Message {
                status: 200,
                body,
                session: None,
                outcome: Outcome::Success,
                error_code: None,
            }))
        };
        match rpc.method {
            "initialize" if !stateless => {
                let asked = rpc
                    .params
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(|v| v.into_string());
                let version = protocol::HANDSHAKE_VERSIONS
                    .iter()
                    .find(|v| Some(**v) == asked)
                    .copied()
                    .unwrap_or(protocol::LATEST_HANDSHAKE_VERSION);
                ctx.version = Some(version);
                let result = format!(
                    r#"{{"protocolVersion":"{version}","capabilities":{{"tools":{{"listChanged":false}}}},"serverInfo":{SERVER_INFO}}}"#
                );
                let session = self.new_session(agent);
                Ok(Plan::Answer(Answer::Message {
                    status: 200,
                    body: reply(result.as_bytes()),
                    session: Some(session),
                    outcome: Outcome::Success,
                    error_code: None,
                }))
            }
            "server/discover" => {
                let result = format!(
                    r#"{{"supportedVersions":["{}"],"capabilities":{{"tools":{{"listChanged":false}}}},"resultType":"complete","ttlMs":0,"cacheScope":"private","_meta":{{"{}":{SERVER_INFO}}}}}"#,
                    protocol::LATEST_MODERN_VERSION,
                    protocol::META_SERVER_INFO
                );
                ok(reply(result.as_bytes()))
            }
            "ping" => ok(reply(if stateless {
                br#"{"resultType":"complete"}"#
            } else {
                b"{}"
            })),
            "tools/list" => {
                let mut result = Vec::with_capacity(agent.tools_list.len() + 48);
                result.extend_from_slice(br#"{"tools":"#);
                if ctx.scope.is_none() && !agent.scoped {
                    result.extend_from_slice(agent.tools_list.as_bytes());
                } else {
                    // Listed only what this caller may call: a narrowed
                    // token's tools, and scoped tools only for users in
                    // their scope (as `tools/call` refuses the others).
                    ctx.user = self.user_of(agent, req, ctx.user.take())?;
                    let groups = ctx.groups.as_deref().filter(|_| ctx.user.is_some());
                    let names: Vec<&str> = match &ctx.scope {
                        Some(tools) => tools.iter().map(String::as_str).collect(),
                        None => agent.listed_order.iter().map(|n| &**n).collect(),
                    };
                    result.push(b'[');
                    let mut first = true;
                    for def in names
                        .into_iter()
                        .filter_map(|t| snap.route(agent, t))
                        .filter(|r| {
                            r.scope
                                .as_ref()
                                .is_none_or(|s| snap.in_scope(s, ctx.user.as_deref(), groups))
                        })
                        .filter_map(|r| r.listed.as_deref())
                    {
                        if !first {
                            result.push(b',');
                        }
                        first = false;
                        result.extend_from_slice(def.as_bytes());
                    }
                    result.push(b']');
                }
                if stateless {
                    // Per-agent answer: never cacheable across callers.
                    result.extend_from_slice(
                        br#","resultType":"complete","ttlMs":0,"cacheScope":"private""#,
                    );
                }
                result.push(b'}');
                ok(reply(&result))
            }
            "tools/call" => {
                let call = ToolCall::from_request(&rpc)
                    .map_err(|e| Refusal::with(RefusalKind::InvalidParams, e.to_string()))?;
                ctx.tool = Some(truncate(call.name, MAX_TOOL_LEN).to_owned());
                let planned = self.plan_call(snap, agent, req, ctx, &call, stateless);
                if self.args_audit.is_on() {
                    ctx.args = match &planned {
                        Ok(Plan::Forward(f)) => self.args_audit.record(&f.params[f.args_at..]),
                        // Not forwarded: the arguments as the agent sent them,
                        // encoded as they would have been forwarded.
                        _ => {
                            let mut raw = Vec::new();
                            match call.arguments {
                                Some(a) => write_value(a, &mut raw),
                                None => raw.extend_from_slice(b"{}"),
                            }
                            self.args_audit.record(&raw)
                        }
                    };
                }
                planned
            }
            other => Err(Refusal::with(
                RefusalKind::MethodNotFound,
                format!("`{}`", truncate(other, MAX_METHOD_LEN)),
            )),
        }
    }

    /// Plans a `tools/call`: route, scope, rate limit, policy, and the body
    /// forwarded to the upstream, rebuilt from the checked view.
    fn plan_call(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        req: &Request<'_>,
        ctx: &mut CallCtx,
        call: &ToolCall<'_>,
        stateless: bool,
    ) -> Result<Plan, Refusal> {
        let unknown = || {
            let mut shown = String::with_capacity(call.name.len() + 2);
            shown.push('`');
            shown.push_str(truncate(call.name, MAX_TOOL_LEN));
            shown.push('`');
            Refusal::with(RefusalKind::UnknownTool, shown)
        };
        // A sub-token narrowed to some tools sees the others as unattached.
        let in_scope = ctx
            .scope
            .as_ref()
            .is_none_or(|tools| tools.iter().any(|t| t == call.name));
        let Some(route) = snap.route(agent, call.name).filter(|_| in_scope) else {
            return Err(unknown());
        };
        ctx.upstream = Some(Arc::clone(&snap.upstreams[route.upstream].name));
        if route.quarantined {
            return Err(Refusal::new(RefusalKind::ToolQuarantined));
        }
        // Before any policy work: an agent over its limit costs little.
        let limits = self.rate_limits.borrow_mut().current();
        if let Some(limit) = limits.get(&*agent.id) {
            if let Err(wait) = limit.check(crate::ratelimit::now_ns()) {
                ctx.retry_after_s = Some(wait.as_secs() + 1);
                return Err(Refusal::new(RefusalKind::RateLimited));
            }
        }
        ctx.user = self.user_of(agent, req, ctx.user.take())?;
        let groups = ctx.groups.as_deref().filter(|_| ctx.user.is_some());
        if let Some(scope) = &route.scope {
            if !snap.in_scope(scope, ctx.user.as_deref(), groups) {
                // Answered like an unattached tool: a caller out of
                // scope learns nothing more; the audit record tells.
                ctx.reason = OUT_OF_SCOPE;
                return Err(unknown());
            }
        }
        let verdict = self.decide(
            snap,
            agent,
            route,
            ctx.user.as_deref(),
            groups,
            call.arguments,
        );
        let escalation = match verdict {
            Verdict::Allow { policies } => {
                ctx.policies = (!policies.is_empty()).then_some(policies);
                None
            }
            Verdict::Deny { policies, reason } => {
                ctx.policies = (!policies.is_empty()).then_some(policies);
                ctx.reason = reason;
                return Err(Refusal::new(RefusalKind::PolicyDenied));
            }
            Verdict::Judge { policies } => {
                ctx.policies = Some(Arc::clone(&policies));
                let mut arguments = Vec::new();
                match call.arguments {
                    Some(a) => write_value(a, &mut arguments),
                    None => arguments.extend_from_slice(b"{}"),
                }
                Some(Escalated {
                    arguments,
                    policies,
                })
            }
        };
        let def = snap.tool_def(route);
        let mut headers = Vec::new();
        if let Some(def) = def {
            if stateless {
                params::check(def, call.arguments, req.head, req.buf)?;
            }
            headers = params::for_upstream(def, call.arguments);
        }
        headers.push((
            "Mcp-Name".to_owned(),
            protocol::encode_header_value(&route.tool).into_owned(),
        ));
        let mut body = Vec::with_capacity(req.body.len() + 32);
        body.extend_from_slice(br#""name":"#);
        write_str(&route.tool, &mut body);
        body.extend_from_slice(br#","arguments":"#);
        let args_at = body.len();
        match (call.arguments, &route.args_filter) {
            (Some(a), None) => write_value(a, &mut body),
            // Data-loss rules: policy and the judge decided on the
            // arguments as sent; the upstream gets them filtered.
            (Some(a), Some(f)) => filter::apply_arguments(
                f,
                a,
                &mut self.inner_parser.borrow_mut(),
                &mut body,
                &mut ctx.redactions,
            )?,
            (None, _) => body.extend_from_slice(b"{}"),
        }
        ctx.reason = if ctx.policies.is_some() {
            "allowed_by_policy"
        } else {
            "attached"
        };
        Ok(Plan::Forward(Forward {
            upstream: route.upstream,
            params: body,
            args_at,
            headers,
            escalation,
            filter: route.filter.clone(),
        }))
    }

    /// Turns the upstream's reply into the agent's response.
    fn translate(
        &self,
        message: &[u8],
        ctx: &mut CallCtx,
        output: Option<&OutputFilter>,
    ) -> Result<Answer, Refusal> {
        if let Some(f) = output {
            // Bounded memory: a result too large to filter is not forwarded unfiltered.
            filter::check_size(f, message)?;
        }
        let mut parser = self.parser.borrow_mut();
        let bad = || Refusal::new(RefusalKind::UpstreamBadResponse);
        let tape = parser.parse(message).map_err(|_| bad())?;
        let msg = tape.as_value();
        let id = ctx.request_id.as_deref();
        let mut body = Vec::with_capacity(message.len() + 32);
        if let Some(result) = msg.get("result").filter(|r| r.is_object()) {
            let mut raw = Vec::with_capacity(message.len());
            let stateless = ctx.version.is_some_and(protocol::is_modern);
            match output {
                Some(f) => {
                    let mut inner = self.inner_parser.borrow_mut();
                    filter::apply(
                        f,
                        message,
                        result,
                        stateless,
                        &mut inner,
                        &mut raw,
                        &mut ctx.redactions,
                    )?;
                }
                None => rewrite_result(result, stateless, &mut raw, &mut |_, v, out| {
                    write_value(v, out)
                }),
            }
            wire::result(id, &raw, &mut body);
            let is_error = result.get("isError").and_then(|e| e.as_bool()) == Some(true);
            let outcome = if is_error {
                Outcome::ToolError
            } else {
                Outcome::Success
            };
            return Ok(Answer::Message {
                status: 200,
                body,
                session: None,
                outcome,
                error_code: None,
            });
        }
        if let Some(error) = msg.get("error").filter(|e| e.is_object()) {
            let code = error.get("code").and_then(|c| c.as_i64()).ok_or_else(bad)?;
            let mut raw = Vec::new();
            match output {
                Some(f) => {
                    let mut inner = self.inner_parser.borrow_mut();
                    filter::apply_error(
                        f,
                        message,
                        error,
                        &mut inner,
                        &mut raw,
                        &mut ctx.redactions,
                    )?;
                }
                None => write_value(error, &mut raw),
            }
            wire::error_raw(id, &raw, &mut body);
            ctx.reason = "upstream_error";
            let status = wire::status_for_code(code);
            return Ok(Answer::Message {
                status,
                body,
                session: None,
                outcome: Outcome::Failure,
                error_code: Some(code),
            });
        }
        Err(bad())
    }

    /// The end user the agent acts for: the one its bearer token names,
    /// else `Toolgate-On-Behalf-Of`, which only agents configured with
    /// `act_for_users` may send. A header naming someone other than the
    /// token's user is refused: the IdP's word is not overridden.
    fn user_of(
        &self,
        agent: &Agent,
        req: &Request<'_>,
        token_user: Option<Arc<str>>,
    ) -> Result<Option<Arc<str>>, Refusal> {
        let Some(raw) = req.head.header(req.buf, ON_BEHALF_OF) else {
            return Ok(token_user);
        };
        if let Some(u) = token_user {
            if raw.trim_ascii() == u.as_bytes() {
                return Ok(Some(u));
            }
            return Err(Refusal::with(
                RefusalKind::UserAssertionRefused,
                "`Toolgate-On-Behalf-Of` names someone other than the token's user",
            ));
        }
        if !agent.act_for_users {
            return Err(Refusal::new(RefusalKind::UserAssertionRefused));
        }
        let user = raw.trim_ascii();
        if user.is_empty() || user.len() > 256 || !user.iter().all(|b| b.is_ascii_graphic()) {
            return Err(Refusal::with(
                RefusalKind::InvalidRequest,
                "`Toolgate-On-Behalf-Of` must be a user id",
            ));
        }
        Ok(std::str::from_utf8(user).ok().map(Arc::from))
    }

    /// The policy verdict for a routed call: precompiled, cached, or evaluated.
    fn decide(
        &self,
        snap: &Snapshot,
        agent: &Agent,
        route: &Route,
        user: Option<&str>,
        groups: Option<&[Arc<str>]>,
        args: Option<simd_json::tape::Value<'_, '_>>,
    ) -> Verdict {
        let slice = match &route.decision {
            PairDecision::Fixed(v) => return v.clone(),
            PairDecision::Evaluate(slice) => slice,
        };
        let Some(engine) = &snap.engine else {
            return Verdict::Deny {
                policies: Arc::from([]),
                reason: "policy_error",
            };
        };
        let facts = CallFacts {
            agent: &agent.id,
            user,
            groups,
            tool: &route.exposed,
            upstream: &snap.upstreams[route.upstream].name,
            args,
        };
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
        self.decisions.borrow_mut().get_or_insert(
            &[
                &generation,
                agent.id.as_bytes(),
                route.exposed.as_bytes(),
                user.unwrap_or("").as_bytes(),
                &[u8::from(user.is_some())],
                &group_bytes,
                &[u8::from(groups.is_some())],
                &args_bytes,
            ],
            || engine.evaluate(slice, &facts),
        )
    }

    fn new_session(&self, agent: &Agent) -> String {
        let mut nonce = [0u8; 16];
        if getrandom::fill(&mut nonce).is_err() {
            // Unique even without the OS generator: the tag is what makes it unforgeable.
            let n = self.nonce_counter.get() + 1;
            self.nonce_counter.set(n);
            nonce[..8].copy_from_slice(&n.to_be_bytes());
            nonce[8..10].copy_from_slice(&self.shard.to_be_bytes());
            nonce[10..].copy_from_slice(&now_us().to_be_bytes()[2..]);
        }
        self.shared.session_key.issue(&agent.id, now_secs(), nonce)
    }

    fn check_session(
        &self,
        agent: &Agent,
        req: &Request<'_>,
    ) -> Result<crate::session::Nonce, Refusal> {
        let Some(sid) = req.head.header(req.buf, protocol::HEADER_SESSION_ID) else {
            return Err(Refusal::new(RefusalKind::MissingSession));
        };
        let nonce = self
            .shared
            .session_key
            .verify(&agent.id, sid.trim_ascii(), now_secs(), SESSION_MAX_AGE)
            .map_err(|_| Refusal::new(RefusalKind::SessionNotFound))?;
        if self.terminated.borrow_mut().current().contains_key(&nonce) {
            return Err(Refusal::new(RefusalKind::SessionNotFound));
        }
        Ok(nonce)
    }

    fn end_session(&self, agent: &Agent, req: &Request<'_>) -> Result<Answer, Refusal> {
        let nonce = self.check_session(agent, req)?;
        self.shared.terminate(nonce, now_secs());
        Ok(Answer::Done)
    }

    /// RFC 9728 protected resource metadata: where agents get tokens for
    /// toolgate. 404 when `[auth.jwt]` is not configured.
    fn resource_metadata(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        if req.head.method != Method::Get {
            let r = Refusal::new(RefusalKind::MethodNotAllowed);
            let mut body = Vec::new();
            wire::refusal(None, &r, None, &mut body);
            response::write(out, 405, &[("Allow", "GET")], Body::Json(&body), true);
            return;
        }
        let snapshot = self.snapshot.borrow_mut().current();
        let Some(jwt) = snapshot.jwt.as_deref() else {
            let r = Refusal::new(RefusalKind::PathNotFound);
            let mut body = Vec::new();
            wire::refusal(None, &r, None, &mut body);
            response::write(out, 404, &[], Body::Json(&body), true);
            return;
        };
        let rules = jwt.rules();
        let body = serde_json::json!({
            "resource": rules.audience,
            "authorization_servers": [rules.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": [],
        })
        .to_string();
        response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
    }

    fn health(&self, req: &Request<'_>, out: &mut Vec<u8>, ready: bool) {
        let _ = req;
        let (status, body): (u16, &[u8]) = if ready {
            (200, br#"{"status":"ok"}"#)
        } else {
            (503, br#"{"status":"starting"}"#)
        };
        response::write(out, status, &[], Body::Json(body), true);
    }
}

/// `serverInfo` toolgate presents to agents.
const SERVER_INFO: &str = concat!(
    r#"{"name":"toolgate","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}"#
);

fn now_secs() -> u64 {
    now_us() / 1_000_000
}

/// Writes an upstream's result for the agent: the upstream's own
/// `serverInfo` is dropped from `_meta` (the agent talks to toolgate, and
/// upstream identities are internal), and a stateless-era agent gets the
/// `resultType` its era requires when a handshake-era upstream left it out.
/// Member values are written by `write` (given the member's key), which is
/// where output rules apply.
pub(crate) fn rewrite_result(
    result: simd_json::tape::Value<'_, '_>,
    stateless: bool,
    out: &mut Vec<u8>,
    write: &mut dyn FnMut(&str, simd_json::tape::Value<'_, '_>, &mut Vec<u8>),
) {
    out.push(b'{');
    let mut first = true;
    let mut has_type = false;
    if let Some(obj) = result.as_object() {
        for (k, v) in obj.iter() {
            if k == "_meta" {
                if let Some(meta) = v.as_object() {
                    let kept: Vec<_> = meta
                        .iter()
                        .filter(|(mk, _)| *mk != protocol::META_SERVER_INFO)
                        .collect();
                    if kept.is_empty() {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(br#""_meta":{"#);
                    for (i, (mk, mv)) in kept.into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_str(mk, out);
                        out.push(b':');
                        write(mk, mv, out);
                    }
                    out.push(b'}');
                    continue;
                }
            }
            has_type |= k == "resultType";
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(k, out);
            out.push(b':');
            write(k, v, out);
        }
    }
    if stateless && !has_type {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(br#""resultType":"complete""#);
    }
    out.push(b'}');
}

/// Who is calling: the agent, and the end user its token names.
struct Caller<'s> {
    agent: &'s Agent,
    user: Option<Arc<str>>,
    groups: Option<Arc<[Arc<str>]>>,
    /// A sub-token's tool narrowing.
    scope: Option<Vec<String>>,
}

/// Identifies the caller: by the connection's verified client certificate
/// (mTLS, `client_cert_names`) and/or `Authorization: Bearer` — a JWT when
/// `[auth.jwt]` is configured and the token has a JWT's shape, else an API
/// key. Only the header is read: a token in the query string is never
/// accepted.
/// The shard's verified-token cache and the snapshot generation it is
/// valid for.
struct Tokens<'c> {
    cache: &'c tokens::TokenCache,
    generation: u64,
}

fn identify<'s>(
    snap: &'s Snapshot,
    req: &Request<'_>,
    tokens: &Tokens<'_>,
) -> Result<Caller<'s>, Refusal> {
    let header = req.head.header(req.buf, "authorization");
    let by_cert = req
        .client_names
        .and_then(|names| snap.agent_by_cert(names.iter().map(|n| &**n)));
    let Some(cert_agent) = by_cert else {
        return identify_bearer(snap, header, tokens);
    };
    if header.is_none() {
        return Ok(Caller {
            agent: cert_agent,
            user: None,
            groups: None,
            scope: None,
        });
    }
    // Both a certificate and a token: they must name the same agent, so a
    // token lifted from one agent is useless on another agent's connection.
    let caller = identify_bearer(snap, header, tokens)?;
    if !std::ptr::eq(caller.agent, cert_agent) {
        return Err(Refusal::new(RefusalKind::CertificateMismatch));
    }
    Ok(caller)
}

/// Identifies the caller from its bearer token alone.
fn identify_bearer<'s>(
    snap: &'s Snapshot,
    header: Option<&[u8]>,
    tokens: &Tokens<'_>,
) -> Result<Caller<'s>, Refusal> {
    let token = bearer(header).map_err(|e| match e {
        BearerError::Missing => Refusal::new(RefusalKind::MissingCredential),
        BearerError::Malformed => Refusal::new(RefusalKind::UnknownCredential),
    })?;
    if let Some(verifier) = snap
        .subtokens
        .as_deref()
        .filter(|_| looks_like_subtoken(token))
    {
        let refused = |e| Refusal::new(RefusalKind::InvalidToken(e));
        let claims = verifier
            .verify(token, now_us() / 1_000_000)
            .map_err(refused)?;
        let agent = snap
            .agent_by_id(&claims.agent)
            .ok_or_else(|| refused(TokenError::UnknownAgent))?;
        return Ok(Caller {
            agent,
            user: claims.user.map(Arc::from),
            groups: None,
            scope: claims.tools,
        });
    }
    if let Some(verifier) = snap.jwt.as_deref().filter(|_| looks_like_jwt(token)) {
        let refused = |e| Refusal::new(RefusalKind::InvalidToken(e));
        let now = now_us() / 1_000_000;
        let id = tokens
            .cache
            .get_or_verify(tokens.generation, token, now, || {
                verifier.verify(token, now)
            })
            .map_err(refused)?;
        let agent = snap
            .agent_by_id(&id.agent)
            .ok_or_else(|| refused(TokenError::UnknownAgent))?;
        let has_user = id.user.is_some();
        return Ok(Caller {
            agent,
            user: id.user,
            // Groups belong to the token's user: none without one, so they
            // never attach to a user named by header instead.
            groups: id.groups.filter(|_| has_user),
            scope: None,
        });
    }
    let agent = snap
        .agent_by_key(&key_hash(token))
        .ok_or(Refusal::new(RefusalKind::UnknownCredential))?;
    Ok(Caller {
        agent,
        user: None,
        groups: None,
        scope: None,
    })
}

/// Path of the RFC 9728 protected resource metadata.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The `WWW-Authenticate` challenge of a 401: with `[auth.jwt]` it points
/// at the protected resource metadata (RFC 9728) on the host the agent
/// used; `Host` values that are not a plain host and port fall back to the
/// listen address.
fn challenge(snap: &Snapshot, req: &Request<'_>, listen: SocketAddr, kind: RefusalKind) -> String {
    let mut out = String::from("Bearer realm=\"toolgate\"");
    if snap.jwt.is_none() {
        return out;
    }
    let host = req
        .head
        .header(req.buf, "host")
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(str::to_owned)
        .unwrap_or_else(|| listen.to_string());
    out.push_str(if req.secure {
        ", resource_metadata=\"https://"
    } else {
        ", resource_metadata=\"http://"
    });
    out.push_str(&host);
    out.push_str(RESOURCE_METADATA_PATH);
    out.push('"');
    if matches!(kind, RefusalKind::InvalidToken(_)) {
        out.push_str(", error=\"invalid_token\"");
    }
    out
}

/// Whether a media-type header value (type and parameters) is `media`.
fn media_is(value: &[u8], media: &[u8]) -> bool {
    value
        .split(|&b| b == b';')
        .next()
        .is_some_and(|m| m.trim_ascii().eq_ignore_ascii_case(media))
}

/// Whether an `Accept` value allows `media` (exactly, by `type/*`, or `*/*`).
fn accepts(accept: &[u8], media: &[u8]) -> bool {
    let major = media.split(|&b| b == b'/').next().unwrap_or(b"");
    accept.split(|&b| b == b',').any(|item| {
        let m = item
            .split(|&b| b == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        m.eq_ignore_ascii_case(media)
            || m == b"*/*"
            || (m.len() == major.len() + 2
                && m.ends_with(b"/*")
                && m[..major.len()].eq_ignore_ascii_case(major))
    })
}

impl Handler for Gateway {
    async fn handle(&self, req: &Request<'_>, out: &mut Vec<u8>) -> bool {
        let path = req.head.path(req.buf);
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        match path {
            b"/mcp" => self.mcp(req, out).await,
            p if p == RESOURCE_METADATA_PATH.as_bytes() => {
                self.resource_metadata(req, out);
                true
            }
            b"/healthz" => {
                self.health(req, out, true);
                true
            }
            b"/readyz" => {
                self.health(req, out, self.shared.ready());
                true
            }
            _ => {
                let r = Refusal::new(RefusalKind::PathNotFound);
                let mut body = Vec::new();
                wire::refusal(None, &r, None, &mut body);
                response::write(out, 404, &[], Body::Json(&body), true);
                true
            }
        }
    }

    fn refuse(
        &self,
        refusal: &Refusal,
        peer: Option<SocketAddr>,
        started: Instant,
        out: &mut Vec<u8>,
    ) {
        let w = refusal.wire();
        let mut body = Vec::new();
        wire::refusal(None, refusal, None, &mut body);
        response::write(out, w.status, &[], Body::Json(&body), false);
        // Requests refused before they could be read are audited too, when
        // the ring has room: they are attempts on the gateway.
        let admission = self.audit.borrow_mut().admit();
        if let Ok(admission) = admission {
            let ctx = CallCtx::new(started, peer, false, refusal.kind.reason());
            let record = self.record(
                ctx,
                Decision::Deny,
                w.status,
                Outcome::Failure,
                Some(w.code),
            );
            self.audit.borrow_mut().commit(admission, record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(json: &str, stateless: bool) -> String {
        let mut p = JsonParser::new();
        let tape = p
            .parse(json.as_bytes())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let mut out = Vec::new();
        rewrite_result(tape.as_value(), stateless, &mut out, &mut |_, v, out| {
            write_value(v, out)
        });
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn upstream_server_info_is_dropped_and_result_type_added_for_stateless_agents() {
        let r =
            r#"{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"crm"},"x":1}}"#;
        assert_eq!(
            rewrite(r, true),
            r#"{"content":[],"_meta":{"x":1},"resultType":"complete"}"#
        );
        let r = r#"{"_meta":{"io.modelcontextprotocol/serverInfo":{}},"resultType":"complete","isError":false}"#;
        assert_eq!(
            rewrite(r, false),
            r#"{"resultType":"complete","isError":false}"#
        );
        assert_eq!(rewrite("{}", false), "{}");
    }

    #[test]
    fn accept_matching() {
        assert!(accepts(
            b"application/json, text/event-stream",
            b"text/event-stream"
        ));
        assert!(accepts(b"text/*;q=0.5", b"text/event-stream"));
        assert!(accepts(b"*/*", b"application/json"));
        assert!(!accepts(b"text/html", b"application/json"));
    }

    #[test]
    fn media_type_ignores_parameters() {
        assert!(media_is(
            b"application/json; charset=utf-8",
            b"application/json"
        ));
        assert!(!media_is(b"text/plain", b"application/json"));
    }
}

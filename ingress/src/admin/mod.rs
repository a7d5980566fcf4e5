//! The admin API: run-time control of agents, users, policies, upstreams
//! and sub-tokens, on a listener of its own (`[admin] listen`: loopback, or any
//! address with `[admin.tls]`), served by an executor thread of its own so
//! that store writes and snapshot builds never run on a shard.
//!
//! Every write names the version it replaces (`If-Match`, or
//! `If-None-Match: *` to create); a stale one gets 412 and the current
//! version, never last-writer-wins. A write is checked in full (document
//! shape, references, Cedar parse and validation), committed in one store
//! transaction, compiled into a new snapshot, published, recorded in the
//! audit log (one record per changed resource, from this API's own ring;
//! refused writes and requests without a valid admin token get one too),
//! and answered once every shard runs the new generation — or, past
//! `publish_timeout_ms`, with 202 naming the shards that did not.
//!
//! Endpoints: `GET /v1/{kind}`, `GET|PUT|DELETE /v1/{kind}/{id}`,
//! `POST /v1/transaction`; kinds `agents`, `users`, `policies`,
//! `upstreams`. Sub-tokens
//! (`subtokens`, read like the others) are minted by `POST /v1/subtokens`,
//! which answers the token once (only its claims are stored), and revoked
//! by `POST /v1/subtokens/{id}/revoke` with `If-Match`: the revocation
//! travels in the snapshot like every other change.

pub mod client;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::net::TcpListener;
use serde_json::{json, Value};
use toolgate_control::model::{check_id, diff};
use toolgate_control::state::{check_references, check_upstream_changes, dangling_tools};
use toolgate_control::{
    Backend, Change, Kind, Op, OpError, Precondition, Spec, State, SubtokenSpec,
};
use toolgate_core::audit::{truncate, AdminChange, AuditRecord, Decision, Outcome};
use toolgate_core::identity::{bearer, key_hash, parse_key_hash, KeyHash};
use toolgate_core::refusal::Refusal;
use toolgate_core::subtoken::Claims;
use toolgate_decision::pins::PinStatus;
use toolgate_sinks::{AuditHealth, AuditProducer, RingWriter};

use crate::http::head::{Limits, Method};
use crate::http::response::{self, Body};
use crate::http::server::{serve, ConnConfig, Handler, Request};
use crate::shared::{Shared, Sources};

/// Why the admin API did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listener could not be bound.
    #[error("cannot listen for the admin API on `{addr}`: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The executor thread could not start.
    #[error("cannot start the admin API: {0}")]
    Executor(String),
}

/// How sub-tokens are written: not by PUT, DELETE or in a transaction.
const SUBTOKEN_WRITES: &str = "a sub-token is minted with `POST /v1/subtokens` and revoked with `POST /v1/subtokens/{id}/revoke` (`If-Match`)";

/// The body of `POST /v1/subtokens`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    /// The agent the token acts as.
    agent: String,
    /// Narrow it to this end user.
    #[serde(default)]
    user: Option<String>,
    /// Narrow it to these tools (each attached to the agent).
    #[serde(default)]
    tools: Option<Vec<String>>,
    /// Lifetime, seconds (at most `auth.subtokens.max_ttl_s`).
    #[serde(default = "default_mint_ttl_s")]
    ttl_s: u64,
}

fn default_mint_ttl_s() -> u64 {
    3600
}

/// Most times a write plans again after another replica's commit got in
/// first (each time, a precondition that no longer holds ends it in 412).
const MAX_ATTEMPTS: u32 = 8;

/// A refusal of an admin request: status, machine-readable code, message,
/// and extra members of the error object.
#[derive(Debug)]
struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
    extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    fn with(mut self, key: &'static str, v: Value) -> Self {
        self.extra.push((key, v));
        self
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), json!(self.code));
        err.insert("message".into(), json!(self.message));
        for (k, v) in &self.extra {
            err.insert((*k).into(), v.clone());
        }
        let body = json!({ "error": err }).to_string();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if self.status == 401 {
            headers.push(("WWW-Authenticate", "Bearer realm=\"toolgate-admin\""));
        }
        response::write(
            out,
            self.status,
            &headers,
            Body::Json(body.as_bytes()),
            true,
        );
    }
}

/// The admin API's request handler (one per admin executor).
pub struct AdminApi {
    shared: Arc<Shared>,
    store: Box<dyn Backend>,
    tokens: HashMap<KeyHash, Arc<str>>,
    audit: RefCell<AuditProducer>,
    publish_timeout: Duration,
    audit_timeout: Duration,
}

/// Starts the admin API on its own executor thread: `store` holds the
/// control state (already loaded into `shared`), `writer` is the admin's
/// audit ring, `ring` its index among the audit rings. Returns the bound
/// address.
pub fn start(
    shared: Arc<Shared>,
    store: Box<dyn Backend>,
    writer: RingWriter,
    health: Arc<AuditHealth>,
    ring: u16,
) -> Result<SocketAddr, AdminError> {
    let Some(addr) = shared.config.admin_listen else {
        return Err(AdminError::Executor("`admin.listen` is not set".into()));
    };
    let (tx, rx) = mpsc::channel::<Result<SocketAddr, String>>();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("toolgate-admin")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(Ok(listener.local_addr().unwrap_or(addr)));
            let admin = &shared.config.config.admin;
            let conn = ConnConfig {
                limits: Limits {
                    max_body_bytes: admin.max_body_bytes,
                    ..shared.conn.limits
                },
                ..shared.conn
            };
            let tokens = admin
                .tokens
                .iter()
                .filter_map(|t| {
                    Some((
                        parse_key_hash(t.token_sha256.get_ref())?,
                        Arc::from(t.name.get_ref().as_str()),
                    ))
                })
                .collect();
            let api = Rc::new(AdminApi {
                publish_timeout: Duration::from_millis(admin.publish_timeout_ms),
                audit_timeout: Duration::from_millis(shared.config.config.audit.ack_timeout_ms),
                tokens,
                store,
                audit: RefCell::new(AuditProducer::new(ring, writer, health)),
                shared,
            });
            let mut tls = api.shared.admin_tls.as_ref().map(|t| t.reader());
            loop {
                let Ok(stream) = listener.accept().await else {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let api = Rc::clone(&api);
                let peer = stream.peer_addr().ok();
                let acceptor = tls
                    .as_mut()
                    .map(|t| futures_rustls::TlsAcceptor::clone(&t.current()));
                glommio::spawn_local(async move {
                    let info = crate::http::conn::ConnInfo {
                        peer,
                        ..Default::default()
                    };
                    match acceptor {
                        None => serve(stream, info, conn, &*api).await,
                        Some(acceptor) => {
                            match crate::shard::handshake(stream, &acceptor, conn).await {
                                Ok((stream, client_names)) => {
                                    let info = crate::http::conn::ConnInfo {
                                        secure: true,
                                        client_names,
                                        ..info
                                    };
                                    serve(stream, info, conn, &*api).await;
                                }
                                Err(why) => {
                                    tracing::debug!(peer = ?peer, %why, "admin TLS handshake failed");
                                }
                            }
                        }
                    }
                })
                .detach();
            }
        })
        .map_err(|e| AdminError::Executor(e.to_string()))?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(bound)) => Ok(bound),
        Ok(Err(reason)) => Err(AdminError::Bind { addr, reason }),
        Err(_) => Err(AdminError::Executor("did not start".into())),
    }
}

/// Starts the follower of a shared backend on a thread of its own (its
/// database calls block): it waits for a commit's notification, or `every`
/// at most, and when the shared revision moved past the running one loads
/// the state and publishes it to every shard — so a change made through
/// another replica runs here within about one wait plus one load.
pub fn follow(
    shared: Arc<Shared>,
    store: toolgate_control::PgStore,
    every: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("toolgate-control-follow".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                let waited = store.wait(every);
                let known = shared.sources().control.revision;
                match waited.and_then(|_| store.newer(known)) {
                    Ok(Some(state)) => {
                        let revision = state.revision;
                        match shared.set_control(Arc::new(state)) {
                            Some(generation) => tracing::info!(
                                revision,
                                generation,
                                "control state changed by another replica"
                            ),
                            None => tracing::error!(
                                revision,
                                "the shared control state does not compile with this replica's configuration file; the running snapshot stays"
                            ),
                        }
                        failing = false;
                    }
                    Ok(None) => {
                        if failing {
                            tracing::info!("control state database reachable again");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::error!(error = %e, "cannot follow the shared control state; retrying");
                        }
                        failing = true;
                    }
                }
            }
        })
        .map(|_| ())
}

/// `If-Match` / `If-None-Match` of a write.
fn precondition(req: &Request<'_>) -> Result<Precondition, ApiError> {
    let if_match = req.head.header(req.buf, "if-match");
    let if_none = req.head.header(req.buf, "if-none-match");
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::new(
            400,
            "invalid_precondition",
            "send either `If-Match` or `If-None-Match`, not both",
        )),
        (None, None) => Err(ApiError::new(
            428,
            "precondition_required",
            "a write must carry `If-Match: \"<version>\"` (from the resource's ETag), or `If-None-Match: *` to create",
        )),
        (None, Some(v)) if v.trim_ascii() == b"*" => Ok(Precondition::IfNoneMatch),
        (None, Some(_)) => Err(ApiError::new(
            400,
            "invalid_precondition",
            "`If-None-Match` must be `*`",
        )),
        (Some(v), None) => parse_etag(v).map(Precondition::IfMatch).ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_precondition",
                format!(
                    "`If-Match: {}` is not a version: use the ETag of a read, such as `\"3\"`",
                    String::from_utf8_lossy(&v[..v.len().min(64)])
                ),
            )
        }),
    }
}

/// `"N"` (or a bare `N`) to N.
fn parse_etag(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    let v = v
        .strip_prefix(b"\"")
        .and_then(|x| x.strip_suffix(b"\""))
        .unwrap_or(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or_else(|| {
        ApiError::new(
            404,
            "unknown_kind",
            format!(
                "`{}` is not a kind of resource: use `agents`, `users`, `policies`, `upstreams`, `credentials` or `subtokens`",
                s.chars().take(64).collect::<String>()
            ),
        )
    })
}

fn parse_spec(kind: Kind, v: &[u8]) -> Result<Spec, ApiError> {
    Spec::parse(kind, v).map_err(|e| match e {
        toolgate_control::SpecError::Invalid(m) => ApiError::new(400, "invalid_document", m),
        toolgate_control::SpecError::Value(m) => ApiError::new(422, "invalid_document", m),
    })
}

/// A resource as reads show it.
fn item(kind: Kind, id: &str, version: u64, source: &str, spec: Value) -> Value {
    json!({"kind": kind.as_str(), "id": id, "version": version, "source": source, "spec": spec})
}

/// Resources the configuration file defines, of `kind`: (id, document).
fn file_resources(src: &Sources, kind: Kind) -> Vec<(String, Value)> {
    match kind {
        Kind::Agents => src
            .file
            .config
            .agents
            .iter()
            .map(|a| {
                let tools: Vec<&String> = a.tools.iter().map(|t| t.get_ref()).collect();
                (
                    a.id.get_ref().clone(),
                    json!({"tools": tools, "groups": a.groups, "act_for_users": a.act_for_users}),
                )
            })
            .collect(),
        Kind::Users => src
            .file
            .config
            .users
            .iter()
            .map(|u| (u.id.get_ref().clone(), json!({"groups": u.groups})))
            .collect(),
        Kind::Policies => src
            .policies
            .iter()
            .filter_map(|(path, text)| {
                let name = path.file_name()?.to_str()?.strip_suffix(".cedar")?;
                check_id(name).ok()?;
                Some((name.to_owned(), json!({ "text": text })))
            })
            .collect(),
        // Tokens minted by `toolgate token mint` are in its ledger file,
        // listed by `toolgate token list`.
        Kind::Subtokens => Vec::new(),
        Kind::Upstreams => src
            .file
            .config
            .upstreams
            .iter()
            .map(|u| (u.name.get_ref().clone(), upstream_document(u)))
            .collect(),
        // The file's credentials belong to its upstreams; none is named.
        Kind::Credentials => Vec::new(),
    }
}

/// A `[[upstreams]]` entry as an `upstreams/{name}` document. A credential
/// shows where it is read from (never a value); a `command` or `oauth` one
/// only its kind, as `source` (the API does not write those).
fn upstream_document(u: &toolgate_core::config::UpstreamConfig) -> Value {
    use toolgate_core::config::UpstreamProtocol;
    let mut doc = json!({
        "url": u.url.get_ref(),
        "timeout_ms": u.timeout_ms,
        "max_response_bytes": u.max_response_bytes,
        "pool_size": u.pool_size,
        "protocol": match u.protocol {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Handshake => "handshake",
            UpstreamProtocol::Stateless => "stateless",
        },
        "catalog_refresh_s": u.catalog_refresh_s,
    });
    if let Some(p) = &u.prefix {
        doc["prefix"] = json!(p.get_ref());
    }
    if let Some(ca) = &u.ca_file {
        doc["ca_file"] = json!(ca.get_ref());
    }
    if let Some(c) = &u.credential {
        let mut cred = json!({"header": c.header.get_ref()});
        if !c.value_prefix.is_empty() {
            cred["value_prefix"] = json!(c.value_prefix);
        }
        match (&c.env, &c.file, &c.command) {
            (Some(v), _, _) => cred["env"] = json!(v.get_ref()),
            (None, Some(f), _) => cred["file"] = json!(f.get_ref()),
            (None, None, Some(_)) => cred["source"] = json!("command"),
            (None, None, None) => cred["source"] = json!("oauth"),
        }
        doc["credential"] = cred;
    }
    doc
}

/// The effective resource: the store's, else the configuration file's
/// (version 0).
fn effective(src: &Sources, kind: Kind, id: &str) -> Option<Value> {
    if let Some(e) = src.control.get(kind, id) {
        return Some(item(kind, id, e.version, "store", e.spec.to_value()));
    }
    file_resources(src, kind)
        .into_iter()
        .find(|(fid, _)| fid == id)
        .map(|(fid, spec)| item(kind, &fid, 0, "config", spec))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One operation of `POST /v1/transaction`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TxOp {
    op: String,
    kind: String,
    id: String,
    #[serde(default)]
    if_match: Option<u64>,
    #[serde(default)]
    if_none_match: Option<bool>,
    #[serde(default)]
    spec: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Tx {
    operations: Vec<TxOp>,
}

fn tx_ops(body: &[u8]) -> Result<Vec<Op>, ApiError> {
    let tx: Tx = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "invalid_document", e.to_string()))?;
    let mut ops = Vec::with_capacity(tx.operations.len());
    for (i, o) in tx.operations.into_iter().enumerate() {
        let at = |e: ApiError| {
            ApiError {
                message: format!("operation {i}: {}", e.message),
                ..e
            }
            .with("operation", json!(i))
        };
        let kind = parse_kind(&o.kind).map_err(|e| ApiError {
            status: 400,
            ..at(e)
        })?;
        if kind == Kind::Subtokens {
            return Err(at(ApiError::new(400, "invalid_request", SUBTOKEN_WRITES)));
        }
        let pre = match (o.if_match, o.if_none_match) {
            (Some(v), None) => Precondition::IfMatch(v),
            (None, Some(true)) => Precondition::IfNoneMatch,
            (None, None | Some(false)) => {
                return Err(at(ApiError::new(
                    428,
                    "precondition_required",
                    "every operation needs `if_match` (a version) or `if_none_match: true`",
                )))
            }
            (Some(_), Some(_)) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_precondition",
                    "give either `if_match` or `if_none_match`, not both",
                )))
            }
        };
        let spec = match (o.op.as_str(), o.spec) {
            ("put", Some(v)) => {
                let bytes = serde_json::to_vec(&v).unwrap_or_default();
                Some(parse_spec(kind, &bytes).map_err(at)?)
            }
            ("put", None) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_document",
                    "a `put` needs a `spec`",
                )))
            }
            ("delete", None) => None,
            ("delete", Some(_)) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_document",
                    "a `delete` takes no `spec`",
                )))
            }
            (other, _) => {
                return Err(at(ApiError::new(
                    400,
                    "invalid_document",
                    format!(
                        "`op` is `{}`: use `put` or `delete`",
                        other.chars().take(32).collect::<String>()
                    ),
                )))
            }
        };
        ops.push(Op {
            kind,
            id: o.id,
            pre,
            spec,
        });
    }
    Ok(ops)
}

impl AdminApi {
    /// The sources, with the newest control state of a shared backend
    /// (which another replica may have moved on) loaded and published
    /// first: reads and the preconditions of writes see every committed
    /// change, not only what this replica's follower has caught up with.
    fn fresh(&self) -> Result<Sources, ApiError> {
        match self.store.newer(self.shared.sources().control.revision) {
            Ok(Some(newer)) => {
                let _ = self.shared.set_control(Arc::new(newer));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "control state cannot be read");
                return Err(ApiError::new(
                    503,
                    "store_unavailable",
                    "the control state cannot be read; nothing was applied",
                ));
            }
        }
        Ok(self.shared.sources())
    }

    fn authenticate(&self, req: &Request<'_>) -> Result<Arc<str>, ApiError> {
        let token = bearer(req.head.header(req.buf, "authorization")).map_err(|_| {
            ApiError::new(
                401,
                "unauthorized",
                "send an admin token as `Authorization: Bearer <token>`",
            )
        })?;
        self.tokens
            .get(&key_hash(token))
            .cloned()
            .ok_or_else(|| ApiError::new(401, "unauthorized", "unknown admin token"))
    }

    async fn route(
        &self,
        actor: &Arc<str>,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let path = req.head.path(req.buf);
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        let path = std::str::from_utf8(path)
            .map_err(|_| ApiError::new(404, "not_found", "no such endpoint"))?;
        let segs: Vec<&str> = path
            .strip_prefix("/v1/")
            .ok_or_else(|| ApiError::new(404, "not_found", "endpoints are under `/v1/`"))?
            .split('/')
            .collect();
        let method = req.head.method;
        match (method, segs.as_slice()) {
            (Method::Get, ["tools"]) => {
                let items: Vec<Value> = self.tools(false).into_values().collect();
                let body = json!({ "items": items }).to_string();
                response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
                Ok(())
            }
            (Method::Get, ["tools", name]) => {
                let v = self.tools(true).remove(*name).ok_or_else(|| {
                    ApiError::new(
                        404,
                        "not_found",
                        format!("no tool `{}` in the fetched catalogs", truncate(name, 256)),
                    )
                })?;
                let etag = format!("\"{}\"", v["digest"].as_str().unwrap_or_default());
                let body = v.to_string();
                response::write(out, 200, &[("ETag", &etag)], Body::Json(body.as_bytes()), true);
                Ok(())
            }
            (Method::Post, ["tools", name, "approve"]) => {
                self.approve_tool(actor, name, req, out).await
            }
            (_, ["tools", _, "approve"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "an approval is a `POST`",
            )),
            (_, ["tools", ..]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "tools are read-only: they come from the upstreams' catalogs; approve one with `POST /v1/tools/{name}/approve`",
            )),
            (Method::Post, ["subtokens"]) => self.mint(actor, req, out).await,
            (Method::Post, ["subtokens", id, "revoke"]) => {
                self.revoke_subtoken(actor, id, req, out).await
            }
            (Method::Put | Method::Delete, ["subtokens", _]) => {
                Err(ApiError::new(405, "method_not_allowed", SUBTOKEN_WRITES))
            }
            (_, ["subtokens", _, "revoke"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "a revoke is a `POST`",
            )),
            (Method::Post, ["transaction"]) => {
                let ops = tx_ops(req.body)?;
                self.write(actor, ops, req, out, false, None).await
            }
            (_, ["transaction"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "a transaction is a `POST`",
            )),
            (Method::Get, [kind]) => {
                let kind = parse_kind(kind)?;
                let src = self.fresh()?;
                let mut items: std::collections::BTreeMap<String, Value> =
                    file_resources(&src, kind)
                        .into_iter()
                        .map(|(id, spec)| (id.clone(), item(kind, &id, 0, "config", spec)))
                        .collect();
                for (id, e) in src.control.list(kind) {
                    items.insert(
                        id.to_owned(),
                        item(kind, id, e.version, "store", e.spec.to_value()),
                    );
                }
                let body = json!({"items": items.into_values().collect::<Vec<_>>()}).to_string();
                response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
                Ok(())
            }
            (Method::Get, [kind, id]) => {
                let kind = parse_kind(kind)?;
                let src = self.fresh()?;
                let v = effective(&src, kind, id).ok_or_else(|| {
                    ApiError::new(404, "not_found", format!("no `{}/{id}`", kind.as_str()))
                })?;
                let etag = format!("\"{}\"", v["version"]);
                let body = v.to_string();
                response::write(
                    out,
                    200,
                    &[("ETag", &etag)],
                    Body::Json(body.as_bytes()),
                    true,
                );
                Ok(())
            }
            (Method::Put, [kind, id]) => {
                let kind = parse_kind(kind)?;
                let pre = precondition(req)?;
                let spec = parse_spec(kind, req.body)?;
                let ops = vec![Op {
                    kind,
                    id: (*id).to_owned(),
                    pre,
                    spec: Some(spec),
                }];
                self.write(actor, ops, req, out, true, None).await
            }
            (Method::Delete, [kind, id]) => {
                let kind = parse_kind(kind)?;
                let pre = precondition(req)?;
                let ops = vec![Op {
                    kind,
                    id: (*id).to_owned(),
                    pre,
                    spec: None,
                }];
                self.write(actor, ops, req, out, true, None).await
            }
            (_, [_] | [_, _]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                "use GET on a kind; GET, PUT or DELETE on a resource",
            )),
            _ => Err(ApiError::new(404, "not_found", "no such endpoint")),
        }
    }

    /// `POST /v1/subtokens`: mints a sub-token under `[auth.subtokens]`'s
    /// key, stores its claims (never the token), and answers the token —
    /// once — with the write's usual body.
    async fn mint(
        &self,
        actor: &Arc<str>,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let off = || {
            ApiError::new(
                409,
                "subtokens_off",
                "sub-tokens are off: configure `[auth.subtokens]`",
            )
        };
        let verifier = self.shared.subtoken_verifier().ok_or_else(off)?;
        let m: MintRequest = serde_json::from_slice(req.body)
            .map_err(|e| ApiError::new(400, "invalid_document", e.to_string()))?;
        let src = self.fresh()?;
        let max_ttl = src
            .file
            .config
            .auth
            .subtokens
            .as_ref()
            .map(|s| s.max_ttl_s)
            .ok_or_else(off)?;
        if m.ttl_s == 0 || m.ttl_s > max_ttl {
            return Err(ApiError::new(
                422,
                "invalid_document",
                format!(
                    "`ttl_s = {}` must be between 1 and `auth.subtokens.max_ttl_s` ({max_ttl})",
                    m.ttl_s
                ),
            ));
        }
        let (eff, _) = src.control.overlay(&src.file);
        let agent = eff
            .config
            .agents
            .iter()
            .find(|a| *a.id.get_ref() == m.agent)
            .ok_or_else(|| {
                ApiError::new(
                    422,
                    "invalid_reference",
                    format!(
                        "no agent `{}` in the store or the configuration file",
                        truncate(&m.agent, 128)
                    ),
                )
            })?;
        let mut narrowed: Vec<String> = Vec::new();
        for t in m.tools.unwrap_or_default() {
            if !agent.tools.iter().any(|x| *x.get_ref() == t) {
                return Err(ApiError::new(
                    422,
                    "invalid_reference",
                    format!(
                        "tool `{}` is not attached to agent `{}`: a sub-token cannot widen its agent",
                        truncate(&t, 256),
                        m.agent
                    ),
                ));
            }
            if !narrowed.contains(&t) {
                narrowed.push(t);
            }
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|_| ApiError::new(500, "no_randomness", "the OS gave no randomness"))?;
        let now = now_us() / 1_000_000;
        let spec = SubtokenSpec {
            agent: m.agent,
            user: m.user,
            tools: (!narrowed.is_empty()).then_some(narrowed),
            iat: now,
            exp: now + m.ttl_s,
            revoked: false,
        };
        let spec = parse_spec(
            Kind::Subtokens,
            &serde_json::to_vec(&spec).unwrap_or_default(),
        )?;
        let Spec::Subtoken(t) = &spec else {
            return Err(ApiError::new(500, "internal", "not a sub-token document"));
        };
        let claims = Claims {
            jti: hex::encode(id),
            agent: t.agent.clone(),
            user: t.user.clone(),
            tools: t.tools.clone(),
            iat: t.iat,
            exp: t.exp,
        };
        let token = verifier.mint(&claims);
        let mut extra = serde_json::Map::new();
        extra.insert("id".into(), json!(claims.jti));
        extra.insert("token".into(), json!(token));
        extra.insert("expires_at".into(), json!(claims.exp));
        let ops = vec![Op {
            kind: Kind::Subtokens,
            id: claims.jti,
            pre: Precondition::IfNoneMatch,
            spec: Some(spec),
        }];
        self.write(actor, ops, req, out, true, Some(extra)).await
    }

    /// `POST /v1/subtokens/{id}/revoke` with `If-Match`: marks the token
    /// revoked; answers once every shard refuses it.
    async fn revoke_subtoken(
        &self,
        actor: &Arc<str>,
        id: &str,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let pre = match precondition(req)? {
            Precondition::IfNoneMatch => {
                return Err(ApiError::new(
                    400,
                    "invalid_precondition",
                    "a revoke needs `If-Match: \"<version>\"` (from the sub-token's ETag)",
                ))
            }
            p => p,
        };
        let src = self.fresh()?;
        let entry = src.control.get(Kind::Subtokens, id).ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                format!(
                    "no `subtokens/{}` (a token minted by `toolgate token mint` is revoked with `toolgate token revoke`)",
                    truncate(id, 128)
                ),
            )
        })?;
        let Spec::Subtoken(t) = &entry.spec else {
            return Err(ApiError::new(500, "internal", "not a sub-token document"));
        };
        if t.revoked && pre == Precondition::IfMatch(entry.version) {
            return Err(ApiError::new(
                409,
                "already_revoked",
                format!("`subtokens/{id}` is revoked already"),
            )
            .with("current_version", json!(entry.version)));
        }
        let spec = Spec::Subtoken(SubtokenSpec {
            revoked: true,
            ..t.clone()
        });
        let ops = vec![Op {
            kind: Kind::Subtokens,
            id: id.to_owned(),
            pre,
            spec: Some(spec),
        }];
        self.write(actor, ops, req, out, true, None).await
    }

    /// Records a refused write, or a request without a valid admin
    /// credential, in the audit log (best effort: with no ring slot free
    /// the refusal is only logged; nothing was changed either way).
    fn audit_refusal(&self, req: &Request<'_>, actor: Option<&str>, e: &ApiError) {
        let path = String::from_utf8_lossy(req.head.path(req.buf));
        let path = path.split('?').next().unwrap_or("");
        let mut segs = path.strip_prefix("/v1/").unwrap_or("").split('/');
        let (kind, id) = (segs.next().unwrap_or(""), segs.next().unwrap_or(""));
        let op = match req.head.method {
            Method::Put => "put",
            Method::Delete => "delete",
            Method::Post if kind == "subtokens" && id.is_empty() => "mint",
            Method::Post if kind == "subtokens" => "revoke",
            Method::Post if kind == "tools" => "approve",
            Method::Post => "transaction",
            Method::Get => "get",
            Method::Other => "other",
        };
        let Ok(admission) = self.audit.borrow_mut().admit() else {
            tracing::warn!(
                code = e.code,
                "refused admin request not audited: the audit ring is full or the log is down"
            );
            return;
        };
        let record = AuditRecord {
            decision: Decision::Deny,
            reason: e.code,
            status: e.status,
            outcome: Outcome::Failure,
            ..AuditRecord::admin(
                now_us(),
                req.started.elapsed().as_micros() as u64,
                req.peer,
                AdminChange {
                    actor: actor.map(str::to_owned),
                    op,
                    kind: truncate(kind, 64).to_owned(),
                    id: truncate(id, 128).to_owned(),
                    old_version: None,
                    new_version: None,
                    digest: None,
                    diff: "{}".to_owned(),
                    generation: 0,
                },
            )
        };
        self.audit.borrow_mut().commit(admission, record);
    }

    /// Checks everything a commit needs besides preconditions: references
    /// to tools, keys, and that the policies parse and validate.
    fn validate(
        &self,
        src: &Sources,
        next: &Arc<State>,
        changes: &[Change],
    ) -> Result<(), ApiError> {
        let candidate = Sources {
            control: Arc::clone(next),
            ..src.clone()
        };
        let in_use: Vec<(String, String)> = changes
            .iter()
            .filter(|c| c.kind == Kind::Credentials && c.new.is_none())
            .flat_map(|c| {
                next.upstreams_using(&c.id)
                    .into_iter()
                    .map(move |u| (c.id.clone(), u))
            })
            .collect();
        if let Some((credential, _)) = in_use.first() {
            let upstreams: Vec<&str> = in_use.iter().map(|(_, u)| u.as_str()).collect();
            return Err(ApiError::new(
                409,
                "credential_in_use",
                format!(
                    "credential `{credential}` is named by upstream(s) `{}`: change or delete them first (in the same transaction, or before)",
                    upstreams.join("`, `")
                ),
            )
            .with("upstreams", json!(upstreams)));
        }
        let (eff, skipped) = next.overlay(&src.file);
        let mut problems = check_upstream_changes(&src.file, next, &eff, &skipped, changes);
        if problems.is_empty() {
            // Read what the shards will build clients from, so an
            // unreadable credential or CA file is refused now.
            // Upstreams written, and those naming a credential written.
            let mut read: Vec<String> = Vec::new();
            for c in changes {
                match c.new.as_ref().map(|e| &e.spec) {
                    Some(Spec::Upstream(_)) => read.push(c.id.clone()),
                    Some(Spec::Credential(_)) => read.extend(next.upstreams_using(&c.id)),
                    _ => {}
                }
            }
            read.sort();
            read.dedup();
            for id in &read {
                let Some(Spec::Upstream(spec)) = next.get(Kind::Upstreams, id).map(|e| &e.spec)
                else {
                    continue;
                };
                let at = eff
                    .config
                    .upstreams
                    .iter()
                    .position(|u| u.name.get_ref() == id);
                let source = next.credential_of(spec);
                if let Some(Err(e)) = at.map(|i| crate::shared::stored_parts(&eff, i, spec, source))
                {
                    problems.push(e);
                }
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::new(422, "invalid_upstream", problems.join("; "))
                .with("problems", json!(problems)));
        }
        let before = src.effective();
        let dangling = dangling_tools(&before, &eff, changes);
        if !dangling.is_empty() {
            let mut agents: Vec<&str> = dangling.iter().map(|(a, _)| a.as_str()).collect();
            agents.dedup();
            let ids: Vec<&str> = changes
                .iter()
                .filter(|c| c.kind == Kind::Upstreams)
                .map(|c| c.id.as_str())
                .collect();
            return Err(ApiError::new(
                409,
                "upstream_in_use",
                format!(
                    "upstream `{}` has tools attached to agent(s) `{}`: detach them first (in the same transaction, or before)",
                    ids.join("`, `"),
                    agents.join("`, `")
                ),
            )
            .with("agents", json!(agents))
            .with(
                "tools",
                json!(dangling.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>()),
            ));
        }
        let mut problems = check_references(&eff, &src.file, changes);
        let catalogs = self.shared.catalogs_for(&eff);
        for c in changes {
            let Some(Spec::Agent(a)) = c.new.as_ref().map(|e| &e.spec) else {
                continue;
            };
            for t in &a.tools {
                let Some((up, tool)) = eff.namer.route(t) else {
                    continue;
                };
                if let Some(cat) = catalogs.get(up).and_then(Option::as_ref) {
                    if cat
                        .get(tool)
                        .is_none_or(|d| d.exposed.as_deref() != Some(t.as_str()))
                    {
                        let name = eff
                            .config
                            .upstreams
                            .get(up)
                            .map(|u| u.name.get_ref().as_str())
                            .unwrap_or("?");
                        problems.push(format!(
                            "agent `{}`: tool `{t}` is not in upstream `{name}`'s tool catalog",
                            c.id
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::new(422, "invalid_reference", problems.join("; "))
                .with("problems", json!(problems)));
        }
        let snap = candidate.compile(&eff, &catalogs).map_err(|errs| {
            ApiError::new(422, "invalid_policy", errs.join("; ")).with("problems", json!(errs))
        })?;
        let touched: Vec<String> = changes
            .iter()
            .filter(|c| c.kind == Kind::Policies && c.new.is_some())
            .map(|c| {
                toolgate_control::state::policy_path(&c.id)
                    .display()
                    .to_string()
            })
            .collect();
        if !touched.is_empty() && catalogs.iter().all(Option::is_some) {
            if let Some(engine) = snap.engine.as_ref() {
                let errs: Vec<String> = engine
                    .bundle()
                    .validate(snap.cedar_schema())
                    .into_iter()
                    .filter(|e| touched.contains(&e.file.display().to_string()))
                    .map(|e| e.to_string())
                    .collect();
                if !errs.is_empty() {
                    return Err(ApiError::new(422, "invalid_policy", errs.join("; "))
                        .with("problems", json!(errs)));
                }
            }
        }
        Ok(())
    }

    /// Plans, validates, commits, publishes and audits `ops`; answers once
    /// every shard runs the result (or the time limit passes).
    async fn write(
        &self,
        actor: &Arc<str>,
        ops: Vec<Op>,
        req: &Request<'_>,
        out: &mut Vec<u8>,
        single: bool,
        extra: Option<serde_json::Map<String, Value>>,
    ) -> Result<(), ApiError> {
        // Everything from plan to publish is synchronous: on this one
        // executor no other write can interleave. A shared backend may have
        // moved on through another replica: plan against its newest state,
        // and plan again when a commit finds it moved meanwhile.
        let mut attempt = 0;
        let (changes, next, admissions) = loop {
            attempt += 1;
            let src = self.fresh()?;
            let changes = src.control.plan(&ops).map_err(|e| match e {
            OpError::Stale {
                op,
                kind,
                ref id,
                current,
                ..
            } => ApiError::new(412, "version_conflict", e.to_string())
                .with("kind", json!(kind))
                .with("id", json!(id))
                .with("current_version", json!(current))
                .with("operation", json!(op)),
            OpError::Invalid(m) => ApiError::new(400, "invalid_request", m),
            OpError::NotFound { kind, ref id, .. } => {
                let k = Kind::parse(kind).unwrap_or(Kind::Agents);
                if effective(&src, k, id).is_some() {
                    ApiError::new(
                        409,
                        "defined_in_config_file",
                        format!("`{kind}/{id}` is defined in the configuration file, not the store: edit the file to remove it"),
                    )
                } else {
                    ApiError::new(404, "not_found", e.to_string())
                }
            }
        })?;
            let next = Arc::new(src.control.applied(&changes));
            self.validate(&src, &next, &changes)?;
            let admissions = {
                let mut audit = self.audit.borrow_mut();
                let mut v = Vec::with_capacity(changes.len());
                for _ in &changes {
                    match audit.admit() {
                        Ok(a) => v.push(a),
                        Err(why) => {
                            return Err(ApiError::new(
                                503,
                                "audit_unavailable",
                                format!("{why}: the change was not applied"),
                            ))
                        }
                    }
                }
                v
            };
            match self.store.commit(next.revision, &changes) {
                Ok(()) => break (changes, next, admissions),
                Err(toolgate_control::StoreError::Conflict { base }) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        base,
                        attempt,
                        "control state moved meanwhile; planning again"
                    );
                }
                Err(toolgate_control::StoreError::Conflict { .. }) => {
                    return Err(ApiError::new(
                        503,
                        "store_busy",
                        "other replicas kept changing the control state meanwhile; nothing was applied, try again",
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "control state commit failed");
                    return Err(ApiError::new(
                        500,
                        "store_failed",
                        "the control state could not be written; nothing was applied",
                    ));
                }
            }
        };
        let published = self.shared.set_control(Arc::clone(&next));
        let generation = published.unwrap_or(0);
        let mut last_seq = None;
        {
            let mut audit = self.audit.borrow_mut();
            for (admission, c) in admissions.into_iter().zip(&changes) {
                let op = match (c.kind, &c.old, &c.new) {
                    (Kind::Subtokens, None, Some(_)) => "mint",
                    (Kind::Subtokens, Some(_), Some(_)) => "revoke",
                    (_, _, Some(_)) => "put",
                    (_, _, None) => "delete",
                };
                let record = AuditRecord::admin(
                    now_us(),
                    req.started.elapsed().as_micros() as u64,
                    req.peer,
                    AdminChange {
                        actor: Some(actor.to_string()),
                        op,
                        kind: c.kind.as_str().to_owned(),
                        id: c.id.clone(),
                        old_version: c.old.as_ref().map(|e| e.version),
                        new_version: c.new.as_ref().map(|e| e.version),
                        digest: c.new.as_ref().map(|e| e.spec.digest()),
                        diff: diff(
                            c.old.as_ref().map(|e| &e.spec),
                            c.new.as_ref().map(|e| &e.spec),
                        )
                        .to_string(),
                        generation,
                    },
                );
                last_seq = Some(audit.commit(admission, record));
            }
        }
        if published.is_none() {
            // Only a configuration file reloaded between the check above and
            // now can get here: the store holds the change, the running
            // snapshot does not.
            tracing::error!(
                "committed control state does not compile with the reloaded configuration file"
            );
            return Err(ApiError::new(
                500,
                "publish_failed",
                "the change is committed but does not compile with the configuration file reloaded meanwhile; the running snapshot stays (see the log)",
            ));
        }
        tracing::info!(actor = %actor, changes = changes.len(), generation, "control state changed");
        let (pending, acked) = self.settle(generation, last_seq).await;
        let results: Vec<Value> = changes
            .iter()
            .map(|c| json!({"kind": c.kind.as_str(), "id": c.id, "version": c.new.as_ref().map(|e| e.version)}))
            .collect();
        let status = if pending.is_empty() { 200 } else { 202 };
        let mut body = json!({
            "generation": generation,
            "results": results,
            "shards": {"total": self.shared.seen.len(), "pending": pending},
            // From publication to every shard running it; null if some did not.
            "propagation_us": acked.map(|d| d.as_micros() as u64),
        });
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra) {
            obj.extend(extra);
        }
        let body = body.to_string();
        let etag = match changes.first().and_then(|c| c.new.as_ref()) {
            Some(e) if single => Some(format!("\"{}\"", e.version)),
            _ => None,
        };
        let headers: Vec<(&str, &str)> = etag.iter().map(|e| ("ETag", e.as_str())).collect();
        response::write(out, status, &headers, Body::Json(body.as_bytes()), true);
        Ok(())
    }
}

impl AdminApi {
    /// Waits for every shard to run `generation` and the audit record
    /// `last_seq` to be in the log, each at most its time limit. Returns
    /// the shards still behind, and how long until none was.
    async fn settle(
        &self,
        generation: u64,
        last_seq: Option<u64>,
    ) -> (Vec<usize>, Option<Duration>) {
        let started = Instant::now();
        let mut acked: Option<Duration> = None;
        loop {
            let pending: Vec<usize> = self
                .shared
                .seen
                .iter()
                .enumerate()
                .filter(|(_, s)| s.load(Ordering::Acquire) < generation)
                .map(|(i, _)| i)
                .collect();
            let audited = last_seq.is_none_or(|s| self.audit.borrow().recorded(s));
            let waited = started.elapsed();
            if pending.is_empty() && acked.is_none() {
                acked = Some(waited);
            }
            if (pending.is_empty() || waited >= self.publish_timeout)
                && (audited || waited >= self.audit_timeout)
            {
                if !audited {
                    tracing::warn!("admin change records not yet in the audit log");
                }
                return (pending, acked);
            }
            glommio::timer::sleep(Duration::from_micros(100)).await;
        }
    }

    /// Every exposed tool of the fetched catalogs, by name: its upstream,
    /// definition digest, pin and quarantine (as the running snapshot has
    /// them), and, with `definition`, the definition agents see.
    fn tools(&self, definition: bool) -> std::collections::BTreeMap<String, Value> {
        let snap = self.shared.snapshot.load();
        let mut out = std::collections::BTreeMap::new();
        for (i, cat) in snap.catalogs.iter().enumerate() {
            let (Some(cat), Some(up)) = (cat, snap.upstreams.get(i)) else {
                continue;
            };
            for t in &cat.tools {
                let Some(exposed) = &t.exposed else { continue };
                let (pinned, status) = match self.shared.pin_status(exposed, &t.sha256) {
                    None => (None, "unpinned"),
                    Some((p, PinStatus::Pinned)) => (p, "pinned"),
                    Some((p, PinStatus::Changed)) => (p, "changed"),
                    Some((p, PinStatus::New)) => (p, "new"),
                };
                let mut v = json!({
                    "kind": "tools",
                    "id": exposed,
                    "upstream": &*up.name,
                    "tool": t.name,
                    "digest": t.sha256,
                    "pinned_digest": pinned,
                    "status": status,
                    "quarantined": t.quarantined,
                });
                if definition {
                    v["definition"] = serde_json::from_str(&t.json).unwrap_or(Value::Null);
                }
                out.insert(exposed.clone(), v);
            }
        }
        out
    }

    /// `POST /v1/tools/{name}/approve` with `If-Match: "<digest>"`: pins
    /// the definition with that digest (the one read), as `toolgate tools
    /// approve` does, and answers once every shard runs the snapshot with
    /// the tool's quarantine lifted.
    async fn approve_tool(
        &self,
        actor: &Arc<str>,
        name: &str,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let wanted = match req.head.header(req.buf, "if-match") {
            None => {
                return Err(ApiError::new(
                    428,
                    "precondition_required",
                    "an approval must carry `If-Match: \"<digest>\"`: the ETag of the tool's definition as read",
                ))
            }
            Some(v) => {
                let v = v.trim_ascii();
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|x| x.strip_suffix(b"\""))
                    .unwrap_or(v);
                if v.len() != 64 || !v.iter().all(u8::is_ascii_hexdigit) {
                    return Err(ApiError::new(
                        400,
                        "invalid_precondition",
                        "`If-Match` of a tool is its definition digest (64 hex digits, from the ETag)",
                    ));
                }
                String::from_utf8_lossy(v).to_ascii_lowercase()
            }
        };
        let tool = self.tools(false).remove(name).ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                format!("no tool `{}` in the fetched catalogs", truncate(name, 256)),
            )
        })?;
        if tool["status"] == "unpinned" {
            return Err(ApiError::new(
                409,
                "tool_pins_off",
                "tool pinning is off: configure `[tool_pins]`",
            ));
        }
        let digest = tool["digest"].as_str().unwrap_or_default().to_owned();
        if digest != wanted {
            return Err(ApiError::new(
                412,
                "version_conflict",
                format!(
                    "the definition of `{name}` is now `{digest}`, not `{wanted}`: read it again"
                ),
            )
            .with("kind", json!("tools"))
            .with("id", json!(name))
            .with("current_version", json!(digest)));
        }
        let admission = self.audit.borrow_mut().admit().map_err(|why| {
            ApiError::new(
                503,
                "audit_unavailable",
                format!("{why}: the tool was not approved"),
            )
        })?;
        let (previous, generation) = self.shared.approve_tool(name, &digest).map_err(|e| {
            tracing::error!(error = %e, "cannot approve a tool");
            ApiError::new(
                500,
                "pins_unwritable",
                format!("the tool pins cannot be written: {e}"),
            )
        })?;
        let record = AuditRecord {
            tool: Some(name.to_owned()),
            upstream: tool["upstream"].as_str().map(Arc::from),
            ..AuditRecord::admin(
                now_us(),
                req.started.elapsed().as_micros() as u64,
                req.peer,
                AdminChange {
                    actor: Some(actor.to_string()),
                    op: "approve",
                    kind: "tools".to_owned(),
                    id: name.to_owned(),
                    old_version: None,
                    new_version: None,
                    digest: Some(digest.clone()),
                    diff: json!({"pinned_digest": {"old": previous, "new": digest}}).to_string(),
                    generation,
                },
            )
        };
        let seq = self.audit.borrow_mut().commit(admission, record);
        tracing::info!(actor = %actor, tool = name, generation, "tool approved");
        let (pending, acked) = self.settle(generation, Some(seq)).await;
        let status = if pending.is_empty() { 200 } else { 202 };
        let body = json!({
            "generation": generation,
            "results": [{"kind": "tools", "id": name, "digest": digest, "previous_digest": previous}],
            "shards": {"total": self.shared.seen.len(), "pending": pending},
            "propagation_us": acked.map(|d| d.as_micros() as u64),
        })
        .to_string();
        let etag = format!("\"{digest}\"");
        response::write(
            out,
            status,
            &[("ETag", &etag)],
            Body::Json(body.as_bytes()),
            true,
        );
        Ok(())
    }
}

impl Handler for AdminApi {
    async fn handle(&self, req: &Request<'_>, out: &mut Vec<u8>) -> bool {
        let (actor, result) = match self.authenticate(req) {
            Ok(a) => {
                let r = self.route(&a, req, out).await;
                (Some(a), r)
            }
            Err(e) => (None, Err(e)),
        };
        if let Err(e) = result {
            out.clear();
            e.write(out);
            if e.status == 401 || req.head.method != Method::Get {
                self.audit_refusal(req, actor.as_deref(), &e);
            }
        }
        true
    }

    fn refuse(
        &self,
        refusal: &Refusal,
        _peer: Option<SocketAddr>,
        _started: Instant,
        out: &mut Vec<u8>,
    ) {
        let status = refusal.wire().status;
        let (code, message) = match status {
            413 => (
                "body_too_large",
                "the request body is larger than `admin.max_body_bytes`",
            ),
            408 => ("request_timeout", "the request did not arrive in time"),
            431 => ("headers_too_large", "the request head is too large"),
            _ => (
                "malformed_request",
                "the request is not well-formed HTTP/1.1",
            ),
        };
        let body = json!({"error": {"code": code, "message": message}}).to_string();
        response::write(out, status, &[], Body::Json(body.as_bytes()), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_parse_quoted_or_bare_and_nothing_else() {
        assert_eq!(parse_etag(b"\"12\""), Some(12));
        assert_eq!(parse_etag(b" 7 "), Some(7));
        for bad in [
            &b"\"\""[..],
            b"W/\"1\"",
            b"abc",
            b"-1",
            b"99999999999999999999",
            b"*",
        ] {
            assert_eq!(parse_etag(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn transaction_operations_need_a_precondition_and_a_known_shape() {
        let e = tx_ops(
            br#"{"operations":[{"op":"put","kind":"users","id":"a","spec":{"groups":[]}}]}"#,
        )
        .err()
        .map(|e| (e.status, e.code));
        assert_eq!(e, Some((428, "precondition_required")));
        let e = tx_ops(br#"{"operations":[],"extra":1}"#)
            .err()
            .map(|e| e.code);
        assert_eq!(e, Some("invalid_document"));
        let e = tx_ops(br#"{"operations":[{"op":"put","kind":"users","id":"a","if_none_match":true,"spec":{"grups":[]}}]}"#)
            .err()
            .map(|e| (e.status, e.message));
        assert!(matches!(e, Some((400, m)) if m.contains("unknown field `grups`")));
        let ok =
            tx_ops(br#"{"operations":[{"op":"delete","kind":"agents","id":"b","if_match":3}]}"#)
                .unwrap();
        assert_eq!(ok[0].pre, Precondition::IfMatch(3));
        assert!(ok[0].spec.is_none());
    }
}

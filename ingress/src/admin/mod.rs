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
mod connections;
mod documents;
mod error;
mod request;
mod routes;
mod subtokens;
mod tools;
mod usage;
mod validate;
mod write;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use toolgate_control::model::{check_id, diff};
use toolgate_control::state::{check_references, check_upstream_changes, dangling_tools};
use toolgate_control::{
    Backend, Change, Kind, Op, OpError, Precondition, Spec, State, SubtokenSpec,
};
use toolgate_core::audit::{truncate, AdminChange, AuditRecord, Decision, Outcome, Reason};
use toolgate_core::identity::{bearer, key_hash, parse_key_hash, KeyHash};
use toolgate_core::refusal::Refusal;
use toolgate_core::subtoken::Claims;
use toolgate_decision::pins::PinStatus;
use toolgate_sinks::{AuditHealth, AuditProducer, RingWriter};

use crate::http::head::{Limits, Method};
use crate::http::response::{self, Body};
use crate::http::server::{serve, ConnConfig, Handler, Request};
use crate::shared::{Shared, Sources};

use documents::*;
use error::ApiError;
use request::*;
use subtokens::*;

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
            let listener = match crate::shard::bind_alone(addr) {
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
    match rx.recv_timeout(crate::shard::START_TIMEOUT) {
        Ok(Ok(bound)) => Ok(bound),
        Ok(Err(reason)) => Err(AdminError::Bind { addr, reason }),
        Err(e) => Err(AdminError::Executor(crate::shard::not_started(e))),
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

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Handler for AdminApi {
    async fn handle(&self, req: &Request<'_>, out: &mut Vec<u8>) {
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

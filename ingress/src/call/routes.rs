//! The agent listener's paths: `/mcp` (the call driver), `/rest/…` (the
//! REST door), the RFC 9728
//! protected resource metadata, health and readiness, and the refusal of
//! requests that could not be read.

use std::net::SocketAddr;
use std::time::Instant;

use toolgate_core::audit::{Decision, Outcome, Reason};
use toolgate_core::refusal::{Refusal, RefusalKind};

use super::ctx::CallCtx;
use super::finish::write_refusal;
use super::identify::RESOURCE_METADATA_PATH;
use super::Gateway;
use crate::http::head::Method;
use crate::http::response::{self, Body};
use crate::http::server::{Handler, Request};

impl Handler for Gateway {
    async fn handle(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let path = req.head.path(req.buf);
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        match path {
            b"/mcp" => self.mcp(req, out).await,
            p if p.starts_with(super::REST_PREFIX) => self.rest(req, out).await,
            p if p.starts_with(super::CONNECT_PREFIX.as_bytes()) => self.connect(req, out).await,
            p if p == RESOURCE_METADATA_PATH.as_bytes() => self.resource_metadata(req, out),
            b"/.well-known/jwks.json" => self.jwks(out),
            b"/healthz" => health(out, true),
            b"/readyz" => readiness(out, &self.shared),
            _ => {
                let r = Refusal::new(RefusalKind::PathNotFound);
                write_refusal(out, &r, None, None, None, false, true);
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
        write_refusal(out, refusal, None, None, Some("1"), false, false);
        // Requests refused before they could be read are audited too, when
        // the ring has room: they are attempts on the gateway.
        let admission = self.audit.borrow_mut().admit();
        if let Ok(admission) = admission {
            let ctx = CallCtx::new(started, peer, false, Reason::Refused(refusal.kind));
            let record = ctx.into_record(
                self.shard,
                Decision::Deny,
                w.status,
                Outcome::Failure,
                Some(w.code),
            );
            self.audit.borrow_mut().commit(admission, record);
        }
    }
}

impl Gateway {
    /// RFC 9728 protected resource metadata: where agents get tokens for
    /// toolgate. 404 when `[auth.jwt]` is not configured.
    fn resource_metadata(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        if req.head.method != Method::Get {
            let r = Refusal::new(RefusalKind::MethodNotAllowed);
            write_refusal(out, &r, None, None, Some("GET"), false, true);
            return;
        }
        let snapshot = self.snapshot.borrow_mut().current();
        let Some(jwt) = snapshot.jwt.as_deref() else {
            let r = Refusal::new(RefusalKind::PathNotFound);
            write_refusal(out, &r, None, None, None, false, true);
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
}

impl Gateway {
    /// `/.well-known/jwks.json`: the public keys of toolgate's end-user
    /// assertions, for upstreams to verify them (404 without
    /// `[identity_assertions]`).
    fn jwks(&self, out: &mut Vec<u8>) {
        let Some(signer) = &self.assertions else {
            let r = Refusal::new(RefusalKind::PathNotFound);
            write_refusal(out, &r, None, None, None, false, true);
            return;
        };
        let signer = signer.borrow_mut().current();
        response::write(out, 200, &[], Body::Json(signer.jwks().as_bytes()), true);
    }
}

/// `/readyz`: 503 naming the stdio upstreams that are crash-looping, else
/// as [`health`] says of [`Shared::ready`](crate::shared::Shared::ready).
fn readiness(out: &mut Vec<u8>, shared: &crate::shared::Shared) {
    let unhealthy = shared.unhealthy_stdio();
    if unhealthy.is_empty() {
        return health(out, shared.ready());
    }
    let body = serde_json::json!({ "status": "unhealthy", "upstreams": unhealthy }).to_string();
    response::write(out, 503, &[], Body::Json(body.as_bytes()), true);
}

/// `/healthz` (always ok while the process serves) and `/readyz` (ok once
/// the upstream catalogs are fetched).
fn health(out: &mut Vec<u8>, ready: bool) {
    let (status, body): (u16, &[u8]) = if ready {
        (200, br#"{"status":"ok"}"#)
    } else {
        (503, br#"{"status":"starting"}"#)
    };
    response::write(out, status, &[], Body::Json(body), true);
}

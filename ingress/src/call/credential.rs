//! Phase 7, the credential: what a call carries to its upstream — the
//! upstream's service credential (the agent's own token never goes on),
//! the end user, and with `[upstreams.identity]` who that user is: an
//! assertion toolgate signs now, or the user's own token exchanged at the
//! IdP for one scoped to this upstream (RFC 8693).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use toolgate_core::audit::IdentityRecord;
use toolgate_core::config::IdentityTarget;
use toolgate_core::identity::bearer;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_upstream::assertion::Claims;
use toolgate_upstream::exchange::{Exchanged, Exchanger};
use toolgate_upstream::{Credential, Upstream};

use super::ctx::{now_secs, CallCtx};
use super::forward::Admitted;
use super::Gateway;
use crate::http::server::Request;

impl Gateway {
    /// What this call carries to its upstream: the gateway's credential
    /// for the tool (none usable → nothing is sent), the end user, and
    /// with `[upstreams.identity]` who the call is for (recorded in the
    /// call's `identity`).
    pub(super) async fn inject(
        &self,
        upstream: &Upstream,
        call: &Admitted,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Credential, Refusal> {
        let credential = upstream
            .credential()
            .map(|c| c.for_user(ctx.user.clone()))
            .map_err(|e| Refusal::new(e.refusal_kind()))?;
        let Some(target) = &upstream.info().identity else {
            return Ok(credential);
        };
        if let Some(exchanger) = upstream.exchanger() {
            return self
                .exchange(exchanger, target, credential, call, req, ctx)
                .await;
        }
        let signer = self.signer()?;
        let minted = signer.mint(target, &claims(call, ctx), now_secs());
        ctx.identity = Some(IdentityRecord {
            mode: target.mode.as_str(),
            jti: Some(minted.jti),
            exchange: None,
            error: None,
        });
        Ok(credential.with_identity(Rc::new(minted.line), &target.header))
    }

    /// The assertion signer. `check` refuses a configuration that needs
    /// one without `[identity_assertions]`, so this never fails there;
    /// nothing is sent rather than an unattributed call.
    fn signer(&self) -> Result<Arc<toolgate_upstream::assertion::Signer>, Refusal> {
        Ok(self
            .assertions
            .as_ref()
            .ok_or(Refusal::new(RefusalKind::UpstreamCredentialUnavailable))?
            .borrow_mut()
            .current()
            .as_ref()
            .clone())
    }

    /// The call's credential for a `token_exchange` upstream: the user's
    /// token (the IdP's JWT that identified the call) exchanged for this
    /// upstream, or kept from an earlier exchange. A call without such a
    /// token, or whose exchange fails, is refused, or with `fallback =
    /// "credential"` goes with the service credential alone.
    async fn exchange(
        &self,
        exchanger: &Exchanger,
        target: &IdentityTarget,
        credential: Credential,
        call: &Admitted,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Credential, Refusal> {
        let endpoint = exchanger.endpoint();
        let subject = ctx
            .user_token
            .then(|| bearer(req.head.header(req.buf, "authorization")).ok())
            .flatten()
            .and_then(|t| std::str::from_utf8(t).ok());
        let jti: Cell<Option<Box<str>>> = Cell::new(None);
        let got = match (subject, &ctx.user, &ctx.agent) {
            (Some(subject), Some(user), Some(agent)) => {
                let claims = claims(call, ctx);
                let actor = || {
                    let signer = self.signer().ok()?;
                    let (token, id) = signer.mint_actor(&endpoint.token_url(), &claims, now_secs());
                    jti.set(Some(id));
                    Some(token)
                };
                exchanger
                    .token(agent, user, subject, actor)
                    .await
                    .map_err(|e| Refusal::with(RefusalKind::TokenExchangeFailed, e.0))
            }
            _ => Err(Refusal::new(RefusalKind::UserTokenRequired)),
        };
        let record = |exchange, error| IdentityRecord {
            mode: target.mode.as_str(),
            jti: jti.take(),
            exchange: Some(exchange),
            error,
        };
        match got {
            Ok(Exchanged::Fresh(line)) => {
                ctx.identity = Some(record("exchanged", None));
                Ok(credential.with_identity(line, &target.header))
            }
            Ok(Exchanged::Cached(line)) => {
                ctx.identity = Some(record("cached", None));
                Ok(credential.with_identity(line, &target.header))
            }
            Err(refusal) => {
                let why = refusal.detail.as_deref().map(Box::from);
                tracing::debug!(
                    upstream = upstream_name(ctx),
                    reason = refusal.kind.reason(),
                    error = why.as_deref().unwrap_or(""),
                    "end user's token not exchanged"
                );
                if endpoint.falls_back() && credential.has_service_credential() {
                    ctx.identity = Some(record("fallback", why));
                    return Ok(credential);
                }
                ctx.identity = Some(record("failed", why));
                Err(refusal)
            }
        }
    }
}

fn upstream_name(ctx: &CallCtx) -> &str {
    ctx.upstream.as_deref().unwrap_or("")
}

/// What a signed token says of `call`.
fn claims<'a>(call: &'a Admitted, ctx: &'a CallCtx) -> Claims<'a> {
    Claims {
        user: ctx.user.as_deref(),
        agent: ctx.agent.as_deref().unwrap_or(""),
        customer: ctx.customer.as_deref(),
        tool: &call.tool,
    }
}

//! Phase 7, the credential: what a call carries to its upstream — the
//! upstream's service credential (the agent's own token never goes on),
//! the end user, and with `[upstreams.identity]` who that user is: an
//! assertion toolgate signs now, or the user's own token exchanged at the
//! IdP for one scoped to this upstream (RFC 8693).

use std::cell::Cell;
use std::sync::Arc;

use toolgate_core::audit::IdentityRecord;
use toolgate_core::config::{IdentityMode, IdentityTarget};
use toolgate_core::identity::bearer;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_upstream::assertion::Claims;
use toolgate_upstream::exchange::{Exchanged, Exchanger};
use toolgate_upstream::{Credential, Upstream};

use super::ctx::{now_secs, CallCtx};
use super::forward::Admitted;
use super::Gateway;
use crate::accounts::{Account, Accounts};
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
        if target.mode == IdentityMode::ConnectedAccount {
            return self.account(upstream, target, credential, ctx);
        }
        let signer = self.signer()?;
        let minted = signer.mint(target, &claims(call, ctx), now_secs());
        ctx.identity = Some(IdentityRecord {
            mode: target.mode.as_str(),
            jti: Some(minted.jti),
            token: None,
            error: None,
        });
        Ok(credential.with_identity(Arc::new(minted.line), &target.header))
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
            token: Some(exchange),
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

impl Gateway {
    /// The call's credential for a `connected_account` upstream: its
    /// user's own access token, as the refresher keeps it. A user who has
    /// not connected (or must connect again) is refused with the link that
    /// connects them; nothing is sent.
    fn account(
        &self,
        upstream: &Upstream,
        target: &IdentityTarget,
        credential: Credential,
        ctx: &mut CallCtx,
    ) -> Result<Credential, Refusal> {
        let record = |token| IdentityRecord {
            mode: target.mode.as_str(),
            jti: None,
            token: Some(token),
            error: None,
        };
        let (Some(accounts), Some(reader)) = (&self.shared.accounts, &self.accounts) else {
            return Err(Refusal::new(RefusalKind::UpstreamCredentialUnavailable));
        };
        let refuse = |ctx: &mut CallCtx, why: &'static str, detail: String| {
            ctx.identity = Some(record(why));
            Refusal::with(
                RefusalKind::UserNotConnected {
                    url_elicitation: ctx.url_elicitation,
                },
                detail,
            )
        };
        let Some(user) = ctx.user.clone() else {
            return Err(refuse(
                ctx,
                "not_connected",
                "the call names no end user".to_owned(),
            ));
        };
        let live = reader.borrow_mut().current();
        let again = match Accounts::lookup(&live, upstream.name(), &user, now_secs()) {
            Account::Ready(line) => {
                ctx.identity = Some(record("connected"));
                return Ok(credential.with_identity(line, &target.header));
            }
            Account::Refreshing => {
                ctx.identity = Some(record("refreshing"));
                return Err(Refusal::new(RefusalKind::UpstreamCredentialUnavailable));
            }
            Account::NotConnected => false,
            Account::Reconnect => true,
        };
        let link = accounts.link(upstream.name(), &user);
        let message = if again {
            format!(
                "the connection of `{}` expired or was revoked: connect it again",
                upstream.name()
            )
        } else {
            format!("connect your account for `{}`", upstream.name())
        };
        ctx.refusal_data = Some(connect_data(&link, &message, ctx.url_elicitation));
        let detail = if again {
            format!("its connection expired or was revoked; the user connects it again at {link}")
        } else {
            format!("the user connects it at {link}")
        };
        Err(refuse(
            ctx,
            if again { "reconnect" } else { "not_connected" },
            detail,
        ))
    }
}

/// The `data` of a not-connected refusal: the link, and for a client
/// that takes them, the URL-mode elicitation (MCP's
/// `URLElicitationRequiredError`) that opens it, with `message` for the
/// user (the refusal's own message carries the link too).
fn connect_data(link: &str, message: &str, url_elicitation: bool) -> String {
    if url_elicitation {
        let id = toolgate_upstream::connect::random_b64(12);
        serde_json::json!({
            "elicitations": [{"mode": "url", "elicitationId": id, "url": link, "message": message}],
            "connect_url": link,
        })
        .to_string()
    } else {
        serde_json::json!({ "connect_url": link }).to_string()
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

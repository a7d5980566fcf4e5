//! The agent listener's connect flow for connected accounts
//! (`[upstreams.identity] mode = "connected_account"`):
//!
//! - `GET /connect/{upstream}?link=…` — a user opens the link a refused
//!   call gave their agent; toolgate sends the browser to the provider's
//!   consent page with a sealed `state` (user, upstream, PKCE verifier,
//!   expiry) and sets a cookie holding the state's nonce.
//! - `GET /connect/{upstream}/callback?code=…&state=…` — the provider
//!   sends the browser back; toolgate takes the state once (in the browser
//!   that started it), redeems the code, seals the refresh token into the
//!   control store and publishes the access token.
//! - `DELETE /connect/{upstream}` — the user, identified as on `/mcp`,
//!   removes their connection.
//!
//! Every request here is audited like a call (`method` `connect`,
//! `connect/callback`, `disconnect`); no token is ever in a record, a page
//! or a log.

use std::rc::Rc;
use std::sync::Arc;

use toolgate_core::audit::{Decision, IdentityRecord, Outcome, Reason};
use toolgate_core::config::IdentityMode;
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_upstream::connect::{purpose, random_b64, GrantError, Link, State};
use toolgate_upstream::path::{query_pairs, split_target};

use super::ctx::{now_secs, CallCtx};
use super::identify::user_of;
use super::Gateway;
use crate::accounts::Accounts;
use crate::http::head::Method;
use crate::http::response::{self, Body};
use crate::http::server::Request;

/// Where the connect flow's paths start.
pub const CONNECT_PREFIX: &str = "/connect/";

/// The cookie holding a consent's nonce, per upstream.
fn cookie_name(upstream: &str) -> String {
    format!("toolgate_connect_{upstream}")
}

/// What a connect request is answered with, short of a refusal.
enum Page {
    /// `302` to the provider, setting the cookie.
    Consent { location: String, cookie: String },
    /// The account is connected.
    Connected,
    /// `DELETE`: whether there was a connection to remove.
    Removed(bool),
}

impl Gateway {
    /// Serves `/connect/…`: the flow, its response and its record.
    pub(super) async fn connect(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let Some(slot) = self.reserve(out) else {
            return;
        };
        let mut ctx = CallCtx::new(req.started, req.peer, false, Reason::Answered);
        let result = self.connect_flow(req, &mut ctx).await;
        let (decision, status, outcome) = match result {
            Ok(Page::Consent { location, cookie }) => {
                ctx.reason = Reason::ConnectStarted;
                let headers = [
                    ("Location", location.as_str()),
                    ("Set-Cookie", cookie.as_str()),
                ];
                response::write(out, 302, &headers, Body::Empty, true);
                (Decision::Allow, 302, Outcome::Success)
            }
            Ok(Page::Connected) => {
                ctx.reason = Reason::AccountConnected;
                let upstream = ctx.upstream.as_deref().unwrap_or("");
                let page = page(
                    "Account connected",
                    &format!("Your account for {} is connected. You can close this window and return to your agent.", html(upstream)),
                );
                let clear = format!(
                    "{}=; Path={CONNECT_PREFIX}{upstream}/callback; Max-Age=0; HttpOnly; SameSite=Lax",
                    cookie_name(upstream)
                );
                response::write(
                    out,
                    200,
                    &[("Set-Cookie", &clear)],
                    Body::Html(page.as_bytes()),
                    true,
                );
                (Decision::Allow, 200, Outcome::Success)
            }
            Ok(Page::Removed(was)) => {
                ctx.reason = Reason::AccountDisconnected;
                let body = serde_json::json!({
                    "upstream": ctx.upstream.as_deref(),
                    "user": ctx.user.as_deref(),
                    "disconnected": was,
                })
                .to_string();
                response::write(out, 200, &[], Body::Json(body.as_bytes()), true);
                (Decision::Allow, 200, Outcome::Success)
            }
            Err(r) => {
                let w = r.wire();
                let message = match &r.detail {
                    Some(d) => format!("{}: {d}", w.message),
                    None => w.message.to_string(),
                };
                if req.head.method == Method::Delete {
                    let body = serde_json::json!({"error": r.kind.reason(), "message": message})
                        .to_string();
                    response::write(out, w.status, &[], Body::Json(body.as_bytes()), true);
                } else {
                    let page = page("Account not connected", &html(&message));
                    response::write(out, w.status, &[], Body::Html(page.as_bytes()), true);
                }
                ctx.reason = Reason::Refused(r.kind);
                (r.kind.decision(), w.status, Outcome::Failure)
            }
        };
        let record = ctx.into_record(self.shard, decision, status, outcome, None);
        let seq = self.audit.borrow_mut().commit(slot, record);
        self.await_recorded(seq).await;
    }

    async fn connect_flow(&self, req: &Request<'_>, ctx: &mut CallCtx) -> Result<Page, Refusal> {
        let target = std::str::from_utf8(req.head.path(req.buf))
            .map_err(|_| Refusal::new(RefusalKind::PathNotFound))?;
        let (path, query) =
            split_target(target).map_err(|_| Refusal::new(RefusalKind::PathNotFound))?;
        let rest = path.strip_prefix(CONNECT_PREFIX).unwrap_or("");
        let (name, callback) = match rest.strip_suffix("/callback") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let accounts = self
            .shared
            .accounts
            .as_ref()
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        let provider = accounts
            .provider(name)
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        ctx.upstream = Some(Arc::from(provider.upstream()));
        ctx.identity = Some(IdentityRecord {
            mode: IdentityMode::ConnectedAccount.as_str(),
            jti: None,
            token: None,
            error: None,
        });
        let pairs = query_pairs(query)
            .map_err(|e| Refusal::with(RefusalKind::InvalidRequest, e.to_string()))?;
        let param = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.first())
                .map(String::as_str)
        };
        match (req.head.method, callback) {
            (Method::Get, false) => {
                ctx.method = Some("connect".into());
                start(accounts, provider.upstream(), param("link"), req, ctx)
            }
            (Method::Get, true) => {
                ctx.method = Some("connect/callback".into());
                let cookie = cookie_value(req, &cookie_name(provider.upstream()));
                self.callback(accounts, req, provider.upstream(), &param, cookie, ctx)
                    .await
            }
            (Method::Delete, false) => {
                ctx.method = Some("disconnect".into());
                self.disconnect(accounts, provider.upstream(), req, ctx)
                    .await
            }
            _ => Err(Refusal::new(RefusalKind::MethodNotAllowed)),
        }
    }

    /// The provider sent the browser back: take the state, redeem the
    /// code, keep the grant.
    async fn callback<'q>(
        &self,
        accounts: &Arc<Accounts>,
        req: &Request<'_>,
        upstream: &str,
        param: &dyn Fn(&str) -> Option<&'q str>,
        cookie: Option<String>,
        ctx: &mut CallCtx,
    ) -> Result<Page, Refusal> {
        let state: State = param("state")
            .and_then(|s| accounts.sealer().open_json(purpose::STATE, s))
            .ok_or(Refusal::new(RefusalKind::ConnectStateInvalid))?;
        ctx.user = Some(Arc::from(state.user.as_str()));
        signed_in_as(accounts, req, &state.user)?;
        let browser = cookie.as_deref() == Some(state.nonce.as_str());
        if state.upstream != upstream || state.expires < now_secs() || !browser {
            return Err(Refusal::new(RefusalKind::ConnectStateInvalid));
        }
        if !accounts.take_state(&state.nonce, state.expires) {
            return Err(Refusal::with(
                RefusalKind::ConnectStateInvalid,
                "this consent was used already",
            ));
        }
        if let Some(e) = param("error") {
            let code: String = e
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(Refusal::with(RefusalKind::ConnectRefused, code));
        }
        let code = param("code").ok_or(Refusal::with(
            RefusalKind::ConnectFailed,
            "the provider sent no code",
        ))?;
        let provider = accounts
            .provider(upstream)
            .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
        let pool = Rc::clone(
            self.connect_pools
                .borrow_mut()
                .entry(upstream.to_owned())
                .or_insert_with(|| Rc::new(provider.pool())),
        );
        let granted = provider
            .redeem(&pool, code, &state.verifier)
            .await
            .map_err(|e| match e {
                GrantError::Revoked => {
                    Refusal::with(RefusalKind::ConnectFailed, "the provider refused the code")
                }
                GrantError::Failed(why) => Refusal::with(RefusalKind::ConnectFailed, why),
            })?;
        let keeper = Arc::clone(accounts);
        let (u, s) = (upstream.to_owned(), state.user.clone());
        glommio::executor()
            .spawn_blocking(move || keeper.keep(&u, &s, granted))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "connected account could not be stored");
                Refusal::with(RefusalKind::ConnectFailed, "the grant could not be stored")
            })?;
        if let Some(i) = ctx.identity.as_mut() {
            i.token = Some("connected");
        }
        Ok(Page::Connected)
    }

    /// The user removes their connection: identified as on `/mcp`.
    async fn disconnect(
        &self,
        accounts: &Arc<Accounts>,
        upstream: &str,
        req: &Request<'_>,
        ctx: &mut CallCtx,
    ) -> Result<Page, Refusal> {
        let (snapshot, _) = self.current();
        let agent = ctx.identified(self.identify(&snapshot, req)?);
        ctx.user = user_of(agent, req, ctx.user.take())?;
        let user = ctx.user.clone().ok_or(Refusal::with(
            RefusalKind::InvalidRequest,
            "the request names no end user",
        ))?;
        let remover = Arc::clone(accounts);
        let u = upstream.to_owned();
        let was = glommio::executor()
            .spawn_blocking(move || remover.disconnect(&u, &user))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "connected account could not be removed");
                Refusal::new(RefusalKind::UpstreamCredentialUnavailable)
            })?;
        Ok(Page::Removed(was))
    }
}

/// A user opened a connect link: send the browser to the provider.
fn start(
    accounts: &Accounts,
    upstream: &str,
    link: Option<&str>,
    req: &Request<'_>,
    ctx: &mut CallCtx,
) -> Result<Page, Refusal> {
    let link: Link = link
        .and_then(|l| accounts.sealer().open_json(purpose::LINK, l))
        .ok_or(Refusal::new(RefusalKind::ConnectLinkInvalid))?;
    ctx.user = Some(Arc::from(link.user.as_str()));
    if link.upstream != upstream || link.expires < now_secs() {
        return Err(Refusal::new(RefusalKind::ConnectLinkInvalid));
    }
    signed_in_as(accounts, req, &link.user)?;
    let lifetime = accounts.link_lifetime_s();
    let state = State {
        upstream: upstream.to_owned(),
        user: link.user,
        verifier: random_b64(32),
        nonce: random_b64(16),
        expires: now_secs() + lifetime,
    };
    let sealed = accounts.sealer().seal_json(purpose::STATE, &state);
    let provider = accounts
        .provider(upstream)
        .ok_or(Refusal::new(RefusalKind::PathNotFound))?;
    let cookie = format!(
        "{}={}; Path={CONNECT_PREFIX}{upstream}/callback; Max-Age={lifetime}; HttpOnly; SameSite=Lax{}",
        cookie_name(upstream),
        state.nonce,
        if accounts.secure() { "; Secure" } else { "" }
    );
    Ok(Page::Consent {
        location: provider.authorize_url(&sealed, &state.verifier),
        cookie,
    })
}

/// With `[connected_accounts] user_header`, that the browser's signed-in
/// user (as the proxy in front says) is `user`: a link or consent serves
/// only the user it names.
fn signed_in_as(accounts: &Accounts, req: &Request<'_>, user: &str) -> Result<(), Refusal> {
    let Some(name) = accounts.user_header() else {
        return Ok(());
    };
    if req.head.count(req.buf, name) == 1
        && req.head.header(req.buf, name).map(<[u8]>::trim_ascii) == Some(user.as_bytes())
    {
        Ok(())
    } else {
        Err(Refusal::new(RefusalKind::ConnectUserMismatch))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value(req: &Request<'_>, name: &str) -> Option<String> {
    let raw = req.head.header(req.buf, "cookie")?;
    let text = std::str::from_utf8(raw).ok()?;
    text.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// `s` safe in HTML text.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small page for the browser; `body` is already HTML-safe.
fn page(title: &str, body: &str) -> String {
    format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1><p>{body}</p></body></html>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_text_is_escaped() {
        assert_eq!(
            html("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}

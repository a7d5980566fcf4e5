//! Phase: identify the caller — the agent, and the end user it acts for.
//!
//! The agent is named by the connection's verified client certificate
//! (mTLS, `client_cert_names`) and/or `Authorization: Bearer`: a sub-token,
//! a JWT when `[auth.jwt]` is configured and the token has a JWT's shape,
//! else an API key. Only the header is read: a token in the query string is
//! never accepted. The end user comes from the token, or from
//! `Toolgate-On-Behalf-Of` for agents allowed to name one.

use std::net::SocketAddr;
use std::sync::Arc;

use toolgate_core::identity::{bearer, key_hash, BearerError};
use toolgate_core::jwt::{looks_like_jwt, TokenError};
use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_core::subtoken::looks_like_subtoken;
use toolgate_decision::{Agent, Snapshot};

use super::ctx::now_secs;
use super::tokens::TokenCache;
use super::Gateway;
use crate::http::server::Request;

/// Header through which an agent allowed to (`act_for_users`) names the
/// end user it acts for.
pub const ON_BEHALF_OF: &str = "toolgate-on-behalf-of";

/// Path of the RFC 9728 protected resource metadata.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Who is calling: the agent, the end user its token names, and the
/// customer the call is attributed to.
pub(super) struct Caller<'s> {
    pub(super) agent: &'s Agent,
    /// The token's customer (a sub-token's, a JWT's customer claim), else
    /// the agent's.
    pub(super) customer: Arc<str>,
    pub(super) user: Option<Arc<str>>,
    pub(super) groups: Option<Arc<[Arc<str>]>>,
    /// A sub-token's tool narrowing.
    pub(super) scope: Option<Vec<String>>,
    /// Whether the user was named by the IdP's JWT in `Authorization`
    /// (the token a `token_exchange` upstream's exchange starts from).
    pub(super) user_token: bool,
}

impl<'s> Caller<'s> {
    fn agent(agent: &'s Agent) -> Self {
        Caller {
            agent,
            customer: Arc::clone(&agent.customer),
            user: None,
            groups: None,
            scope: None,
            user_token: false,
        }
    }
}

/// The shard's verified-token cache and the snapshot generation it is
/// valid for.
struct Tokens<'c> {
    cache: &'c TokenCache,
    generation: u64,
}

impl Gateway {
    /// Identifies the caller of `req` under `snap`.
    pub(super) fn identify<'s>(
        &self,
        snap: &'s Snapshot,
        req: &Request<'_>,
    ) -> Result<Caller<'s>, Refusal> {
        let tokens = Tokens {
            cache: &self.tokens,
            generation: self.snapshot.borrow().generation(),
        };
        identify(snap, req, &tokens).inspect_err(|r| {
            if r.kind == RefusalKind::InvalidToken(TokenError::UnknownKey) {
                // Perhaps the IdP rotated its keys: ask for a JWKS fetch
                // (rate-limited off the request path); this call stays refused.
                self.shared.want_jwks();
            }
        })
    }
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
        return Ok(Caller::agent(cert_agent));
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
    let refused = |e| Refusal::new(RefusalKind::InvalidToken(e));
    if let Some(verifier) = snap
        .subtokens
        .as_deref()
        .filter(|_| looks_like_subtoken(token))
    {
        let claims = verifier.verify(token, now_secs()).map_err(refused)?;
        let agent = snap
            .agent_by_id(&claims.agent)
            .ok_or_else(|| refused(TokenError::UnknownAgent))?;
        return Ok(Caller {
            agent,
            customer: claims
                .customer
                .map(Arc::from)
                .unwrap_or_else(|| Arc::clone(&agent.customer)),
            user: claims.user.map(Arc::from),
            groups: None,
            scope: claims.tools,
            user_token: false,
        });
    }
    if let Some(verifier) = snap.jwt.as_deref().filter(|_| looks_like_jwt(token)) {
        let now = now_secs();
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
            customer: id.customer.unwrap_or_else(|| Arc::clone(&agent.customer)),
            user: id.user,
            // Groups belong to the token's user: none without one, so they
            // never attach to a user named by header instead.
            groups: id.groups.filter(|_| has_user),
            scope: None,
            user_token: has_user,
        });
    }
    let agent = snap
        .agent_by_key(&key_hash(token))
        .ok_or(Refusal::new(RefusalKind::UnknownCredential))?;
    Ok(Caller::agent(agent))
}

/// The end user the agent acts for: the one its bearer token names,
/// else `Toolgate-On-Behalf-Of`, which only agents configured with
/// `act_for_users` may send. A header naming someone other than the
/// token's user is refused: the IdP's word is not overridden.
pub(super) fn user_of(
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

/// The `WWW-Authenticate` challenge of a 401: with `[auth.jwt]` it points
/// at the protected resource metadata (RFC 9728) on the host the agent
/// used; `Host` values that are not a plain host and port fall back to the
/// listen address.
pub(super) fn challenge(
    snap: &Snapshot,
    req: &Request<'_>,
    listen: SocketAddr,
    kind: RefusalKind,
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::testing::{bot_key, snapshot, with_request};

    fn who(snap: &Snapshot, head: &str) -> Result<(String, Option<String>), RefusalKind> {
        let cache = TokenCache::default();
        let tokens = Tokens {
            cache: &cache,
            generation: 1,
        };
        with_request(head, "", |req| {
            let caller = identify(snap, req, &tokens).map_err(|r| r.kind)?;
            let user = user_of(caller.agent, req, caller.user).map_err(|r| r.kind)?;
            Ok((caller.agent.id.to_string(), user.map(|u| u.to_string())))
        })
    }

    #[test]
    fn api_key_in_the_authorization_header_names_the_agent() {
        let snap = snapshot("");
        let head = format!("POST /mcp HTTP/1.1\r\nAuthorization: Bearer {}", bot_key());
        assert_eq!(who(&snap, &head), Ok(("bot".to_owned(), None)));
    }

    #[test]
    fn missing_malformed_and_unknown_credentials_are_told_apart() {
        let snap = snapshot("");
        assert_eq!(
            who(&snap, "POST /mcp HTTP/1.1"),
            Err(RefusalKind::MissingCredential)
        );
        assert_eq!(
            who(&snap, "POST /mcp HTTP/1.1\r\nAuthorization: Basic Ym90OnB3"),
            Err(RefusalKind::UnknownCredential)
        );
        assert_eq!(
            who(
                &snap,
                "POST /mcp HTTP/1.1\r\nAuthorization: Bearer tg_not_a_key"
            ),
            Err(RefusalKind::UnknownCredential)
        );
    }

    #[test]
    fn only_agents_acting_for_users_may_name_one() {
        let snap = snapshot("");
        let bot = format!(
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {}\r\nToolgate-On-Behalf-Of: alice",
            bot_key()
        );
        assert_eq!(who(&snap, &bot), Err(RefusalKind::UserAssertionRefused));
        let proxy_key = toolgate_core::identity::format_key(&[2u8; 32]).0;
        let proxy = format!(
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {proxy_key}\r\nToolgate-On-Behalf-Of: alice"
        );
        assert_eq!(
            who(&snap, &proxy),
            Ok(("proxy".to_owned(), Some("alice".to_owned())))
        );
        let blank = format!(
            "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {proxy_key}\r\nToolgate-On-Behalf-Of: a b"
        );
        assert_eq!(who(&snap, &blank), Err(RefusalKind::InvalidRequest));
    }

    #[test]
    fn challenge_without_jwt_is_a_plain_bearer_realm() {
        let snap = snapshot("");
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let c = with_request("POST /mcp HTTP/1.1\r\nHost: gw", "", |req| {
            challenge(&snap, req, listen, RefusalKind::MissingCredential)
        });
        assert_eq!(c, "Bearer realm=\"toolgate\"");
    }
}

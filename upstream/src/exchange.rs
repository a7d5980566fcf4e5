//! OAuth 2.0 token exchange (RFC 8693) for upstreams with
//! `[upstreams.identity] mode = "token_exchange"`: the end user's own token,
//! the one toolgate verified at the front door, is exchanged at the IdP for
//! a token scoped to this upstream (RFC 8707 `resource`), optionally naming
//! the agent as the actor, and that token goes to the upstream instead of
//! the agent's.
//!
//! The exchange is on the request path the first time a user and agent
//! call the upstream on a shard; its answer is kept per shard (no lock)
//! until shortly before it expires, so later calls copy a header line.
//! Each shard's cache is bounded. A user's token for one upstream lives in
//! that upstream's cache alone, and is never logged: errors carry the IdP's
//! OAuth error code at most.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolgate_core::config::{ExchangeTarget, ResolvedUpstream};
use toolgate_core::secret::Secret;
use toolgate_net::client::Pool;
use toolgate_net::tls::{client_tls, ClientTls};

use crate::oauth::{basic_auth, form, token_request, token_response};

/// `grant_type` of a token exchange.
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The subject token's and the requested token's type.
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The actor token's type: a JWT toolgate signs.
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Time allowed for one exchange: the call waits for it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from the token endpoint, bytes.
const MAX_RESPONSE: usize = 64 * 1024;
/// Lifetime assumed when the IdP sends no `expires_in`: short, since the
/// token's real lifetime is unknown.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Exchanged tokens kept per upstream and shard; past this, expired ones
/// are dropped, then all (each is only a fresh exchange away).
const MAX_CACHED: usize = 4096;
/// Idle connections kept to the token endpoint per shard.
const IDLE_CONNECTIONS: usize = 4;

/// Why an upstream's exchange cannot be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The client secret cannot be read.
    #[error("upstream `{upstream}`: the token exchange client secret: {why}")]
    Secret {
        /// The upstream.
        upstream: String,
        /// Why (names the source, never the value).
        why: String,
    },
    /// TLS toward the token endpoint cannot be set up.
    #[error("upstream `{upstream}`: `token_url`: {why}")]
    Tls {
        /// The upstream.
        upstream: String,
        /// Why.
        why: String,
    },
}

/// An exchange that did not give the call a token: what the agent and the
/// log may be told (never a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExchangeFailed(pub String);

/// One upstream's token endpoint, as every shard uses it: read once at
/// start (the client secret included; a new secret takes a restart).
pub struct Endpoint {
    upstream: String,
    target: ExchangeTarget,
    /// The `resource` asked for.
    resource: String,
    /// The header the exchanged token goes in (`Bearer <token>`).
    header: String,
    /// `Basic …` of toolgate's client id and secret.
    basic: Secret,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("upstream", &self.upstream)
            .field("token_url", &self.target.token_url.path)
            .finish()
    }
}

impl Endpoint {
    /// The endpoint of `upstream`, when its identity mode is
    /// `token_exchange`. Errors: its secret or CA bundle cannot be read.
    pub fn load(upstream: &ResolvedUpstream) -> Result<Option<Arc<Endpoint>>, SetupError> {
        let Some(id) = &upstream.identity else {
            return Ok(None);
        };
        let Some(target) = &id.exchange else {
            return Ok(None);
        };
        let name = upstream.name().to_owned();
        let secret = target
            .client_secret
            .read()
            .map_err(|e| SetupError::Secret {
                upstream: name.clone(),
                why: e.to_string(),
            })?;
        let tls = client_tls(&target.token_url, target.ca_file.as_deref()).map_err(|e| {
            SetupError::Tls {
                upstream: name.clone(),
                why: e.to_string(),
            }
        })?;
        Ok(Some(Arc::new(Endpoint {
            basic: basic_auth(&target.client_id, &secret),
            upstream: name,
            target: target.clone(),
            resource: id.audience.clone(),
            header: id.header.clone(),
            tls,
        })))
    }

    /// The exchange request for `subject` (the user's token), with the
    /// agent's `actor` token when the upstream names the actor.
    fn request(&self, subject: &str, actor: Option<&str>) -> Secret {
        let mut body = format!(
            "grant_type={}&subject_token={}&subject_token_type={}&requested_token_type={}&resource={}",
            form(GRANT),
            form(subject),
            form(ACCESS_TOKEN),
            form(ACCESS_TOKEN),
            form(&self.resource)
        );
        if let Some(a) = &self.target.audience {
            body.push_str("&audience=");
            body.push_str(&form(a));
        }
        if let Some(s) = &self.target.scope {
            body.push_str("&scope=");
            body.push_str(&form(s));
        }
        if let Some(a) = actor {
            body.push_str("&actor_token=");
            body.push_str(&form(a));
            body.push_str("&actor_token_type=");
            body.push_str(&form(JWT));
        }
        token_request(&self.target.token_url, &self.basic, body)
    }

    /// Whether `token`, when it is a JWT whose claims name an audience,
    /// names this upstream's (the `resource`, or the `audience` asked for):
    /// a token the IdP scoped to something else is not sent here. An opaque
    /// token cannot be read, and is the upstream's to judge.
    fn for_this_upstream(&self, token: &str) -> bool {
        use base64::Engine as _;
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return true;
        };
        let Some(claims) = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            return true;
        };
        let wanted = |a: &str| a == self.resource || self.target.audience.as_deref() == Some(a);
        match claims.get("aud") {
            Some(serde_json::Value::String(a)) => wanted(a),
            Some(serde_json::Value::Array(list)) => {
                list.iter().filter_map(|a| a.as_str()).any(wanted)
            }
            _ => true,
        }
    }

    /// Whether the agent goes to the IdP as the actor.
    pub fn wants_actor(&self) -> bool {
        self.target.actor
    }

    /// Whether a failed exchange sends the service credential instead.
    pub fn falls_back(&self) -> bool {
        self.target.fallback == toolgate_core::config::ExchangeFallback::Credential
    }

    /// The audience of the actor token: the token endpoint, as written.
    pub fn token_url(&self) -> String {
        let u = &self.target.token_url;
        format!(
            "{}://{}{}",
            if u.tls { "https" } else { "http" },
            u.authority,
            u.path
        )
    }
}

/// An exchanged token kept for later calls.
struct Cached {
    line: Arc<Secret>,
    /// When it is no longer used (shortly before it expires).
    until: Instant,
}

/// How a call got its token.
pub enum Exchanged {
    /// Exchanged for this call.
    Fresh(Arc<Secret>),
    /// An earlier exchange's, still fresh.
    Cached(Arc<Secret>),
}

/// Who a cached token is for: the agent (the actor) and the end user.
type CacheKey = (Arc<str>, Arc<str>);

/// One shard's exchanges toward one upstream's token endpoint.
pub struct Exchanger {
    endpoint: Arc<Endpoint>,
    pool: Pool,
    /// Keyed by agent and user: a token exchanged with one agent as the
    /// actor is not another agent's.
    cache: RefCell<HashMap<CacheKey, Cached>>,
}

impl Exchanger {
    /// This shard's exchanger of `endpoint`.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        let pool = Pool::new(
            endpoint.target.token_url.dial_target(),
            IDLE_CONNECTIONS,
            endpoint.tls.clone(),
        );
        Self {
            endpoint,
            pool,
            cache: RefCell::default(),
        }
    }

    /// The endpoint's settings.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The token line (`{header}: Bearer …`) for `user` calling through
    /// `agent`, from the cache or exchanged now from `subject` (the user's
    /// token); `actor` makes the actor token when one is wanted.
    pub async fn token(
        &self,
        agent: &Arc<str>,
        user: &Arc<str>,
        subject: &str,
        actor: impl FnOnce() -> Option<String>,
    ) -> Result<Exchanged, ExchangeFailed> {
        let now = Instant::now();
        let key = (Arc::clone(agent), Arc::clone(user));
        if let Some(c) = self.cache.borrow().get(&key).filter(|c| c.until > now) {
            return Ok(Exchanged::Cached(Arc::clone(&c.line)));
        }
        let actor = if self.endpoint.wants_actor() {
            actor()
        } else {
            None
        };
        let req = self.endpoint.request(subject, actor.as_deref());
        let started = Instant::now();
        let resp = self
            .pool
            .exchange(req.expose(), MAX_RESPONSE, EXCHANGE_TIMEOUT)
            .await
            .map_err(|e| ExchangeFailed(format!("token endpoint: {e}")))?;
        let (token, lifetime) = token_response(resp.status, &resp.body).map_err(ExchangeFailed)?;
        if !self.endpoint.for_this_upstream(&token) {
            return Err(ExchangeFailed(
                "the IdP issued a token for another audience".into(),
            ));
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
        let line = Arc::new(Secret::new(
            format!("{}: Bearer {token}\r\n", self.endpoint.header).into_bytes(),
        ));
        drop(token);
        let keep = lifetime.saturating_sub(margin(lifetime));
        if !keep.is_zero() {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, c| c.until > started);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    line: Arc::clone(&line),
                    until: started + keep,
                },
            );
        }
        Ok(Exchanged::Fresh(line))
    }
}

/// How long before its expiry an exchanged token stops being used: a
/// tenth of its lifetime, at least 30 s, but never more than half of it.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 10)
        .max(Duration::from_secs(30))
        .min(lifetime / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(actor: bool) -> Endpoint {
        Endpoint {
            upstream: "crm".into(),
            target: ExchangeTarget {
                token_url: toolgate_core::upstream_url::UpstreamUrl::parse(
                    "http://127.0.0.1:9500/token",
                )
                .unwrap(),
                ca_file: None,
                client_id: "toolgate".into(),
                client_secret: toolgate_core::secret::SecretSource::Env("X".into()),
                audience: Some("crm api".into()),
                scope: None,
                actor,
                fallback: toolgate_core::config::ExchangeFallback::Refuse,
            },
            resource: "https://crm.example/mcp".into(),
            header: "Authorization".into(),
            basic: basic_auth("toolgate", &Secret::new(b"s3cret".to_vec())),
            tls: None,
        }
    }

    #[test]
    fn the_request_is_a_form_post_with_the_subject_resource_and_actor() {
        let req = endpoint(true).request("eyJ.user.tok", Some("eyJ.agent.tok"));
        let text = String::from_utf8(req.expose().to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /token HTTP/1.1\r\nHost: 127.0.0.1:9500\r\n"));
        assert!(
            head.contains("Authorization: Basic dG9vbGdhdGU6czNjcmV0\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let fields: Vec<&str> = body.split('&').collect();
        for want in [
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
            "subject_token=eyJ.user.tok",
            "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
            "resource=https%3A%2F%2Fcrm.example%2Fmcp",
            "audience=crm+api",
            "actor_token=eyJ.agent.tok",
            "actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
        ] {
            assert!(fields.contains(&want), "{want} in {body}");
        }
        let without = endpoint(false).request("t", None);
        assert!(!String::from_utf8_lossy(without.expose()).contains("actor_token"));
    }

    #[test]
    fn a_jwt_scoped_to_another_audience_is_not_sent() {
        use base64::Engine as _;
        let jwt = |claims: &str| {
            let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            format!("{}.{}.sig", b(r#"{"alg":"RS256"}"#), b(claims))
        };
        let e = endpoint(false);
        assert!(e.for_this_upstream(&jwt(r#"{"aud":"https://crm.example/mcp"}"#)));
        assert!(
            e.for_this_upstream(&jwt(r#"{"aud":["x","crm api"]}"#)),
            "the audience asked for"
        );
        assert!(!e.for_this_upstream(&jwt(r#"{"aud":"https://files.example/mcp"}"#)));
        assert!(!e.for_this_upstream(&jwt(r#"{"aud":["x","y"]}"#)));
        assert!(
            e.for_this_upstream(&jwt(r#"{"sub":"alice"}"#)),
            "no audience to check"
        );
        assert!(
            e.for_this_upstream("opaque-token"),
            "opaque: the upstream's to judge"
        );
    }

    #[test]
    fn a_token_stops_being_used_shortly_before_it_expires() {
        assert_eq!(margin(Duration::from_secs(3600)), Duration::from_secs(360));
        assert_eq!(margin(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(margin(Duration::from_secs(20)), Duration::from_secs(10));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_answer_must_be_a_bearer_token_and_errors_carry_only_the_code() {
        let ok = br#"{"access_token":"abc","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":300}"#;
        assert_eq!(
            token_response(200, ok).unwrap(),
            ("abc".to_owned(), Some(Duration::from_secs(300)))
        );
        let refused =
            br#"{"error":"invalid_grant","error_description":"token eyJ.secret expired"}"#;
        let e = token_response(400, refused).unwrap_err();
        assert_eq!(e, "token endpoint answered HTTP 400 invalid_grant");
        assert!(token_response(200, b"<html>").is_err());
        assert!(token_response(200, br#"{"access_token":"a b"}"#).is_err());
        assert!(token_response(200, br#"{"access_token":"a","token_type":"N_A"}"#).is_err());
        let odd = br#"{"error":"eyJhbGciOi.secret.token"}"#;
        assert_eq!(
            token_response(401, odd).unwrap_err(),
            "token endpoint answered HTTP 401"
        );
    }
}

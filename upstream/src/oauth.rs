//! OAuth 2.0 client-credentials grants (RFC 6749 §4.4) for upstream
//! credentials: toolgate obtains the access token, caches it and refreshes
//! it before expiry, off the request path.
//!
//! One task per such credential runs on shard 0 with its own small pool.
//! Each fetched token is published as the upstream's credential header line
//! (`Authorization: Bearer …`), exactly like a static credential, so the
//! request path is unchanged: it copies bytes and takes no lock. A refresh
//! that fails keeps the current token while it is valid and retries with
//! backoff; once it has expired the credential is withdrawn and calls to
//! that upstream are refused (`upstream_credential_unavailable`) instead of
//! being sent without one. Other upstreams are unaffected.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use toolgate_core::config::{OAuthConfig, ValidConfig};
use toolgate_core::secret::Secret;
use toolgate_core::upstream_url::UpstreamUrl;
use toolgate_decision::Published;

use crate::credential::{CredentialError, Credentials};
use toolgate_net::client::Pool;
use toolgate_net::tls::{client_tls, ClientTls};

/// Largest token response accepted, bytes.
const MAX_RESPONSE: usize = 64 * 1024;
/// Time allowed for one token request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime assumed when the server sends no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest wait between retries of a failed fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One upstream credential obtained by a client-credentials grant.
pub struct OAuthClient {
    upstream: String,
    header: String,
    cfg: OAuthConfig,
    secret_file: Option<PathBuf>,
    url: UpstreamUrl,
    tls: Option<ClientTls>,
    published: Arc<Published<Secret>>,
}

/// The client-credentials grants of a configuration, with their client
/// secrets checked readable now (a missing secret stops the start).
pub fn clients(
    cfg: &ValidConfig,
    creds: &Credentials,
) -> Result<Vec<OAuthClient>, CredentialError> {
    let mut out = Vec::new();
    for u in cfg.upstreams.iter().map(|r| &r.entry) {
        let Some(c) = &u.credential else { continue };
        let Some(o) = &c.oauth else { continue };
        let Some(published) = creds.get(u.name.get_ref()) else {
            continue;
        };
        let upstream = u.name.get_ref().clone();
        let bad = |why: String| CredentialError::Command {
            upstream: upstream.clone(),
            program: "oauth".into(),
            why,
        };
        let url = UpstreamUrl::parse(o.token_url.get_ref()).map_err(bad)?;
        let ca = o.ca_file.as_ref().map(|f| cfg.base_dir().join(f.get_ref()));
        let tls = client_tls(&url, ca.as_deref()).map_err(|e| bad(e.to_string()))?;
        let client = OAuthClient {
            upstream: upstream.clone(),
            header: c.header.get_ref().clone(),
            secret_file: o
                .client_secret_file
                .as_ref()
                .map(|f| cfg.base_dir().join(f.get_ref())),
            cfg: o.clone(),
            url,
            tls,
            published: Arc::clone(published),
        };
        client.client_secret()?;
        out.push(client);
    }
    Ok(out)
}

/// A value for `application/x-www-form-urlencoded` (RFC 6749 appendix B).
pub(crate) fn form(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The access token and its lifetime (`expires_in`, when sent) of a token
/// endpoint's answer (RFC 6749 §5.1, and RFC 8693 §2.2, whose answers have
/// the same members). Errors name what was wrong, never a token: a refusal
/// by its OAuth `error` code (§5.2), and only when that code is a plain
/// word.
pub(crate) fn token_response(
    status: u16,
    body: &[u8],
) -> Result<(String, Option<Duration>), String> {
    if status != 200 {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or_default();
        return Err(format!("token endpoint answered HTTP {status} {code}")
            .trim_end()
            .to_owned());
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "token response is not JSON".to_owned())?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| {
            !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or("token response has no usable `access_token`")?;
    if let Some(tt) = v.get("token_type").and_then(|t| t.as_str()) {
        if !tt.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "token type `{}` is not Bearer",
                tt.chars().take(32).collect::<String>()
            ));
        }
    }
    let lifetime = v
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .map(Duration::from_secs);
    Ok((token.to_owned(), lifetime))
}

/// A form `POST` of `body` to token endpoint `url`, authenticated with
/// `basic` (`Basic …`): the one shape every token request toolgate makes
/// has (client credentials, token exchange, a code, a refresh). `body` is
/// zeroed once copied, since it may hold a token.
pub(crate) fn token_request(url: &UpstreamUrl, basic: &Secret, mut body: String) -> Secret {
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: ",
        url.path, url.authority
    )
    .into_bytes();
    req.extend_from_slice(basic.expose());
    req.extend_from_slice(
        format!(
            "\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body.as_bytes());
    zeroize::Zeroize::zeroize(&mut body);
    Secret::new(req)
}

/// `Basic …` of a client id and secret (`client_secret_basic`, RFC 6749
/// §2.3.1: each form-encoded first).
pub(crate) fn basic_auth(client_id: &str, secret: &Secret) -> Secret {
    let secret = String::from_utf8_lossy(secret.expose());
    let mut pair = format!("{}:{}", form(client_id), form(&secret));
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&pair)
    );
    zeroize::Zeroize::zeroize(&mut pair);
    Secret::new(value.into_bytes())
}

/// A fetched token.
struct Token {
    header_line: Secret,
    lifetime: Duration,
}

impl OAuthClient {
    /// The client secret, read from its source at every fetch (so a rotated
    /// secret is picked up).
    fn client_secret(&self) -> Result<Secret, CredentialError> {
        let value = match (&self.cfg.client_secret_env, &self.secret_file) {
            (Some(var), _) => std::env::var(var.get_ref())
                .map_err(|_| CredentialError::EnvUnset {
                    upstream: self.upstream.clone(),
                    var: var.get_ref().clone(),
                })?
                .into_bytes(),
            (None, Some(f)) => std::fs::read(f).map_err(|why| CredentialError::File {
                upstream: self.upstream.clone(),
                file: f.display().to_string(),
                why,
            })?,
            (None, None) => Vec::new(),
        };
        let value = value.trim_ascii();
        if value.is_empty() {
            return Err(CredentialError::Unusable {
                upstream: self.upstream.clone(),
                source_name: "the oauth client secret".into(),
            });
        }
        Ok(Secret::new(value.to_vec()))
    }

    fn request(&self, secret: &Secret) -> Secret {
        let mut body = String::from("grant_type=client_credentials");
        if let Some(s) = &self.cfg.scope {
            body.push_str("&scope=");
            body.push_str(&form(s));
        }
        if let Some(r) = &self.cfg.resource {
            body.push_str("&resource=");
            body.push_str(&form(r));
        }
        token_request(&self.url, &basic_auth(&self.cfg.client_id, secret), body)
    }

    async fn fetch(&self, pool: &Pool) -> Result<Token, String> {
        let secret = self.client_secret().map_err(|e| e.to_string())?;
        let resp = pool
            .exchange(self.request(&secret).expose(), MAX_RESPONSE, FETCH_TIMEOUT)
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let (token, lifetime) = token_response(resp.status, &resp.body)?;
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
        Ok(Token {
            header_line: Secret::new(format!("{}: Bearer {token}\r\n", self.header).into_bytes()),
            lifetime,
        })
    }

    /// Keeps the token fresh; never returns. `pending` counts grants not yet
    /// tried once (readiness).
    async fn keep_fresh(self, pending: Arc<AtomicUsize>) {
        let pool = Pool::new(self.url.dial_target(), 1, self.tls.clone());
        let mut first = true;
        let mut expires: Option<Instant> = None;
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let wait = match self.fetch(&pool).await {
                Ok(t) => {
                    self.published.publish(t.header_line);
                    expires = Some(started + t.lifetime);
                    backoff = Duration::from_secs(1);
                    tracing::info!(upstream = %self.upstream, lifetime_s = t.lifetime.as_secs(), "upstream access token obtained");
                    // Refresh at 80 % of the lifetime.
                    (t.lifetime * 4 / 5).max(Duration::from_secs(1))
                }
                Err(e) => {
                    tracing::warn!(upstream = %self.upstream, error = %e, "cannot obtain the upstream access token; retrying");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            if first {
                first = false;
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            // Sleep until the next attempt, withdrawing the token if it
            // expires first: better refused than sent with a dead token.
            let wake = Instant::now() + wait;
            if let Some(exp) = expires.filter(|e| *e < wake) {
                glommio::timer::sleep(exp.saturating_duration_since(Instant::now())).await;
                self.published.publish(Secret::new(Vec::new()));
                expires = None;
                tracing::warn!(upstream = %self.upstream, "upstream access token expired without a refresh; calls to it are refused until one arrives");
            }
            glommio::timer::sleep(wake.saturating_duration_since(Instant::now())).await;
        }
    }
}

/// Runs every grant's refresh task on the current shard; returns at once.
pub fn spawn_all(clients: Vec<OAuthClient>, pending: Arc<AtomicUsize>) {
    for c in clients {
        glommio::spawn_local(c.keep_fresh(Arc::clone(&pending))).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(form("a b:c/d%é"), "a+b%3Ac%2Fd%25%C3%A9");
        assert_eq!(form("Az09-._~"), "Az09-._~");
    }
}

//! Connected accounts: upstreams that act on an end user's own account
//! (their mail, their calendar, their repositories) get that user's own
//! access token, obtained through an OAuth 2.0 authorization code flow
//! with PKCE (RFC 6749 §4.1, RFC 7636) that toolgate runs itself, so the
//! agent never holds it.
//!
//! This module holds the parts without a place to live: the [`Sealer`]
//! (AES-256-GCM under a key from the secrets sources) that seals refresh
//! tokens at rest and the links and OAuth `state` toolgate hands out, so
//! none of them can be read or forged elsewhere; the authorization URL;
//! and the two token requests (the code, then refreshes). Where the
//! tokens are kept and when they are refreshed is `ingress`'s job.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toolgate_core::config::ConnectTarget;
use toolgate_core::secret::{Secret, SecretSource};
use toolgate_net::client::Pool;
use toolgate_net::tls::{client_tls, ClientTls};

use crate::oauth::{basic_auth, form, token_request, token_response};

/// Time allowed for one token request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest token endpoint answer read, bytes.
const MAX_RESPONSE: usize = 64 * 1024;
/// Lifetime assumed for an access token sent without `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Why connected accounts cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The sealing key cannot be read or is not 32 bytes of base64.
    #[error("[connected_accounts]: the key from {0}: {1}")]
    Key(String, String),
    /// A provider's client secret cannot be read.
    #[error("upstream `{0}`: the connected account client secret: {1}")]
    Secret(String, String),
    /// TLS toward a provider's token endpoint cannot be set up.
    #[error("upstream `{0}`: `token_url`: {1}")]
    Tls(String, String),
}

/// Seals and opens what toolgate keeps or hands out about connected
/// accounts: authenticated encryption, each sealed value bound to what it
/// is for (`purpose`), so one cannot stand in for another.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    /// The sealer of the key at `source`: 32 bytes, base64.
    pub fn load(source: &SecretSource) -> Result<Self, SetupError> {
        let bad = |why: String| SetupError::Key(source.describe(), why);
        let text = source.read().map_err(|e| bad(e.to_string()))?;
        let raw = STANDARD
            .decode(text.expose())
            .map_err(|_| bad("not base64 (`openssl rand -base64 32`)".into()))?;
        let raw = Secret::new(raw);
        if raw.expose().len() != 32 {
            return Err(bad(format!(
                "{} bytes, not 32 (`openssl rand -base64 32`)",
                raw.expose().len()
            )));
        }
        let key =
            UnboundKey::new(&AES_256_GCM, raw.expose()).map_err(|_| bad("unusable".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// `plain` sealed for `purpose`: base64url of a random nonce and the
    /// ciphertext with its tag.
    pub fn seal(&self, purpose: &[u8], plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        let _ = getrandom::fill(&mut nonce);
        let mut data = plain.to_vec();
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut data,
            )
            .is_err()
        {
            return String::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What [`Sealer::seal`] sealed for `purpose`; `None` for anything
    /// else (another purpose, another key, altered, not base64).
    pub fn open(&self, purpose: &[u8], sealed: &str) -> Option<Secret> {
        let mut data = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if data.len() < NONCE_LEN {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&data[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut data[NONCE_LEN..],
            )
            .ok()?
            .to_vec();
        zeroize::Zeroize::zeroize(&mut data);
        Some(Secret::new(plain))
    }

    /// A sealed value of `what` for `purpose`.
    pub fn seal_json<T: Serialize>(&self, purpose: &[u8], what: &T) -> String {
        let mut json = serde_json::to_vec(what).unwrap_or_default();
        let sealed = self.seal(purpose, &json);
        zeroize::Zeroize::zeroize(&mut json);
        sealed
    }

    /// What [`Sealer::seal_json`] sealed for `purpose`.
    pub fn open_json<T: for<'de> Deserialize<'de>>(
        &self,
        purpose: &[u8],
        sealed: &str,
    ) -> Option<T> {
        let plain = self.open(purpose, sealed)?;
        serde_json::from_slice(plain.expose()).ok()
    }
}

/// What a connect link says: who may connect which upstream, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The upstream.
    #[serde(rename = "u")]
    pub upstream: String,
    /// The end user.
    #[serde(rename = "s")]
    pub user: String,
    /// Unix second it stops being usable.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// The OAuth `state` of one consent under way: whom it is for, its PKCE
/// verifier, and the nonce its browser holds in a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The upstream.
    #[serde(rename = "u")]
    pub upstream: String,
    /// The end user.
    #[serde(rename = "s")]
    pub user: String,
    /// The PKCE code verifier.
    #[serde(rename = "v")]
    pub verifier: String,
    /// Random, also in the browser's cookie: a callback from another
    /// browser is refused, and a state is taken once.
    #[serde(rename = "n")]
    pub nonce: String,
    /// Unix second it stops being usable.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// Purposes sealed values are bound to.
pub mod purpose {
    /// A connect link.
    pub const LINK: &[u8] = b"toolgate connect link";
    /// An OAuth state.
    pub const STATE: &[u8] = b"toolgate connect state";

    /// A refresh token at rest, for `upstream` and `user` alone.
    pub fn refresh(upstream: &str, user: &str) -> Vec<u8> {
        format!("toolgate refresh token\0{upstream}\0{user}").into_bytes()
    }
}

/// `n` random bytes, base64url.
pub fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let _ = getrandom::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A provider's answer to a token request.
pub struct Granted {
    /// `{header}: Bearer …\r\n`.
    pub line: Secret,
    /// How long the access token lives.
    pub lifetime: Duration,
    /// A refresh token, when the provider sent one (a new one replaces the
    /// old: rotation).
    pub refresh: Option<Secret>,
    /// The scope granted, when the provider said.
    pub scope: Option<String>,
}

/// Why a token request gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The provider refused the grant itself (`invalid_grant`: the code or
    /// refresh token is expired, used or revoked): the user must connect
    /// again.
    #[error("the provider refused the grant (invalid_grant)")]
    Revoked,
    /// Anything else (down, slow, garbage): worth trying again.
    #[error("{0}")]
    Failed(String),
}

/// One upstream's provider, as every shard and the refresher use it: read
/// at start (its client secret included).
pub struct Provider {
    upstream: String,
    target: ConnectTarget,
    /// The header the access token goes in.
    header: String,
    basic: Secret,
    tls: Option<ClientTls>,
    /// `{public_url}/connect/{upstream}/callback`.
    redirect_uri: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl Provider {
    /// The provider of `upstream` for `target`, its callback under
    /// `public_url`. Errors: its secret or CA bundle cannot be read.
    pub fn load(
        upstream: &str,
        target: &ConnectTarget,
        header: &str,
        public_url: &str,
    ) -> Result<Self, SetupError> {
        let secret = target
            .client_secret
            .read()
            .map_err(|e| SetupError::Secret(upstream.to_owned(), e.to_string()))?;
        let tls = client_tls(&target.token_url, target.ca_file.as_deref())
            .map_err(|e| SetupError::Tls(upstream.to_owned(), e.to_string()))?;
        Ok(Self {
            upstream: upstream.to_owned(),
            basic: basic_auth(&target.client_id, &secret),
            target: target.clone(),
            header: header.to_owned(),
            tls,
            redirect_uri: format!("{public_url}/connect/{upstream}/callback"),
        })
    }

    /// The upstream.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// A pool toward the token endpoint, for one thread.
    pub fn pool(&self) -> Pool {
        Pool::new(self.target.token_url.dial_target(), 2, self.tls.clone())
    }

    /// Where the user's browser is sent to consent, for `state` (sealed)
    /// and the PKCE `verifier`.
    pub fn authorize_url(&self, sealed_state: &str, verifier: &str) -> String {
        let t = &self.target;
        let mut url = t.authorize_url.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("response_type=code&client_id=");
        url.push_str(&form(&t.client_id));
        url.push_str("&redirect_uri=");
        url.push_str(&form(&self.redirect_uri));
        if let Some(s) = &t.scope {
            url.push_str("&scope=");
            url.push_str(&form(s));
        }
        if let Some(r) = &t.resource {
            url.push_str("&resource=");
            url.push_str(&form(r));
        }
        url.push_str("&state=");
        url.push_str(&form(sealed_state));
        url.push_str("&code_challenge_method=S256&code_challenge=");
        url.push_str(&challenge(verifier));
        url
    }

    /// The body redeeming authorization `code` with its PKCE `verifier`.
    fn code_body(&self, code: &str, verifier: &str) -> String {
        let mut body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
            form(code),
            form(&self.redirect_uri),
            form(verifier)
        );
        if let Some(r) = &self.target.resource {
            body.push_str("&resource=");
            body.push_str(&form(r));
        }
        body
    }

    /// The body of a refresh with `refresh` (the token).
    fn refresh_body(&self, refresh: &[u8]) -> String {
        let mut body = format!(
            "grant_type=refresh_token&refresh_token={}",
            form(&String::from_utf8_lossy(refresh))
        );
        if let Some(r) = &self.target.resource {
            body.push_str("&resource=");
            body.push_str(&form(r));
        }
        body
    }

    /// Redeems authorization `code` (the callback's) with its `verifier`.
    pub async fn redeem(
        &self,
        pool: &Pool,
        code: &str,
        verifier: &str,
    ) -> Result<Granted, GrantError> {
        let req = token_request(
            &self.target.token_url,
            &self.basic,
            self.code_body(code, verifier),
        );
        self.grant(pool, &req).await
    }

    /// A new access token from refresh token `refresh`.
    pub async fn refresh(&self, pool: &Pool, refresh: &Secret) -> Result<Granted, GrantError> {
        let body = self.refresh_body(refresh.expose());
        let req = token_request(&self.target.token_url, &self.basic, body);
        self.grant(pool, &req).await
    }

    async fn grant(&self, pool: &Pool, req: &Secret) -> Result<Granted, GrantError> {
        let resp = pool
            .exchange(req.expose(), MAX_RESPONSE, TOKEN_TIMEOUT)
            .await
            .map_err(|e| GrantError::Failed(format!("token endpoint: {e}")))?;
        self.granted(resp.status, &resp.body)
    }

    /// A token endpoint's answer as a grant.
    fn granted(&self, status: u16, body: &[u8]) -> Result<Granted, GrantError> {
        let (token, lifetime) = token_response(status, body).map_err(|e| {
            if e.ends_with(" invalid_grant") {
                GrantError::Revoked
            } else {
                GrantError::Failed(e)
            }
        })?;
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let refresh = v
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .filter(|t| {
                !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(|t| Secret::new(t.as_bytes().to_vec()));
        let scope = v
            .get("scope")
            .and_then(|s| s.as_str())
            .filter(|s| s.len() <= 1024)
            .map(str::to_owned);
        Ok(Granted {
            line: Secret::new(format!("{}: Bearer {token}\r\n", self.header).into_bytes()),
            lifetime: lifetime.unwrap_or(DEFAULT_LIFETIME),
            refresh,
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        std::env::set_var("TG_TEST_CONNECT_KEY", STANDARD.encode([7u8; 32]));
        Sealer::load(&SecretSource::Env("TG_TEST_CONNECT_KEY".into())).unwrap()
    }

    fn provider() -> Provider {
        Provider {
            upstream: "github".into(),
            target: ConnectTarget {
                authorize_url: "https://idp.example/auth?tenant=x".into(),
                token_url: toolgate_core::upstream_url::UpstreamUrl::parse(
                    "http://127.0.0.1:9500/token",
                )
                .unwrap(),
                ca_file: None,
                client_id: "toolgate".into(),
                client_secret: SecretSource::Env("X".into()),
                scope: Some("repo offline_access".into()),
                resource: None,
            },
            header: "Authorization".into(),
            basic: basic_auth("toolgate", &Secret::new(b"s".to_vec())),
            tls: None,
            redirect_uri: "https://tg.example/connect/github/callback".into(),
        }
    }

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_unaltered() {
        let s = sealer();
        let sealed = s.seal(b"a", b"refresh-token");
        assert_eq!(s.open(b"a", &sealed).unwrap().expose(), b"refresh-token");
        assert!(s.open(b"b", &sealed).is_none(), "another purpose");
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(s
            .open(b"a", std::str::from_utf8(&altered).unwrap())
            .is_none());
        assert!(s.open(b"a", "not base64!").is_none());
        assert_ne!(
            s.seal(b"a", b"x"),
            s.seal(b"a", b"x"),
            "a fresh nonce each time"
        );
        let refresh = purpose::refresh("github", "alice");
        let at_rest = s.seal(&refresh, b"rt");
        assert!(
            s.open(&purpose::refresh("github", "bob"), &at_rest)
                .is_none(),
            "bound to its user"
        );
        let link = Link {
            upstream: "github".into(),
            user: "alice".into(),
            expires: 9,
        };
        let sealed = s.seal_json(purpose::LINK, &link);
        assert_eq!(s.open_json::<Link>(purpose::LINK, &sealed), Some(link));
        assert_eq!(s.open_json::<Link>(purpose::STATE, &sealed), None);
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        std::env::set_var("TG_TEST_SHORT_KEY", STANDARD.encode([1u8; 16]));
        let e = Sealer::load(&SecretSource::Env("TG_TEST_SHORT_KEY".into())).unwrap_err();
        assert!(e.to_string().contains("16 bytes, not 32"), "{e}");
    }

    #[test]
    fn the_authorize_url_carries_pkce_state_and_the_callback() {
        let p = provider();
        let url = p.authorize_url("st", "verifier-123");
        assert!(url.starts_with("https://idp.example/auth?tenant=x&response_type=code&client_id=toolgate&redirect_uri=https%3A%2F%2Ftg.example%2Fconnect%2Fgithub%2Fcallback&scope=repo+offline_access&state=st&code_challenge_method=S256&code_challenge="), "{url}");
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn grants_keep_the_refresh_token_and_tell_a_revoked_one_apart() {
        let p = provider();
        let g = p
            .granted(
                200,
                br#"{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":"rt","scope":"repo"}"#,
            )
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(g.line.expose(), b"Authorization: Bearer at\r\n");
        assert_eq!(g.lifetime, Duration::from_secs(60));
        assert_eq!(g.refresh.unwrap().expose(), b"rt");
        assert_eq!(g.scope.as_deref(), Some("repo"));
        assert!(matches!(
            p.granted(400, br#"{"error":"invalid_grant"}"#),
            Err(GrantError::Revoked)
        ));
        assert!(matches!(
            p.granted(503, b"busy"),
            Err(GrantError::Failed(_))
        ));
        let body = p.code_body("c0de", "v");
        assert_eq!(body, "grant_type=authorization_code&code=c0de&redirect_uri=https%3A%2F%2Ftg.example%2Fconnect%2Fgithub%2Fcallback&code_verifier=v");
    }
}

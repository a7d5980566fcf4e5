//! Signed end-user assertions: a short-lived JWT per call telling an
//! upstream which end user (`sub`) the call is for and which agent made it
//! (`act.sub`), signed with toolgate's Ed25519 key and verifiable against
//! the JWKS toolgate publishes (`/.well-known/jwks.json`).
//!
//! The key is read from the secrets sources at start and on reload; earlier
//! keys stay in the JWKS (rotation with overlap) but never sign. Key ids
//! are RFC 7638 thumbprints, so an upstream can pin one.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use toolgate_core::config::{AssertionKeys, IdentityTarget};
use toolgate_core::jsonrpc::write_str;
use toolgate_core::secret::{Secret, SecretSource};

/// Why the assertion keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// A key cannot be read.
    #[error("[identity_assertions]: {0}")]
    Read(String),
    /// A key is not an Ed25519 private key in PKCS#8 PEM.
    #[error("[identity_assertions]: `{0}` is not an Ed25519 private key in PKCS#8 PEM (`openssl genpkey -algorithm ed25519`)")]
    NotEd25519(String),
}

/// toolgate's assertion signer: the current key, the published JWKS.
pub struct Signer {
    key: Ed25519KeyPair,
    /// `{"alg":"EdDSA","typ":"JWT","kid":…}`, base64url, then `.`.
    header: String,
    jwks: String,
    issuer: String,
    lifetime_s: u64,
    /// Random per process, so `jti`s never repeat across restarts.
    jti_prefix: String,
    next: AtomicU64,
}

/// What one assertion says of its call.
#[derive(Clone, Copy)]
pub struct Claims<'a> {
    /// The end user, when the call has one.
    pub user: Option<&'a str>,
    /// The agent.
    pub agent: &'a str,
    /// The customer the call is attributed to.
    pub customer: Option<&'a str>,
    /// The tool, as the upstream names it.
    pub tool: &'a str,
}

/// An assertion minted for a call: the header line to send and its `jti`
/// (which the call's audit record keeps; the token itself is never logged).
pub struct Minted {
    /// `Header: token\r\n`.
    pub line: Secret,
    /// The token's `jti`.
    pub jti: Box<str>,
}

fn pem_der(pem: &[u8], what: &str) -> Result<Vec<u8>, AssertionError> {
    let text = std::str::from_utf8(pem).map_err(|_| AssertionError::NotEd25519(what.into()))?;
    let body: String = text
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END PRIVATE KEY-----")
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| AssertionError::NotEd25519(what.into()))
}

fn keypair(pem: &[u8], what: &str) -> Result<Ed25519KeyPair, AssertionError> {
    let der = pem_der(pem, what)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|_| AssertionError::NotEd25519(what.into()))
}

/// The public JWK of `key` and its RFC 7638 thumbprint.
fn jwk(key: &Ed25519KeyPair) -> (String, String) {
    use sha2::Digest;
    let x = B64.encode(key.public_key().as_ref());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = B64.encode(sha2::Sha256::digest(canonical.as_bytes()));
    (
        format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"{kid}","alg":"EdDSA","use":"sig"}}"#
        ),
        kid,
    )
}

/// A PEM's text from its source (several lines: not a one-line secret).
fn read(source: &SecretSource) -> Result<Secret, AssertionError> {
    match source {
        SecretSource::File(p) => std::fs::read(p)
            .map(Secret::new)
            .map_err(|e| AssertionError::Read(format!("`{}`: {e}", p.display()))),
        SecretSource::Env(v) => std::env::var(v)
            .map(|t| Secret::new(t.into_bytes()))
            .map_err(|_| AssertionError::Read(format!("environment variable `{v}` is not set"))),
        SecretSource::Command(_) => source
            .read()
            .map_err(|e| AssertionError::Read(e.to_string())),
    }
}

impl Signer {
    /// Reads the keys `keys` names. Errors: one cannot be read or is not
    /// an Ed25519 PKCS#8 key.
    pub fn load(keys: &AssertionKeys) -> Result<Self, AssertionError> {
        let what = match &keys.current {
            SecretSource::File(p) => p.display().to_string(),
            SecretSource::Env(v) => format!("${v}"),
            SecretSource::Command(c) => c.join(" "),
        };
        let key = keypair(read(&keys.current)?.expose(), &what)?;
        let (current, kid) = jwk(&key);
        let mut published = vec![current];
        for p in &keys.previous {
            let what = p.display().to_string();
            let pem = read(&SecretSource::File(p.clone()))?;
            let (old, old_kid) = jwk(&keypair(pem.expose(), &what)?);
            if old_kid != kid && !published.contains(&old) {
                published.push(old);
            }
        }
        let header = format!(
            "{}.",
            B64.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#))
        );
        let mut prefix = [0u8; 6];
        let _ = getrandom::fill(&mut prefix);
        Ok(Self {
            key,
            header,
            jwks: format!(r#"{{"keys":[{}]}}"#, published.join(",")),
            issuer: keys.issuer.clone(),
            lifetime_s: keys.lifetime_s,
            jti_prefix: B64.encode(prefix),
            next: AtomicU64::new(0),
        })
    }

    /// The JWKS to publish: the current key first, then earlier ones.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// A signed assertion of `claims` for `target`, issued at `now_s`.
    pub fn mint(&self, target: &IdentityTarget, claims: &Claims<'_>, now_s: u64) -> Minted {
        let (token, jti) = self.token(&target.audience, claims, now_s);
        let mut line = Vec::with_capacity(target.header.len() + token.len() + 4);
        line.extend_from_slice(target.header.as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(token.as_bytes());
        line.extend_from_slice(b"\r\n");
        Minted {
            line: Secret::new(line),
            jti,
        }
    }

    /// A signed token for `audience` naming the agent of `claims` as its
    /// subject (`claims.user` is left out): the actor token of a token
    /// exchange, which the IdP verifies against toolgate's JWKS. Returns
    /// the token and its `jti`.
    pub fn mint_actor(
        &self,
        audience: &str,
        claims: &Claims<'_>,
        now_s: u64,
    ) -> (String, Box<str>) {
        let agent_only = Claims {
            user: None,
            ..*claims
        };
        self.token(audience, &agent_only, now_s)
    }

    /// The compact JWS of `claims` for `audience`, and its `jti`.
    fn token(&self, audience: &str, claims: &Claims<'_>, now_s: u64) -> (String, Box<str>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let jti = format!("{}-{n:x}", self.jti_prefix);
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(br#"{"iss":"#);
        write_str(&self.issuer, &mut payload);
        payload.extend_from_slice(br#","aud":"#);
        write_str(audience, &mut payload);
        payload.extend_from_slice(br#","sub":"#);
        write_str(claims.user.unwrap_or(claims.agent), &mut payload);
        if claims.user.is_some() {
            payload.extend_from_slice(br#","act":{"sub":"#);
            write_str(claims.agent, &mut payload);
            payload.push(b'}');
        }
        payload.extend_from_slice(br#","agent":"#);
        write_str(claims.agent, &mut payload);
        if let Some(c) = claims.customer {
            payload.extend_from_slice(br#","customer":"#);
            write_str(c, &mut payload);
        }
        payload.extend_from_slice(br#","tool":"#);
        write_str(claims.tool, &mut payload);
        let _ = write!(
            payload,
            r#","iat":{now_s},"exp":{},"jti":"{jti}"}}"#,
            now_s + self.lifetime_s
        );
        let mut token = String::with_capacity(self.header.len() + payload.len() * 2 + 90);
        token.push_str(&self.header);
        B64.encode_string(&payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        B64.encode_string(signature.as_ref(), &mut token);
        (token, jti.into())
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("jwks", &self.jwks).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";

    fn signer() -> Signer {
        let dir = std::env::temp_dir().join(format!("toolgate-assert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k.pem");
        std::fs::write(&f, PEM).unwrap();
        Signer::load(&AssertionKeys {
            current: SecretSource::File(f),
            previous: vec![],
            issuer: "https://tg".into(),
            lifetime_s: 60,
        })
        .unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn an_assertion_verifies_against_the_published_key_and_says_who() {
        let s = signer();
        let target = IdentityTarget {
            mode: toolgate_core::config::IdentityMode::Assertion,
            header: "Toolgate-User-Assertion".into(),
            audience: "https://crm".into(),
            exchange: None,
            connect: None,
        };
        let m = s.mint(
            &target,
            &Claims {
                user: Some("alice\"x"),
                agent: "bot",
                customer: Some("acme"),
                tool: "lookup",
            },
            1000,
        );
        let line = std::str::from_utf8(m.line.expose()).unwrap();
        let token = line
            .strip_prefix("Toolgate-User-Assertion: ")
            .unwrap()
            .trim_end();
        let parts: Vec<&str> = token.split('.').collect();
        let header = decode(parts[0]);
        let claims = decode(parts[1]);
        let jwks: serde_json::Value = serde_json::from_str(s.jwks()).unwrap();
        assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
        assert_eq!(claims["sub"], "alice\"x");
        assert_eq!(claims["act"]["sub"], "bot");
        assert_eq!(claims["aud"], "https://crm");
        assert_eq!(claims["exp"], 1060);
        assert_eq!(claims["jti"], *m.jti);
        let x = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x);
        let signed = &token[..token.rfind('.').unwrap()];
        public
            .verify(signed.as_bytes(), &B64.decode(parts[2]).unwrap())
            .unwrap();
        // Without an end user the agent is the subject, with no actor.
        let m2 = s.mint(
            &target,
            &Claims {
                user: None,
                agent: "bot",
                customer: None,
                tool: "lookup",
            },
            1000,
        );
        assert_ne!(m2.jti, m.jti);
        let t2 = std::str::from_utf8(m2.line.expose()).unwrap().to_owned();
        let c2 = decode(t2.trim_end().split('.').nth(1).unwrap());
        assert_eq!(c2["sub"], "bot");
        assert!(c2.get("act").is_none());
    }

    #[test]
    fn a_key_that_is_not_ed25519_pkcs8_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("toolgate-assert-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.pem");
        std::fs::write(
            &f,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Signer::load(&AssertionKeys {
            current: SecretSource::File(f),
            previous: vec![],
            issuer: "t".into(),
            lifetime_s: 60,
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("bad.pem") && e.contains("Ed25519"), "{e}");
    }
}

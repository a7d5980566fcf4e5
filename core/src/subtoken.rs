//! Sub-tokens: bearer tokens an operator mints for one agent, optionally
//! narrowed to one end user, a subset of the agent's tools and an expiry.
//!
//! A sub-token is `tgs_<payload>.<mac>`: the payload is base64url JSON
//! claims, the MAC is HMAC-SHA256 under the gateway's sub-token key over
//! `tgs_<payload>`. Verifying one is local computation (no I/O, no lock), so
//! it runs on the request path like an API key lookup. Revocation is by the
//! token's `jti`: the revoked set (the revocation file's and the admin
//! API's) travels in the decision snapshot, so a revoke reaches every shard
//! with the next snapshot generation.
//!
//! A sub-token never widens what its agent may do: its tools are checked
//! against the agent's attachments at every call, and the agent's policies
//! still apply.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::jwt::TokenError;
use crate::mac::{constant_time_eq, hmac_sha256};
use crate::secret::Secret;

/// Prefix that tells a sub-token from an API key or a JWT.
pub const PREFIX: &str = "tgs_";

/// Longest sub-token accepted, bytes (bounds the work per request).
pub const MAX_LEN: usize = 8192;

/// What a sub-token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Token id (hex), the handle for revocation.
    pub jti: String,
    /// The agent the token acts as.
    pub agent: String,
    /// The end user the token is narrowed to, when narrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The tools (exposed names) the token is narrowed to, when narrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// The customer (tenant) the token's calls are attributed to, when set
    /// at minting (else the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Mints the token for `claims` under `key`.
pub fn mint(key: &Secret, claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(PREFIX.len() + json.len() * 2);
    token.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(&json, &mut token);
    let mac = hmac_sha256(key.expose(), |h| h.update(token.as_bytes()));
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(mac, &mut token);
    token
}

/// Whether a bearer token is shaped as a sub-token.
pub fn looks_like_subtoken(token: &[u8]) -> bool {
    token.starts_with(PREFIX.as_bytes())
}

/// The sub-token key and the revoked token ids, as the snapshot holds them.
#[derive(Debug)]
pub struct Verifier {
    key: Secret,
    revoked: HashSet<String>,
}

impl Verifier {
    /// A verifier for tokens minted under `key`, refusing `revoked` ids.
    pub fn new(key: Secret, revoked: HashSet<String>) -> Self {
        Self { key, revoked }
    }

    /// Revoked token ids.
    pub fn revoked(&self) -> usize {
        self.revoked.len()
    }

    /// This verifier with `more` token ids revoked as well (the admin API's
    /// revocations, added to the revocation file's).
    pub fn with_revoked(&self, more: impl IntoIterator<Item = String>) -> Self {
        let mut revoked = self.revoked.clone();
        revoked.extend(more);
        Self {
            key: Secret::new(self.key.expose().to_vec()),
            revoked,
        }
    }

    /// Mints the token for `claims` under this verifier's key: what
    /// [`mint`] makes, so it verifies like a token minted by the CLI.
    pub fn mint(&self, claims: &Claims) -> String {
        mint(&self.key, claims)
    }

    /// Verifies `token` at Unix time `now`: MAC first (nothing of an
    /// unauthenticated payload is parsed), then expiry, then revocation.
    pub fn verify(&self, token: &[u8], now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_LEN || !looks_like_subtoken(token) {
            return Err(TokenError::Malformed);
        }
        let dot = token
            .iter()
            .rposition(|&b| b == b'.')
            .ok_or(TokenError::Malformed)?;
        let (signed, mac_b64) = (&token[..dot], &token[dot + 1..]);
        let mac = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TokenError::Malformed)?;
        let expected = hmac_sha256(self.key.expose(), |h| h.update(signed));
        if !constant_time_eq(&mac, &expected) {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if self.revoked.contains(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }
}

/// Parses a revocation list: one token id per line; `#` starts a comment.
pub fn parse_revoked(text: &str) -> HashSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            jti: "00aa".into(),
            agent: "support-bot".into(),
            user: Some("alice".into()),
            tools: Some(vec!["crm__lookup_customer".into()]),
            customer: None,
            iat: 100,
            exp: 1_000,
        }
    }

    fn key() -> Secret {
        Secret::new(vec![7u8; 32])
    }

    #[test]
    fn minted_token_verifies_to_its_claims() {
        let t = mint(&key(), &claims());
        assert!(t.starts_with(PREFIX));
        let v = Verifier::new(key(), HashSet::new());
        assert_eq!(v.verify(t.as_bytes(), 500), Ok(claims()));
    }

    #[test]
    fn expiry_revocation_and_other_keys_refuse() {
        let t = mint(&key(), &claims());
        let v = Verifier::new(key(), HashSet::new());
        assert_eq!(v.verify(t.as_bytes(), 1_000), Err(TokenError::Expired));
        let revoked = Verifier::new(key(), parse_revoked("# revoked\n00aa  # leaked\n"));
        assert_eq!(revoked.verify(t.as_bytes(), 500), Err(TokenError::Revoked));
        let other = Verifier::new(Secret::new(vec![8u8; 32]), HashSet::new());
        assert_eq!(
            other.verify(t.as_bytes(), 500),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn added_revocations_refuse_and_the_key_stays() {
        let v = Verifier::new(key(), HashSet::new());
        let t = v.mint(&claims());
        assert_eq!(t, mint(&key(), &claims()));
        let more = v.with_revoked(["00aa".to_owned()]);
        assert_eq!(more.revoked(), 1);
        assert_eq!(more.verify(t.as_bytes(), 500), Err(TokenError::Revoked));
        assert_eq!(v.verify(t.as_bytes(), 500), Ok(claims()));
        let other = more.with_revoked(["ffff".to_owned()]);
        assert_eq!(other.verify(t.as_bytes(), 500), Err(TokenError::Revoked));
        assert_eq!(other.revoked(), 2);
    }

    #[test]
    fn any_changed_byte_fails_the_mac() {
        let t = mint(&key(), &claims());
        let v = Verifier::new(key(), HashSet::new());
        for i in PREFIX.len()..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert!(v.verify(&b, 500).is_err(), "byte {i}");
        }
    }

    #[test]
    fn malformed_shapes() {
        let v = Verifier::new(key(), HashSet::new());
        for bad in ["", "tgs_", "tgs_abc", "tgs_abc.", "tgs_!!.!!", "tg_abc.def"] {
            assert!(v.verify(bad.as_bytes(), 0).is_err(), "{bad}");
        }
        let long = format!("tgs_{}", "A".repeat(MAX_LEN));
        assert_eq!(v.verify(long.as_bytes(), 0), Err(TokenError::Malformed));
    }
}

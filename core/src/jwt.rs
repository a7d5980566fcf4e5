//! Agent identity by JWT bearer tokens from the organisation's IdP.
//!
//! The JWKS is parsed once, when configuration is validated, into a
//! [`Verifier`] held by the snapshot: verifying a token on the request path is
//! pure computation (no I/O, no lock). Signatures are checked by
//! `jsonwebtoken`; the registered claims are checked here by
//! [`check_claims`], a pure function of the claims and a clock, so each rule
//! is unit-tested without keys.
//!
//! Only asymmetric algorithms are accepted (RS256, ES256, EdDSA): `none` and
//! HS* are refused before any key is looked at, so a token "signed" with a
//! public key as an HMAC secret never verifies.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why a bearer token that looks like a JWT was refused. Each has its own
/// audit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or claims of the wrong type.
    Malformed,
    /// `alg` is `none`, HS*, or not the algorithm of the key named by `kid`.
    AlgorithmRefused,
    /// `kid` names no key of the JWKS.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway), or missing.
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    WrongAudience,
    /// No agent claim (nor `client_id`), or no `sub`.
    MissingClaim,
    /// The agent named by the token is not a configured `[[agents]] id`.
    UnknownAgent,
    /// A sub-token whose id is on the revocation list.
    Revoked,
}

impl TokenError {
    /// The snake_case reason recorded in the audit trail.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::AlgorithmRefused => "token_algorithm_refused",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongIssuer => "token_wrong_issuer",
            TokenError::WrongAudience => "token_wrong_audience",
            TokenError::MissingClaim => "token_missing_claim",
            TokenError::UnknownAgent => "token_unknown_agent",
            TokenError::Revoked => "token_revoked",
        }
    }
}

/// What a token's claims must say, and which claims name whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRules {
    /// Required `iss`.
    pub issuer: String,
    /// Required member of `aud` (toolgate's own resource URI).
    pub audience: String,
    /// Claim naming the agent; `client_id` is tried when it is absent.
    pub agent_claim: String,
    /// Claim holding the end user's groups, if any.
    pub groups_claim: Option<String>,
    /// Claim naming the customer (tenant), if any.
    pub customer_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
}

/// Who a verified token says is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The agent id (checked against configured agents by the caller).
    pub agent: String,
    /// The end user the agent acts for, when the token names one.
    pub user: Option<String>,
    /// The end user's groups from the groups claim; `None` when no
    /// `groups_claim` is configured (configured `[[users]]` groups apply).
    pub groups: Option<Vec<String>>,
    /// The customer from the customer claim, when configured and present.
    pub customer: Option<String>,
    /// First Unix second at which the claims hold (`nbf` less the leeway).
    pub valid_from: u64,
    /// First Unix second at which they no longer hold (`exp` plus the leeway).
    pub valid_until: u64,
}

impl TokenIdentity {
    /// Whether the token's time claims hold at `now` (Unix seconds): what
    /// [`check_claims`] decided about time, so a verified token can be
    /// trusted again until it expires without re-verifying its signature.
    pub fn holds_at(&self, now: u64) -> bool {
        self.valid_from <= now && now < self.valid_until
    }
}

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(TokenError::Malformed),
    }
}

fn string<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks the registered claims of a token whose signature verified, at
/// `now` (Unix seconds), and names the agent and the end user.
///
/// Without an `act` claim the agent is `agent_claim` (else `client_id`) and
/// the user is `sub`, unless `sub` is the agent itself (a client-credentials
/// token acts for nobody). With an RFC 8693 `act` claim the user is `sub` and
/// the agent is `act.sub`.
pub fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now: u64,
) -> Result<TokenIdentity, TokenError> {
    let now = now as f64;
    let leeway = rules.leeway_s as f64;
    let valid_until = match number(claims, "exp")? {
        Some(exp) if exp + leeway > now => (exp + leeway).ceil(),
        _ => return Err(TokenError::Expired),
    };
    let mut valid_from = 0.0;
    if let Some(nbf) = number(claims, "nbf")? {
        if nbf - leeway > now {
            return Err(TokenError::NotYetValid);
        }
        valid_from = (nbf - leeway).ceil().max(0.0);
    }
    if string(claims, "iss") != Some(rules.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == rules.audience,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(rules.audience.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::WrongAudience);
    }
    let sub = string(claims, "sub").ok_or(TokenError::MissingClaim)?;
    let (agent, user) = match claims.get("act") {
        Some(Value::Object(act)) => {
            let actor = string(act, "sub").ok_or(TokenError::MissingClaim)?;
            (actor, Some(sub))
        }
        Some(_) => return Err(TokenError::Malformed),
        None => {
            let agent = string(claims, &rules.agent_claim)
                .or_else(|| string(claims, "client_id"))
                .ok_or(TokenError::MissingClaim)?;
            (agent, (sub != agent).then_some(sub))
        }
    };
    let groups = match rules.groups_claim.as_deref() {
        None => None,
        Some(g) => Some(match claims.get(g) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|g| g.as_str().map(str::to_owned).ok_or(TokenError::Malformed))
                .collect::<Result<_, _>>()?,
            Some(Value::String(g)) => g.split_whitespace().map(str::to_owned).collect(),
            Some(_) => return Err(TokenError::Malformed),
        }),
    };
    let customer = match rules.customer_claim.as_deref() {
        None => None,
        Some(c) => match claims.get(c) {
            None | Some(Value::Null) => None,
            // A customer id names counters and metric series and goes into
            // syslog: the same rule as a configured one, or the token is
            // malformed.
            Some(Value::String(s)) if crate::identity::check_customer(s).is_ok() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(TokenError::Malformed),
        },
    };
    Ok(TokenIdentity {
        agent: agent.to_owned(),
        user: user.map(str::to_owned),
        groups,
        customer,
        valid_from: valid_from as u64,
        valid_until: valid_until as u64,
    })
}

/// Whether a bearer token has the shape of a JWS compact serialisation:
/// three non-empty base64url parts. API keys (`tg_…`) never do.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    let mut parts = 0;
    for part in token.split(|&b| b == b'.') {
        parts += 1;
        if part.is_empty()
            || !part
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// A JWKS that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("is not a JWKS (`{{\"keys\": [...]}}`): {0}")]
    Syntax(String),
    /// A key of a type toolgate does not verify with.
    #[error("key `{kid}` is not RSA, EC P-256 or Ed25519 (symmetric keys are refused)")]
    Unsupported {
        /// The key's `kid` (or its index).
        kid: String,
    },
    /// A key whose parameters do not parse.
    #[error("key `{kid}` is invalid: {why}")]
    BadKey {
        /// The key's `kid` (or its index).
        kid: String,
        /// Why.
        why: String,
    },
    /// Two keys share a `kid`.
    #[error("key id `{0}` is used more than once")]
    DuplicateKid(String),
    /// No key at all.
    #[error("has no keys")]
    Empty,
}

/// One verification key and the only algorithm it verifies.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies bearer JWTs: the keys of one JWKS and the claim rules.
pub struct Verifier {
    keys: HashMap<String, Key>,
    /// The key used when a token has no `kid`: only when the JWKS has one key.
    only: Option<String>,
    rules: ClaimRules,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Verifier")
            .field("kids", &kids)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Verifier {
    /// Parses a JWKS document. Keys without `kid` are named by their index.
    pub fn from_jwks(jwks: &str, rules: ClaimRules) -> Result<Self, JwksError> {
        let set: JwkSet =
            serde_json::from_str(jwks).map_err(|e| JwksError::Syntax(e.to_string()))?;
        if set.keys.is_empty() {
            return Err(JwksError::Empty);
        }
        let mut keys = HashMap::with_capacity(set.keys.len());
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk.common.key_id.clone().unwrap_or_else(|| i.to_string());
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                _ => return Err(JwksError::Unsupported { kid }),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| JwksError::BadKey {
                kid: kid.clone(),
                why: e.to_string(),
            })?;
            if keys.insert(kid.clone(), Key { alg, key }).is_some() {
                return Err(JwksError::DuplicateKid(kid));
            }
        }
        let only = (keys.len() == 1)
            .then(|| keys.keys().next().cloned())
            .flatten();
        Ok(Self { keys, only, rules })
    }

    /// A verifier with no keys yet (every token is `UnknownKey`): the state
    /// before a JWKS fetched from a URL arrives.
    pub fn without_keys(rules: ClaimRules) -> Self {
        Self {
            keys: HashMap::new(),
            only: None,
            rules,
        }
    }

    /// The claim rules (issuer, audience, claim names).
    pub fn rules(&self) -> &ClaimRules {
        &self.rules
    }

    /// Verifies `token` at `now` (Unix seconds): algorithm, key, signature,
    /// then claims.
    pub fn verify(&self, token: &[u8], now: u64) -> Result<TokenIdentity, TokenError> {
        if !looks_like_jwt(token) {
            return Err(TokenError::Malformed);
        }
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `none` and unknown names do not even parse as an algorithm.
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                if header_alg_is_named(token) {
                    TokenError::AlgorithmRefused
                } else {
                    TokenError::Malformed
                }
            }
            _ => TokenError::Malformed,
        })?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(TokenError::AlgorithmRefused);
        }
        let kid = header.kid.as_deref().or(self.only.as_deref());
        let key = kid
            .and_then(|k| self.keys.get(k))
            .ok_or(TokenError::UnknownKey)?;
        if key.alg != header.alg {
            return Err(TokenError::AlgorithmRefused);
        }
        // Signature only: the claims are checked by `check_claims`, with one
        // clock and one set of rules.
        let mut v = Validation::new(key.alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| match e
                .kind()
            {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::AlgorithmRefused,
                jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::BadSignature,
            })?;
        check_claims(&data.claims, &self.rules, now)
    }
}

/// Whether the header is JSON naming some `alg` (so a parse failure was the
/// algorithm's name, e.g. `none`, rather than the header's shape).
fn header_alg_is_named(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    serde_json::from_slice::<Map<String, Value>>(&bytes)
        .ok()
        .is_some_and(|h| h.get("alg").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://idp".into(),
            audience: "https://gate/mcp".into(),
            agent_claim: "azp".into(),
            groups_claim: Some("groups".into()),
            customer_claim: Some("org_id".into()),
            leeway_s: 30,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn good() -> Value {
        json!({"iss": "https://idp", "aud": "https://gate/mcp", "exp": 1000, "sub": "alice",
               "azp": "bot", "groups": ["admins"]})
    }

    fn with(k: &str, v: Value) -> Map<String, Value> {
        let mut m = claims(good());
        m.insert(k.into(), v);
        m
    }

    #[test]
    fn good_token_names_agent_user_and_groups() {
        let id = check_claims(&claims(good()), &rules(), 900);
        assert_eq!(
            id,
            Ok(TokenIdentity {
                agent: "bot".into(),
                user: Some("alice".into()),
                groups: Some(vec!["admins".into()]),
                customer: None,
                valid_from: 0,
                valid_until: 1030,
            })
        );
    }

    #[test]
    fn the_customer_claim_names_the_customer() {
        let id = check_claims(&with("org_id", json!("acme")), &rules(), 900).unwrap();
        assert_eq!(id.customer.as_deref(), Some("acme"));
        let id = check_claims(&with("org_id", json!(42)), &rules(), 900).unwrap();
        assert_eq!(id.customer.as_deref(), Some("42"));
        for bad in [
            json!(["a"]),
            json!({"a": 1}),
            json!(true),
            json!(""),
            json!("acme\nfake_metric 1"),
            json!("a b"),
        ] {
            assert_eq!(
                check_claims(&with("org_id", bad), &rules(), 900),
                Err(TokenError::Malformed)
            );
        }
        let mut r = rules();
        r.customer_claim = None;
        let id = check_claims(&with("org_id", json!("acme")), &r, 900).unwrap();
        assert_eq!(id.customer, None);
    }

    #[test]
    fn time_window_matches_the_claim_checks() {
        let mut m = claims(good());
        m.insert("nbf".into(), json!(500.5));
        let id = check_claims(&m, &rules(), 900).unwrap();
        for now in [400, 470, 471, 900, 1029, 1030, 2000] {
            assert_eq!(
                id.holds_at(now),
                check_claims(&m, &rules(), now).is_ok(),
                "at {now}"
            );
        }
    }

    #[test]
    fn expiry_honours_leeway() {
        assert!(check_claims(&claims(good()), &rules(), 1029).is_ok());
        assert_eq!(
            check_claims(&claims(good()), &rules(), 1030),
            Err(TokenError::Expired)
        );
        let mut m = claims(good());
        m.remove("exp");
        assert_eq!(check_claims(&m, &rules(), 0), Err(TokenError::Expired));
    }

    #[test]
    fn not_before_honours_leeway() {
        let m = with("nbf", json!(930));
        assert!(check_claims(&m, &rules(), 900).is_ok());
        assert_eq!(
            check_claims(&m, &rules(), 899),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let m = with("iss", json!("https://idp/"));
        assert_eq!(check_claims(&m, &rules(), 0), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn audience_string_or_array_must_contain_ours() {
        let ok = with("aud", json!(["x", "https://gate/mcp"]));
        assert!(check_claims(&ok, &rules(), 0).is_ok());
        for bad in [json!("x"), json!(["x"]), json!(null), json!(3)] {
            let m = with("aud", bad);
            assert_eq!(
                check_claims(&m, &rules(), 0),
                Err(TokenError::WrongAudience)
            );
        }
    }

    #[test]
    fn act_claim_makes_sub_the_user_and_actor_the_agent() {
        let m = with("act", json!({"sub": "helper"}));
        let id = check_claims(&m, &rules(), 0).unwrap();
        assert_eq!(
            (id.agent.as_str(), id.user.as_deref()),
            ("helper", Some("alice"))
        );
    }

    #[test]
    fn agent_falls_back_to_client_id_and_acts_for_nobody_as_itself() {
        let mut m = claims(good());
        m.remove("azp");
        m.insert("client_id".into(), json!("bot"));
        m.insert("sub".into(), json!("bot"));
        let id = check_claims(&m, &rules(), 0).unwrap();
        assert_eq!((id.agent.as_str(), id.user), ("bot", None));
        m.remove("client_id");
        assert_eq!(check_claims(&m, &rules(), 0), Err(TokenError::MissingClaim));
    }

    #[test]
    fn wrongly_typed_claims_are_malformed() {
        assert_eq!(
            check_claims(&with("exp", json!("soon")), &rules(), 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            check_claims(&with("groups", json!([1])), &rules(), 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt(b"a.b.c"));
        assert!(!looks_like_jwt(b"a.b"));
        assert!(!looks_like_jwt(b"a..c"));
        assert!(!looks_like_jwt(b"a.b.c.d"));
        assert!(!looks_like_jwt(b"tg_0123"));
        assert!(!looks_like_jwt(b"a.b+.c"));
    }

    #[test]
    fn symmetric_keys_are_refused() {
        let jwks = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#;
        assert!(matches!(
            Verifier::from_jwks(jwks, rules()),
            Err(JwksError::Unsupported { .. })
        ));
        assert_eq!(
            Verifier::from_jwks(r#"{"keys":[]}"#, rules()).err(),
            Some(JwksError::Empty)
        );
    }

    #[test]
    fn none_and_hmac_tokens_are_refused_before_keys() {
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let v = Verifier::from_jwks(jwks, rules()).unwrap();
        // {"alg":"none","kid":"k"} . {} . (empty signature is not base64url-non-empty)
        assert_eq!(
            v.verify(b"eyJhbGciOiJub25lIiwia2lkIjoiayJ9.e30.eA", 0),
            Err(TokenError::AlgorithmRefused)
        );
        // {"alg":"HS256","kid":"k"}
        assert_eq!(
            v.verify(b"eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.eA", 0),
            Err(TokenError::AlgorithmRefused)
        );
        // {"alg":"EdDSA","kid":"other"}
        assert_eq!(
            v.verify(b"eyJhbGciOiJFZERTQSIsImtpZCI6Im90aGVyIn0.e30.eA", 0),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            v.verify(b"bm90IGpzb24.e30.eA", 0),
            Err(TokenError::Malformed)
        );
    }
}

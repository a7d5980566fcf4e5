//! `[auth]`: bearer JWTs and sub-tokens.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// `[auth]`: identity providers toolgate trusts besides API keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// JWT bearer tokens from the organisation's IdP. Default: none (API keys only).
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Sub-tokens minted by `toolgate token mint`. Default: none accepted.
    #[serde(default)]
    pub subtokens: Option<SubtokensConfig>,
}

/// `[auth.subtokens]`: bearer tokens an operator mints for one agent,
/// narrowed to a user, tools and an expiry, revocable at run time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtokensConfig {
    /// Directory of the signing key (`signing.key`, generated 0600 at first
    /// use), the ledger of minted tokens (`minted.jsonl`) and the revocation
    /// list (`revoked`), relative to the config file. Default `subtokens`.
    #[serde(default = "default_subtokens_dir")]
    pub dir: PathBuf,
    /// Longest lifetime `token mint` grants, seconds. Default 2592000 (30 days).
    #[serde(default = "default_subtoken_max_ttl_s")]
    pub max_ttl_s: u64,
}

pub(crate) fn default_subtokens_dir() -> PathBuf {
    PathBuf::from("subtokens")
}

pub(crate) fn default_subtoken_max_ttl_s() -> u64 {
    30 * 24 * 3600
}

/// `[auth.jwt]`: JWT bearer tokens signed by the IdP's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`, and the authorization server advertised in the
    /// protected resource metadata.
    pub issuer: Spanned<String>,
    /// toolgate's own resource URI (RFC 8707): tokens whose `aud` does not
    /// contain it are refused.
    pub audience: Spanned<String>,
    /// The IdP's JWKS, relative to the config file; re-read on reload.
    /// Exactly one of this and `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    /// The IdP's JWKS endpoint (`https://`, or `http://` on loopback only),
    /// fetched off the request path at start, every `jwks_refresh_s`, and
    /// when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    /// With `jwks_url`: PEM CA bundle for the IdP's certificate. Default:
    /// the system's trusted roots.
    #[serde(default)]
    pub jwks_ca_file: Option<Spanned<String>>,
    /// With `jwks_url`: how often the JWKS is fetched again, seconds. Default 300.
    #[serde(default = "default_jwks_refresh_s")]
    pub jwks_refresh_s: u64,
    /// With `jwks_url`: the soonest a token with an unknown `kid` triggers
    /// another fetch, seconds (so random `kid`s cannot flood the IdP). Default 10.
    #[serde(default = "default_jwks_refetch_min_s")]
    pub jwks_refetch_min_s: u64,
    /// Claim naming the agent (a configured `[[agents]] id`). Default `azp`;
    /// `client_id` is tried when it is absent.
    #[serde(default = "default_agent_claim")]
    pub agent_claim: String,
    /// Claim holding the end user's groups. Default none.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claim naming the customer (tenant) a call is attributed to, e.g.
    /// `org_id`. Default none: the agent's configured `customer`, else its id.
    #[serde(default)]
    pub customer_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds. Default 30.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
}

pub(crate) fn default_jwks_refresh_s() -> u64 {
    300
}

pub(crate) fn default_jwks_refetch_min_s() -> u64 {
    10
}

pub(crate) fn default_agent_claim() -> String {
    "azp".to_owned()
}

pub(crate) fn default_leeway_s() -> u64 {
    30
}

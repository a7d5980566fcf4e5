//! `[identity_assertions]`, toolgate's key for signed end-user assertions,
//! and `[upstreams.identity]`, an upstream's choice to receive them.

use serde::Deserialize;
use toml::Spanned;

/// `[identity_assertions]`: the Ed25519 key toolgate signs end-user
/// assertions with, and what the assertions say of themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityAssertionsConfig {
    /// The private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`),
    /// relative to the configuration file. Exactly one of this and `key_env`.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
    /// An environment variable holding the PEM text.
    #[serde(default)]
    pub key_env: Option<Spanned<String>>,
    /// Earlier keys (PEM files): their public halves stay in the published
    /// JWKS so assertions they signed still verify; never used to sign.
    #[serde(default)]
    pub previous_key_files: Vec<Spanned<String>>,
    /// The `iss` of every assertion. Default `toolgate`.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Seconds an assertion is valid (`exp - iat`), 1–3600. Default 60.
    #[serde(default = "default_lifetime_s")]
    pub lifetime_s: u64,
}

fn default_issuer() -> String {
    "toolgate".into()
}

fn default_lifetime_s() -> u64 {
    60
}

/// `[upstreams.identity]`: how the end user of each call reaches the
/// upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamIdentityConfig {
    /// `assertion`: a JWT toolgate signs per call (`sub` the end user,
    /// `act.sub` the agent), verifiable against toolgate's JWKS.
    /// `token_exchange`: the user's own token exchanged at the IdP (RFC
    /// 8693) for one scoped to this upstream.
    pub mode: IdentityMode,
    /// The header carrying it. Default `Toolgate-User-Assertion` for an
    /// assertion (the bare token), `Authorization` for an exchanged token
    /// (`Bearer <token>`).
    #[serde(default)]
    pub header: Option<String>,
    /// `assertion`: its `aud`. Default: the upstream's `url` (for an
    /// `openapi` upstream, its `base_url` or `spec`) as written.
    /// `token_exchange`: the `audience` asked for (RFC 8693), default none.
    #[serde(default)]
    pub audience: Option<String>,
    /// `token_exchange`: the IdP's token endpoint and toolgate's client
    /// there; its `resource` (RFC 8707) defaults to the upstream's URL.
    #[serde(default)]
    pub exchange: Option<super::upstreams::OAuthConfig>,
    /// `token_exchange`: name the agent as the actor (an `actor_token`
    /// toolgate signs with `[identity_assertions]`, `sub` the agent).
    /// Default false.
    #[serde(default)]
    pub actor: bool,
    /// `token_exchange`: what a call gets when the exchange fails:
    /// `refuse` (default) or `credential` (the upstream's service
    /// credential, as without `[upstreams.identity]`).
    #[serde(default)]
    pub fallback: ExchangeFallback,
}

/// How an upstream learns the end user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// A signed assertion per call.
    Assertion,
    /// The user's token exchanged for one scoped to the upstream.
    TokenExchange,
}

impl IdentityMode {
    /// The name audit records use.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Assertion => "assertion",
            IdentityMode::TokenExchange => "token_exchange",
        }
    }
}

/// What a call gets when its user's token cannot be exchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeFallback {
    /// The call is refused (`token_exchange_failed`).
    #[default]
    Refuse,
    /// The call goes with the upstream's service credential alone.
    Credential,
}

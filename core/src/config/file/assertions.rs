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
    /// `connected_account`: the provider where each user connects their
    /// own account (authorization code with PKCE).
    #[serde(default)]
    pub connect: Option<ConnectConfig>,
}

/// `[upstreams.identity.connect]`: the OAuth provider of a connected
/// account (RFC 6749 §4.1 with PKCE, RFC 7636) and toolgate's client there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// Where the user's browser is sent to consent (`https://`, or
    /// `http://` on loopback only).
    pub authorize_url: Spanned<String>,
    /// The token endpoint (`https://`, or `http://` on loopback only).
    pub token_url: Spanned<String>,
    /// toolgate's client id there.
    pub client_id: String,
    /// Environment variable holding the client secret. Exactly one of this
    /// and `client_secret_file`.
    #[serde(default)]
    pub client_secret_env: Option<Spanned<String>>,
    /// File holding the client secret, relative to the config file.
    #[serde(default)]
    pub client_secret_file: Option<Spanned<String>>,
    /// `scope` to ask the user for (ask for `offline_access` too where the
    /// provider needs it for a refresh token). Default none.
    #[serde(default)]
    pub scope: Option<String>,
    /// `resource` indicator (RFC 8707). Default none.
    #[serde(default)]
    pub resource: Option<String>,
    /// PEM CA bundle for the token endpoint. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

impl ConnectConfig {
    /// The token endpoint part, checked like any other.
    pub fn token_endpoint(&self) -> super::upstreams::OAuthConfig {
        super::upstreams::OAuthConfig {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret_env: self.client_secret_env.clone(),
            client_secret_file: self.client_secret_file.clone(),
            scope: self.scope.clone(),
            resource: self.resource.clone(),
            ca_file: self.ca_file.clone(),
        }
    }
}

/// `[connected_accounts]`: where users' connected accounts are sealed and
/// where their browsers reach toolgate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectedAccountsConfig {
    /// The key refresh tokens are sealed with at rest: 32 random bytes,
    /// base64 (`openssl rand -base64 32`), in this environment variable.
    /// Exactly one of this and `key_file`.
    #[serde(default)]
    pub key_env: Option<Spanned<String>>,
    /// The same, in a file relative to the config file.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
    /// The agent listener's URL as users' browsers reach it, e.g.
    /// `https://toolgate.corp.example`: connect links and the OAuth
    /// callback (`{public_url}/connect/{upstream}/callback`) are built on it.
    pub public_url: Spanned<String>,
    /// Seconds a connect link (and the consent it starts) stays usable,
    /// 60–3600. Default 600.
    #[serde(default = "default_link_lifetime_s")]
    pub link_lifetime_s: u64,
    /// A header naming the user the browser signed in as, set by an
    /// authenticating proxy in front of `/connect/` (and stripped by it from
    /// what clients send): when set, a link and its consent serve only the
    /// user they name. Default none: whoever holds a link uses it.
    #[serde(default)]
    pub user_header: Option<String>,
}

fn default_link_lifetime_s() -> u64 {
    600
}

/// How an upstream learns the end user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// A signed assertion per call.
    Assertion,
    /// The user's token exchanged for one scoped to the upstream.
    TokenExchange,
    /// The user's own account, connected through toolgate's OAuth flow.
    ConnectedAccount,
}

impl IdentityMode {
    /// The name audit records use.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Assertion => "assertion",
            IdentityMode::TokenExchange => "token_exchange",
            IdentityMode::ConnectedAccount => "connected_account",
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

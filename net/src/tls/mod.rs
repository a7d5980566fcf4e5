//! TLS (rustls, ring provider) for the agent and admin listeners — the server
//! configuration built from PEM files and rebuilt on reload, and the
//! identity read from a verified client certificate (mTLS) — and toward
//! upstreams and the judge.
//!
//! Only TLS 1.2 and 1.3 with the provider's modern AEAD suites are offered;
//! ALPN advertises `http/1.1`, the one protocol the listener speaks.

mod client;
mod peer;
mod server;

pub use client::{client_tls, ClientTls};
pub use peer::{cert_names, PeerNames};
pub use server::{load_server_config, TlsError};

pub use client::client_config;

use std::collections::HashMap;
use std::sync::Arc;

use toolgate_core::config::ValidConfig;

/// All TLS material a configuration names, loaded and checked at start.
#[derive(Default)]
pub struct TlsSetup {
    /// The agent listener's configuration (`[server.tls]`).
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// The admin listener's configuration (`[admin.tls]`).
    pub admin: Option<Arc<rustls::ServerConfig>>,
    /// By upstream name: TLS toward each `https://` upstream.
    pub upstreams: HashMap<String, ClientTls>,
    /// TLS to the judge, for an `https://` judge.
    pub judge: Option<ClientTls>,
    /// TLS to the IdP, for an `https://` `auth.jwt.jwks_url`.
    pub jwks: Option<ClientTls>,
}

impl TlsSetup {
    /// Loads every certificate, key and CA bundle `cfg` names; an error
    /// says which section and file.
    pub fn load(cfg: &ValidConfig) -> Result<Self, String> {
        let server = cfg
            .tls
            .as_ref()
            .map(load_server_config)
            .transpose()
            .map_err(|e| format!("[server.tls]: {e}"))?;
        let admin = cfg
            .admin_tls
            .as_ref()
            .map(load_server_config)
            .transpose()
            .map_err(|e| format!("[admin.tls]: {e}"))?;
        let mut upstreams = HashMap::new();
        for u in &cfg.upstreams {
            let tls = client_tls(&u.url, u.ca_file.as_deref())
                .map_err(|e| format!("upstream `{}`: {e}", u.name()))?;
            if let Some(tls) = tls {
                upstreams.insert(u.name().to_owned(), tls);
            }
        }
        let judge = cfg
            .judge_url
            .as_ref()
            .map(|u| client_tls(u, cfg.judge_ca_file.as_deref()))
            .transpose()
            .map_err(|e| format!("judge: {e}"))?
            .flatten();
        let jwks = cfg
            .jwks_url
            .as_ref()
            .map(|u| client_tls(u, cfg.jwks_ca_file.as_deref()))
            .transpose()
            .map_err(|e| format!("auth.jwt.jwks_url: {e}"))?
            .flatten();
        Ok(Self {
            server,
            admin,
            upstreams,
            judge,
            jwks,
        })
    }
}

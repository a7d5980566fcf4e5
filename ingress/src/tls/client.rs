//! TLS toward upstreams and the judge: the system's trusted roots (read
//! once per process) or a configured CA bundle, SNI and hostname
//! verification by rustls/webpki.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use toolgate_core::upstream_url::UpstreamUrl;

use super::server::{certs, provider, TlsError};

/// How to open TLS to one endpoint.
#[derive(Clone)]
pub struct ClientTls {
    /// The handshake configuration.
    pub connector: TlsConnector,
    /// SNI and the name the certificate must carry.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("name", &self.name)
            .finish()
    }
}

/// The system's trusted roots; certificates the platform store holds but
/// webpki cannot parse are skipped, as every rustls client does.
pub(crate) fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "the system trust store is empty".to_owned());
                return Err(format!("no trusted root certificates: {why}"));
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(TlsError::Rustls)
}

/// TLS settings for `url`: none for `http://`; for `https://` roots from
/// `ca_file` or else the system, verifying the URL's host.
pub fn client_tls(
    url: &UpstreamUrl,
    ca_file: Option<&Path>,
) -> Result<Option<ClientTls>, TlsError> {
    if !url.tls {
        return Ok(None);
    }
    let roots = match ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| TlsError::File {
                    path: ca.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
            Arc::new(roots)
        }
        None => system_roots()?,
    };
    let name = ServerName::try_from(url.server_name().to_owned())
        .map_err(|e| TlsError::Rustls(format!("`{}`: {e}", url.host)))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(ClientTls {
        connector: TlsConnector::from(Arc::new(config)),
        name,
    }))
}

//! TLS toward upstreams and the judge: the system's trusted roots (read
//! once per process) or a configured CA bundle, SNI and hostname
//! verification by rustls/webpki.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::TlsConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use toolgate_core::upstream_url::UpstreamUrl;
use toolgate_sinks::tls::{build_client_config, system_roots};

use super::server::{certs, file_err, TlsError};

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

/// The client configuration of every ingress TLS client (upstreams, the
/// judge, the IdP, the admin CLI): roots from `ca_file` (every certificate
/// in it must be usable) or else the system's, the client certificate
/// `identity` (chain file, key file) when given, ALPN `http/1.1`; built by
/// the one builder in [`toolgate_sinks::tls`].
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| file_err(ca, e))?;
            }
            Arc::new(roots)
        }
        None => system_roots()
            .map_err(|why| TlsError::Rustls(format!("no trusted root certificates: {why}")))?,
    };
    let Some((cert, key)) = identity else {
        return build_client_config(roots, None, &[b"http/1.1"])
            .map_err(|e| TlsError::Rustls(e.to_string()));
    };
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    build_client_config(roots, Some((chain, key)), &[b"http/1.1"])
        .map_err(|e| TlsError::ClientCert(e.to_string()))
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
    let config = client_config(ca_file, None)?;
    let name = ServerName::try_from(url.server_name().to_owned())
        .map_err(|e| TlsError::Rustls(format!("`{}`: {e}", url.host)))?;
    Ok(Some(ClientTls {
        connector: TlsConnector::from(config),
        name,
    }))
}

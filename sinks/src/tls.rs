//! TLS and plain client connections for sinks (HTTPS collectors, syslog
//! over TLS): one rustls with the ring provider, the system's roots or an
//! operator CA file, and an optional client certificate.
//!
//! The client configuration itself ([`build_client_config`], with
//! [`provider`] and [`system_roots`]) is the one every toolgate TLS client
//! uses: `ingress` builds its upstream, judge, IdP and admin-CLI clients
//! with it too.
//!
//! The connections are blocking: sinks run on their own threads (as does
//! the admin CLI), and every connect, read and write is bounded by a
//! timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Why a TLS client setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{what} `{path}`: {why}")]
    Pem {
        /// Which file (`ca_file`, `cert_file`, `key_file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// No trust roots at all.
    #[error("no trusted CA certificates: the system has none and no `ca_file` is set")]
    NoRoots,
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server name is neither a DNS name nor an IP address.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// Where a client's TLS trust and identity come from.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM CA certificates; none: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

fn pem_err(what: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The crypto provider of every toolgate rustls configuration: ring (no C
/// toolchain needed for aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted roots, read once per process; certificates the
/// platform store holds but webpki cannot parse are skipped, as every
/// rustls client does. The error says why there are none.
pub fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "skipping an unreadable system CA certificate");
            }
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(found
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "the system trust store is empty".to_owned()));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// A client configuration: TLS 1.3 and 1.2 with the ring provider, trusting
/// `roots`, presenting `identity` (a certificate chain and its key) when
/// given, offering the `alpn` protocols (none: no ALPN).
pub fn build_client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Builds a sink's client configuration from `files` (no ALPN).
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &files.ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| pem_err("ca_file", ca, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err("ca_file", ca, e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(pem_err("ca_file", ca, "no usable CA certificate"));
            }
            Arc::new(roots)
        }
        None => system_roots().map_err(|_| TlsError::NoRoots)?,
    };
    let identity = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| pem_err("cert_file", cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err("cert_file", cert, e))?;
            if chain.is_empty() {
                return Err(pem_err("cert_file", cert, "no certificate"));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("key_file", key, e))?;
            Some((chain, key))
        }
        _ => None,
    };
    Ok(build_client_config(roots, identity, &[])?)
}

/// A checked TLS server name.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
}

/// A connection to a collector, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// The TCP stream under it (for timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// Connects to the first of `host:port`'s addresses that answers within
/// `timeout`, then (with `tls`) completes the handshake within it too.
pub fn connect(
    target: &str,
    tls: Option<(&Arc<ClientConfig>, &ServerName<'static>)>,
    timeout: Duration,
) -> std::io::Result<Conn> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("`{target}` resolves to no address"),
    );
    for addr in addrs {
        match connect_addr(addr, tls, timeout) {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to one address (see [`connect`]).
pub fn connect_addr(
    addr: SocketAddr,
    tls: Option<(&Arc<ClientConfig>, &ServerName<'static>)>,
    timeout: Duration,
) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let _ = tcp.set_nodelay(true);
    let Some((config, name)) = tls else {
        return Ok(Conn::Plain(tcp));
    };
    let conn = ClientConnection::new(Arc::clone(config), name.clone())
        .map_err(|e| std::io::Error::other(format!("TLS: {e}")))?;
    let mut stream = StreamOwned::new(conn, tcp);
    // Handshake now, so a bad certificate is reported as such and not as
    // a failed write of the first batch.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    }
    Ok(Conn::Tls(Box::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_ca_file_is_reported() {
        let dir = std::env::temp_dir().join(format!("toolgate-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let missing = TlsFiles {
            ca_file: Some(dir.join("nope.pem")),
            ..TlsFiles::default()
        };
        let e = client_config(&missing).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("ca_file `")));
        let empty = dir.join("empty.pem");
        let _ = std::fs::write(&empty, b"not pem\n");
        let e = client_config(&TlsFiles {
            ca_file: Some(empty),
            ..TlsFiles::default()
        })
        .err()
        .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("no usable CA certificate")),);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("bad name").is_err());
    }
}

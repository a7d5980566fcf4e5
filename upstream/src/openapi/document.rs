//! Reading an `openapi` upstream's document from where `spec` names it: a
//! file, or an `http(s)://` URL fetched with a bounded blocking GET (at
//! start, by `toolgate check`, and by the refresher thread; never on a
//! shard).

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use toolgate_core::config::SpecSource;
use toolgate_core::upstream_url::{reachable, UpstreamUrl};
use toolgate_sinks::http::HttpClient;

/// Time allowed to connect and to receive a whole document.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be read.
    #[error("cannot read the file: {0}")]
    File(std::io::Error),
    /// The URL's host resolves to an address toolgate never dials.
    #[error("`{0}` resolves to a link-local or unspecified address")]
    Unreachable(String),
    /// TLS toward the URL cannot be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// Connecting or reading failed.
    #[error("cannot fetch: {0}")]
    Fetch(std::io::Error),
    /// The server answered something other than 200.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// The body is not UTF-8 text.
    #[error("the document is not UTF-8 text")]
    NotText,
}

/// The text of the document `source` names; `ca_file` (the upstream's)
/// verifies an `https://` URL, else the system's roots do.
pub fn read(source: &SpecSource, ca_file: Option<&Path>) -> Result<String, ReadError> {
    match source {
        SpecSource::File(path) => std::fs::read_to_string(path).map_err(ReadError::File),
        SpecSource::Url(url) => fetch(url, ca_file),
    }
}

fn fetch(url: &UpstreamUrl, ca_file: Option<&Path>) -> Result<String, ReadError> {
    let dial = url.dial_target();
    // The same rule as every other dial: never a metadata address, however
    // the name resolves.
    let addrs: Vec<_> = dial.to_socket_addrs().map_err(ReadError::Fetch)?.collect();
    if addrs.iter().any(|a| !reachable(a.ip())) {
        return Err(ReadError::Unreachable(url.host.clone()));
    }
    let tls = if url.tls {
        let config = toolgate_net::tls::client_config(ca_file, None)
            .map_err(|e| ReadError::Tls(e.to_string()))?;
        let name = toolgate_sinks::tls::server_name(url.server_name())
            .map_err(|e| ReadError::Tls(e.to_string()))?;
        Some((config, name))
    } else {
        None
    };
    // Dial the address that was checked, not the name again: a second
    // lookup could answer differently.
    let Some(addr) = addrs.first() else {
        return Err(ReadError::Unreachable(url.host.clone()));
    };
    let mut client = HttpClient::new(addr.to_string(), url.authority.clone(), tls, FETCH_TIMEOUT);
    let resp = client
        .get(
            &url.path,
            &[(
                "Accept",
                b"application/json, application/yaml, text/yaml, */*",
            )],
        )
        .map_err(ReadError::Fetch)?;
    if resp.status != 200 {
        return Err(ReadError::Status(resp.status));
    }
    String::from_utf8(resp.body).map_err(|_| ReadError::NotText)
}

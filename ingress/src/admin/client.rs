//! A small blocking client of the admin API, for `toolgate admin` and
//! `toolgate apply`: one request per connection, HTTP/1.1 over plain TCP
//! (`http://`, a loopback listener) or TLS (`https://`, `[admin.tls]`),
//! verified against `--ca-file` or the system's roots, with an optional
//! client certificate for an admin listener that requires one.

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use toolgate_sinks::tls::connect_addr;

/// Largest answer read.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host:port` or `https://host:port`.
    #[error("`{0}` is not an admin API URL such as `http://127.0.0.1:9091` or `https://admin.example:9091`")]
    Url(String),
    /// The TLS options cannot be used.
    #[error("{0}")]
    Tls(String),
    /// Connecting, sending or receiving failed.
    #[error("admin API at `{addr}`: {reason}")]
    Io {
        /// Where.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The answer is not HTTP.
    #[error("admin API at `{0}` answered something that is not HTTP (plain `http://` to a TLS listener? use `https://`)")]
    Response(String),
}

/// TLS options of the client (used with `https://` only).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA certificates the admin listener's certificate must chain to;
    /// default: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for an admin listener with
    /// `client_ca_file` (mTLS).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `ETag` header, unquoted.
    pub etag: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client of one admin API.
#[derive(Clone)]
pub struct Client {
    addr: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The client TLS configuration for `opts`.
fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let identity = match (&opts.client_cert, &opts.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => {
            return Err(ClientError::Tls(
                "give both `--client-cert` and `--client-key`, or neither".into(),
            ))
        }
    };
    toolgate_net::tls::client_config(opts.ca_file.as_deref(), identity)
        .map_err(|e| ClientError::Tls(e.to_string()))
}

impl Client {
    /// A client of the API at `url` (`http://host:port`, or `https://host:port`
    /// verified with `tls`), sending `token`.
    pub fn new(url: &str, token: Option<String>, tls: &TlsOptions) -> Result<Self, ClientError> {
        let (secure, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            (None, None) => return Err(ClientError::Url(url.to_owned())),
        };
        let addr = Some(rest.trim_end_matches('/'))
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| ClientError::Url(url.to_owned()))?;
        let tls = if secure {
            // The host as the certificate names it: no port, no brackets.
            let host = match addr.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => addr,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| ClientError::Url(url.to_owned()))?;
            Some((client_config(tls)?, name))
        } else {
            None
        };
        Ok(Self {
            addr: addr.to_owned(),
            tls,
            token,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends one request; `headers` are added to Host, Authorization and
    /// the body's Content-Type/Length.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let io = |e: std::io::Error| ClientError::Io {
            addr: self.addr.clone(),
            reason: e.to_string(),
        };
        let sock = self
            .addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| ClientError::Url(self.addr.clone()))?;
        let tls = self.tls.as_ref().map(|(c, n)| (c, n));
        let stream = connect_addr(sock, tls, self.timeout).map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method == "PUT" || method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut buf = Vec::new();
        match exchange(stream, head.as_bytes(), body, &mut buf) {
            Ok(()) => {}
            // A TLS server that closes without close_notify after a complete
            // answer: the answer stands (its length is checked below).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
            Err(e) => return Err(io(e)),
        }
        parse_reply(&buf).ok_or_else(|| ClientError::Response(self.addr.clone()))
    }
}

/// Writes the request and reads the answer to its end.
fn exchange<S: Read + Write>(
    mut stream: S,
    head: &[u8],
    body: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    stream.take(MAX_REPLY_BYTES).read_to_end(buf).map(|_| ())
}

fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(buf).ok()? else {
        return None;
    };
    let status = resp.code?;
    let mut etag = None;
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("etag") {
            etag = std::str::from_utf8(h.value)
                .ok()
                .map(|v| v.trim().trim_matches('"').to_owned());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let rest = &buf[len..];
    let body = match length {
        Some(n) => rest.get(..n)?.to_vec(),
        None => rest.to_vec(),
    };
    Some(Reply { status, etag, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_their_etag_and_body() {
        let r =
            parse_reply(b"HTTP/1.1 200 OK\r\nETag: \"4\"\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(
            (r.status, r.etag.as_deref(), &r.body[..]),
            (200, Some("4"), &b"{}"[..])
        );
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_none());
        let none = TlsOptions::default();
        assert!(Client::new("ftp://x:1", None, &none).is_err());
        assert!(Client::new("http://127.0.0.1:9091/", None, &none).is_ok());
        assert!(Client::new("http://127.0.0.1:9091/v1", None, &none).is_err());
        let half = TlsOptions {
            client_cert: Some(PathBuf::from("c.pem")),
            ..TlsOptions::default()
        };
        let e = Client::new("https://127.0.0.1:9091", None, &half).err();
        assert!(e.is_some_and(|e| e.to_string().contains("`--client-key`")));
        let missing = TlsOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsOptions::default()
        };
        let e = Client::new("https://[::1]:9091", None, &missing).err();
        assert!(e.is_some_and(|e| e.to_string().contains("/nonexistent/ca.pem")));
    }
}

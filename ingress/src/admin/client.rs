//! A small blocking client of the admin API, for `toolgate admin` and
//! `toolgate apply`: one request per connection, plain HTTP/1.1 to a
//! loopback address (the admin listener has no TLS yet).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest answer read.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host:port`.
    #[error("`{0}` is not an admin API URL such as `http://127.0.0.1:9091`")]
    Url(String),
    /// Connecting, sending or receiving failed.
    #[error("admin API at `{addr}`: {reason}")]
    Io {
        /// Where.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The answer is not HTTP.
    #[error("admin API at `{0}` answered something that is not HTTP")]
    Response(String),
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
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of the API at `url` (`http://host:port`), sending `token`.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let addr = url
            .strip_prefix("http://")
            .map(|r| r.trim_end_matches('/'))
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| ClientError::Url(url.to_owned()))?;
        Ok(Self {
            addr: addr.to_owned(),
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
        let mut stream = TcpStream::connect_timeout(&sock, self.timeout).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
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
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        let mut buf = Vec::new();
        stream
            .take(MAX_REPLY_BYTES)
            .read_to_end(&mut buf)
            .map_err(io)?;
        parse_reply(&buf).ok_or_else(|| ClientError::Response(self.addr.clone()))
    }
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
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nETag: \"4\"\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            (r.status, r.etag.as_deref(), &r.body[..]),
            (200, Some("4"), &b"{}"[..])
        );
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_none());
        assert!(Client::new("https://x:1", None).is_err());
        assert!(Client::new("http://127.0.0.1:9091/", None).is_ok());
    }
}

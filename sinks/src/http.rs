//! A small blocking HTTP/1.1 client for the SIEM sinks (`POST`) and for
//! fetching documents at start (`GET`): one
//! connection kept alive and reused, every response read bounded in size
//! and time.
//!
//! Deliberately narrow: sinks send one request at a time from their own
//! thread, so there is no pipelining, no redirects and no proxy support. A
//! reused connection the collector closed while idle is detected on the
//! next request, which is then sent once more on a fresh connection (the
//! sinks are at-least-once: a resend is always allowed).

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::tls::{connect, Conn};

/// Largest response head read, bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body read, bytes (a bulk response for a large batch
/// with per-item errors fits comfortably).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Retry-After` in seconds, when given as such.
    pub retry_after: Option<Duration>,
    /// The body (decoded from chunked transfer).
    pub body: Vec<u8>,
}

/// Where requests go.
pub struct HttpClient {
    dial: String,
    authority: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
    conn: Option<Conn>,
    head: Vec<u8>,
}

impl HttpClient {
    /// A client of `dial` (`host:port`), sending `Host: authority`, over
    /// TLS when `tls` is set; `timeout` bounds connecting and each request
    /// with its response.
    pub fn new(
        dial: String,
        authority: String,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        timeout: Duration,
    ) -> Self {
        Self {
            dial,
            authority,
            tls,
            timeout,
            conn: None,
            head: Vec::with_capacity(512),
        }
    }

    /// Where it connects, for messages.
    pub fn target(&self) -> &str {
        &self.dial
    }

    /// Drops the kept-alive connection (after a response that leaves it in
    /// doubt).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Sends `POST path` with `headers` (name, value) and `body`; returns
    /// the response whatever its status.
    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.send("POST", path, headers, body)
    }

    /// Sends `GET path` with `headers`; returns the response whatever its
    /// status.
    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> std::io::Result<Response> {
        self.send("GET", path, headers, b"")
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.authority
        );
        if method != "GET" {
            let _ = write!(self.head, "Content-Length: {}\r\n", body.len());
        }
        for (name, value) in headers {
            self.head.extend_from_slice(name.as_bytes());
            self.head.extend_from_slice(b": ");
            self.head.extend_from_slice(value);
            self.head.extend_from_slice(b"\r\n");
        }
        self.head.extend_from_slice(b"\r\n");
        let reused = self.conn.is_some();
        match self.exchange(body) {
            Ok(r) => Ok(r),
            // A kept-alive connection may have been closed by the
            // collector while idle: try once on a fresh one.
            Err(Failure::BeforeResponse(_)) if reused => {
                self.conn = None;
                self.exchange(body).map_err(Failure::into_io)
            }
            Err(e) => Err(e.into_io()),
        }
    }

    fn exchange(&mut self, body: &[u8]) -> Result<Response, Failure> {
        let deadline = Instant::now() + self.timeout;
        if self.conn.is_none() {
            let tls = self.tls.as_ref().map(|(c, n)| (c, n));
            let c = connect(&self.dial, tls, self.timeout).map_err(Failure::Connect)?;
            self.conn = Some(c);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Connect(std::io::Error::other("no connection")));
        };
        let sent = conn
            .write_all(&self.head)
            .and_then(|()| conn.write_all(body))
            .and_then(|()| conn.flush());
        if let Err(e) = sent {
            self.conn = None;
            return Err(Failure::BeforeResponse(e));
        }
        let res = read_response(conn, deadline);
        match res {
            Ok((r, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(r)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// How an exchange failed.
enum Failure {
    Connect(std::io::Error),
    /// Nothing of a response arrived (the request may or may not have).
    BeforeResponse(std::io::Error),
    /// A response started but broke off or was malformed.
    During(std::io::Error),
}

impl Failure {
    fn into_io(self) -> std::io::Error {
        match self {
            Self::Connect(e) | Self::BeforeResponse(e) | Self::During(e) => e,
        }
    }
}

/// Reads with a deadline over the whole response.
struct Deadline<'a> {
    conn: &'a mut Conn,
    until: Instant,
    got: usize,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response not complete within the I/O timeout",
            ));
        }
        self.conn
            .tcp()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = self.conn.read(buf)?;
        self.got += n;
        Ok(n)
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Reads one response; also says whether the connection may be reused.
fn read_response(conn: &mut Conn, until: Instant) -> Result<(Response, bool), Failure> {
    let mut r = BufReader::with_capacity(
        16 * 1024,
        Deadline {
            conn,
            until,
            got: 0,
        },
    );
    // Nothing read and the connection gone (not merely slow): the collector
    // closed an idle kept-alive connection, worth one more try at once.
    let early = |r: &BufReader<Deadline<'_>>, e: std::io::Error| {
        let slow = matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        );
        if r.get_ref().got == 0 && !slow {
            Failure::BeforeResponse(e)
        } else {
            Failure::During(e)
        }
    };
    loop {
        let mut head = Vec::with_capacity(1024);
        // The head ends at the first empty line.
        loop {
            let before = head.len();
            let n = (&mut r)
                .take((MAX_HEAD_BYTES - head.len().min(MAX_HEAD_BYTES)) as u64)
                .read_until(b'\n', &mut head)
                .map_err(|e| early(&r, e))?;
            if n == 0 {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response",
                );
                return Err(early(&r, e));
            }
            if head.len() >= MAX_HEAD_BYTES {
                return Err(Failure::During(bad("response head too large")));
            }
            let line = &head[before..];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(Failure::During(bad("truncated response head")))
            }
            Err(e) => return Err(Failure::During(bad(format!("malformed response: {e}")))),
        }
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) {
            continue; // 100 Continue and friends: the real answer follows
        }
        let mut length = None;
        let mut chunked = false;
        let mut keep = resp.version == Some(1);
        let mut retry_after = None;
        for h in resp.headers.iter() {
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| Failure::During(bad("bad Content-Length")))?,
                );
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    keep = false;
                } else if v.contains("keep-alive") {
                    keep = true;
                }
            } else if h.name.eq_ignore_ascii_case("retry-after") {
                retry_after = v.parse::<u64>().ok().map(Duration::from_secs);
            }
        }
        let mut body = Vec::new();
        if status == 204 || status == 304 {
        } else if chunked {
            read_chunked(&mut r, &mut body).map_err(Failure::During)?;
        } else if let Some(n) = length {
            if n > MAX_BODY_BYTES {
                return Err(Failure::During(bad(format!(
                    "response body of {n} bytes is too large"
                ))));
            }
            body.resize(n, 0);
            r.read_exact(&mut body).map_err(Failure::During)?;
        } else {
            keep = false; // delimited by the close
            (&mut r)
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .map_err(Failure::During)?;
            if body.len() > MAX_BODY_BYTES {
                return Err(Failure::During(bad("response body too large")));
            }
        }
        return Ok((
            Response {
                status,
                retry_after,
                body,
            },
            keep,
        ));
    }
}

fn read_chunked<R: BufRead>(r: &mut R, body: &mut Vec<u8>) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        r.by_ref().take(1024).read_until(b'\n', &mut line)?;
        let text = std::str::from_utf8(&line).unwrap_or("");
        let size = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                let n = r.by_ref().take(8192).read_until(b'\n', &mut line)?;
                if n == 0 || line == b"\r\n" || line == b"\n" {
                    return Ok(());
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(bad("response body too large"));
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..])?;
        line.clear();
        r.by_ref().take(2).read_until(b'\n', &mut line)?;
    }
}

/// A scripted collector for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// Serves each accepted connection's requests from `answers`, in order,
    /// reading one request (head + Content-Length body) before each answer.
    pub fn server(answers: Vec<Vec<Vec<u8>>>) -> (String, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            for conn_answers in answers {
                let Ok((s, _)) = l.accept() else { break };
                let mut r = BufReader::new(s);
                for a in conn_answers {
                    let mut req = Vec::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = Vec::new();
                        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        let lower = String::from_utf8_lossy(&line).to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        req.extend_from_slice(&line);
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    let mut b = vec![0; len];
                    let _ = r.read_exact(&mut b);
                    req.extend_from_slice(&b);
                    got.push(req);
                    let _ = r.get_mut().write_all(&a);
                }
            }
            got
        });
        (addr, t)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::server;
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn keep_alive_chunked_retry_after_and_reconnect() {
        let (addr, t) = server(vec![
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbusy\r\n1\r\n!\r\n0\r\n\r\n".to_vec(),
            ],
            // The first connection closes; the next request goes on a new one.
            vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye".to_vec()],
        ]);
        let mut c = HttpClient::new(addr.clone(), addr, None, Duration::from_secs(5));
        let r = c.post("/a", &[("X-T", b"1")], b"hello");
        let r = r.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = c.post("/b", &[], b"x").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(r.body, b"busy!");
        let r = c.post("/c", &[], b"y").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"bye"[..]));
        let got = t.join().unwrap_or_default();
        assert_eq!(got.len(), 3);
        let first = String::from_utf8_lossy(&got[0]);
        assert!(
            first.starts_with("POST /a HTTP/1.1\r\nHost: 127.0.0.1:"),
            "{first}"
        );
        assert!(
            first.contains("Content-Length: 5\r\nX-T: 1\r\n\r\nhello"),
            "{first}"
        );
    }

    #[test]
    fn a_silent_collector_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut c = HttpClient::new(addr.clone(), addr, None, Duration::from_millis(200));
        let t0 = Instant::now();
        assert!(c.post("/", &[], b"x").is_err());
        assert!(t0.elapsed() < Duration::from_secs(3));
        drop(l);
    }
}

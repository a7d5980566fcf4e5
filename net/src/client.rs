//! HTTP/1.1 client toward upstreams: one keep-alive pool per upstream per
//! shard, never shared across shards.
//!
//! A call has one deadline covering connect, write and the whole response.
//! A pooled connection that the upstream closed while idle fails before any
//! response byte arrives; such a call is retried once on a fresh connection
//! (the request never reached the upstream's application). Any other failure
//! is reported, not retried: a tool call is not assumed idempotent.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::tls::ClientTls;

use crate::chunked::ChunkedDecoder;
use crate::queued::Queued;

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Could not connect (refused, unreachable, unresolvable).
    #[error("cannot connect")]
    Connect,
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The connection broke mid-exchange.
    #[error("connection lost")]
    Io,
    /// The bytes received are not an acceptable HTTP response.
    #[error("invalid response: {0}")]
    BadResponse(&'static str),
    /// The response exceeds the configured limit.
    #[error("response too large")]
    TooLarge,
}

/// Media type of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`.
    Json,
    /// `text/event-stream`.
    EventStream,
    /// Anything else, or none.
    Other,
}

/// Sees a response's body as it arrives (see [`Pool::exchange_observed`]).
pub type Observer<'a> = &'a mut dyn FnMut(MediaType, &[u8]) -> bool;

/// A complete upstream response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body media type.
    pub media: MediaType,
    /// `Mcp-Session-Id`, when sent.
    pub session_id: Option<String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// A connection to an upstream, plain or TLS.
enum Stream {
    Plain(Queued<TcpStream>),
    Tls(Box<futures_rustls::client::TlsStream<Queued<TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

/// Keep-alive connections to one upstream, owned by one shard.
pub struct Pool {
    target: String,
    tls: Option<ClientTls>,
    addr: RefCell<Option<SocketAddr>>,
    idle: RefCell<Vec<Conn>>,
    max_idle: usize,
}

/// The first address `target` resolves to that toolgate may dial: a name
/// that resolves only to link-local or metadata addresses is not dialled
/// ([`toolgate_core::upstream_url::reachable`]), and says so.
fn first_reachable(target: &str) -> Option<SocketAddr> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs().ok()?.collect();
    let first = addrs
        .iter()
        .copied()
        .find(|a| toolgate_core::upstream_url::reachable(a.ip()));
    if first.is_none() && !addrs.is_empty() {
        tracing::warn!(
            %target,
            "resolves only to link-local or instance-metadata addresses: not dialled"
        );
    }
    first
}

impl Pool {
    /// A pool dialing `target` (`host:port`), over TLS when `tls` is given,
    /// keeping at most `max_idle` idle connections.
    pub fn new(target: String, max_idle: usize, tls: Option<ClientTls>) -> Self {
        let addr = first_reachable(&target);
        Self {
            target,
            tls,
            addr: RefCell::new(addr),
            idle: RefCell::new(Vec::new()),
            max_idle,
        }
    }

    fn resolve(&self) -> Option<SocketAddr> {
        if let Some(a) = *self.addr.borrow() {
            return Some(a);
        }
        let a = first_reachable(&self.target);
        *self.addr.borrow_mut() = a;
        a
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the response.
    pub async fn exchange(
        &self,
        request: &[u8],
        max_body: usize,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        self.exchange_observed(request, max_body, deadline, &mut |_, _| false)
            .await
    }

    /// [`Pool::exchange`], showing `observe` the body as it arrives: the
    /// response's media type and each piece of the body (de-chunked), in
    /// order. When `observe` returns true it has what it needs: reading
    /// stops there, and the response holds the body read so far (its
    /// connection is not reused unless the body was complete).
    pub async fn exchange_observed(
        &self,
        request: &[u8],
        max_body: usize,
        deadline: Duration,
        observe: Observer<'_>,
    ) -> Result<Response, ClientError> {
        let fut = async {
            Ok(self
                .exchange_inner(request, max_body, deadline, observe)
                .await)
        };
        match glommio::timer::timeout(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    async fn exchange_inner(
        &self,
        request: &[u8],
        max_body: usize,
        deadline: Duration,
        observe: Observer<'_>,
    ) -> Result<Response, ClientError> {
        let pooled = self.idle.borrow_mut().pop();
        if let Some(mut conn) = pooled {
            match round_trip(&mut conn, request, max_body, observe).await {
                Ok((resp, reusable)) => {
                    self.put_back(conn, reusable);
                    return Ok(resp);
                }
                Err(Failure {
                    error: _,
                    before_response: true,
                }) => {}
                Err(f) => return Err(f.error),
            }
        }
        let addr = self.resolve().ok_or(ClientError::Connect)?;
        let stream = TcpStream::connect_timeout(addr, deadline)
            .await
            .map_err(|_| ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        let stream = Queued::new(stream);
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            // A failed handshake (bad certificate, wrong name) is a failure
            // to connect: the request never left.
            Some(tls) => Stream::Tls(Box::new(
                tls.connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| {
                        tracing::warn!(target = %self.target, error = %e, "upstream TLS handshake failed");
                        ClientError::Connect
                    })?,
            )),
        };
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        };
        match round_trip(&mut conn, request, max_body, observe).await {
            Ok((resp, reusable)) => {
                self.put_back(conn, reusable);
                Ok(resp)
            }
            Err(f) => Err(f.error),
        }
    }

    fn put_back(&self, mut conn: Conn, reusable: bool) {
        let mut idle = self.idle.borrow_mut();
        if reusable && idle.len() < self.max_idle {
            conn.buf.clear();
            idle.push(conn);
        }
    }
}

struct Failure {
    error: ClientError,
    before_response: bool,
}

fn fail(error: ClientError, before_response: bool) -> Failure {
    Failure {
        error,
        before_response,
    }
}

async fn read_some(conn: &mut Conn) -> Result<usize, ClientError> {
    let len = conn.buf.len();
    conn.buf.resize(len + 16 * 1024, 0);
    let r = conn.stream.read(&mut conn.buf[len..]).await;
    match r {
        Ok(n) => {
            conn.buf.truncate(len + n);
            Ok(n)
        }
        Err(_) => {
            conn.buf.truncate(len);
            Err(ClientError::Io)
        }
    }
}

async fn round_trip(
    conn: &mut Conn,
    request: &[u8],
    max_body: usize,
    observe: Observer<'_>,
) -> Result<(Response, bool), Failure> {
    conn.buf.clear();
    if conn.stream.write_all(request).await.is_err() || conn.stream.flush().await.is_err() {
        return Err(fail(ClientError::Io, true));
    }
    // Head, skipping interim 1xx responses.
    let (status, media, session_id, body_kind, keep_alive, head_len) = loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) => Some(read_head(&resp, n)?),
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(fail(ClientError::BadResponse("not HTTP"), false)),
            }
        };
        match parsed {
            Some(h) if (100..200).contains(&h.0) => {
                conn.buf.drain(..h.5);
            }
            Some(h) => break h,
            None => {
                if conn.buf.len() > MAX_HEAD {
                    return Err(fail(ClientError::BadResponse("head too large"), false));
                }
                let first = conn.buf.is_empty();
                match read_some(conn).await {
                    Ok(0) => return Err(fail(ClientError::Io, first)),
                    Ok(_) => {}
                    Err(e) => return Err(fail(e, first)),
                }
            }
        }
    };
    conn.buf.drain(..head_len);
    let mut body = Vec::new();
    let mut reusable = keep_alive;
    match body_kind {
        Framing::Empty => {}
        Framing::Length(n) => {
            if n > max_body {
                return Err(fail(ClientError::TooLarge, false));
            }
            // What arrived with the head is copied once; the rest is read
            // straight into the body, in reads as large as what is missing.
            let have = conn.buf.len().min(n);
            body.reserve_exact(n);
            body.extend_from_slice(&conn.buf[..have]);
            conn.buf.drain(..have);
            // Once the observer has what it needs, the rest is not read.
            let enough = have > 0 && observe(media, &body);
            if have < n && !enough {
                body.resize(n, 0);
                let mut filled = have;
                while filled < n {
                    match conn.stream.read(&mut body[filled..]).await {
                        Ok(0) | Err(_) => return Err(fail(ClientError::Io, false)),
                        Ok(k) => {
                            filled += k;
                            if observe(media, &body[filled - k..filled]) {
                                body.truncate(filled);
                                break;
                            }
                        }
                    }
                }
            }
            // A body left unread leaves the connection mid-response.
            reusable &= body.len() == n;
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(max_body);
            loop {
                let before = body.len();
                let used = dec.feed(&conn.buf, &mut body).map_err(|e| match e {
                    crate::chunked::ChunkError::TooLarge => fail(ClientError::TooLarge, false),
                    crate::chunked::ChunkError::Malformed => {
                        fail(ClientError::BadResponse("bad chunking"), false)
                    }
                })?;
                conn.buf.drain(..used);
                if body.len() > before && observe(media, &body[before..]) {
                    reusable &= dec.is_done();
                    break;
                }
                if dec.is_done() {
                    break;
                }
                match read_some(conn).await {
                    Ok(0) => return Err(fail(ClientError::Io, false)),
                    Ok(_) => {}
                    Err(e) => return Err(fail(e, false)),
                }
            }
        }
        Framing::UntilClose => {
            reusable = false;
            let mut seen = 0;
            loop {
                if conn.buf.len() > max_body {
                    return Err(fail(ClientError::TooLarge, false));
                }
                if conn.buf.len() > seen {
                    let fresh = &conn.buf[seen..];
                    seen = conn.buf.len();
                    if observe(media, fresh) {
                        break;
                    }
                }
                match read_some(conn).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(fail(e, false)),
                }
            }
            body = std::mem::take(&mut conn.buf);
        }
    }
    if !conn.buf.is_empty() {
        // Bytes past the response (the upstream is not speaking HTTP/1.1
        // correctly), or a body left unread.
        reusable = false;
    }
    Ok((
        Response {
            status,
            media,
            session_id,
            body,
        },
        reusable,
    ))
}

enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

type HeadParts = (u16, MediaType, Option<String>, Framing, bool, usize);

fn read_head(resp: &httparse::Response<'_, '_>, len: usize) -> Result<HeadParts, Failure> {
    let status = resp.code.unwrap_or(0);
    let mut media = MediaType::Other;
    let mut session_id = None;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-type") {
            let v = h.value.trim_ascii();
            let essence = v.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
            media = if essence.eq_ignore_ascii_case(b"application/json") {
                MediaType::Json
            } else if essence.eq_ignore_ascii_case(b"text/event-stream") {
                MediaType::EventStream
            } else {
                MediaType::Other
            };
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            if n.is_none() || length.is_some() {
                return Err(fail(ClientError::BadResponse("bad Content-Length"), false));
            }
            length = n;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(fail(
                    ClientError::BadResponse("unsupported Transfer-Encoding"),
                    false,
                ));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| {
                    !v.is_empty() && v.len() <= 512 && v.bytes().all(|b| (0x21..=0x7e).contains(&b))
                });
            session_id = v.map(str::to_owned);
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        if length.is_some() {
            return Err(fail(
                ClientError::BadResponse("both Content-Length and chunked"),
                false,
            ));
        }
        Framing::Chunked
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok((status, media, session_id, framing, keep_alive, len))
}

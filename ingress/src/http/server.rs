//! The agent-facing HTTP/1.1 connection loop.
//!
//! One task per connection on its shard. Requests are served strictly one
//! after another, so pipelined requests are answered in order; bytes past the
//! current request stay in the buffer for the next. Every wait has a limit:
//! idle keep-alive, head completion (a deadline, not a per-read timeout, so a
//! client trickling one byte at a time is still cut off), body, and writes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use toolgate_core::refusal::{Refusal, RefusalKind};

use super::conn::{Conn, ConnInfo};
use super::early::Early;
use super::head::{parse_head, BodyKind, Head, Limits};
use toolgate_net::chunked::{ChunkError, ChunkedDecoder};

/// Connection-level limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ConnConfig {
    /// Size limits.
    pub limits: Limits,
    /// Head must complete within this once its first byte arrived.
    pub header_timeout: Duration,
    /// Body must complete within this once the head is parsed.
    pub body_timeout: Duration,
    /// Keep-alive connections idle this long are closed; also the write limit.
    pub idle_timeout: Duration,
}

/// One request as the gateway sees it.
pub struct Request<'a> {
    /// The parsed head.
    pub head: &'a Head,
    /// The buffer the head's offsets point into.
    pub buf: &'a [u8],
    /// The decoded body.
    pub body: &'a [u8],
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Whether the request came over TLS.
    pub secure: bool,
    /// Names of the connection's verified client certificate (mTLS).
    pub client_names: Option<&'a [Box<str>]>,
    /// When the head was complete.
    pub started: Instant,
    /// Messages that may go ahead of the answer (progress on an event
    /// stream), when the connection can send them.
    pub early: Option<&'a Early>,
}

/// What serves requests on a connection.
pub trait Handler {
    /// Serves one request, appending the whole response to `out`. The
    /// connection stays open as the request's HTTP version and
    /// `Connection` header say.
    fn handle(&self, req: &Request<'_>, out: &mut Vec<u8>)
        -> impl std::future::Future<Output = ()>;

    /// Writes the response for a request refused before it could be read
    /// (malformed HTTP, limits, timeouts).
    fn refuse(
        &self,
        refusal: &Refusal,
        peer: Option<SocketAddr>,
        started: Instant,
        out: &mut Vec<u8>,
    );
}

/// Bytes requested per read.
const READ_SIZE: usize = 16 * 1024;

/// After a refusal that ends the connection, how long toolgate goes on
/// reading (and dropping) what the client still sends, at most…
const LINGER_TIME: Duration = Duration::from_secs(5);
/// …waiting at most this for each read…
const LINGER_READ: Duration = Duration::from_secs(1);
/// …and dropping at most this many bytes.
const LINGER_BYTES: usize = 16 << 20;

enum ReadOutcome {
    Data,
    Eof,
    TimedOut,
    Failed,
}

async fn read_more<S: Conn>(stream: &mut S, buf: &mut Vec<u8>, limit: Duration) -> ReadOutcome {
    if limit.is_zero() {
        return ReadOutcome::TimedOut;
    }
    let len = buf.len();
    buf.resize(len + READ_SIZE, 0);
    let r = stream.read_within(&mut buf[len..], limit).await;
    match r {
        Ok(0) => {
            buf.truncate(len);
            ReadOutcome::Eof
        }
        Ok(n) => {
            buf.truncate(len + n);
            ReadOutcome::Data
        }
        Err(e) => {
            buf.truncate(len);
            if e.kind() == std::io::ErrorKind::TimedOut {
                ReadOutcome::TimedOut
            } else {
                ReadOutcome::Failed
            }
        }
    }
}

async fn send<S: Conn>(stream: &mut S, out: &[u8], limit: Duration) -> bool {
    stream.write_all_within(out, limit).await.is_ok()
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Serves requests on `stream` until it closes, errs, idles out or a
/// response says close.
pub async fn serve<S: Conn, H: Handler>(
    mut stream: S,
    info: ConnInfo,
    cfg: ConnConfig,
    handler: &H,
) {
    let peer = info.peer;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut chunked_body: Vec<u8> = Vec::new();
    let early = Early::default();
    let mut ahead: Vec<u8> = Vec::new();
    loop {
        // The head.
        let mut head_deadline: Option<Instant> =
            (!buf.is_empty()).then(|| Instant::now() + cfg.header_timeout);
        let head = loop {
            if !buf.is_empty() {
                match parse_head(&buf, &cfg.limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(refusal) => {
                        refuse_and_close(&mut stream, handler, &refusal, peer, Instant::now(), cfg)
                            .await;
                        return;
                    }
                }
            }
            let limit = match head_deadline {
                Some(d) => remaining(d),
                None => cfg.idle_timeout,
            };
            match read_more(&mut stream, &mut buf, limit).await {
                ReadOutcome::Data => {
                    head_deadline.get_or_insert_with(|| Instant::now() + cfg.header_timeout);
                }
                ReadOutcome::TimedOut if head_deadline.is_some() => {
                    refuse_and_close(
                        &mut stream,
                        handler,
                        &Refusal::new(RefusalKind::RequestTimeout),
                        peer,
                        Instant::now(),
                        cfg,
                    )
                    .await;
                    return;
                }
                ReadOutcome::TimedOut | ReadOutcome::Eof | ReadOutcome::Failed => return,
            }
        };
        let started = Instant::now();
        let body_deadline = started + cfg.body_timeout;

        // The body.
        let (body_range, consumed) = match head.body {
            BodyKind::None => (head.len..head.len, head.len),
            BodyKind::Length(n) => {
                if head.expect_continue
                    && buf.len() < head.len + n
                    && !send_continue(&mut stream, cfg).await
                {
                    return;
                }
                while buf.len() < head.len + n {
                    if !read_body(
                        &mut stream,
                        &mut buf,
                        body_deadline,
                        handler,
                        peer,
                        started,
                        cfg,
                    )
                    .await
                    {
                        return;
                    }
                }
                (head.len..head.len + n, head.len + n)
            }
            BodyKind::Chunked => {
                if head.expect_continue
                    && buf.len() == head.len
                    && !send_continue(&mut stream, cfg).await
                {
                    return;
                }
                chunked_body.clear();
                let mut dec = ChunkedDecoder::new(cfg.limits.max_body_bytes);
                let mut pos = head.len;
                loop {
                    match dec.feed(&buf[pos..], &mut chunked_body) {
                        Ok(used) => pos += used,
                        Err(e) => {
                            let kind = match e {
                                ChunkError::TooLarge => RefusalKind::BodyTooLarge,
                                ChunkError::Malformed => RefusalKind::MalformedHttp,
                            };
                            refuse_and_close(
                                &mut stream,
                                handler,
                                &Refusal::new(kind),
                                peer,
                                started,
                                cfg,
                            )
                            .await;
                            return;
                        }
                    }
                    if dec.is_done() {
                        break;
                    }
                    if !read_body(
                        &mut stream,
                        &mut buf,
                        body_deadline,
                        handler,
                        peer,
                        started,
                        cfg,
                    )
                    .await
                    {
                        return;
                    }
                }
                (0..0, pos)
            }
        };

        out.clear();
        early.reset();
        let keep_alive = {
            let body: &[u8] = if head.body == BodyKind::Chunked {
                &chunked_body
            } else {
                &buf[body_range.clone()]
            };
            let req = Request {
                head: &head,
                buf: &buf,
                body,
                peer,
                secure: info.secure,
                client_names: info.client_names.as_deref(),
                started,
                early: Some(&early),
            };
            // Pinned here and lent, so the handler's future is held once
            // in this connection's task (every connection's task is as
            // large as its largest state).
            let served = std::pin::pin!(handler.handle(&req, &mut out));
            if !serve_with_early(&mut stream, served, &early, &mut ahead, cfg).await {
                return;
            }
            head.keep_alive
        };
        if !send(&mut stream, &out, cfg.idle_timeout).await || !keep_alive {
            return;
        }
        buf.drain(..consumed);
        if buf.capacity() > 4 * READ_SIZE && buf.len() < READ_SIZE {
            buf.shrink_to(READ_SIZE);
        }
        if chunked_body.capacity() > 4 * READ_SIZE {
            chunked_body = Vec::new();
        }
    }
}

/// What the connection loop does next while a request is served.
enum Step {
    Done,
    Write,
    Check,
}

/// Runs the handler's `served` to its end, writing the messages it sends
/// early as they come (see [`Early`]) and, while it may send them, looking
/// out for the client leaving. False when the connection broke under an
/// early write: the request still runs to its end (and is recorded), then
/// the connection closes.
async fn serve_with_early<S: Conn, F: std::future::Future<Output = ()>>(
    stream: &mut S,
    mut served: std::pin::Pin<&mut F>,
    early: &Early,
    ahead: &mut Vec<u8>,
    cfg: ConnConfig,
) -> bool {
    use std::future::Future;
    use std::task::Poll;
    let mut tick: Option<glommio::timer::Timer> = None;
    let mut alive = true;
    loop {
        ahead.clear();
        let step = std::future::poll_fn(|cx| {
            if served.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Done);
            }
            if early.poll_next(cx, ahead).is_ready() {
                return Poll::Ready(Step::Write);
            }
            if early.watching() {
                let t = tick.get_or_insert_with(|| glommio::timer::Timer::new(early.check_every()));
                if std::pin::Pin::new(t).poll(cx).is_ready() {
                    tick = None;
                    return Poll::Ready(Step::Check);
                }
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Done => return alive,
            Step::Write => {
                if alive && !send(stream, ahead, cfg.idle_timeout).await {
                    alive = false;
                    early.mark_gone();
                }
            }
            Step::Check => {
                if stream.peer_closed() {
                    early.mark_gone();
                }
            }
        }
    }
}

/// Reads more of a body before `deadline`, answering 408 when it passes.
/// False when the connection is done.
async fn read_body<S: Conn, H: Handler>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
    handler: &H,
    peer: Option<SocketAddr>,
    started: Instant,
    cfg: ConnConfig,
) -> bool {
    match read_more(stream, buf, remaining(deadline)).await {
        ReadOutcome::Data => true,
        ReadOutcome::TimedOut => {
            let timeout = Refusal::new(RefusalKind::RequestTimeout);
            refuse_and_close(stream, handler, &timeout, peer, started, cfg).await;
            false
        }
        ReadOutcome::Eof | ReadOutcome::Failed => false,
    }
}

/// Answers a request refused before it could be served; the caller closes.
/// Unless the client was only too slow, it may still be sending (a body
/// over the limit): toolgate lingers so the answer reaches it.
async fn refuse_and_close<S: Conn, H: Handler>(
    stream: &mut S,
    handler: &H,
    refusal: &Refusal,
    peer: Option<SocketAddr>,
    started: Instant,
    cfg: ConnConfig,
) {
    let mut out = Vec::with_capacity(256);
    handler.refuse(refusal, peer, started, &mut out);
    if send(stream, &out, cfg.idle_timeout).await && refusal.kind != RefusalKind::RequestTimeout {
        linger(stream).await;
    }
}

/// A lingering close. Closing a socket with bytes of the client's still
/// unread makes the kernel answer with a reset, which can destroy the
/// answer in the client's receive buffer before it reads it. So: end the
/// sending side, then read and drop what still comes until the client
/// closes, or [`LINGER_TIME`] passes, a read waits [`LINGER_READ`], or
/// [`LINGER_BYTES`] were dropped.
async fn linger<S: Conn>(stream: &mut S) {
    use futures_lite::AsyncWriteExt;
    if stream.close().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGER_TIME;
    let mut scratch = vec![0u8; READ_SIZE];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        let left = remaining(until).min(LINGER_READ);
        if left.is_zero() {
            return;
        }
        match stream.read_within(&mut scratch, left).await {
            Ok(0) | Err(_) => return,
            Ok(n) => dropped += n,
        }
    }
}

async fn send_continue<S: Conn>(stream: &mut S, cfg: ConnConfig) -> bool {
    send(stream, b"HTTP/1.1 100 Continue\r\n\r\n", cfg.idle_timeout).await
}

//! The load generator: N keep-alive connections on one pinned glommio
//! executor, closed loop (each connection sends as soon as it has its
//! answer) or open loop (requests scheduled at a fixed total rate, latency
//! measured from the scheduled send time, so a stalled server is charged for
//! every request it delayed: coordinated omission corrected).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;

use crate::http::{find, is_result_for, jsonrpc_body, read_message, write_all, ReadError};

/// MCP wire era of the generated calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Era {
    /// 2026-07-28: per-request envelope, routing headers.
    Stateless,
    /// `initialize` handshake per connection, then calls in the session.
    Handshake,
    /// No MCP: a plain JSON `POST` of the arguments to the path (toolgate's
    /// REST door, `/rest/{upstream}/{path}`); the tool is the path's.
    Rest,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Label in reports.
    pub label: String,
    /// Target address (loopback).
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
    /// Bearer key, if any.
    pub key: Option<String>,
    /// Era.
    pub era: Era,
    /// (tool, percent of calls) for allowed, denied and unknown tools.
    pub mix: Vec<(String, u32, Kind)>,
    /// Argument size, bytes.
    pub arg_bytes: usize,
    /// Connections.
    pub connections: usize,
    /// Run time.
    pub duration: Duration,
    /// Total requests per second (open loop), or `None` (closed loop).
    pub rate: Option<f64>,
    /// CPU to pin the generator to.
    pub cpu: Option<usize>,
    /// TLS to the target (its client configuration and the server name).
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// A connection to the target, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl futures_lite::AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// What a call is expected to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 200.
    Allowed,
    /// 400 or 403.
    Refused,
}

/// Results of one run.
#[derive(Debug)]
pub struct Report {
    /// Label.
    pub label: String,
    /// Answers with the expected status.
    pub ok: u64,
    /// Unexpected outcomes, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of expected answers, microseconds.
    pub hist: Histogram<u64>,
    /// Wall time measured.
    pub seconds: f64,
}

impl Report {
    /// Requests per second answered as expected.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// A row of the report table.
    pub fn row(&self) -> String {
        let h = &self.hist;
        let errors: u64 = self.errors.values().sum();
        format!(
            "{:<22} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
            self.label,
            self.rps(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            errors
        )
    }

    /// The header of the report table.
    pub fn header() -> String {
        format!(
            "{:<22} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
            "scenario", "req/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "errors"
        )
    }

    /// JSON form.
    pub fn json(&self) -> serde_json::Value {
        let h = &self.hist;
        serde_json::json!({
            "label": self.label, "rps": self.rps(), "ok": self.ok, "seconds": self.seconds,
            "p50_us": h.value_at_quantile(0.5), "p90_us": h.value_at_quantile(0.9),
            "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999),
            "max_us": h.max(), "errors": self.errors,
        })
    }
}

/// The JSON-RPC id of a generated call: a fixed-width number, rewritten in
/// place for every call so that each answer can be matched to its call.
const ID_BASE: u64 = 1_000_000_000_000;
const ID_WIDTH: usize = 13;

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

fn call_request(w: &Workload, tool: &str, session: Option<&str>) -> Vec<u8> {
    let arg = "x".repeat(w.arg_bytes);
    if w.era == Era::Rest {
        return rest_request(w, &format!(r#"{{"text":"{arg}"}}"#));
    }
    let stateless = w.era == Era::Stateless;
    let body = if stateless {
        format!(
            r#"{{"jsonrpc":"2.0","id":{ID_BASE},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{arg}"}},{META}}}}}"#
        )
    } else {
        format!(
            r#"{{"jsonrpc":"2.0","id":{ID_BASE},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{arg}"}}}}}}"#
        )
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        w.path,
        w.addr,
        body.len()
    );
    if let Some(k) = &w.key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if stateless {
        head.push_str(&format!(
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
        ));
    } else {
        head.push_str("MCP-Protocol-Version: 2025-11-25\r\n");
    }
    if let Some(s) = session {
        head.push_str(&format!("Mcp-Session-Id: {s}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// A plain JSON `POST` of `body` to the workload's path.
fn rest_request(w: &Workload, body: &str) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        w.path,
        w.addr,
        body.len()
    );
    if let Some(k) = &w.key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn plain_post(w: &Workload, body: &str, session: Option<&str>) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        w.path,
        w.addr,
        body.len()
    );
    if let Some(k) = &w.key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if let Some(s) = session {
        head.push_str(&format!(
            "Mcp-Session-Id: {s}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn session_id(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("mcp-session-id")
            .then(|| v.trim().to_owned())
    })
}

/// Opens a connection and, in the handshake era, a session on it; returns
/// the per-kind requests to send on it.
async fn open(w: &Workload, buf: &mut Vec<u8>) -> Result<(Conn, Vec<Call>), ReadError> {
    let tcp = TcpStream::connect(w.addr)
        .await
        .map_err(|_| ReadError::Io)?;
    let _ = tcp.set_nodelay(true);
    let mut conn = match &w.tls {
        None => Conn::Plain(tcp),
        Some((config, name)) => Conn::Tls(Box::new(
            futures_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name.clone(), tcp)
                .await
                .map_err(|_| ReadError::Io)?,
        )),
    };
    let mut session = None;
    if w.era == Era::Handshake {
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"toolgate-loadtest","version":"1"}}}"#;
        write_all(&mut conn, &plain_post(w, init, None)).await?;
        buf.clear();
        let m = read_message(&mut conn, buf, false).await?;
        session = session_id(&buf[..m.head]);
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        write_all(&mut conn, &plain_post(w, note, session.as_deref())).await?;
        buf.clear();
        read_message(&mut conn, buf, false).await?;
    }
    let reqs = w
        .mix
        .iter()
        .map(|(tool, _, kind)| {
            let bytes = call_request(w, tool, session.as_deref());
            let id_at = (w.era != Era::Rest)
                .then(|| find(&bytes, format!("\"id\":{ID_BASE}").as_bytes()))
                .flatten()
                .map(|at| at + 5);
            Call {
                bytes,
                kind: *kind,
                id_at,
            }
        })
        .collect();
    Ok((conn, reqs))
}

/// One kind of call a connection sends: its bytes, what it should get, and
/// where its JSON-RPC id's digits are (none for REST calls).
struct Call {
    bytes: Vec<u8>,
    kind: Kind,
    id_at: Option<usize>,
}

impl Call {
    /// Stamps `n` as the call's id; returns the id's digits.
    fn stamp(&mut self, n: u64) -> Option<[u8; ID_WIDTH]> {
        let at = self.id_at?;
        let mut digits = [b'0'; ID_WIDTH];
        let mut v = ID_BASE + n % ID_BASE;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.bytes[at..at + ID_WIDTH].copy_from_slice(&digits);
        Some(digits)
    }
}

/// Whether an answer is what a call of `kind` should get: for allowed
/// calls a 200 whose JSON-RPC message is a result for the call's own id
/// (REST calls: any 200); for refused calls a 400 or 403, or a 200 whose
/// message is not a result.
fn expected(kind: Kind, status: u16, message: &[u8], id: Option<&[u8]>) -> Result<(), String> {
    let result = id.is_none_or(|id| is_result_for(message, id));
    match (kind, status) {
        (Kind::Allowed, 200) if result => Ok(()),
        (Kind::Allowed, 200) => Err("answer:not-a-result-for-its-call".to_owned()),
        (Kind::Refused, 400 | 403) => Ok(()),
        (Kind::Refused, 200) if id.is_some() && !result => Ok(()),
        (_, s) => Err(format!("status:{s}")),
    }
}

/// Which request (index into the mix) the `n`th call of a connection sends.
fn pick(mix: &[(String, u32, Kind)], n: u64) -> usize {
    let total: u32 = mix.iter().map(|m| m.1).sum::<u32>().max(1);
    let mut slot = (n % u64::from(total)) as u32;
    for (i, m) in mix.iter().enumerate() {
        if slot < m.1 {
            return i;
        }
        slot -= m.1;
    }
    0
}

struct Shared {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

fn count(shared: &RefCell<Shared>, what: &str) {
    *shared
        .borrow_mut()
        .errors
        .entry(what.to_owned())
        .or_default() += 1;
}

async fn connection(
    w: Rc<Workload>,
    shared: Rc<RefCell<Shared>>,
    index: usize,
    start: Instant,
    end: Instant,
) {
    let mut buf = Vec::with_capacity(32 * 1024);
    let interval = w
        .rate
        .map(|r| Duration::from_secs_f64(w.connections as f64 / r.max(1e-9)));
    let mut n: u64 = index as u64;
    let mut scheduled = start
        + interval
            .map(|i| i.mul_f64(index as f64 / w.connections as f64))
            .unwrap_or_default();
    while Instant::now() < end {
        let (mut conn, mut reqs) = match open(&w, &mut buf).await {
            Ok(c) => c,
            Err(e) => {
                count(&shared, &format!("connect:{e:?}"));
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        loop {
            if interval.is_some() {
                let now = Instant::now();
                if scheduled > now {
                    glommio::timer::sleep(scheduled - now).await;
                }
                if scheduled >= end {
                    return;
                }
            } else {
                scheduled = Instant::now();
                if scheduled >= end {
                    return;
                }
            }
            let call = &mut reqs[pick(&w.mix, n)];
            let id = call.stamp(n);
            n += w.connections as u64;
            if let Err(e) = write_all(&mut conn, &call.bytes).await {
                count(&shared, &format!("write:{e:?}"));
                break;
            }
            buf.clear();
            match read_message(&mut conn, &mut buf, false).await {
                Ok(m) => {
                    let message = jsonrpc_body(&buf[m.head..m.end], m.sse);
                    let verdict =
                        expected(call.kind, m.status, message, id.as_ref().map(|d| &d[..]));
                    let mut s = shared.borrow_mut();
                    match verdict {
                        Ok(()) => {
                            s.ok += 1;
                            let us = Instant::now()
                                .saturating_duration_since(scheduled)
                                .as_micros() as u64;
                            let _ = s.hist.record(us.max(1));
                        }
                        Err(what) => *s.errors.entry(what).or_default() += 1,
                    }
                }
                Err(e) => {
                    count(&shared, &format!("read:{e:?}"));
                    break;
                }
            }
            if let Some(i) = interval {
                scheduled += i;
            }
        }
    }
}

/// Runs `w` on its own pinned executor; blocks until done.
pub fn run(w: Workload) -> anyhow::Result<Report> {
    let placement = match w.cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let label = w.label.clone();
    let handle = LocalExecutorBuilder::new(placement)
        .name("loadgen")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let shared = Rc::new(RefCell::new(Shared {
                hist,
                ok: 0,
                errors: BTreeMap::new(),
            }));
            let w = Rc::new(w);
            let start = Instant::now();
            let end = start + w.duration;
            let tasks: Vec<_> = (0..w.connections)
                .map(|i| {
                    glommio::spawn_local(connection(
                        Rc::clone(&w),
                        Rc::clone(&shared),
                        i,
                        start,
                        end,
                    ))
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let seconds = start.elapsed().as_secs_f64();
            let s = Rc::try_unwrap(shared)
                .map_err(|_| "tasks still running".to_owned())?
                .into_inner();
            Ok::<_, String>((s, seconds))
        })
        .map_err(|e| anyhow::anyhow!("starting the generator: {e}"))?;
    let (s, seconds) = handle
        .join()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Report {
        label,
        ok: s.ok,
        errors: s.errors,
        hist: s.hist,
        seconds,
    })
}

//! toolgate-loadtest: a closed-loop MCP load generator and a fast MCP
//! upstream, for measuring toolgate side by side with a direct call.
//!
//! Both ends are plain threads with blocking sockets on 127.0.0.1: simple,
//! and far from the bottleneck at the connection counts used here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(
    name = "toolgate-loadtest",
    about = "Load generator and fast MCP upstream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a minimal stateless-era MCP upstream with one tool, `echo`.
    Upstream {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:9500")]
        listen: SocketAddr,
        /// Size of the text returned by each call, bytes.
        #[arg(long, default_value_t = 1024)]
        result_bytes: usize,
    },
    /// Send `tools/call` requests as fast as N keep-alive connections allow.
    Run {
        /// MCP endpoint (loopback only), e.g. http://127.0.0.1:8080/mcp.
        #[arg(long)]
        url: String,
        /// API key sent as a bearer token.
        #[arg(long, default_value = "")]
        key: String,
        /// Tool to call.
        #[arg(long, default_value = "echo")]
        tool: String,
        /// Size of the call's argument, bytes.
        #[arg(long, default_value_t = 1024)]
        arg_bytes: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Label printed with the results.
        #[arg(long, default_value = "run")]
        label: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Upstream {
            listen,
            result_bytes,
        } => upstream(listen, result_bytes),
        Command::Run {
            url,
            key,
            tool,
            arg_bytes,
            connections,
            duration,
            label,
        } => run(
            &url,
            &key,
            &tool,
            arg_bytes,
            connections,
            Duration::from_secs(duration.clamp(1, 600)),
            &label,
        ),
    }
}

/// Reads one request or response: head plus `Content-Length` body.
/// Returns (head length, body range end) within `buf`, reading as needed.
fn read_message(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: bool,
) -> anyhow::Result<(usize, usize)> {
    let mut chunk = [0u8; 16384];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let content_length = |hs: &[httparse::Header<'_>]| {
            hs.iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0)
        };
        let parsed = if request {
            let mut r = httparse::Request::new(&mut headers);
            match r.parse(buf).context("malformed HTTP request")? {
                httparse::Status::Complete(n) => Some((n, content_length(r.headers))),
                httparse::Status::Partial => None,
            }
        } else {
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(buf).context("malformed HTTP response")? {
                httparse::Status::Complete(n) => Some((n, content_length(r.headers))),
                httparse::Status::Partial => None,
            }
        };
        match parsed {
            Some((n, len)) => {
                while buf.len() < n + len {
                    let r = conn.read(&mut chunk)?;
                    if r == 0 {
                        bail!("connection closed mid-body");
                    }
                    buf.extend_from_slice(&chunk[..r]);
                }
                return Ok((n, n + len));
            }
            None => {
                let r = conn.read(&mut chunk)?;
                if r == 0 {
                    bail!("connection closed");
                }
                buf.extend_from_slice(&chunk[..r]);
            }
        }
    }
}

fn json_id(body: &[u8]) -> &[u8] {
    let key = b"\"id\":";
    let Some(i) = body.windows(key.len()).position(|w| w == key) else {
        return b"null";
    };
    let rest = &body[i + key.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b',' || b == b'}')
        .unwrap_or(rest.len());
    &rest[..end]
}

fn upstream(listen: SocketAddr, result_bytes: usize) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the load-test upstream listens on loopback only");
    }
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let text = "x".repeat(result_bytes);
    let call_result = Arc::new(format!(
        r#"{{"content":[{{"type":"text","text":"{text}"}}],"isError":false,"resultType":"complete"}}"#
    ));
    eprintln!("load-test upstream listening on {listen}");
    for conn in listener.incoming().flatten() {
        let call_result = Arc::clone(&call_result);
        std::thread::spawn(move || {
            let mut conn = conn;
            let _ = conn.set_nodelay(true);
            let mut buf = Vec::with_capacity(16384);
            let mut out = Vec::with_capacity(result_bytes + 512);
            while let Ok((head, end)) = read_message(&mut conn, &mut buf, true) {
                let body = &buf[head..end];
                let id = json_id(body);
                let has = |m: &[u8]| body.windows(m.len()).any(|w| w == m);
                let json = if has(br#""method":"tools/call""#) {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{},"result":{}}}"#,
                        String::from_utf8_lossy(id),
                        call_result
                    )
                } else if has(br#""method":"tools/list""#) {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{{"name":"echo","inputSchema":{{"type":"object"}}}}],"resultType":"complete","ttlMs":0,"cacheScope":"private"}}}}"#,
                        String::from_utf8_lossy(id)
                    )
                } else if has(br#""method":"server/discover""#) {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{},"result":{{"supportedVersions":["2026-07-28"],"capabilities":{{"tools":{{}}}},"resultType":"complete","ttlMs":0,"cacheScope":"private"}}}}"#,
                        String::from_utf8_lossy(id)
                    )
                } else {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32601,"message":"Method not found"}}}}"#,
                        String::from_utf8_lossy(id)
                    )
                };
                out.clear();
                let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}", json.len());
                buf.drain(..end);
                if conn.write_all(&out).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn run(
    url: &str,
    key: &str,
    tool: &str,
    arg_bytes: usize,
    connections: usize,
    duration: Duration,
    label: &str,
) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("the URL must be http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority
        .parse()
        .context("the URL host must be an IP:port")?;
    if !addr.ip().is_loopback() {
        bail!("load tests target 127.0.0.1 only");
    }
    let path = if path.is_empty() { "/" } else { path };
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#,
        "x".repeat(arg_bytes)
    );
    let auth = if key.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {key}\r\n")
    };
    let request = Arc::new(format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (request, stop) = (Arc::clone(&request), Arc::clone(&stop));
            std::thread::spawn(move || -> (Histogram<u64>, u64, u64) {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut buf = Vec::with_capacity(16384);
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = TcpStream::connect(addr).ok();
                        if let Some(c) = &conn {
                            let _ = c.set_nodelay(true);
                            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                        } else {
                            errors += 1;
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let t = Instant::now();
                    let sent = c.write_all(request.as_bytes());
                    buf.clear();
                    let got = sent
                        .map_err(anyhow::Error::from)
                        .and_then(|_| read_message(c, &mut buf, false));
                    match got {
                        Ok(_) if buf.starts_with(b"HTTP/1.1 200") => {
                            ok += 1;
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        }
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (hist, ok, errors)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    let (mut ok, mut errors) = (0, 0);
    for w in workers {
        if let Ok((h, o, e)) = w.join() {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label:<12} req/s {:>9.0}  p50 {:>6}µs  p90 {:>6}µs  p99 {:>6}µs  max {:>7}µs  ok {ok}  errors {errors}",
        ok as f64 / secs,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.9),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    Ok(())
}

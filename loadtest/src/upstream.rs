//! A fast MCP upstream (stateless era, also answering the handshake): one
//! tool, `echo`, returning a fixed-size text, as JSON or as one SSE event.
//! It also answers the REST call `POST /echo` with `{"text": …}` of the
//! same size, for an OpenAPI upstream in front of it. Built so the upstream
//! is never what a load test measures.

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::TcpListener;

use crate::http::{read_message, write_all};

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

fn has(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|w| w == needle)
}

/// The JSON-RPC answer to `body` (empty for a notification), `call`
/// being the result of every `tools/call`.
fn answer(body: &[u8], call: &str) -> String {
    let id = String::from_utf8_lossy(json_id(body)).into_owned();
    if has(body, br#""method":"tools/call""#) {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{call}}}"#)
    } else if has(body, br#""method":"tools/list""#) {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"echo","description":"load test","inputSchema":{{"type":"object","properties":{{"text":{{"type":"string"}}}}}}}}],"resultType":"complete","ttlMs":0,"cacheScope":"private"}}}}"#
        )
    } else if has(body, br#""method":"server/discover""#) {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"supportedVersions":["2026-07-28"],"capabilities":{{"tools":{{}}}},"resultType":"complete","ttlMs":0,"cacheScope":"private"}}}}"#
        )
    } else if has(body, br#""method":"initialize""#) {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"fast","version":"1"}}}}}}"#
        )
    } else if has(body, br#""method":"ping""#) {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
    } else if !has(body, br#""id":"#) {
        String::new()
    } else {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"Method not found"}}}}"#
        )
    }
}

/// The same server over stdio, one JSON-RPC message per line, for a
/// `kind = "stdio"` upstream; serves until stdin closes.
pub fn serve_stdio(result_bytes: usize) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let text = "x".repeat(result_bytes);
    let call = format!(
        r#"{{"content":[{{"type":"text","text":"{text}"}}],"isError":false,"resultType":"complete"}}"#
    );
    let mut input = std::io::BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
    let mut output = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let json = answer(&line, &call);
        if !json.is_empty() {
            output.write_all(json.as_bytes())?;
            output.write_all(b"\n")?;
        }
        // Answers go out in batches while more requests are waiting.
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
}

/// Serves until the process ends.
pub async fn serve(listen: SocketAddr, result_bytes: usize, sse: bool) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    let text = "x".repeat(result_bytes);
    let call = Rc::new(format!(
        r#"{{"content":[{{"type":"text","text":"{text}"}}],"isError":false,"resultType":"complete"}}"#
    ));
    let rest = Rc::new(format!(r#"{{"text":"{text}"}}"#));
    loop {
        let Ok(mut conn) = listener.accept().await else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let call = Rc::clone(&call);
        let rest = Rc::clone(&rest);
        glommio::spawn_local(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            let mut out = Vec::with_capacity(call.len() + 512);
            while let Ok(m) = read_message(&mut conn, &mut buf, true).await {
                let body = &buf[m.head..m.end];
                let json = if buf.starts_with(b"POST /echo ") {
                    rest.to_string()
                } else {
                    answer(body, &call)
                };
                buf.drain(..m.end);
                out.clear();
                if json.is_empty() {
                    out.extend_from_slice(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                } else if sse {
                    let ev = format!("event: message\ndata: {json}\n\n");
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n", ev.len()).as_bytes(),
                    );
                    out.extend_from_slice(ev.as_bytes());
                } else {
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", json.len()).as_bytes(),
                    );
                    out.extend_from_slice(json.as_bytes());
                }
                if write_all(&mut conn, &out).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
}

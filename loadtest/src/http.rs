//! Just enough HTTP/1.1 for a load generator and a fast upstream: one
//! message at a time, `Content-Length` or (responses) chunked framing,
//! buffers reused.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection.
    Closed,
    /// Not HTTP, or framing this tool does not handle.
    Malformed,
    /// A socket error.
    Io,
}

/// A message in the buffer: head length, body end, status (responses).
/// A chunked body is decoded in place, so the body is always
/// `buf[head..end]`.
pub struct Message {
    /// Bytes of the head.
    pub head: usize,
    /// End of the body in the buffer.
    pub end: usize,
    /// HTTP status, for responses.
    pub status: u16,
    /// Whether the body is an event stream (`text/event-stream`).
    pub sse: bool,
}

/// Largest message this tool reads (head and body).
const MAX_MESSAGE: usize = 64 << 20;

async fn fill<S: AsyncRead + Unpin>(conn: &mut S, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    let len = buf.len();
    if len > MAX_MESSAGE {
        return Err(ReadError::Malformed);
    }
    buf.resize(len + 16 * 1024, 0);
    match conn.read(&mut buf[len..]).await {
        Ok(0) => {
            buf.truncate(len);
            Err(ReadError::Closed)
        }
        Ok(n) => {
            buf.truncate(len + n);
            Ok(())
        }
        Err(_) => {
            buf.truncate(len);
            Err(ReadError::Io)
        }
    }
}

/// How a body is framed.
#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
}

fn framing(headers: &[httparse::Header<'_>], request: bool) -> Result<(Framing, bool), ReadError> {
    let mut framing = Framing::Length(0);
    let mut sse = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if request || !h.value.eq_ignore_ascii_case(b"chunked") {
                return Err(ReadError::Malformed);
            }
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if matches!(framing, Framing::Chunked) {
                return Err(ReadError::Malformed);
            }
            framing = Framing::Length(
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or(ReadError::Malformed)?,
            );
        } else if h.name.eq_ignore_ascii_case("content-type") {
            sse = h.value.starts_with(b"text/event-stream");
        }
    }
    Ok((framing, sse))
}

/// Decodes the chunked body that starts at `buf[start..]` in place.
/// `Ok(Some(end))`: the body is `buf[start..end]`; `Ok(None)`: more bytes
/// are needed (nothing was changed).
fn dechunk(buf: &mut [u8], start: usize) -> Result<Option<usize>, ReadError> {
    // Every complete chunked body ends with an empty line; until one is in,
    // a large body is not rescanned at each read.
    if !buf.ends_with(b"\r\n\r\n") {
        return Ok(None);
    }
    // First pass: find the end without moving anything.
    let mut at = start;
    let mut chunks = Vec::new();
    loop {
        let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[at..at + nl];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or(ReadError::Malformed)?;
        at += nl + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += nl + 2;
                if nl == 0 {
                    break;
                }
            }
            break;
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(ReadError::Malformed);
        }
        chunks.push((at, size));
        at += size + 2;
    }
    let mut end = start;
    for (from, size) in chunks {
        buf.copy_within(from..from + size, end);
        end += size;
    }
    Ok(Some(end))
}

/// Reads one request (`request = true`) or response from `conn` into `buf`.
pub async fn read_message<S: AsyncRead + Unpin>(
    conn: &mut S,
    buf: &mut Vec<u8>,
    request: bool,
) -> Result<Message, ReadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let parsed = if request {
            let mut r = httparse::Request::new(&mut headers);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => Some((n, framing(r.headers, true)?, 0)),
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(ReadError::Malformed),
            }
        } else {
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    Some((n, framing(r.headers, false)?, r.code.unwrap_or(0)))
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(ReadError::Malformed),
            }
        };
        match parsed {
            Some((head, (Framing::Length(len), sse), status)) => {
                while buf.len() < head + len {
                    fill(conn, buf).await?;
                }
                return Ok(Message {
                    head,
                    end: head + len,
                    status,
                    sse,
                });
            }
            Some((head, (Framing::Chunked, sse), status)) => loop {
                if let Some(end) = dechunk(buf, head)? {
                    return Ok(Message {
                        head,
                        end,
                        status,
                        sse,
                    });
                }
                fill(conn, buf).await?;
            },
            None => {
                if buf.len() > 1 << 20 {
                    return Err(ReadError::Malformed);
                }
                fill(conn, buf).await?;
            }
        }
    }
}

/// The JSON-RPC message a response body carries: the body itself, or the
/// `data:` of the event-stream event that holds a response (one with an
/// `id`; notifications before it are skipped). Multi-line `data:` fields
/// are not joined: servers send one JSON message per line.
pub fn jsonrpc_body(body: &[u8], sse: bool) -> &[u8] {
    if !sse {
        return body;
    }
    body.split(|&b| b == b'\n')
        .filter_map(|l| l.strip_prefix(b"data:"))
        .map(|d| d.strip_prefix(b" ").unwrap_or(d))
        .map(|d| d.strip_suffix(b"\r").unwrap_or(d))
        .find(|d| find(d, b"\"id\"").is_some())
        .unwrap_or(b"")
}

/// Whether `message` is a JSON-RPC result (not an error) for request `id`
/// (written as a JSON number). A textual check of the message's ends, cheap
/// even for a 1 MiB result: within its first 256 bytes a `"result"` member
/// before any `"error"`, and an `"id"` member equal to `id` among its first
/// 256 or last 64 bytes.
pub fn is_result_for(message: &[u8], id: &[u8]) -> bool {
    let head = &message[..message.len().min(256)];
    let tail = &message[message.len().saturating_sub(64)..];
    let result = match (find(head, b"\"result\""), find(head, b"\"error\"")) {
        (Some(r), Some(e)) => r < e,
        (Some(_), None) => true,
        _ => false,
    };
    result && (has_id(head, id) || has_id(tail, id))
}

fn has_id(text: &[u8], id: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = find(&text[from..], b"\"id\"") {
        let rest = trim_start(&text[from + at + 4..]);
        if let Some(rest) = rest.strip_prefix(b":") {
            let rest = trim_start(rest);
            if rest.starts_with(id)
                && !rest
                    .get(id.len())
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
            {
                return true;
            }
        }
        from += at + 4;
    }
    false
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &s[n..]
}

/// First position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes all of `bytes`.
pub async fn write_all<S: AsyncWrite + Unpin>(conn: &mut S, bytes: &[u8]) -> Result<(), ReadError> {
    conn.write_all(bytes).await.map_err(|_| ReadError::Io)?;
    conn.flush().await.map_err(|_| ReadError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_in_place() {
        let mut buf = b"HEAD3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n".to_vec();
        assert_eq!(dechunk(&mut buf, 4), Ok(Some(9)));
        assert_eq!(&buf[4..9], b"abcde");
        let mut partial = b"3\r\nabc\r\n0\r\n".to_vec();
        assert_eq!(dechunk(&mut partial, 0), Ok(None));
        let mut bad = b"3\r\nabcX\r\n0\r\n\r\n".to_vec();
        assert_eq!(dechunk(&mut bad, 0), Err(ReadError::Malformed));
        let mut bad_size = b"zz\r\n\r\n".to_vec();
        assert_eq!(dechunk(&mut bad_size, 0), Err(ReadError::Malformed));
    }

    #[test]
    fn results_are_matched_to_their_request_id() {
        let ok = br#"{"jsonrpc":"2.0","id": 1000000000007,"result":{"content":[]}}"#;
        assert!(is_result_for(ok, b"1000000000007"));
        assert!(
            !is_result_for(ok, b"1000000000008"),
            "another call's answer"
        );
        assert!(!is_result_for(ok, b"100000000000"), "a prefix of the id");
        let err = br#"{"jsonrpc":"2.0","id":5,"error":{"code":-32000,"message":"x"}}"#;
        assert!(!is_result_for(err, b"5"));
        let big = format!(
            r#"{{"jsonrpc":"2.0","result":{{"text":"{}"}},"id":42}}"#,
            "x".repeat(1 << 20)
        );
        assert!(
            is_result_for(big.as_bytes(), b"42"),
            "an id after a large result"
        );
        assert!(!is_result_for(big.as_bytes(), b"41"));
    }

    #[test]
    fn the_response_event_is_found_in_a_stream() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\r\n\r\n";
        assert_eq!(
            jsonrpc_body(body, true),
            br#"{"jsonrpc":"2.0","id":3,"result":{}}"#
        );
        assert!(is_result_for(jsonrpc_body(body, true), b"3"));
        assert_eq!(jsonrpc_body(b"{}", false), b"{}");
    }
}

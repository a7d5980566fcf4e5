//! Writing HTTP/1.1 responses.

use std::io::Write;

/// The reason phrase of a status toolgate sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Content type of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// No body (`Content-Length: 0`).
    Empty,
    /// `application/json`.
    Json(&'a [u8]),
    /// One SSE `message` event carrying this JSON.
    Sse(&'a [u8]),
    /// An event stream that ends without any event (no answer to give).
    NoEvents,
    /// Prometheus text exposition.
    Text(&'a [u8]),
    /// Plain text (a REST API's non-JSON answer).
    Plain(&'a [u8]),
    /// A page for a browser (the connect flow's).
    Html(&'a [u8]),
}

/// Appends a complete response to `out`.
pub fn write(
    out: &mut Vec<u8>,
    status: u16,
    extra: &[(&str, &str)],
    body: Body<'_>,
    keep_alive: bool,
) {
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    match body {
        Body::Empty => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        Body::NoEvents => out.extend_from_slice(
            b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nContent-Length: 0\r\n\r\n",
        ),
        Body::Json(b) => {
            let _ = write!(
                out,
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.extend_from_slice(b);
        }
        Body::Text(b) => {
            let _ = write!(
                out,
                "Content-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.extend_from_slice(b);
        }
        Body::Plain(b) => {
            let _ = write!(
                out,
                "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.extend_from_slice(b);
        }
        Body::Html(b) => {
            let _ = write!(
                out,
                "Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nContent-Security-Policy: default-src 'none'\r\nX-Frame-Options: DENY\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.extend_from_slice(b);
        }
        Body::Sse(b) => {
            const PRE: &[u8] = b"event: message\ndata: ";
            const POST: &[u8] = b"\n\n";
            let _ = write!(
                out,
                "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nContent-Length: {}\r\n\r\n",
                PRE.len() + b.len() + POST.len()
            );
            out.extend_from_slice(PRE);
            out.extend_from_slice(b);
            out.extend_from_slice(POST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_response_has_length_and_type() {
        let mut out = Vec::new();
        write(
            &mut out,
            200,
            &[("Mcp-Session-Id", "abc")],
            Body::Json(b"{}"),
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nMcp-Session-Id: abc\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn sse_body_is_one_event() {
        let mut out = Vec::new();
        write(&mut out, 200, &[], Body::Sse(b"{}"), false);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nevent: message\ndata: {}\n\n"));
        assert!(text.contains("Content-Length: 25\r\n"));
    }
}

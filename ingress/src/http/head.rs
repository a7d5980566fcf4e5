//! Request heads: parsed once with httparse, kept as offsets into the
//! connection buffer so no header is copied.
//!
//! Three ways out, as httparse gives them: a complete head, "need more
//! bytes", or a refusal. Message framing follows RFC 9112 §6 strictly, because
//! a gateway that frames a body differently from the server behind it can be
//! used to smuggle requests: `Transfer-Encoding` with `Content-Length`, a
//! repeated or non-numeric `Content-Length`, or any transfer coding other than
//! `chunked` is refused.

use std::ops::Range;

use toolgate_core::refusal::{Refusal, RefusalKind};

/// Most headers ever parsed, whatever the configuration says.
pub const HEADERS_CAP: usize = 256;

/// Limits on a request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head (request line and headers).
    pub max_header_bytes: usize,
    /// Most headers.
    pub max_headers: usize,
    /// Largest body.
    pub max_body_bytes: usize,
}

impl Method {
    /// Its name, for a method toolgate serves somewhere.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Method::Get => Some("GET"),
            Method::Post => Some("POST"),
            Method::Delete => Some("DELETE"),
            Method::Put => Some("PUT"),
            Method::Patch => Some("PATCH"),
            Method::Other => None,
        }
    }
}

/// The request method, as far as toolgate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
    /// PUT (the admin API).
    Put,
    /// PATCH (the REST door).
    Patch,
    /// Anything else.
    Other,
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Head {
    /// Method.
    pub method: Method,
    /// Request target.
    pub path: Range<usize>,
    /// Header (name, value) offsets.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes the head occupies.
    pub len: usize,
    /// Body framing.
    pub body: BodyKind,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue`.
    pub expect_continue: bool,
}

fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Parses the head at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Refusal> {
    let mut storage = [httparse::EMPTY_HEADER; HEADERS_CAP];
    let max = limits.max_headers.min(HEADERS_CAP);
    let mut req = httparse::Request::new(&mut storage[..max]);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_header_bytes {
                Err(Refusal::new(RefusalKind::HeadersTooLarge))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(RefusalKind::HeadersTooLarge))
        }
        Err(_) => return Err(Refusal::new(RefusalKind::MalformedHttp)),
    };
    if len > limits.max_header_bytes {
        return Err(Refusal::new(RefusalKind::HeadersTooLarge));
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("DELETE") => Method::Delete,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        _ => Method::Other,
    };
    let path = range_in(buf, req.path.unwrap_or("").as_bytes());
    let http10 = req.version == Some(0);
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<usize> = None;
    let mut lengths = 0;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut conn_close = http10;
    let mut expect_continue = false;
    let bad = || Err(Refusal::new(RefusalKind::MalformedHttp));
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        headers.push((range_in(buf, name), range_in(buf, h.value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let v = h.value;
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return bad();
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            content_length = n;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return bad();
            }
            transfer_encoding = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    conn_close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(Refusal::with(
                    RefusalKind::MalformedHttp,
                    "unsupported `Expect`",
                ));
            }
            expect_continue = !http10;
        }
    }
    if lengths > 1 || (transfer_encoding && lengths > 0) || (transfer_encoding && http10) {
        return bad();
    }
    let body = match (chunked, content_length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(0)) | (false, None) => {
            if lengths == 1 && content_length.is_none() {
                return bad();
            }
            BodyKind::None
        }
        (false, Some(n)) if n > limits.max_body_bytes => {
            return Err(Refusal::new(RefusalKind::BodyTooLarge))
        }
        (false, Some(n)) => BodyKind::Length(n),
    };
    Ok(Some(Head {
        method,
        path,
        headers,
        len,
        body,
        keep_alive: !conn_close,
        expect_continue,
    }))
}

impl Head {
    /// The value of the first header called `name` (lowercase).
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &buf[v.clone()])
    }

    /// How many headers are called `name` (lowercase).
    pub fn count(&self, buf: &[u8], name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .count()
    }

    /// The request target.
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.path.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 1024,
        max_headers: 8,
        max_body_bytes: 100,
    };

    fn parse(s: &str) -> Result<Option<Head>, RefusalKind> {
        parse_head(s.as_bytes(), &LIMITS).map_err(|r| r.kind)
    }

    #[test]
    fn complete_post_with_length() {
        let raw = "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nAuthorization: Bearer k\r\n\r\nhello";
        let h = parse(raw).ok().flatten().unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path(raw.as_bytes()), b"/mcp");
        assert_eq!(h.body, BodyKind::Length(5));
        assert_eq!(&raw[h.len..], "hello");
        assert_eq!(
            h.header(raw.as_bytes(), "authorization"),
            Some(&b"Bearer k"[..])
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn head_split_across_reads_needs_more_bytes() {
        let raw = "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
        for cut in 1..raw.len() {
            assert!(matches!(parse(&raw[..cut]), Ok(None)), "cut at {cut}");
        }
        assert!(matches!(parse(raw), Ok(Some(_))));
    }

    #[test]
    fn te_and_cl_together_rejected() {
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(raw).err(), Some(RefusalKind::MalformedHttp));
    }

    #[test]
    fn repeated_or_bad_content_length_rejected() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(
                parse(raw).err(),
                Some(RefusalKind::MalformedHttp),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn transfer_codings_other_than_chunked_rejected() {
        let raw = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(raw).err(), Some(RefusalKind::MalformedHttp));
        let raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse(raw).ok().flatten().map(|h| h.body),
            Some(BodyKind::Chunked)
        );
    }

    #[test]
    fn oversize_head_and_too_many_headers_are_431() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(parse(&big).err(), Some(RefusalKind::HeadersTooLarge));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(9));
        assert_eq!(parse(&many).err(), Some(RefusalKind::HeadersTooLarge));
    }

    #[test]
    fn oversize_declared_body_is_413() {
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n").err(),
            Some(RefusalKind::BodyTooLarge)
        );
    }

    #[test]
    fn garbage_is_400() {
        assert_eq!(
            parse("\x16\x03\x01\x02\x00\x01\r\n\r\n").err(),
            Some(RefusalKind::MalformedHttp)
        );
        assert_eq!(
            parse("GET /\tx HTTP/1.1\r\n\r\n").err(),
            Some(RefusalKind::MalformedHttp)
        );
    }

    #[test]
    fn connection_semantics() {
        let h = parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .ok()
            .flatten();
        assert_eq!(h.map(|h| h.keep_alive), Some(false));
        let h = parse("GET / HTTP/1.0\r\n\r\n").ok().flatten();
        assert_eq!(h.map(|h| h.keep_alive), Some(false));
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .ok()
            .flatten();
        assert_eq!(h.map(|h| h.keep_alive), Some(true));
        let h = parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .ok()
            .flatten();
        assert_eq!(h.map(|h| h.expect_continue), Some(true));
    }
}

//! Phase: media types. What the agent sends (`Content-Type`,
//! `Content-Encoding`) and what it takes (`Accept`), read once per request.

use toolgate_core::refusal::{Refusal, RefusalKind};

use crate::http::server::Request;

/// The request's media, as its headers give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Media {
    /// The agent takes the answer only as an SSE stream.
    pub(super) sse: bool,
    /// The agent takes an SSE stream (among other things, maybe): its
    /// call's progress can go ahead of the answer.
    pub(super) streams: bool,
    /// `Accept` allows JSON or SSE.
    acceptable: bool,
}

impl Media {
    /// Reads `Accept` (absent: anything).
    pub(super) fn of(req: &Request<'_>) -> Self {
        let accept = req.head.header(req.buf, "accept").unwrap_or(b"*/*");
        let json = accepts(accept, b"application/json");
        let sse = accepts(accept, b"text/event-stream");
        Self {
            sse: sse && !json,
            streams: sse,
            acceptable: json || sse,
        }
    }

    /// Refuses a body that is not plain JSON, or an agent that takes
    /// neither JSON nor SSE.
    pub(super) fn check(&self, req: &Request<'_>) -> Result<(), Refusal> {
        json_body(req)?;
        if !self.acceptable {
            return Err(Refusal::new(RefusalKind::NotAcceptable));
        }
        Ok(())
    }
}

/// Refuses a body that is not plain JSON: another `Content-Type`, or any
/// `Content-Encoding` — policy is decided on the body as read, and an
/// encoded body would be decided on bytes that are not what the tool sees.
pub(super) fn json_body(req: &Request<'_>) -> Result<(), Refusal> {
    let content_type = req.head.header(req.buf, "content-type").unwrap_or(b"");
    if !media_is(content_type, b"application/json") {
        return Err(Refusal::new(RefusalKind::UnsupportedMediaType));
    }
    if let Some(enc) = req.head.header(req.buf, "content-encoding") {
        if !enc.trim_ascii().eq_ignore_ascii_case(b"identity") {
            return Err(Refusal::with(
                RefusalKind::UnsupportedMediaType,
                "request bodies must not be content-encoded",
            ));
        }
    }
    Ok(())
}

/// Whether a media-type header value (type and parameters) is `media`.
fn media_is(value: &[u8], media: &[u8]) -> bool {
    value
        .split(|&b| b == b';')
        .next()
        .is_some_and(|m| m.trim_ascii().eq_ignore_ascii_case(media))
}

/// Whether an `Accept` value allows `media` (exactly, by `type/*`, or `*/*`).
fn accepts(accept: &[u8], media: &[u8]) -> bool {
    let major = media.split(|&b| b == b'/').next().unwrap_or(b"");
    accept.split(|&b| b == b',').any(|item| {
        let m = item
            .split(|&b| b == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        m.eq_ignore_ascii_case(media)
            || m == b"*/*"
            || (m.len() == major.len() + 2
                && m.ends_with(b"/*")
                && m[..major.len()].eq_ignore_ascii_case(major))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::testing::with_request;

    fn check(head: &str) -> Result<Media, RefusalKind> {
        with_request(head, "{}", |req| {
            let media = Media::of(req);
            media.check(req).map(|()| media).map_err(|r| r.kind)
        })
    }

    #[test]
    fn json_body_with_an_acceptable_answer_passes_and_sse_only_agents_get_sse() {
        let m = check(
            "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: text/event-stream",
        );
        assert_eq!(m.map(|m| m.sse), Ok(true));
        let m = check("POST /mcp HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nAccept: application/json, text/event-stream");
        assert_eq!(m.map(|m| (m.sse, m.streams)), Ok((false, true)));
        let m = check(
            "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json",
        );
        assert_eq!(m.map(|m| (m.sse, m.streams)), Ok((false, false)));
    }

    #[test]
    fn encoded_or_non_json_bodies_and_unacceptable_answers_are_refused() {
        let refused = |h| check(h).map(|_| ()).unwrap_err();
        assert_eq!(
            refused("POST /mcp HTTP/1.1\r\nContent-Type: text/plain"),
            RefusalKind::UnsupportedMediaType
        );
        assert_eq!(
            refused(
                "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nContent-Encoding: gzip"
            ),
            RefusalKind::UnsupportedMediaType
        );
        assert_eq!(
            refused("POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: text/html"),
            RefusalKind::NotAcceptable
        );
    }

    #[test]
    fn accept_matching() {
        assert!(accepts(
            b"application/json, text/event-stream",
            b"text/event-stream"
        ));
        assert!(accepts(b"text/*;q=0.5", b"text/event-stream"));
        assert!(accepts(b"*/*", b"application/json"));
        assert!(!accepts(b"text/html", b"application/json"));
    }

    #[test]
    fn media_type_ignores_parameters() {
        assert!(media_is(
            b"application/json; charset=utf-8",
            b"application/json"
        ));
        assert!(!media_is(b"text/plain", b"application/json"));
    }
}

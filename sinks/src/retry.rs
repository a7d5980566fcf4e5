//! The one retry policy of the HTTP sinks ([`crate::siem`] and
//! [`crate::soar`]): how a POST to a collector is sent and what its answer
//! means for the records it carries.
//!
//! 2xx (and 409, an Elasticsearch `_id` already indexed) is delivered; 408,
//! 429, 5xx and no answer at all are retried, after dropping the connection,
//! honouring `Retry-After`; any other status is a rejection, which the
//! [`crate::sink::SinkRunner`] still retries but reports as an error each
//! time. The waits between attempts are the runner's, the same for every
//! sink.

use toolgate_core::secret::Secret;

use crate::http::{HttpClient, Response};
use crate::sink::SinkError;

/// What a status means for the records it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    Retry,
    Rejected,
}

/// The [`Verdict`] of an HTTP status (0: no status, e.g. a bulk item
/// without one).
pub(crate) fn classify(status: u16) -> Verdict {
    match status {
        // 409: the `_id` is already indexed, i.e. delivered before.
        200..=299 | 409 => Verdict::Delivered,
        408 | 429 | 500..=599 | 0 => Verdict::Retry,
        _ => Verdict::Rejected,
    }
}

/// The start of a response body, printable, for messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A collector endpoint: the connection, the URL path, the auth header
/// (never logged) and the configured extra headers.
pub(crate) struct Endpoint {
    pub(crate) client: HttpClient,
    pub(crate) path: String,
    pub(crate) auth: Option<(String, Secret)>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Endpoint {
    /// POSTs `body` with the `content` headers (`Content-Type`, …), then the
    /// auth header and the extra headers; returns the answer whatever its
    /// status. No answer at all is a transient error.
    pub(crate) fn post(
        &mut self,
        content: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<Response, SinkError> {
        let mut headers: Vec<(&str, &[u8])> =
            Vec::with_capacity(content.len() + 1 + self.headers.len());
        headers.extend_from_slice(content);
        if let Some((h, v)) = &self.auth {
            headers.push((h.as_str(), v.expose()));
        }
        for (h, v) in &self.headers {
            headers.push((h.as_str(), v.as_bytes()));
        }
        self.client.post(&self.path, &headers, body).map_err(|e| {
            SinkError::new(format!(
                "POST to `{}{}`: {e}",
                self.client.target(),
                self.path
            ))
        })
    }

    /// What `resp` means for what it answers (`what`, e.g. "3 records", for
    /// the rejection message): `Ok` when delivered; a retry, after dropping
    /// the connection, for a transient status; a rejection otherwise.
    pub(crate) fn outcome(
        &mut self,
        resp: &Response,
        what: impl std::fmt::Display,
    ) -> Result<(), SinkError> {
        let target = self.client.target();
        match classify(resp.status) {
            Verdict::Delivered => Ok(()),
            Verdict::Retry => {
                let e = SinkError::retry_after(
                    format!(
                        "`{target}` answered {}: {}",
                        resp.status,
                        snippet(&resp.body)
                    ),
                    resp.retry_after,
                );
                // The connection's state after an error answer is not worth
                // trusting: start afresh.
                self.client.disconnect();
                Err(e)
            }
            Verdict::Rejected => Err(SinkError::rejected(format!(
                "`{target}` refused {what} with {}: {}",
                resp.status,
                snippet(&resp.body)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_conflict_deliver_transient_statuses_retry_the_rest_reject() {
        for s in [200, 201, 299, 409] {
            assert_eq!(classify(s), Verdict::Delivered, "{s}");
        }
        for s in [0, 408, 429, 500, 503, 599] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 413, 422] {
            assert_eq!(classify(s), Verdict::Rejected, "{s}");
        }
    }

    #[test]
    fn snippet_is_bounded_and_printable() {
        assert_eq!(snippet(b"a\nb\tc"), "a b c");
        assert_eq!(snippet(&[b'x'; 1000]).len(), 300);
    }
}

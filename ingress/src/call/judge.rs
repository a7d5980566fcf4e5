//! Asking the judge about an escalated call.
//!
//! The judge is an HTTP endpoint (an approval service, or a reviewer model
//! behind one) that receives the call's context as JSON and answers
//! `{"decision":"allow"}` or `{"decision":"deny"}`. Only this call leaves the
//! shard while the agent waits, and it waits on io_uring like any upstream
//! call, so other requests on the shard go on. Anything but a clear allow in
//! time — timeout, refusal, garbage — is a deny.

use std::io::Write;
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use toolgate_core::audit::{JudgeOutcome, JudgeRecord};
use toolgate_core::jsonrpc::{write_str, JsonParser};
use toolgate_core::upstream_url::UpstreamUrl;

use toolgate_net::client::{ClientError, Pool};

/// A shard's client of the judge.
pub struct Judge {
    url: UpstreamUrl,
    pool: Pool,
    timeout: Duration,
}

/// The call described to the judge.
pub struct Escalation<'a> {
    /// JSON-RPC id as JSON text.
    pub request_id: Option<&'a str>,
    /// Agent id.
    pub agent: &'a str,
    /// End user, when known.
    pub user: Option<&'a str>,
    /// Exposed tool name.
    pub tool: &'a str,
    /// Upstream name.
    pub upstream: &'a str,
    /// The arguments, as JSON.
    pub arguments: &'a [u8],
    /// The policies that escalated it.
    pub policies: &'a [std::sync::Arc<str>],
}

impl Judge {
    /// A judge at `url` (over `tls` for `https://`) answering within `timeout`.
    pub fn new(
        url: UpstreamUrl,
        timeout: Duration,
        tls: Option<toolgate_net::tls::ClientTls>,
    ) -> Self {
        let pool = Pool::new(url.dial_target(), 8, tls);
        Self { url, pool, timeout }
    }

    /// Asks; returns what the judge said and how long it took (the audit
    /// record's part). Only [`JudgeOutcome::Allow`] lets the call go on.
    pub async fn ask(&self, e: &Escalation<'_>) -> JudgeRecord {
        let started = Instant::now();
        let mut body = Vec::with_capacity(e.arguments.len() + 256);
        body.extend_from_slice(b"{\"request_id\":");
        body.extend_from_slice(e.request_id.unwrap_or("null").as_bytes());
        for (k, v) in [
            ("agent", Some(e.agent)),
            ("user", e.user),
            ("tool", Some(e.tool)),
            ("upstream", Some(e.upstream)),
        ] {
            body.push(b',');
            write_str(k, &mut body);
            body.push(b':');
            match v {
                Some(v) => write_str(v, &mut body),
                None => body.extend_from_slice(b"null"),
            }
        }
        body.extend_from_slice(b",\"arguments\":");
        body.extend_from_slice(e.arguments);
        body.extend_from_slice(b",\"policies\":[");
        for (i, p) in e.policies.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            write_str(p, &mut body);
        }
        body.extend_from_slice(b"]}");
        let mut req = Vec::with_capacity(body.len() + 256);
        let _ = write!(
            req,
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            self.url.path,
            self.url.authority,
            body.len()
        );
        req.extend_from_slice(&body);
        let answer = self.pool.exchange(&req, 64 * 1024, self.timeout).await;
        let outcome = match answer {
            Ok(r) if r.status == 200 => match decision(&r.body) {
                Some(true) => JudgeOutcome::Allow,
                Some(false) => JudgeOutcome::Deny,
                None => JudgeOutcome::Invalid,
            },
            Ok(_) => JudgeOutcome::Invalid,
            Err(ClientError::Timeout) => JudgeOutcome::Timeout,
            Err(_) => JudgeOutcome::Unavailable,
        };
        JudgeRecord {
            outcome,
            latency_us: started.elapsed().as_micros() as u64,
        }
    }
}

fn decision(body: &[u8]) -> Option<bool> {
    let mut p = JsonParser::new();
    let tape = p.parse(body).ok()?;
    match tape.as_value().get("decision")?.into_string()? {
        "allow" => Some(true),
        "deny" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::decision;

    #[test]
    fn only_a_clear_answer_counts() {
        assert_eq!(
            decision(br#"{"decision":"allow","reason":"ok"}"#),
            Some(true)
        );
        assert_eq!(decision(br#"{"decision":"deny"}"#), Some(false));
        assert_eq!(decision(br#"{"decision":"ALLOW"}"#), None);
        assert_eq!(decision(br#"{"decision":true}"#), None);
        assert_eq!(decision(b"allow"), None);
    }
}

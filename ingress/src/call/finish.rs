//! The first and the last phase: reserve the request's place in the audit
//! ring before anything runs, and at the end write the response, commit
//! the record into that place, and hold the answer until the record is in
//! the log.
//!
//! Only this module writes responses for `/mcp` and the REST door, and it
//! commits the record on every path: an answer, a refusal, or an upstream
//! failure.

use std::sync::atomic::Ordering;
use std::time::Duration;

use toolgate_core::audit::{Decision, Door, Outcome, Reason};
use toolgate_core::refusal::{Refusal, RefusalKind, WireHeader};
use toolgate_decision::Snapshot;
use toolgate_sinks::Admission;

use super::ctx::{Answer, CallCtx};
use super::identify::challenge;
use super::{limit, wire, Gateway};
use crate::http::early;
use crate::http::response::{self, Body};
use crate::http::server::Request;

/// Methods `/mcp` serves (the `Allow` header of a 405).
const MCP_METHODS: &str = "POST, DELETE";

impl Gateway {
    /// Reserves the request's audit slot. With no place for the record,
    /// nothing runs: the 503 is written here and `None` returned.
    pub(super) fn reserve(&self, out: &mut Vec<u8>) -> Option<Admission> {
        match self.audit.borrow_mut().admit() {
            Ok(a) => Some(a),
            Err(why) => {
                let n = self.shared.audit_refusals.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(c) = self.counters() {
                    c.audit_refused.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(shard = self.shard, refused = n, "{why}: call refused");
                let r = Refusal::new(RefusalKind::AuditUnavailable);
                write_refusal(out, &r, None, None, Some("1"), false, true);
                None
            }
        }
    }

    /// Writes the response for `result`, then commits the record into
    /// `slot` and waits for it to be in the log.
    pub(super) async fn finish(
        &self,
        snap: &Snapshot,
        req: &Request<'_>,
        mut ctx: CallCtx,
        result: Result<Answer, Refusal>,
        slot: Admission,
        out: &mut Vec<u8>,
    ) {
        // Where the call stands under its tightest limit, on every answer.
        let limit_headers = ctx
            .limit
            .as_ref()
            .map(|(s, _)| limit::headers(s))
            .unwrap_or_default();
        let limit_headers: Vec<(&str, &str)> = limit_headers
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        // Messages went ahead of the answer (progress): the answer is the
        // last event of the stream under way, with its status.
        // (A stream of list changes goes on after its record.)
        let streamed =
            !matches!(result, Ok(Answer::Listen(_))) && req.early.is_some_and(|e| e.close(out));
        let (decision, status, outcome, code) = match result {
            Ok(Answer::Message {
                body,
                outcome,
                error_code,
                ..
            }) if streamed => {
                early::last_event(out, &body);
                (Decision::Allow, 200, outcome, error_code)
            }
            Ok(Answer::Message {
                status,
                body,
                session,
                outcome,
                error_code,
            }) => {
                let mut extra = limit_headers.clone();
                if let Some(s) = &session {
                    extra.push(("Mcp-Session-Id", s));
                }
                let body = if ctx.sse {
                    Body::Sse(&body)
                } else {
                    Body::Json(&body)
                };
                response::write(out, status, &extra, body, true);
                (Decision::Allow, status, outcome, error_code)
            }
            Ok(Answer::Http {
                status,
                json,
                body,
                outcome,
            }) => {
                let body = if json {
                    Body::Json(&body)
                } else {
                    Body::Plain(&body)
                };
                response::write(out, status, &limit_headers, body, true);
                (Decision::Allow, status, outcome, None)
            }
            Ok(Answer::Accepted) => {
                response::write(out, 202, &[], Body::Empty, true);
                (Decision::Allow, 202, Outcome::Success, None)
            }
            Ok(Answer::Listen(_)) => (Decision::Allow, 200, Outcome::Success, None),
            Ok(Answer::Done) => {
                response::write(out, 200, &[], Body::Empty, true);
                (Decision::Allow, 200, Outcome::Success, None)
            }
            Err(r) => {
                let w = r.wire();
                let value = match w.header {
                    WireHeader::None => None,
                    WireHeader::RetryAfter => Some(ctx.retry_after_s.unwrap_or(1).to_string()),
                    WireHeader::Challenge => {
                        Some(challenge(snap, req, self.shared.config.listen, r.kind))
                    }
                    WireHeader::Allow => Some(MCP_METHODS.to_owned()),
                };
                let mut headers = limit_headers.clone();
                if let (Some(n), Some(v)) = (w.header.name(), value.as_deref()) {
                    headers.push((n, v));
                }
                // A limit that refused the call says which, and when it resets.
                let data = ctx
                    .limit
                    .as_ref()
                    .filter(|(_, refused)| *refused)
                    .map(|(s, _)| {
                        serde_json::json!({"limit": &*s.id, "remaining": s.remaining, "reset_s": s.reset_s})
                            .to_string()
                    })
                    .or(ctx.refusal_data.take());
                let (status, code) = match ctx.door {
                    // A cancelled request gets no answer (MCP): its stream
                    // ends without one, where the agent takes streams.
                    Door::Mcp if r.kind == RefusalKind::Cancelled && (streamed || ctx.streams) => {
                        if streamed {
                            early::end(out);
                        } else {
                            response::write(out, 200, &headers, Body::NoEvents, true);
                        }
                        (200, None)
                    }
                    Door::Mcp => {
                        let mut body = Vec::with_capacity(128);
                        wire::refusal_with_data(
                            ctx.request_id.as_deref(),
                            &r,
                            ctx.requested_version.as_deref(),
                            data.as_deref(),
                            &mut body,
                        );
                        if streamed {
                            early::last_event(out, &body);
                            (200, Some(w.code))
                        } else {
                            let body = if ctx.sse && w.status == 200 {
                                Body::Sse(&body)
                            } else {
                                Body::Json(&body)
                            };
                            response::write(out, w.status, &headers, body, true);
                            (w.status, Some(w.code))
                        }
                    }
                    // HTTP semantics, no JSON-RPC code.
                    Door::Rest => (
                        super::rest::write_refusal(out, &r, &headers, data.as_deref()),
                        None,
                    ),
                };
                // A policy deny keeps the finer reason the engine gave, an
                // out-of-scope call its own.
                if r.kind != RefusalKind::PolicyDenied && ctx.reason != Reason::ToolOutOfScope {
                    ctx.reason = Reason::Refused(r.kind);
                }
                (r.kind.decision(), status, Outcome::Failure, code)
            }
        };
        if let (Some(customer), Some("tools/call")) =
            (ctx.customer.as_deref(), ctx.method.as_deref())
        {
            self.shared
                .metrics
                .customers
                .record(customer, decision == Decision::Allow);
            if let Some(tool) = ctx.tool.as_deref() {
                let limited = matches!(
                    ctx.reason.as_str(),
                    "rate_limited" | "quota_exceeded" | "limit_table_full"
                );
                self.shared.metrics.usage.record(
                    customer,
                    tool,
                    crate::metrics::usage::Counted {
                        allowed: decision == Decision::Allow,
                        limited,
                        tool_error: outcome == Outcome::ToolError,
                        units: ctx.units,
                    },
                );
            }
        }
        if let Some(c) = self.counters() {
            match decision {
                Decision::Allow => c.allowed.fetch_add(1, Ordering::Relaxed),
                Decision::Deny => c.denied.fetch_add(1, Ordering::Relaxed),
            };
            if ctx.reason.is_upstream_failure() {
                c.upstream_failures.fetch_add(1, Ordering::Relaxed);
            }
            let cache = self.decisions.borrow();
            c.cache_hits.store(cache.hits, Ordering::Relaxed);
            c.cache_misses.store(cache.misses, Ordering::Relaxed);
        }
        let record = ctx.into_record(self.shard, decision, status, outcome, code);
        let seq = self.audit.borrow_mut().commit(slot, record);
        if let Some(c) = self.counters() {
            c.ring_occupancy
                .store(self.audit.borrow().occupancy() as u64, Ordering::Relaxed);
        }
        self.await_recorded(seq).await;
    }

    /// Holds the answer until its record is in the log (written, or synced
    /// with `durability = "record"`), so an answered call's record survives
    /// a crash of toolgate. Bounded by `audit.ack_timeout_ms`: a stuck disk
    /// delays answers, it does not hang them (and refuses new calls).
    pub(super) async fn await_recorded(&self, seq: u64) {
        let limit = Duration::from_millis(self.shared.config.config.audit.ack_timeout_ms);
        if self.acks.recorded(seq) {
            return;
        }
        if let Some(inline) = &self.inline {
            // The other calls of this turn commit theirs first, so that one
            // write carries them all; then this shard writes, unless someone
            // else is writing (they then write this record too).
            futures_lite::future::yield_now().await;
            if !self.acks.recorded(seq) {
                inline.try_write();
            }
            if self.acks.recorded(seq) {
                return;
            }
        }
        let waited = glommio::timer::timeout(limit, async {
            self.acks.wait(seq).await;
            Ok(())
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                shard = self.shard,
                seq,
                "audit record not in the log in time; answering anyway (the record stays queued)"
            );
        }
    }
}

/// Writes a refusal's response: its status, its one header (with `value`,
/// which only the caller knows), and the JSON-RPC error — as an SSE event
/// for an SSE agent when the status is 200.
pub(super) fn write_refusal(
    out: &mut Vec<u8>,
    r: &Refusal,
    id: Option<&str>,
    requested_version: Option<&str>,
    value: Option<&str>,
    sse: bool,
    keep_alive: bool,
) {
    let w = r.wire();
    let mut body = Vec::with_capacity(128);
    wire::refusal(id, r, requested_version, &mut body);
    let extra: &[(&str, &str)] = match (w.header.name(), value) {
        (Some(n), Some(v)) => &[(n, v)],
        _ => &[],
    };
    let body = if sse && w.status == 200 {
        Body::Sse(&body)
    } else {
        Body::Json(&body)
    };
    response::write(out, w.status, extra, body, keep_alive);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(out: &[u8]) -> String {
        let text = String::from_utf8_lossy(out);
        text.split("\r\n\r\n").next().unwrap_or("").to_owned()
    }

    #[test]
    fn a_refusal_carries_its_one_header_with_the_value_given() {
        let mut out = Vec::new();
        let r = Refusal::new(RefusalKind::RateLimited);
        write_refusal(&mut out, &r, Some("1"), None, Some("3"), false, true);
        let head = head_of(&out);
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(head.contains("Retry-After: 3"), "{head}");

        let mut out = Vec::new();
        let r = Refusal::new(RefusalKind::MethodNotAllowed);
        write_refusal(&mut out, &r, None, None, Some(MCP_METHODS), false, true);
        assert!(head_of(&out).contains("Allow: POST, DELETE"));
    }

    #[test]
    fn a_refusal_without_a_header_kind_writes_none_even_if_given_a_value() {
        let mut out = Vec::new();
        let r = Refusal::new(RefusalKind::PolicyDenied);
        write_refusal(&mut out, &r, Some("1"), None, Some("x"), false, true);
        let head = head_of(&out);
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        assert!(!head.contains(": x"), "{head}");
        let body = String::from_utf8_lossy(&out);
        assert!(body.contains("Denied by policy"), "{body}");
    }
}

//! Phase 7a: the `[limits]` rules — per-customer rates and quotas — for a
//! call that attachment, policy and the judge allowed, just before it is
//! forwarded (so nothing refused earlier ever counts). Over a limit, the
//! call is refused with 429, `Retry-After` and the `RateLimit` headers;
//! passed, its answer carries the `RateLimit` headers of its tightest
//! limit.

use toolgate_core::refusal::{Refusal, RefusalKind};
use toolgate_limits::{Call, Refused};

use super::ctx::{now_us, CallCtx};
use super::Gateway;

impl Gateway {
    /// Takes the call in `ctx` from every limit that applies to it.
    pub(super) fn take_limits(&self, ctx: &mut CallCtx) -> Result<(), Refusal> {
        let limits = self.limits.borrow_mut().current();
        if limits.is_empty() {
            return Ok(());
        }
        let (Some(agent), Some(tool), Some(upstream)) = (
            ctx.agent.as_deref(),
            ctx.tool.as_deref(),
            ctx.upstream.as_deref(),
        ) else {
            return Ok(());
        };
        let call = Call {
            customer: ctx.customer.as_deref().unwrap_or(agent),
            agent,
            user: ctx.user.as_deref(),
            tool,
            upstream,
        };
        match limits.take(&call, now_us().saturating_mul(1_000)) {
            Ok(passed) => {
                ctx.limit = passed.tightest.map(|s| (s, false));
                ctx.units = passed.units;
                Ok(())
            }
            Err(Refused::Exceeded {
                standing,
                quota,
                retry_after_s,
            }) => {
                ctx.retry_after_s = Some(retry_after_s);
                ctx.limit = Some((standing, true));
                Err(Refusal::new(if quota {
                    RefusalKind::QuotaExceeded
                } else {
                    RefusalKind::RateLimited
                }))
            }
            Err(Refused::TableFull) => {
                tracing::warn!(
                    shard = self.shard,
                    "limit counters are full (`limits.max_counters`): call refused"
                );
                ctx.retry_after_s = Some(60);
                Err(Refusal::new(RefusalKind::LimitTableFull))
            }
        }
    }
}

/// The IETF `RateLimit-Policy` and `RateLimit` header values of where a
/// call stands.
pub(super) fn headers(s: &toolgate_limits::Standing) -> [(&'static str, String); 2] {
    [
        (
            "RateLimit-Policy",
            format!("\"{}\";q={};w={}", s.id, s.limit, s.window_s),
        ),
        (
            "RateLimit",
            format!("\"{}\";r={};t={}", s.id, s.remaining, s.reset_s),
        ),
    ]
}

//! Rates: GCRA on one counter (the theoretical arrival time), and a rate
//! shared with other replicas through Redis (reserved calls first, then
//! this replica's share).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{shared, table, At, Left, Refused, Rule, Sharing, Standing, USED_BITS, USED_MASK};

/// The window a rate's `RateLimit-Policy` names: the time its burst takes
/// to build up, in whole seconds.
pub(crate) fn rate_window_s(interval_ns: u64, burst: u64) -> u64 {
    burst
        .saturating_mul(interval_ns)
        .div_ceil(1_000_000_000)
        .max(1)
}

/// GCRA on one counter: `value` holds the theoretical arrival time.
pub(crate) fn gcra(
    rule: &Rule,
    value: &AtomicU64,
    interval_ns: u64,
    tolerance_ns: u64,
    burst: u64,
    now_ns: u64,
) -> Result<Left, Refused> {
    let window_s = rate_window_s(interval_ns, burst);
    let mut tat = value.load(Ordering::Acquire);
    loop {
        let base = tat.max(now_ns);
        if base - now_ns > tolerance_ns {
            let wait = base - now_ns - tolerance_ns;
            return Err(Refused::Exceeded {
                standing: Standing {
                    id: Arc::clone(&rule.id),
                    limit: burst,
                    window_s,
                    remaining: 0,
                    reset_s: (base - now_ns).div_ceil(1_000_000_000).max(1),
                },
                quota: false,
                retry_after_s: wait.div_ceil(1_000_000_000).max(1),
            });
        }
        let next = base + interval_ns;
        match value.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                let level = next - now_ns;
                let room = (tolerance_ns + interval_ns).saturating_sub(level);
                return Ok(Left {
                    limit: burst,
                    window_s,
                    remaining: room / interval_ns,
                    reset_s: level.div_ceil(1_000_000_000),
                    amount: interval_ns,
                });
            }
            Err(seen) => tat = seen,
        }
    }
}

/// A rate shared with the other replicas (see [`shared`]): a call spends
/// one of the calls this replica reserved in Redis (`amount` 0: one
/// reserved call taken); with none left, or without Redis, it passes if
/// this replica's share of the rate lets it (and is paid for in Redis
/// afterwards), while more calls are reserved.
pub(crate) fn take_shared_rate(
    rule: &Rule,
    at: &At<'_>,
    (sh, share): (&Sharing, &table::RateShare),
    (interval_ns, tolerance_ns, burst): (u64, u64, u64),
    now_ns: u64,
) -> Result<Left, Refused> {
    let slot = at.slot;
    let up = sh.redis_up();
    let now_s = now_ns / 1_000_000_000;
    let lease = sh.rate_lease(burst);
    let may_ask = up && now_ns >= share.hold.load(Ordering::Acquire);
    let refill = |pay| shared::Refill {
        slot: at.index,
        key: at.redis_key(rule, "rate", None),
        ask: shared::Ask::Rate(shared::RateAsk {
            interval_us: (interval_ns / 1_000).max(1),
            tolerance_us: tolerance_ns / 1_000,
            amount: lease,
            pay,
        }),
    };
    // A call this replica reserved, while Redis is reachable.
    let mut g = slot.granted.load(Ordering::Acquire);
    loop {
        let held = g & USED_MASK;
        if !up || held == 0 || !shared::calls_live(g >> USED_BITS, now_s) {
            break;
        }
        match slot
            .granted
            .compare_exchange_weak(g, g - 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                if held - 1 < lease.div_ceil(2) && may_ask {
                    sh.ask(slot, refill(false));
                }
                return Ok(Left {
                    limit: burst,
                    window_s: rate_window_s(interval_ns, burst),
                    remaining: held - 1,
                    reset_s: 1,
                    amount: 0,
                });
            }
            Err(seen) => g = seen,
        }
    }
    // This replica's share of the rate.
    let n = sh.replicas.max(1);
    let (interval, share_burst) = (interval_ns.saturating_mul(n), (burst / n).max(1));
    let tolerance = interval.saturating_mul(share_burst - 1);
    let passed = gcra(rule, &slot.value, interval, tolerance, share_burst, now_ns);
    if may_ask {
        sh.ask(slot, refill(false));
    }
    if up && passed.is_ok() && share.owed.fetch_add(1, Ordering::AcqRel) == 0 {
        sh.pay(share, refill(true));
    }
    passed
}

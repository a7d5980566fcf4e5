//! Per-agent rate limits on tool invocations, exact across shards and
//! without a lock: GCRA (the generic cell rate algorithm, equivalent to a
//! token bucket) keeps one atomic "theoretical arrival time" per limit, and
//! each call advances it with one compare-and-swap.
//!
//! Limits live in a published map (agent id → limiter) that each shard
//! reads through its own reader. A reload that leaves an agent's limit as it
//! was keeps its limiter, and with it the state of its bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use toolgate_core::config::{RateLimitConfig, ValidConfig};

/// Agent id → its limiter.
pub type Limits = HashMap<Arc<str>, Arc<Gcra>>;

/// One rate limit's state.
#[derive(Debug)]
pub struct Gcra {
    config: RateLimitConfig,
    /// Time between calls at the sustained rate, ns.
    interval: u64,
    /// How far ahead of now the arrival time may run (the burst), ns.
    tolerance: u64,
    /// Theoretical arrival time of the next call, ns since [`epoch`].
    tat: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, in the limiters' time base (ns).
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Gcra {
    /// A limiter for `config`, with a full burst available.
    pub fn new(config: RateLimitConfig) -> Self {
        let interval = (1e9 / config.calls_per_s).max(1.0) as u64;
        let burst = u64::from(
            config
                .burst
                .unwrap_or(config.calls_per_s.ceil().max(1.0) as u32),
        );
        Self {
            config,
            interval,
            tolerance: interval.saturating_mul(burst.saturating_sub(1)),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one call at `now` (ns); `Err` carries how long until one
    /// would be allowed.
    pub fn check(&self, now: u64) -> Result<(), Duration> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let base = tat.max(now);
            if base - now > self.tolerance {
                return Err(Duration::from_nanos(base - now - self.tolerance));
            }
            match self.tat.compare_exchange_weak(
                tat,
                base + self.interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

/// The limits `cfg` asks for, reusing `previous` limiters whose limit is
/// unchanged (so a reload does not refill their buckets).
pub fn build(cfg: &ValidConfig, previous: &Limits) -> Limits {
    cfg.config
        .agents
        .iter()
        .filter_map(|a| {
            let limit = a.rate_limit?;
            let id: Arc<str> = Arc::from(a.id.get_ref().as_str());
            let gcra = previous
                .get(&id)
                .filter(|g| g.config == limit)
                .cloned()
                .unwrap_or_else(|| Arc::new(Gcra::new(limit)));
            Some((id, gcra))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra(rate: f64, burst: u32) -> Gcra {
        Gcra::new(RateLimitConfig {
            calls_per_s: rate,
            burst: Some(burst),
        })
    }

    #[test]
    fn burst_then_the_sustained_rate() {
        let g = gcra(10.0, 3);
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            assert!(g.check(t0).is_ok());
        }
        let wait = g.check(t0).err().unwrap_or_default();
        assert_eq!(wait, Duration::from_millis(100));
        // One interval later, exactly one more call.
        assert!(g.check(t0 + 100_000_000).is_ok());
        assert!(g.check(t0 + 100_000_000).is_err());
        // After a long pause the burst is back, not more.
        let later = t0 + 10_000_000_000;
        for _ in 0..3 {
            assert!(g.check(later).is_ok());
        }
        assert!(g.check(later).is_err());
    }

    #[test]
    fn exact_across_threads() {
        let g = Arc::new(gcra(1.0, 100));
        let now = 5_000_000_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || (0..100).filter(|_| g.check(now).is_ok()).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(allowed, 100);
    }
}

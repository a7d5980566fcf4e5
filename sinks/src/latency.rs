//! A latency histogram written without locks: one atomic counter per
//! bucket, read as a Prometheus histogram.
//!
//! The audit thread and its sync thread observe into it; the metrics
//! endpoint reads it. Observing is two relaxed atomic adds, so it costs the
//! writer nothing it would notice next to the `fdatasync` it measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, µs (the last bucket, `+Inf`, is implicit):
/// 100 µs … 1 s, spread for fdatasync on SSDs (tens of µs to ms) and on
/// loaded or networked disks (tens to hundreds of ms).
pub const BOUNDS_US: [u64; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
];

/// Counts of observations per bucket, and their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    /// Sum of observations, µs.
    sum_us: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Cumulative counts: `cumulative[i]` observations were at most
    /// `BOUNDS_US[i]`; the last entry is the total (`+Inf`).
    pub cumulative: [u64; BOUNDS_US.len() + 1],
    /// Sum of observations, µs.
    pub sum_us: u64,
}

impl Snapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative[BOUNDS_US.len()]
    }
}

impl Histogram {
    /// Counts one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts now, cumulative as Prometheus wants them (the total is
    /// the sum of the buckets, so `+Inf` always equals the count).
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = [0u64; BOUNDS_US.len() + 1];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            total += b.load(Ordering::Relaxed);
            *c = total;
        }
        Snapshot {
            cumulative,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(100)); // on a bound: `le` is inclusive
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.cumulative[0], 2, "≤ 100 µs");
        assert_eq!(s.cumulative[1], 3, "≤ 250 µs");
        assert_eq!(s.cumulative[4], 3, "≤ 2.5 ms");
        assert_eq!(s.cumulative[5], 4, "≤ 5 ms");
        assert_eq!(s.cumulative[BOUNDS_US.len() - 1], 4, "≤ 1 s");
        assert_eq!(s.sum_us, 40 + 100 + 101 + 3_000 + 2_000_000);
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
    }
}

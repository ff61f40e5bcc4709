//! How long something took, as a histogram with fixed buckets: recorded
//! from one thread without locks, read from any (the capture's metrics).
//! The buckets are Prometheus's: each counts the durations up to its bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of buckets (besides `+Inf`, which is the count).
pub const BUCKETS: usize = 12;

/// Upper bounds of the buckets, in nanoseconds: 250 µs to 5 s.
pub const BUCKET_BOUNDS_NS: [u64; BUCKETS] = [
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Durations recorded so far.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// A reading of a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Durations up to each bound of [`BUCKET_BOUNDS_NS`] (cumulative).
    pub buckets: [u64; BUCKETS],
    pub count: u64,
    pub sum_ns: u64,
}

impl LatencyHistogram {
    pub fn record(&self, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        if let Some(first) = BUCKET_BOUNDS_NS.iter().position(|&bound| ns <= bound) {
            self.buckets[first].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut snapshot = LatencySnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            ..LatencySnapshot::default()
        };
        let mut below = 0;
        for (out, bucket) in snapshot.buckets.iter_mut().zip(&self.buckets) {
            below += bucket.load(Ordering::Relaxed);
            *out = below;
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_count_includes_the_slowest() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(60));
        let s = histogram.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_ns, 60_003_100_000);
        assert_eq!(s.buckets[0], 1, "<= 250 µs");
        assert_eq!(s.buckets[3], 1, "<= 2.5 ms");
        assert_eq!(s.buckets[4], 2, "<= 5 ms");
        assert_eq!(s.buckets[BUCKETS - 1], 2, "60 s is only in +Inf");
    }
}

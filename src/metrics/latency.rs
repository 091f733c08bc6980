//! Latency histograms: shared atomic buckets, and per-thread buckets the
//! UDP threads fill and merge once per batch (no shared cache line is
//! touched per query).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets, in nanoseconds (10 µs to 10 s).
const BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
];
const SLOTS: usize = BOUNDS_NS.len() + 1;

fn slot(ns: u64) -> usize {
    BOUNDS_NS
        .iter()
        .position(|&b| ns <= b)
        .unwrap_or(BOUNDS_NS.len())
}

#[derive(Debug, Default)]
struct Shared {
    buckets: [AtomicU64; SLOTS],
    sum_ns: AtomicU64,
}

/// A histogram of durations, cheap to clone (one per label set).
#[derive(Debug, Default, Clone)]
pub(crate) struct Latency(Arc<Shared>);

impl Latency {
    /// Records one duration.
    pub(crate) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.buckets[slot(ns)].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds a thread's buckets and empties them.
    pub(crate) fn merge(&self, local: &mut LocalLatency) {
        if local.sum_ns == 0 && local.buckets.iter().all(|&c| c == 0) {
            return;
        }
        for (shared, l) in self.0.buckets.iter().zip(local.buckets.iter_mut()) {
            if *l > 0 {
                shared.fetch_add(*l, Ordering::Relaxed);
                *l = 0;
            }
        }
        self.0.sum_ns.fetch_add(local.sum_ns, Ordering::Relaxed);
        local.sum_ns = 0;
    }
}

/// One thread's buckets, merged into a [`Latency`] now and then.
#[derive(Debug, Default)]
pub(crate) struct LocalLatency {
    buckets: [u64; SLOTS],
    sum_ns: u64,
}

impl LocalLatency {
    /// Records `n` answers that each took `ns`.
    #[inline]
    pub(crate) fn observe_n(&mut self, ns: u64, n: u64) {
        self.buckets[slot(ns)] += n;
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(n));
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder takes each bucket's own count and accumulates.
        let mut count = 0;
        let mut buckets = Vec::with_capacity(SLOTS);
        for (i, b) in self.0.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            count += n;
            let bound = BOUNDS_NS
                .get(i)
                .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
            buckets.push((bound, n));
        }
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_local_buckets_merge() {
        let l = Latency::default();
        l.observe(Duration::from_micros(7));
        l.observe(Duration::from_millis(3));
        let mut local = LocalLatency::default();
        local.observe_n(20_000, 3);
        l.merge(&mut local);
        assert_eq!(local.buckets.iter().sum::<u64>(), 0, "emptied");
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("t", "test", l);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("# TYPE t histogram"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.00001\"} 1"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.000025\"} 4"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.0025\"} 4"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.005\"} 5"), "{out}");
        assert!(out.contains("t_bucket{le=\"+Inf\"} 5"), "{out}");
        assert!(out.contains("t_count 5"), "{out}");
    }
}

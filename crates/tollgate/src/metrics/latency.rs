//! Latency histograms (HdrHistogram, microseconds, 2 significant digits: 1 % precision in
//! about 20 KB each), behind a mutex held only for one record or one snapshot.

use crate::sync::lock;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::Duration;

/// Longest latency recorded exactly; longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency distribution.
pub struct Latency {
    hist: Mutex<Option<Histogram<u64>>>,
}

/// Percentiles of a [`Latency`] at one moment, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Samples recorded.
    pub count: u64,
    /// Sum of samples (for a Prometheus summary's `_sum`).
    pub sum_micros: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hist: Mutex::new(Histogram::new_with_bounds(1, MAX_MICROS, 2).ok()),
        }
    }
}

impl Latency {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        if let Some(h) = lock(&self.hist).as_mut() {
            let _ = h.record(micros);
        }
    }

    /// Current percentiles.
    pub fn snapshot(&self) -> LatencySnapshot {
        let guard = lock(&self.hist);
        let Some(h) = guard.as_ref() else {
            return LatencySnapshot::default();
        };
        if h.is_empty() {
            return LatencySnapshot::default();
        }
        LatencySnapshot {
            count: h.len(),
            sum_micros: h.mean() * h.len() as f64,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_one_percent() {
        let l = Latency::default();
        for i in 1..=1000u64 {
            l.record(Duration::from_micros(i * 100));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 1000);
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.01;
        assert!(near(s.p50, 50_000), "{s:?}");
        assert!(near(s.p99, 99_000), "{s:?}");
        assert!(near(s.max, 100_000), "{s:?}");
    }
}

//! Latency distributions (HdrHistogram, microseconds, 2 significant digits: 1 % precision),
//! behind a mutex held only for one record or one snapshot.
//!
//! Quantiles and the maximum cover the last minute, as a CloudWatch datapoint of RDS Proxy's
//! latency metrics does, so an alert on p99 sees a slowdown within a minute however long the
//! process has run: the minute is [`SLOTS`] sub-histograms of [`SLOT_SECS`] each, and a slot is
//! cleared when its time comes round again. A quantile then covers between 45 and 60 seconds.
//! The count and sum are since start (a Prometheus summary's `_count` and `_sum`), for rates.

use crate::sync::lock;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest latency recorded exactly; longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;
/// Seconds each sub-histogram covers.
pub const SLOT_SECS: u64 = 15;
/// Sub-histograms in the window (window = `SLOTS * SLOT_SECS` = 60 s).
pub const SLOTS: usize = 4;

/// A latency distribution.
pub struct Latency {
    inner: Mutex<Inner>,
    /// Slot boundaries are counted from here.
    origin: Instant,
}

#[derive(Default)]
struct Inner {
    /// Samples since start.
    count: u64,
    /// Their sum, µs.
    sum_micros: f64,
    /// The window's slots, by slot number modulo [`SLOTS`].
    slots: [Slot; SLOTS],
}

/// One slot: which period it holds (`SLOT_SECS`-long periods since `origin`) and its samples.
/// The histogram is allocated on first use and reused (cleared) after, so an idle pool costs
/// nothing and a busy one allocates once.
#[derive(Default)]
struct Slot {
    period: u64,
    hist: Option<Histogram<u32>>,
}

/// A [`Latency`] at one moment, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Samples recorded since start.
    pub count: u64,
    /// Sum of those samples (for a Prometheus summary's `_sum`).
    pub sum_micros: f64,
    /// Samples in the window the quantiles and maximum describe (the last minute).
    pub window_count: u64,
    /// Median over the window.
    pub p50: u64,
    /// 90th percentile over the window.
    pub p90: u64,
    /// 99th percentile over the window.
    pub p99: u64,
    /// 99.9th percentile over the window.
    pub p999: u64,
    /// Largest over the window.
    pub max: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            inner: Mutex::new(Inner::default()),
            origin: Instant::now(),
        }
    }
}

impl Latency {
    /// Records the time from `started` to now.
    pub fn record_since(&self, started: Instant) {
        let now = Instant::now();
        self.record_at(now.saturating_duration_since(started), now);
    }

    /// Records one sample of `d` that ended at `now`.
    pub fn record_at(&self, d: Duration, now: Instant) {
        let micros = u64::try_from(d.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        let period = self.period(now);
        let mut inner = lock(&self.inner);
        inner.count += 1;
        inner.sum_micros += micros as f64;
        let Some(slot) = inner.slots.get_mut(slot_index(period)) else {
            return;
        };
        if slot.period != period {
            slot.period = period;
            if let Some(h) = slot.hist.as_mut() {
                h.reset();
            }
        }
        if slot.hist.is_none() {
            slot.hist = Histogram::new_with_bounds(1, MAX_MICROS, 2).ok();
        }
        if let Some(h) = slot.hist.as_mut() {
            // Saturates rather than fails should one slot ever see 4 billion samples.
            h.saturating_record(micros);
        }
    }

    /// The count and sum since start; quantiles and maximum over the last minute.
    pub fn snapshot(&self) -> LatencySnapshot {
        self.snapshot_at(Instant::now())
    }

    /// As [`Latency::snapshot`], for the window ending at `now`.
    pub fn snapshot_at(&self, now: Instant) -> LatencySnapshot {
        let current = self.period(now);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        let inner = lock(&self.inner);
        let mut merged: Option<Histogram<u32>> = None;
        for slot in &inner.slots {
            let Some(h) = slot.hist.as_ref() else {
                continue;
            };
            if slot.period < oldest || slot.period > current || h.is_empty() {
                continue;
            }
            match merged.as_mut() {
                None => merged = Some(h.clone()),
                Some(m) => {
                    let _ = m.add(h);
                }
            }
        }
        let mut snap = LatencySnapshot {
            count: inner.count,
            sum_micros: inner.sum_micros,
            ..LatencySnapshot::default()
        };
        drop(inner);
        if let Some(h) = merged.filter(|h| !h.is_empty()) {
            snap.window_count = h.len();
            snap.p50 = h.value_at_quantile(0.50);
            snap.p90 = h.value_at_quantile(0.90);
            snap.p99 = h.value_at_quantile(0.99);
            snap.p999 = h.value_at_quantile(0.999);
            snap.max = h.max();
        }
        snap
    }

    /// Which `SLOT_SECS`-long period since `origin` `now` falls in.
    fn period(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / SLOT_SECS
    }
}

fn slot_index(period: u64) -> usize {
    usize::try_from(period % SLOTS as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_one_percent() {
        let l = Latency::default();
        let now = Instant::now();
        for i in 1..=1000u64 {
            l.record_at(Duration::from_micros(i * 100), now);
        }
        let s = l.snapshot_at(now);
        assert_eq!((s.count, s.window_count), (1000, 1000));
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.01;
        assert!(near(s.p50, 50_000), "{s:?}");
        assert!(near(s.p99, 99_000), "{s:?}");
        assert!(near(s.max, 100_000), "{s:?}");
        assert!((s.sum_micros - 50_050_000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn quantiles_cover_the_last_minute_and_counts_since_start() {
        let l = Latency::default();
        let t0 = l.origin;
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // A slow minute...
        for s in 0..60 {
            l.record_at(Duration::from_millis(500), at(s));
        }
        let slow = l.snapshot_at(at(59));
        assert_eq!((slow.count, slow.window_count), (60, 60), "{slow:?}");
        assert!(slow.p50 >= 495_000, "{slow:?}");
        // ...then a fast one: the slow samples age out of the quantiles, not of the totals.
        for s in 60..120 {
            l.record_at(Duration::from_millis(2), at(s));
        }
        let now = l.snapshot_at(at(119));
        assert_eq!(now.count, 120, "since start");
        assert_eq!(now.window_count, 60, "the last four 15 s slots");
        assert!(
            now.p99 <= 2_100 && now.max <= 2_100,
            "the slow minute has aged out: {now:?}"
        );
        // Part-way into the next slot, the window still holds three full slots of it.
        let edge = l.snapshot_at(at(121));
        assert_eq!(edge.window_count, 45, "{edge:?}");
        // Long after: nothing in the window, the totals stay.
        let later = l.snapshot_at(at(10_000));
        assert_eq!(
            (later.count, later.window_count, later.p99, later.max),
            (120, 0, 0, 0)
        );
    }

    #[test]
    fn a_slot_is_cleared_when_its_time_comes_round_again() {
        let l = Latency::default();
        let t0 = l.origin;
        l.record_at(Duration::from_secs(3), t0);
        // Same slot index, four periods later.
        let again = t0 + Duration::from_secs(SLOT_SECS * SLOTS as u64);
        l.record_at(Duration::from_micros(100), again);
        let s = l.snapshot_at(again);
        assert_eq!(s.window_count, 1);
        assert!(s.max < 1_000, "{s:?}");
    }
}

//! Replica lag measured from the writer: the writer's WAL position is sampled at each of its
//! health checks, and a reader's lag is how long ago the writer had already written WAL the
//! reader has not replayed yet. On an idle writer that is zero however old the last commit
//! is, unlike `now() - pg_last_xact_replay_timestamp()` on the replica; its resolution is the
//! health check interval.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept: enough for any max_replica_lag at the fastest interval to be judged.
const MAX_SAMPLES: usize = 4096;

/// The writer's WAL positions at its recent health checks, oldest first.
#[derive(Debug, Default)]
pub struct WriterHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl WriterHistory {
    /// Records the writer's position at `at` (positions only move forward; a smaller one
    /// means a different writer and starts the history afresh).
    pub fn record(&mut self, at: Instant, lsn: u64) {
        if self.samples.back().is_some_and(|(_, l)| *l > lsn) {
            self.samples.clear();
        }
        if self.samples.back().is_some_and(|(_, l)| *l == lsn) {
            // Unchanged: the oldest sample at this position is the one that matters.
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, lsn));
    }

    /// Forgets everything (the writer changed).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// How far behind a reader that has replayed up to `replay_lsn` is at `now`: the age of
    /// the oldest writer sample it has not reached; zero when it has every sampled position;
    /// `None` when there is nothing to compare with.
    pub fn lag(&self, replay_lsn: u64, now: Instant) -> Option<Duration> {
        let (_, newest) = self.samples.back()?;
        if replay_lsn >= *newest {
            return Some(Duration::ZERO);
        }
        self.samples
            .iter()
            .find(|(_, lsn)| *lsn > replay_lsn)
            .map(|(at, _)| now.saturating_duration_since(*at))
    }
}

/// Parses PostgreSQL's `pg_lsn` text form (`16/B374D848`: two hex halves) into a number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_from_their_text_form() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1/zz"), None);
    }

    #[test]
    fn a_caught_up_reader_has_no_lag_even_when_the_writer_is_idle() {
        let t0 = Instant::now();
        let mut h = WriterHistory::default();
        h.record(t0, 100);
        h.record(t0 + Duration::from_secs(5), 100);
        assert_eq!(
            h.lag(100, t0 + Duration::from_secs(60)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_reader_behind_is_as_late_as_the_oldest_position_it_lacks() {
        let t0 = Instant::now();
        let mut h = WriterHistory::default();
        h.record(t0, 100);
        h.record(t0 + Duration::from_secs(1), 200);
        h.record(t0 + Duration::from_secs(2), 300);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(h.lag(150, now), Some(Duration::from_secs(2)));
        assert_eq!(h.lag(250, now), Some(Duration::from_secs(1)));
        assert_eq!(h.lag(50, now), Some(Duration::from_secs(3)));
        assert_eq!(WriterHistory::default().lag(1, now), None);
    }

    #[test]
    fn a_new_writer_with_a_smaller_position_starts_afresh() {
        let t0 = Instant::now();
        let mut h = WriterHistory::default();
        h.record(t0, 500);
        h.record(t0 + Duration::from_secs(1), 100);
        assert_eq!(
            h.lag(100, t0 + Duration::from_secs(2)),
            Some(Duration::ZERO)
        );
    }
}

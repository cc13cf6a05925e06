//! The numbers the report's tables show: medians with min–max over repetitions, ratios of
//! runs of the same repetition, and the per-run metrics they are taken of.

use crate::measure::{Measured, Outcome, RunRecord};
use crate::targets::Target;

/// Median, minimum and maximum of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many values.
    pub count: usize,
}

/// The spread of the finite values in `values`; `None` when there are none.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mid = n / 2;
    let median = if n % 2 == 1 {
        sorted.get(mid).copied()?
    } else {
        (sorted.get(mid - 1).copied()? + sorted.get(mid).copied()?) / 2.0
    };
    Some(Spread {
        median,
        min: sorted.first().copied()?,
        max: sorted.last().copied()?,
        count: n,
    })
}

/// "0.97 (0.95–0.99)", or just "0.97" when the range rounds to one value.
pub fn format_spread(s: &Spread, decimals: usize) -> String {
    let median = format!("{:.*}", decimals, s.median);
    let min = format!("{:.*}", decimals, s.min);
    let max = format!("{:.*}", decimals, s.max);
    if min == max {
        median
    } else {
        format!("{median} ({min}–{max})")
    }
}

/// The measurement of `target` in repetition `rep`, if it ran cleanly.
pub(super) fn measured(records: &[RunRecord], target: Target, rep: usize) -> Option<&Measured> {
    records
        .iter()
        .find(|r| r.target == target && r.rep == rep)
        .and_then(|r| match &r.outcome {
            Outcome::Measured(m) => Some(m),
            _ => None,
        })
}

/// The repetitions present in `records`, ascending.
pub(super) fn reps(records: &[RunRecord]) -> Vec<usize> {
    let mut reps: Vec<usize> = records.iter().map(|r| r.rep).collect();
    reps.sort_unstable();
    reps.dedup();
    reps
}

/// `combine(metric(a), metric(b))` per repetition where both ran (runs of one repetition are
/// back to back, so comparing within one cancels most of the machine's drift).
fn paired(
    records: &[RunRecord],
    a: Target,
    b: Target,
    metric: impl Fn(&Measured) -> Option<f64>,
    combine: impl Fn(f64, f64) -> Option<f64>,
) -> Vec<f64> {
    reps(records)
        .into_iter()
        .filter_map(|rep| {
            let x = metric(measured(records, a, rep)?)?;
            let y = metric(measured(records, b, rep)?)?;
            combine(x, y)
        })
        .collect()
}

/// `metric(a) / metric(b)` per repetition where both ran.
pub fn ratios(
    records: &[RunRecord],
    a: Target,
    b: Target,
    metric: impl Fn(&Measured) -> Option<f64>,
) -> Vec<f64> {
    paired(records, a, b, metric, |x, y| (y != 0.0).then(|| x / y))
}

/// `metric(a) - metric(b)` per repetition where both ran.
pub fn differences(
    records: &[RunRecord],
    a: Target,
    b: Target,
    metric: impl Fn(&Measured) -> Option<f64>,
) -> Vec<f64> {
    paired(records, a, b, metric, |x, y| Some(x - y))
}

/// Why a ratio against `b` has no value: the runs of `a` or `b` that did not measure.
pub(super) fn missing_reason(records: &[RunRecord], a: Target, b: Target) -> String {
    for target in [a, b] {
        let mine: Vec<&RunRecord> = records.iter().filter(|r| r.target == target).collect();
        if mine.is_empty() {
            return format!("{} not run", target.name());
        }
        if let Some(r) = mine
            .iter()
            .find(|r| !matches!(r.outcome, Outcome::Measured(_)))
        {
            return match &r.outcome {
                Outcome::NotApplicable(_) => "n/a".to_owned(),
                Outcome::Failed { expected: true, .. } => {
                    format!("{} fails (expected)", target.name())
                }
                Outcome::Failed { .. } => format!("**{} failed**", target.name()),
                Outcome::Measured(_) => String::new(),
            };
        }
    }
    "—".to_owned()
}

/// A ratio cell: the spread, or why there is none.
pub(super) fn ratio_cell(
    records: &[RunRecord],
    a: Target,
    b: Target,
    decimals: usize,
    metric: impl Fn(&Measured) -> Option<f64>,
) -> String {
    match spread(&ratios(records, a, b, metric)) {
        Some(s) => format_spread(&s, decimals),
        None => missing_reason(records, a, b),
    }
}

/// A per-run figure the tables show or take ratios of.
pub(super) type Metric = fn(&Measured) -> Option<f64>;

/// `metric` of every clean run of `target`, in record order.
pub(super) fn values(records: &[RunRecord], target: Target, metric: Metric) -> Vec<f64> {
    records
        .iter()
        .filter(|r| r.target == target)
        .filter_map(|r| match &r.outcome {
            Outcome::Measured(m) => metric(m),
            _ => None,
        })
        .collect()
}

/// TPS.
pub(super) fn tps(m: &Measured) -> Option<f64> {
    Some(m.summary.tps)
}

/// Mean latency, ms.
pub(super) fn latency(m: &Measured) -> Option<f64> {
    Some(m.summary.latency_ms)
}

/// Pooler CPU per transaction, µs.
pub(super) fn pooler_cpu(m: &Measured) -> Option<f64> {
    m.pooler_us_per_tx()
}

/// p50 latency, µs.
pub(super) fn p50(m: &Measured) -> Option<f64> {
    m.latency.map(|l| l.p50_us as f64)
}

/// p99 latency, µs.
pub(super) fn p99(m: &Measured) -> Option<f64> {
    m.latency.map(|l| l.p99_us as f64)
}

/// Pooler RSS growth per idle client, KiB.
pub(super) fn rss_per_idle(m: &Measured) -> Option<f64> {
    m.idle.as_ref().map(|i| i.kib_per_client())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{measured as run, record};

    #[test]
    fn spread_takes_the_median_and_range() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (2.0, 1.0, 3.0, 3));
        assert_eq!(spread(&[1.0, 2.0, 4.0, 10.0]).unwrap().median, 3.0);
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[f64::NAN]), None);
        assert_eq!(format_spread(&spread(&[0.9512]).unwrap(), 2), "0.95");
        assert_eq!(format_spread(&spread(&[19.31, 19.34]).unwrap(), 1), "19.3");
        assert_eq!(
            format_spread(&spread(&[0.9, 1.0, 1.1]).unwrap(), 2),
            "1.00 (0.90–1.10)"
        );
    }

    #[test]
    fn ratios_pair_runs_of_the_same_repetition() {
        let records = vec![
            record(Target::Tollgate, 0, run(900.0, Some(1.0))),
            record(Target::PgBouncer, 0, run(1000.0, Some(2.0))),
            record(Target::Tollgate, 1, run(1100.0, Some(1.0))),
            record(Target::PgBouncer, 1, run(1000.0, Some(2.0))),
            record(Target::Tollgate, 2, run(5000.0, Some(1.0))),
        ];
        let r = ratios(&records, Target::Tollgate, Target::PgBouncer, tps);
        assert_eq!(r.len(), 2);
        assert!((r[0] - 0.9).abs() < 1e-12 && (r[1] - 1.1).abs() < 1e-12);
    }
}

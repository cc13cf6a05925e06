//! Records for the report's tests: a run measured at some TPS, a record, a case by label.

use crate::measure::{Measured, Outcome, RunRecord};
use crate::pgbench::Summary;
use crate::scenario::{all_cases, Case};
use crate::targets::Target;

/// A clean run at `tps` for 10 s, with `pooler_cpu_s` of pooler CPU.
pub fn measured(tps: f64, pooler_cpu_s: Option<f64>) -> Outcome {
    Outcome::Measured(Measured {
        summary: Summary {
            processed: (tps * 10.0) as u64,
            failed: 0,
            tps,
            latency_ms: 32.0 / tps * 1000.0,
        },
        wall_s: 10.0,
        postgres_cpu_s: 5.0,
        pooler_cpu_s,
        pgbench_cpu_s: 2.0,
        other_cores: 0.25,
        loadavg: 1.5,
        latency: None,
        idle: None,
    })
}

/// One run of `target` in repetition `rep`.
pub fn record(target: Target, rep: usize, outcome: Outcome) -> RunRecord {
    RunRecord {
        target,
        rep,
        outcome,
    }
}

/// The case with this label (100 idle clients).
pub fn case(label: &str) -> Case {
    all_cases(100)
        .into_iter()
        .find(|c| c.label == label)
        .unwrap()
}

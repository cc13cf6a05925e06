//! One case's section: what it is, its ratio table, and one raw row per run.

use std::fmt::Write as _;

use super::stats::{latency, p50, p99, pooler_cpu, ratio_cell, rss_per_idle, tps, Metric};
use super::{cell, overview_extra, CaseResult};
use crate::measure::{Outcome, RunRecord};
use crate::targets::Target;

/// The ratio columns of a case's table: each Tollgate arm against PgBouncer, then against
/// direct.
const PAIRS: [(Target, Target); 4] = [
    (Target::Tollgate, Target::PgBouncer),
    (Target::Tollgate2, Target::PgBouncer),
    (Target::Tollgate, Target::Direct),
    (Target::Tollgate2, Target::Direct),
];

/// One case: what it is, its ratios, and its raw runs.
pub(super) fn render_case(out: &mut String, c: &CaseResult) {
    let r = &c.records;
    let _ = writeln!(
        out,
        "## {}\n\n{}\n\n`{}`\n",
        c.case.label, c.case.about, c.command
    );
    if let Some(why) = c.case.pgbouncer_fails_because {
        let _ = writeln!(out, "Expected: {why}.\n");
    }

    out.push_str("| ratio (median, min–max) |");
    for (a, b) in PAIRS {
        let _ = write!(out, " {}/{} |", a.title(), b.title());
    }
    let _ = writeln!(out, "\n|---|{}", "---|".repeat(PAIRS.len()));
    // Pooler-only metrics (`vs_direct` false) have nothing to divide by for direct.
    let row = |out: &mut String, name: &str, vs_direct: bool, metric: Metric| {
        let _ = write!(out, "| {name} |");
        for (a, b) in PAIRS {
            if b == Target::Direct && !vs_direct {
                out.push_str(" — |");
            } else {
                let _ = write!(out, " {} |", ratio_cell(r, a, b, 2, metric));
            }
        }
        out.push('\n');
    };
    row(out, "TPS (higher is better)", true, tps);
    row(out, "mean latency (lower is better)", true, latency);
    if c.case.latency_log {
        row(out, "p50 latency", true, p50);
        row(out, "p99 latency", true, p99);
    }
    row(
        out,
        "pooler CPU per tx (lower is better)",
        false,
        pooler_cpu,
    );
    if c.case.idle.is_some() {
        row(
            out,
            "RSS per idle client (lower is better)",
            false,
            rss_per_idle,
        );
    }
    out.push('\n');
    let extra = overview_extra(c);
    if !extra.is_empty() {
        let _ = writeln!(out, "{extra}.\n");
    }

    render_runs(out, c);
}

/// The raw table: one row per run.
fn render_runs(out: &mut String, c: &CaseResult) {
    let mut head = String::from(
        "| target | rep | TPS | mean latency (ms) | failed tx | PostgreSQL CPU (s) | pooler CPU (s) \
         | pooler CPU/tx (µs) | pgbench CPU (s) | other load (cores) | loadavg 1m |",
    );
    let mut columns = 11;
    if c.case.latency_log {
        head.push_str(" p50 (µs) | p99 (µs) |");
        columns += 2;
    }
    if c.case.idle.is_some() {
        head.push_str(
            " idle clients | pooler RSS before → after (MiB) | RSS per idle client (KiB) |",
        );
        columns += 3;
    }
    let _ = writeln!(out, "{head}\n|{}", "---|".repeat(columns));

    let mut rows: Vec<&RunRecord> = c.records.iter().collect();
    rows.sort_by_key(|r| (r.target, r.rep));
    for run in rows {
        let _ = write!(out, "| {} | {} |", run.target.name(), run.rep + 1);
        match &run.outcome {
            Outcome::Measured(m) => {
                let opt = |v: Option<f64>, d: usize| {
                    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.d$}"))
                };
                let _ = write!(
                    out,
                    " {:.0} | {:.3} | {} | {:.2} | {} | {} | {:.2} | {:.2} | {:.2} |",
                    m.summary.tps,
                    m.summary.latency_ms,
                    m.summary.failed,
                    m.postgres_cpu_s,
                    opt(m.pooler_cpu_s, 2),
                    opt(m.pooler_us_per_tx(), 1),
                    m.pgbench_cpu_s,
                    m.other_cores,
                    m.loadavg,
                );
                if c.case.latency_log {
                    let _ = write!(out, " {} | {} |", opt(p50(m), 0), opt(p99(m), 0));
                }
                if c.case.idle.is_some() {
                    match &m.idle {
                        Some(i) => {
                            let _ = write!(
                                out,
                                " {} | {:.1} → {:.1} | {:.1} |",
                                i.clients,
                                i.rss_before_kib as f64 / 1024.0,
                                i.rss_after_kib as f64 / 1024.0,
                                i.kib_per_client()
                            );
                        }
                        None => out.push_str(" — | — | — |"),
                    }
                }
            }
            Outcome::Failed { reason, expected } => {
                let label = if *expected {
                    "fails (expected)"
                } else {
                    "**FAILED**"
                };
                let _ = write!(
                    out,
                    " {label}: {} |{}",
                    cell(reason),
                    " — |".repeat(columns - 3)
                );
            }
            Outcome::NotApplicable(why) => {
                let _ = write!(out, " n/a: {} |{}", cell(why), " — |".repeat(columns - 3));
            }
        }
        out.push('\n');
    }
    out.push('\n');
}

//! The markdown report: the machine, then the ratios (Tollgate/PgBouncer, Tollgate/direct,
//! median of the repetitions with min–max), then each scenario's raw numbers.
//!
//! Pure: it formats the records it is given and reads nothing.

use std::fmt::Write as _;

use crate::measure::{Measured, Outcome, RunRecord};
use crate::scenario::Case;
use crate::targets::Target;

/// What the report starts with.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Machine and software facts: ("CPU", "Intel ..."), ("PostgreSQL", "15.18"), ...
    pub facts: Vec<(String, String)>,
    /// How the harness ran: durations, repetitions, pool size, ...
    pub setup: Vec<String>,
    /// The TLS setup used.
    pub tls: Vec<String>,
}

/// One case's runs.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// The pgbench command line as run.
    pub command: String,
    /// Every run, any order.
    pub records: Vec<RunRecord>,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Machine, setup, TLS.
    pub header: Header,
    /// Per case, in run order.
    pub cases: Vec<CaseResult>,
    /// connect-storm-iam's fixed-rate run, when that scenario ran.
    pub iam_rate: Option<crate::iam_rate::RateResult>,
    /// The failover scenario's runs, when it ran.
    pub failover: Option<crate::failover::FailoverResult>,
}

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
fn measured(records: &[RunRecord], target: Target, rep: usize) -> Option<&Measured> {
    records
        .iter()
        .find(|r| r.target == target && r.rep == rep)
        .and_then(|r| match &r.outcome {
            Outcome::Measured(m) => Some(m),
            _ => None,
        })
}

/// The repetitions present in `records`, ascending.
fn reps(records: &[RunRecord]) -> Vec<usize> {
    let mut reps: Vec<usize> = records.iter().map(|r| r.rep).collect();
    reps.sort_unstable();
    reps.dedup();
    reps
}

/// `metric(a) / metric(b)` per repetition where both ran (runs of one repetition are back to
/// back, so their ratio cancels most of the machine's drift).
pub fn ratios(
    records: &[RunRecord],
    a: Target,
    b: Target,
    metric: impl Fn(&Measured) -> Option<f64>,
) -> Vec<f64> {
    reps(records)
        .into_iter()
        .filter_map(|rep| {
            let x = metric(measured(records, a, rep)?)?;
            let y = metric(measured(records, b, rep)?)?;
            (y != 0.0).then(|| x / y)
        })
        .collect()
}

/// `metric(a) - metric(b)` per repetition where both ran.
pub fn differences(
    records: &[RunRecord],
    a: Target,
    b: Target,
    metric: impl Fn(&Measured) -> Option<f64>,
) -> Vec<f64> {
    reps(records)
        .into_iter()
        .filter_map(|rep| {
            Some(metric(measured(records, a, rep)?)? - metric(measured(records, b, rep)?)?)
        })
        .collect()
}

/// Why a ratio against `b` has no value: the runs of `a` or `b` that did not measure.
fn missing_reason(records: &[RunRecord], a: Target, b: Target) -> String {
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
fn ratio_cell(
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

/// TPS.
fn tps(m: &Measured) -> Option<f64> {
    Some(m.summary.tps)
}

/// Mean latency, ms.
fn latency(m: &Measured) -> Option<f64> {
    Some(m.summary.latency_ms)
}

/// Pooler CPU per transaction, µs.
fn pooler_cpu(m: &Measured) -> Option<f64> {
    m.pooler_us_per_tx()
}

/// p50 latency, µs.
fn p50(m: &Measured) -> Option<f64> {
    m.latency.map(|l| l.p50_us as f64)
}

/// p99 latency, µs.
fn p99(m: &Measured) -> Option<f64> {
    m.latency.map(|l| l.p99_us as f64)
}

/// Pooler RSS growth per idle client, KiB.
fn rss_per_idle(m: &Measured) -> Option<f64> {
    m.idle.as_ref().map(|i| i.kib_per_client())
}

/// Escapes a value for a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Renders the whole report.
pub fn render(report: &Report) -> String {
    let mut out = String::from("# Tollgate benchmark report\n\n");
    out.push_str("## Machine and software\n\n");
    for (key, value) in &report.header.facts {
        let _ = writeln!(out, "- **{key}**: {}", cell(value));
    }
    out.push_str("\n## Setup\n\n");
    for line in &report.header.setup {
        let _ = writeln!(out, "- {line}");
    }
    out.push('\n');
    // A failover-only run has no pgbench case, so no TLS setup and no ratios to show.
    if !report.header.tls.is_empty() {
        out.push_str("## TLS\n\n");
        for line in &report.header.tls {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    if !report.cases.is_empty() {
        render_overview(&mut out, &report.cases);
    }
    for case in &report.cases {
        render_case(&mut out, case);
    }
    if let Some(rate) = &report.iam_rate {
        crate::iam_rate::render(&mut out, rate);
    }
    if let Some(failover) = &report.failover {
        crate::failover::render(&mut out, failover);
    }
    out
}

/// The ratios of every case in one table: what a reader wants first.
fn render_overview(out: &mut String, cases: &[CaseResult]) {
    out.push_str("## Ratios\n\n");
    out.push_str(
        "Median over repetitions of the per-repetition ratio (min–max in parentheses). TPS: \
         higher is better for Tollgate; pooler CPU per transaction: lower is better.\n\n",
    );
    out.push_str(
        "| case | TPS Tollgate/PgBouncer | TPS Tollgate/direct | pooler CPU per tx \
         Tollgate/PgBouncer | notes |\n|---|---|---|---|---|\n",
    );
    for c in cases {
        let r = &c.records;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&c.case.label),
            ratio_cell(r, Target::Tollgate, Target::PgBouncer, 2, tps),
            ratio_cell(r, Target::Tollgate, Target::Direct, 2, tps),
            ratio_cell(r, Target::Tollgate, Target::PgBouncer, 2, pooler_cpu),
            cell(&overview_extra(c)),
        );
    }
    out.push('\n');
}

/// The case-specific figure for the overview: added latency, memory per idle client, or
/// Tollgate's own figures where nothing compares (IAM).
fn overview_extra(c: &CaseResult) -> String {
    let r = &c.records;
    if c.case.iam {
        let tollgate = |metric: fn(&Measured) -> Option<f64>, decimals: usize| {
            let values: Vec<f64> = r
                .iter()
                .filter(|x| x.target == Target::Tollgate)
                .filter_map(|x| match &x.outcome {
                    Outcome::Measured(m) => metric(m),
                    _ => None,
                })
                .collect();
            spread(&values).map_or_else(|| "—".to_owned(), |s| format_spread(&s, decimals))
        };
        return format!(
            "Tollgate: {} connections/s, {} µs of Tollgate CPU per connection (TLS handshake, \
             token check, login); PgBouncer and direct: n/a (no IAM authentication)",
            tollgate(tps, 0),
            tollgate(pooler_cpu, 1)
        );
    }
    if c.case.latency_log {
        let added = |pooler: Target, metric: fn(&Measured) -> Option<f64>| {
            spread(&differences(r, pooler, Target::Direct, metric)).map_or_else(
                || "—".to_owned(),
                |s| format!("{} µs", format_spread(&s, 0)),
            )
        };
        return format!(
            "added p50/p99: Tollgate {} / {}, PgBouncer {} / {}",
            added(Target::Tollgate, p50),
            added(Target::Tollgate, p99),
            added(Target::PgBouncer, p50),
            added(Target::PgBouncer, p99),
        );
    }
    if c.case.idle.is_some() {
        let per = |pooler: Target| {
            let values: Vec<f64> = r
                .iter()
                .filter(|x| x.target == pooler)
                .filter_map(|x| match &x.outcome {
                    Outcome::Measured(m) => rss_per_idle(m),
                    _ => None,
                })
                .collect();
            spread(&values).map_or_else(
                || "—".to_owned(),
                |s| format!("{} KiB", format_spread(&s, 1)),
            )
        };
        return format!(
            "RSS per idle client: Tollgate {}, PgBouncer {}",
            per(Target::Tollgate),
            per(Target::PgBouncer)
        );
    }
    String::new()
}

/// One case: what it is, its ratios, and its raw runs.
fn render_case(out: &mut String, c: &CaseResult) {
    let r = &c.records;
    let _ = writeln!(
        out,
        "## {}\n\n{}\n\n`{}`\n",
        c.case.label, c.case.about, c.command
    );
    if let Some(why) = c.case.pgbouncer_fails_because {
        let _ = writeln!(out, "Expected: {why}.\n");
    }

    out.push_str("| ratio (median, min–max) | Tollgate/PgBouncer | Tollgate/direct |\n");
    out.push_str("|---|---|---|\n");
    let both = |name: &str, decimals: usize, metric: fn(&Measured) -> Option<f64>| {
        format!(
            "| {name} | {} | {} |\n",
            ratio_cell(r, Target::Tollgate, Target::PgBouncer, decimals, metric),
            ratio_cell(r, Target::Tollgate, Target::Direct, decimals, metric),
        )
    };
    out.push_str(&both("TPS (higher is better)", 2, tps));
    out.push_str(&both("mean latency (lower is better)", 2, latency));
    if c.case.latency_log {
        out.push_str(&both("p50 latency", 2, p50));
        out.push_str(&both("p99 latency", 2, p99));
    }
    let _ = writeln!(
        out,
        "| pooler CPU per transaction (lower is better) | {} | — |",
        ratio_cell(r, Target::Tollgate, Target::PgBouncer, 2, pooler_cpu)
    );
    if c.case.idle.is_some() {
        let _ = writeln!(
            out,
            "| RSS per idle client (lower is better) | {} | — |",
            ratio_cell(r, Target::Tollgate, Target::PgBouncer, 2, rss_per_idle)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::IdleMemory;
    use crate::pgbench::{Percentiles, Summary};
    use crate::scenario::all_cases;

    fn measured(tps: f64, pooler_cpu_s: Option<f64>) -> Outcome {
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

    fn record(target: Target, rep: usize, outcome: Outcome) -> RunRecord {
        RunRecord {
            target,
            rep,
            outcome,
        }
    }

    fn case(label: &str) -> Case {
        all_cases(100)
            .into_iter()
            .find(|c| c.label == label)
            .unwrap()
    }

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
            record(Target::Tollgate, 0, measured(900.0, Some(1.0))),
            record(Target::PgBouncer, 0, measured(1000.0, Some(2.0))),
            record(Target::Tollgate, 1, measured(1100.0, Some(1.0))),
            record(Target::PgBouncer, 1, measured(1000.0, Some(2.0))),
            record(Target::Tollgate, 2, measured(5000.0, Some(1.0))),
        ];
        let r = ratios(&records, Target::Tollgate, Target::PgBouncer, tps);
        assert_eq!(r.len(), 2);
        assert!((r[0] - 0.9).abs() < 1e-12 && (r[1] - 1.1).abs() < 1e-12);
    }

    #[test]
    fn report_shows_ratios_failures_and_raw_rows() {
        let simple = CaseResult {
            case: case("select-simple c=32"),
            command: "pgbench -n -S -M simple -c 32 -j 2 -T 3 (sslmode=disable)".into(),
            records: vec![
                record(Target::Direct, 0, measured(2000.0, None)),
                record(Target::PgBouncer, 0, measured(1000.0, Some(2.0))),
                record(Target::Tollgate, 0, measured(1500.0, Some(1.0))),
            ],
        };
        let prepared = CaseResult {
            case: case("select-prepared c=32"),
            command: "pgbench -n -S -M prepared".into(),
            records: vec![
                record(Target::Direct, 0, measured(2000.0, None)),
                record(
                    Target::PgBouncer,
                    0,
                    Outcome::Failed {
                        reason: "pgbench failed (exit status 2): prepared statement \"P0_1\" | does not exist".into(),
                        expected: true,
                    },
                ),
                record(Target::Tollgate, 0, measured(1000.0, Some(1.0))),
            ],
        };
        let report = Report {
            header: Header {
                facts: vec![("CPU".into(), "Test CPU".into())],
                setup: vec!["1 repetition".into()],
                tls: vec!["ECDSA P-256".into()],
            },
            cases: vec![simple, prepared],
            iam_rate: Some(crate::iam_rate::RateResult {
                settings: crate::iam_rate::RateSettings {
                    rate: 2000,
                    storm: std::time::Duration::from_secs(10),
                    baseline: std::time::Duration::from_secs(5),
                },
                attempted: 20_000,
                succeeded: 20_000,
                first_error: None,
                achieved_rate: 1999.6,
                connect: crate::iam_rate::Quantiles::of(vec![1000, 4000]),
                pooler_us_per_conn: 317.2,
                steady_before: crate::iam_rate::Quantiles::of(vec![80]),
                steady_during: crate::iam_rate::Quantiles::of(vec![800]),
                steady_error: None,
            }),
            failover: None,
        };
        let text = render(&report);
        assert!(
            text.contains(
                "| 2000/s | 2000/s | 20000 / 20000 | 1000 µs | 4000 µs | 4000 µs | 4000 µs | 317 µs |"
            ),
            "{text}"
        );
        assert!(text.contains("| during the storm | 1 | 800 µs | 800 µs | 800 µs | 800 µs |"));
        assert!(text.starts_with("# Tollgate benchmark report\n"));
        assert!(text.contains("- **CPU**: Test CPU\n"));
        // Overview: 1500/1000 and 1500/2000; pooler CPU per tx 1/15000 over 2/10000 = 0.33.
        assert!(
            text.contains("| select-simple c=32 | 1.50 | 0.75 | 0.33 |  |"),
            "{text}"
        );
        assert!(text.contains("| select-prepared c=32 | pgbouncer fails (expected) | 0.50 |"));
        assert!(text.contains("| pgbouncer | 1 | fails (expected): pgbench failed (exit status 2): prepared statement \"P0_1\" \\| does not exist |"));
        assert!(text.contains(
            "| tollgate | 1 | 1500 | 21.333 | 0 | 5.00 | 1.00 | 66.7 | 2.00 | 0.25 | 1.50 |"
        ));
        assert!(text.contains("| direct | 1 | 2000 | 16.000 | 0 | 5.00 | — | — |"));
        // Every row of a raw table has as many cells as its header.
        let cells = |line: &str| line.matches('|').count() - line.matches("\\|").count();
        for table in text.split("\n\n").filter(|t| t.starts_with("| target")) {
            let header = cells(table.lines().next().unwrap());
            assert!(table.lines().all(|l| cells(l) == header), "{table}");
        }
    }

    #[test]
    fn latency_and_idle_cases_get_their_own_figures() {
        let mut direct = measured(5000.0, None);
        let mut tollgate = measured(4000.0, Some(1.0));
        let mut pgbouncer = measured(4500.0, Some(1.0));
        for (o, p50_us, p99_us) in [
            (&mut direct, 150, 300),
            (&mut tollgate, 200, 420),
            (&mut pgbouncer, 180, 350),
        ] {
            if let Outcome::Measured(m) = o {
                m.latency = Some(Percentiles { p50_us, p99_us });
            }
        }
        let latency = CaseResult {
            case: case("latency-c1"),
            command: "pgbench -c 1".into(),
            records: vec![
                record(Target::Direct, 0, direct),
                record(Target::Tollgate, 0, tollgate),
                record(Target::PgBouncer, 0, pgbouncer),
            ],
        };
        let text = render(&Report {
            cases: vec![latency],
            ..Report::default()
        });
        assert!(
            text.contains("added p50/p99: Tollgate 50 µs / 120 µs, PgBouncer 30 µs / 50 µs"),
            "{text}"
        );
        assert!(text.contains("| tollgate | 1 | 4000 |"));
        assert!(text.contains(" 200 | 420 |"));

        let mut idle = measured(3000.0, Some(1.0));
        if let Outcome::Measured(m) = &mut idle {
            m.idle = Some(IdleMemory {
                clients: 1000,
                rss_before_kib: 10 * 1024,
                rss_after_kib: 30 * 1024,
                tls_session: None,
            });
        }
        let idle_case = CaseResult {
            case: case("idle-clients c=32"),
            command: "pgbench".into(),
            records: vec![
                record(
                    Target::Direct,
                    0,
                    Outcome::NotApplicable("needs 10,000 backends"),
                ),
                record(Target::Tollgate, 0, idle),
            ],
        };
        let text = render(&Report {
            cases: vec![idle_case],
            ..Report::default()
        });
        assert!(
            text.contains("RSS per idle client: Tollgate 20.5 KiB, PgBouncer —"),
            "{text}"
        );
        assert!(text.contains("| direct | 1 | n/a: needs 10,000 backends |"));
        assert!(text.contains(" 1000 | 10.0 → 30.0 | 20.5 |"));
        assert!(text.contains("| idle-clients c=32 | pgbouncer not run | n/a |"));
    }
}

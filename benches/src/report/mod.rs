//! The markdown report: the machine, then the ratios (each Tollgate arm against PgBouncer and
//! direct, median of the repetitions with min–max), pooler CPU per transaction against the
//! client count, then each scenario's raw numbers.
//!
//! Pure: it formats the records it is given and reads nothing.

mod case;
mod cpu_vs_clients;
#[cfg(test)]
mod fixtures;
mod stats;

use std::fmt::Write as _;

use crate::measure::RunRecord;
use crate::scenario::Case;
use crate::targets::Target;
use stats::{differences, p50, p99, pooler_cpu, ratio_cell, rss_per_idle, tps, values, Metric};
pub use stats::{format_spread, spread};

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
    pub iam_rate: Vec<(&'static str, crate::iam_rate::RateResult)>,
    /// The failover scenario's runs, when it ran.
    pub failover: Option<crate::failover::FailoverResult>,
}

/// Escapes a value for a markdown table cell.
pub(super) fn cell(text: &str) -> String {
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
        cpu_vs_clients::render(&mut out, &report.cases);
    }
    for case in &report.cases {
        case::render_case(&mut out, case);
    }
    if !report.iam_rate.is_empty() {
        crate::iam_rate::render(&mut out, &report.iam_rate);
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
         higher is better for Tollgate; pooler CPU per transaction: lower is better. Tollgate \
         runs on one worker thread (--worker-threads 1), Tollgate-2t on two.\n\n",
    );
    out.push_str(
        "| case | TPS Tollgate/PgBouncer | TPS Tollgate-2t/PgBouncer | TPS Tollgate/direct \
         | pooler CPU per tx Tollgate/PgBouncer | pooler CPU per tx Tollgate-2t/PgBouncer \
         | notes |\n|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        let r = &c.records;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.case.label),
            ratio_cell(r, Target::Tollgate, Target::PgBouncer, 2, tps),
            ratio_cell(r, Target::Tollgate2, Target::PgBouncer, 2, tps),
            ratio_cell(r, Target::Tollgate, Target::Direct, 2, tps),
            ratio_cell(r, Target::Tollgate, Target::PgBouncer, 2, pooler_cpu),
            ratio_cell(r, Target::Tollgate2, Target::PgBouncer, 2, pooler_cpu),
            cell(&overview_extra(c)),
        );
    }
    out.push('\n');
}

/// The case-specific figure for the overview: added latency, memory per idle client, or
/// Tollgate's own figures where nothing compares (IAM).
pub(super) fn overview_extra(c: &CaseResult) -> String {
    let r = &c.records;
    let median = |target: Target, metric: Metric, decimals: usize, unit: &str| {
        spread(&values(r, target, metric)).map_or_else(
            || "—".to_owned(),
            |s| format!("{}{unit}", format_spread(&s, decimals)),
        )
    };
    let per_pooler = |poolers: &[Target], figure: &dyn Fn(Target) -> String| {
        poolers
            .iter()
            .map(|&p| format!("{} {}", p.title(), figure(p)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if c.case.iam {
        let tollgates = per_pooler(&Target::TOLLGATES, &|t| {
            format!(
                "{} connections/s and {} µs of its CPU per connection",
                median(t, tps, 0, ""),
                median(t, pooler_cpu, 1, "")
            )
        });
        return format!(
            "{tollgates} (TLS handshake, token check, login); PgBouncer and direct: n/a (no IAM \
             authentication)"
        );
    }
    if c.case.latency_log {
        let added = |pooler: Target, metric: Metric| {
            spread(&differences(r, pooler, Target::Direct, metric)).map_or_else(
                || "—".to_owned(),
                |s| format!("{} µs", format_spread(&s, 0)),
            )
        };
        return format!(
            "added p50/p99: {}",
            per_pooler(&Target::POOLERS, &|p| format!(
                "{} / {}",
                added(p, p50),
                added(p, p99)
            ))
        );
    }
    if c.case.idle.is_some() {
        return format!(
            "RSS per idle client: {}",
            per_pooler(&Target::POOLERS, &|p| median(p, rss_per_idle, 1, " KiB"))
        );
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::fixtures::{case, measured, record};
    use super::*;
    use crate::measure::{IdleMemory, Outcome};
    use crate::pgbench::Percentiles;

    #[test]
    fn report_shows_ratios_failures_and_raw_rows() {
        let simple = CaseResult {
            case: case("select-simple c=32"),
            command: "pgbench -n -S -M simple -c 32 -j 2 -T 3 (sslmode=disable)".into(),
            records: vec![
                record(Target::Direct, 0, measured(2000.0, None)),
                record(Target::PgBouncer, 0, measured(1000.0, Some(2.0))),
                record(Target::Tollgate, 0, measured(1500.0, Some(1.0))),
                record(Target::Tollgate2, 0, measured(1800.0, Some(1.8))),
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
                record(Target::Tollgate2, 0, measured(1200.0, Some(1.0))),
            ],
        };
        let report = Report {
            header: Header {
                facts: vec![("CPU".into(), "Test CPU".into())],
                setup: vec!["1 repetition".into()],
                tls: vec!["ECDSA P-256".into()],
            },
            cases: vec![simple, prepared],
            iam_rate: vec![(
                "tollgate",
                crate::iam_rate::RateResult {
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
                },
            )],
            failover: None,
        };
        let text = render(&report);
        assert!(
            text.contains(
                "| tollgate | 2000/s | 2000/s | 20000 / 20000 | 1000 µs | 4000 µs | 4000 µs | 4000 µs | 317 µs |"
            ),
            "{text}"
        );
        assert!(text
            .contains("| tollgate | during the storm | 1 | 800 µs | 800 µs | 800 µs | 800 µs |"));
        assert!(text.starts_with("# Tollgate benchmark report\n"));
        assert!(text.contains("- **CPU**: Test CPU\n"));
        // Overview: 1500/1000, 1800/1000 and 1500/2000; pooler CPU per tx 1/15000 over
        // 2/10000 = 0.33, 1.8/18000 over 2/10000 = 0.50.
        assert!(
            text.contains("| select-simple c=32 | 1.50 | 1.80 | 0.75 | 0.33 | 0.50 |  |"),
            "{text}"
        );
        assert!(text.contains(
            "| select-prepared c=32 | pgbouncer fails (expected) | pgbouncer fails (expected) \
             | 0.50 |"
        ));
        // Each case's table: both arms against PgBouncer, then against direct.
        assert!(text.contains(
            "| ratio (median, min–max) | Tollgate/PgBouncer | Tollgate-2t/PgBouncer \
             | Tollgate/direct | Tollgate-2t/direct |\n|---|---|---|---|---|\n\
             | TPS (higher is better) | 1.50 | 1.80 | 0.75 | 0.90 |\n"
        ));
        assert!(text.contains("| pooler CPU per tx (lower is better) | 0.33 | 0.50 | — | — |"));
        assert!(text.contains("| tollgate-2t | 1 | 1800 | 17.778 | 0 | 5.00 | 1.80 | 100.0 |"));
        // After the ratios, CPU per transaction against clients (only c=32 ran here).
        let cpu_table = text
            .find("## Pooler CPU per transaction vs clients")
            .unwrap();
        assert!(text.find("## Ratios").unwrap() < cpu_table);
        assert!(cpu_table < text.find("## select-simple c=32").unwrap());
        assert!(text.contains("| tollgate | 66.7 | not run | not run | not run | — | — | — |"));
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
        let mut tollgate2 = measured(4200.0, Some(1.0));
        for (o, p50_us, p99_us) in [
            (&mut direct, 150, 300),
            (&mut tollgate, 200, 420),
            (&mut tollgate2, 210, 400),
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
                record(Target::Tollgate2, 0, tollgate2),
            ],
        };
        let text = render(&Report {
            cases: vec![latency],
            ..Report::default()
        });
        assert!(
            text.contains(
                "added p50/p99: Tollgate 50 µs / 120 µs, Tollgate-2t 60 µs / 100 µs, PgBouncer \
                 30 µs / 50 µs"
            ),
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
            text.contains("RSS per idle client: Tollgate 20.5 KiB, Tollgate-2t —, PgBouncer —"),
            "{text}"
        );
        assert!(text.contains("| direct | 1 | n/a: needs 10,000 backends |"));
        assert!(text.contains(" 1000 | 10.0 → 30.0 | 20.5 |"));
        assert!(
            text.contains("| idle-clients c=32 | pgbouncer not run | tollgate-2t not run | n/a |")
        );
    }

    #[test]
    fn the_iam_note_gives_each_tollgate_arm_its_own_figures() {
        let iam = CaseResult {
            case: case("connect-storm-iam c=32"),
            command: "pgbench -C".into(),
            records: vec![
                record(Target::PgBouncer, 0, Outcome::NotApplicable("no IAM")),
                record(Target::Tollgate, 0, measured(1000.0, Some(4.0))),
                record(Target::Tollgate2, 0, measured(1500.0, Some(4.5))),
            ],
        };
        assert_eq!(
            overview_extra(&iam),
            "Tollgate 1000 connections/s and 400.0 µs of its CPU per connection, Tollgate-2t \
             1500 connections/s and 300.0 µs of its CPU per connection (TLS handshake, token \
             check, login); PgBouncer and direct: n/a (no IAM authentication)"
        );
    }
}

//! Pooler CPU per transaction as the clients grow (32, 256 and 1,000 active, then 32 active
//! beside thousands of idle ones), one row per pooler: whether a pooler's cost per query stays
//! flat when it has more sockets to watch. Built from the runs the cases already made.

use std::fmt::Write as _;

use super::stats::{format_spread, pooler_cpu, spread, values};
use super::CaseResult;
use crate::targets::Target;

/// One column: a heading and the case it is read from, when that case ran.
struct Column<'a> {
    /// "select-simple c=256", "idle-clients (10000 idle + 32)".
    heading: String,
    /// The same, short, for the ratio columns: "c=256", "idle".
    short: &'static str,
    /// The case's runs; `None` when `--scenario` left it out.
    case: Option<&'a CaseResult>,
}

/// The four columns, the first (select-simple c=32) being the one the others are divided by.
fn columns(cases: &[CaseResult]) -> [Column<'_>; 4] {
    let simple = |clients: u32, short: &'static str| Column {
        heading: format!("select-simple c={clients}"),
        short,
        case: cases
            .iter()
            .find(|c| c.case.scenario == "select-simple" && c.case.clients == clients),
    };
    let idle = cases
        .iter()
        .find(|c| c.case.idle.is_some_and(|i| !i.tls) && c.case.clients == 32);
    let idle_heading = match idle.and_then(|c| c.case.idle) {
        Some(i) => format!("idle-clients ({} idle + 32)", i.count),
        None => "idle-clients (idle + 32)".to_owned(),
    };
    [
        simple(32, "c=32"),
        simple(256, "c=256"),
        simple(1000, "c=1000"),
        Column {
            heading: idle_heading,
            short: "idle",
            case: idle,
        },
    ]
}

/// The median pooler CPU per transaction of `pooler` in `column`, µs.
fn median(column: &Column, pooler: Target) -> Option<f64> {
    let case = column.case?;
    spread(&values(&case.records, pooler, pooler_cpu)).map(|s| s.median)
}

/// A cell with the median and range, or why there is none.
fn cpu_cell(column: &Column, pooler: Target) -> String {
    let Some(case) = column.case else {
        return "not run".to_owned();
    };
    spread(&values(&case.records, pooler, pooler_cpu))
        .map_or_else(|| "—".to_owned(), |s| format_spread(&s, 1))
}

/// The table; nothing when none of its cases ran.
pub(super) fn render(out: &mut String, cases: &[CaseResult]) {
    let columns = columns(cases);
    if columns.iter().all(|c| c.case.is_none()) {
        return;
    }
    out.push_str("## Pooler CPU per transaction vs clients\n\n");
    out.push_str(
        "Pooler CPU per transaction (µs, median over repetitions with min–max) in the \
         select-simple runs at 32, 256 and 1,000 clients over a 20-connection pool, and in the \
         idle-clients run (32 active clients beside the idle ones), taken from those cases' \
         runs above; a run's pooler CPU includes its clients' logins. The ÷ c=32 columns \
         divide medians: the cases do not run back to back, so there is no per-repetition \
         pairing.\n\n",
    );
    out.push_str("| pooler |");
    for column in &columns {
        let _ = write!(out, " {} |", column.heading);
    }
    for column in &columns[1..] {
        let _ = write!(out, " {} ÷ c=32 |", column.short);
    }
    let _ = writeln!(out, "\n|---|{}", "---|".repeat(2 * columns.len() - 1));
    for pooler in Target::POOLERS {
        let _ = write!(out, "| {} |", pooler.name());
        for column in &columns {
            let _ = write!(out, " {} |", cpu_cell(column, pooler));
        }
        let base = median(&columns[0], pooler).filter(|b| *b > 0.0);
        for column in &columns[1..] {
            match (median(column, pooler), base) {
                (Some(v), Some(b)) => {
                    let _ = write!(out, " {:.2} |", v / b);
                }
                _ => out.push_str(" — |"),
            }
        }
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{case, measured, record};
    use super::*;

    fn result(label: &str, runs: &[(Target, f64)]) -> CaseResult {
        CaseResult {
            case: case(label),
            command: String::new(),
            records: runs
                .iter()
                .map(|&(target, cpu_s)| record(target, 0, measured(1000.0, Some(cpu_s))))
                .collect(),
        }
    }

    #[test]
    fn each_pooler_gets_a_row_and_ratios_to_c32() {
        // 1000 tps for 10 s: 10,000 transactions, so 1 s of CPU is 100 µs per transaction.
        let cases = [
            result(
                "select-simple c=32",
                &[(Target::Tollgate, 1.0), (Target::PgBouncer, 0.5)],
            ),
            result("select-simple c=256", &[(Target::Tollgate, 1.5)]),
            result(
                "select-simple c=1000",
                &[(Target::Tollgate, 2.0), (Target::PgBouncer, 1.0)],
            ),
        ];
        let mut out = String::new();
        render(&mut out, &cases);
        assert!(out.starts_with("## Pooler CPU per transaction vs clients\n"));
        assert!(
            out.contains(
                "| pooler | select-simple c=32 | select-simple c=256 | select-simple c=1000 | \
                 idle-clients (idle + 32) | c=256 ÷ c=32 | c=1000 ÷ c=32 | idle ÷ c=32 |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| tollgate | 100.0 | 150.0 | 200.0 | not run | 1.50 | 2.00 | — |"),
            "{out}"
        );
        assert!(out.contains("| tollgate-2t | — | — | — | not run | — | — | — |"));
        assert!(out.contains("| pgbouncer | 50.0 | — | 100.0 | not run | — | 2.00 | — |"));
        let header = out.lines().find(|l| l.starts_with("| pooler")).unwrap();
        let cells = |l: &str| l.matches('|').count();
        assert!(out
            .lines()
            .filter(|l| l.starts_with('|'))
            .all(|l| cells(l) == cells(header)));
    }

    #[test]
    fn the_idle_column_names_its_idle_clients_and_nothing_renders_without_its_cases() {
        let idle = result("idle-clients c=32", &[(Target::Tollgate2, 3.0)]);
        let mut out = String::new();
        render(&mut out, std::slice::from_ref(&idle));
        assert!(out.contains("| idle-clients (100 idle + 32) |"), "{out}");
        assert!(out.contains("| tollgate-2t | not run | not run | not run | 300.0 | — |"));

        let mut none = String::new();
        render(
            &mut none,
            &[result("tpcb c=32", &[(Target::Tollgate, 1.0)])],
        );
        assert!(none.is_empty());
    }
}

//! The failover scenario's section of the report.

#![allow(unused_imports)]
use super::*;

/// The report's failover section: what ran, the verdict, one row per run, the errors seen.
pub fn render(out: &mut String, f: &FailoverResult) {
    let s = f.settings;
    out.push_str("## failover\n\n");
    let _ = writeln!(
        out,
        "A writer failover under write load. A primary and one streaming replica, synchronous \
         (a commit returns once the replica has flushed it), fresh for every run. {} clients \
         loop autocommit `INSERT INTO acks (client, n) VALUES (id, n++)` (simple protocol, \
         tokio-postgres) and record every acknowledged n. After {} s of steady load the \
         primary is killed (`pg_ctl stop -m immediate`) and the replica promoted at once \
         (`pg_promote`), as an Aurora failover does; the load goes on until {} s after the \
         kill.\n",
        s.clients,
        BEFORE.as_secs(),
        AFTER.as_secs()
    );
    let _ = writeln!(
        out,
        "- **direct**: `host=127.0.0.1,127.0.0.1 port=P1,P2 target_session_attrs=read-write` \
         (tokio-postgres's multi-host settings, as libpq's); after any error a client drops \
         its connection and reconnects, pausing {} ms after a failed attempt.\n\
         - **tollgate**: one host, Tollgate with `instance` = both servers, \
         `health_check_interval = {HEALTH_CHECK_INTERVAL_S}`, `connection_borrow_timeout = \
         {BORROW_TIMEOUT_S}`, transaction mode, pool size {}; a client reconnects only when \
         its connection was closed.\n",
        RETRY_PAUSE.as_millis(),
        s.pool_size
    );
    let _ = writeln!(
        out,
        "Longest gap: the longest stretch of the measured load in which no client committed. \
         Kill → down → promoted: when `pg_ctl stop -m immediate` and then `pg_promote` \
         returned, as the harness saw them (pg_promote waits for the end of recovery by \
         polling, so the new writer may accept commits a little before it returns). \
         Commits/s before: steady start to kill; after: end of the longest gap to the end of \
         the load. Missing: acknowledged commits not in the new writer's table (must be 0). \
         Connections lost: closed under the client by the server side.\n"
    );
    let _ = writeln!(out, "{}.\n", verdict(&f.runs));
    out.push_str(
        "| target | rep | statement errors (max per client) | connections lost | reconnects \
         | failed connection attempts | longest gap (ms) | gap, ms after the kill | kill → \
         down → promoted (ms) | acknowledged commits | missing on new writer | commits/s \
         before | commits/s after |\n",
    );
    out.push_str(&format!("|{}\n", "---|".repeat(13)));
    let mut rows: Vec<&RunResult> = f.runs.iter().collect();
    rows.sort_by_key(|r| (r.target, r.rep));
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {:.0} → {:.0} | 0 → {} → {} | {} | {} \
             | {:.0} | {:.0} |",
            r.target.name(),
            r.rep + 1,
            r.errors,
            r.max_errors_per_client,
            r.lost,
            r.reconnects,
            r.failed_connects,
            r.longest_gap.as_millis(),
            r.gap_after_kill_ms.0,
            r.gap_after_kill_ms.1,
            r.crash.as_millis(),
            (r.crash + r.promotion).as_millis(),
            r.acked,
            r.missing,
            r.before_rate,
            r.after_rate
        );
    }
    out.push('\n');
    for r in &rows {
        let mut notes: Vec<String> = r
            .error_kinds
            .iter()
            .map(|(kind, (count, message))| format!("{kind} ×{count} (\"{message}\")"))
            .collect();
        notes.extend(
            r.connect_errors.iter().map(|(message, count)| {
                format!("failed connection attempt ×{count} (\"{message}\")")
            }),
        );
        if r.stuck > 0 {
            notes.push(format!(
                "**{} clients still in a statement {} s after the load stopped**",
                r.stuck,
                FINISH_TIMEOUT.as_secs()
            ));
        }
        if !notes.is_empty() {
            let _ = writeln!(
                out,
                "- {} rep {}: {}",
                r.target.name(),
                r.rep + 1,
                notes.join("; ").replace('\n', " ")
            );
        }
    }
    out.push('\n');
}

/// "Tollgate: 0 connections lost vs 20 direct; ...", medians over repetitions.
pub(super) fn verdict(runs: &[RunResult]) -> String {
    let median = |target: Target, decimals: usize, metric: fn(&RunResult) -> f64| {
        let values: Vec<f64> = runs
            .iter()
            .filter(|r| r.target == target)
            .map(metric)
            .collect();
        spread(&values).map_or_else(|| "—".to_owned(), |s| format_spread(&s, decimals))
    };
    let both = |decimals: usize, metric: fn(&RunResult) -> f64| {
        (
            median(Target::Tollgate, decimals, metric),
            median(Target::Direct, decimals, metric),
        )
    };
    let missing = |target: Target| -> u64 {
        runs.iter()
            .filter(|r| r.target == target)
            .map(|r| r.missing)
            .sum()
    };
    let lost = both(0, |r| r.lost as f64);
    let errors = both(0, |r| r.errors as f64);
    let max_errors = both(0, |r| r.max_errors_per_client as f64);
    let gap = both(2, |r| r.longest_gap.as_secs_f64());
    let after = both(0, |r| r.after_rate);
    format!(
        "Tollgate: {} connections lost vs {} direct; {} statement errors vs {} (at most {} vs \
         {} per client); longest gap with no commit {} s vs {} s; {} vs {} commits/s after the \
         failover; acknowledged commits missing: {} vs {}",
        lost.0,
        lost.1,
        errors.0,
        errors.1,
        max_errors.0,
        max_errors.1,
        gap.0,
        gap.1,
        after.0,
        after.1,
        missing(Target::Tollgate),
        missing(Target::Direct)
    )
}

//! failover: the writer crashes under a write load and its synchronous replica is promoted
//! right after, as in an Aurora failover. What the writing clients see, connecting directly
//! (a libpq-style multi-host string with `target_session_attrs=read-write`) and through a
//! Tollgate told about both servers (`instance`), which health-checks them and moves its
//! writer pools itself.
//!
//! Each run gets a fresh primary and replica, so both arms start from the same state. Every
//! client loops autocommit INSERTs of (client, n++) and records each acknowledged n with the
//! time it was acknowledged. Afterwards the acknowledged rows are looked up on the new writer
//! (the replica is synchronous, so none may be missing), and the commit times give the
//! longest stretch in which no client committed: the outage as applications saw it.
//!
//! The load generator is tokio-postgres, not pgbench: pgbench aborts a client on its first
//! error and never reconnects, whereas an application, and this harness, reconnects.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tokio_postgres::error::Severity;
use tokio_postgres::{Client, Config, NoTls};
use tollgate_localpg::{Cluster, ClusterOptions};

use crate::report::{format_spread, spread};
use crate::targets::files::PoolerFiles;
use crate::targets::postgres::{BENCH_DB, BENCH_PASSWORD, BENCH_USER};
use crate::targets::tollgate::{Tollgate, TollgateSpec};
use crate::targets::Target;

mod load;
mod render;
use load::*;
pub use render::render;
#[allow(unused_imports)]
use render::*;

/// Steady load before the primary is killed.
const BEFORE: Duration = Duration::from_secs(3);
/// Load kept up after the kill, counted from the kill (the promotion happens inside it).
const AFTER: Duration = Duration::from_secs(5);
/// Tollgate's `health_check_interval` in this scenario, seconds.
const HEALTH_CHECK_INTERVAL_S: f64 = 0.2;
/// Tollgate's `connection_borrow_timeout` here, seconds: borrows wait out the failover.
const BORROW_TIMEOUT_S: u64 = 60;
/// Pause after a failed connection attempt: an application's retry policy. Without one, the
/// direct clients would spin on the standby's "read-only" answer and slow its promotion.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Per-host connect timeout (a crashed server on 127.0.0.1 refuses at once; this is a bound).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long every client gets to commit once before the measured load starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long clients get to finish their statement in flight once the load stops: longer than
/// the borrow timeout, so a client still waiting after it is stuck, not slow.
const FINISH_TIMEOUT: Duration = Duration::from_secs(BORROW_TIMEOUT_S + 30);

/// How the scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct FailoverSettings {
    /// Runs per arm; the arms alternate which goes first.
    pub reps: usize,
    /// Writing clients in each run.
    pub clients: usize,
    /// Tollgate's pool size.
    pub pool_size: u32,
}

/// Every run of the scenario.
#[derive(Debug, Clone)]
pub struct FailoverResult {
    /// What it ran with.
    pub settings: FailoverSettings,
    /// One per arm and repetition, in run order.
    pub runs: Vec<RunResult>,
}

impl FailoverResult {
    /// False when an acknowledged commit went missing or a client never finished: a broken
    /// promise, not a slow number.
    pub fn ok(&self) -> bool {
        self.runs.iter().all(|r| r.missing == 0 && r.stuck == 0)
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Direct or Tollgate.
    pub target: Target,
    /// Repetition, 0-based.
    pub rep: usize,
    /// Failed statements, all clients.
    pub errors: u64,
    /// Failed statements of the client with the most.
    pub max_errors_per_client: u64,
    /// Statement errors by "SEVERITY SQLSTATE", with the count and one message.
    pub error_kinds: BTreeMap<String, (u64, String)>,
    /// Client connections closed under a client (by the server side).
    pub lost: u64,
    /// Connections opened after a client's first.
    pub reconnects: u64,
    /// Connection attempts that failed (refused, or only a read-only server reachable).
    pub failed_connects: u64,
    /// Failed connection attempts by message (the last host's error, with its causes).
    pub connect_errors: BTreeMap<String, u64>,
    /// The longest stretch of the measured load in which no client committed.
    pub longest_gap: Duration,
    /// Where that stretch lies: its start and end, ms after the kill (negative: before).
    pub gap_after_kill_ms: (f64, f64),
    /// From the kill to the old primary gone (`pg_ctl stop -m immediate` returned).
    pub crash: Duration,
    /// From the old primary gone to the replica out of recovery (`pg_promote` returned).
    pub promotion: Duration,
    /// Acknowledged commits, all clients.
    pub acked: u64,
    /// Acknowledged commits not on the new writer afterwards.
    pub missing: u64,
    /// Commits per second from the steady start to the kill.
    pub before_rate: f64,
    /// Commits per second from the end of the longest gap to the end of the load.
    pub after_rate: f64,
    /// Clients still in a statement [`FINISH_TIMEOUT`] after the load stopped.
    pub stuck: usize,
}

/// Runs both arms `settings.reps` times against `tollgate_bin`, with progress on stderr.
pub fn run(tollgate_bin: &Path, settings: FailoverSettings) -> Result<FailoverResult> {
    // A plaintext password: Tollgate's health checks log in with it (a SCRAM verifier alone
    // cannot), and clients log in with SCRAM against it as usual.
    let files = PoolerFiles::create(&[(BENCH_USER, BENCH_PASSWORD)])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the load generator's runtime")?;
    let mut runs = Vec::new();
    for rep in 0..settings.reps {
        let order = if rep % 2 == 0 {
            [Target::Direct, Target::Tollgate]
        } else {
            [Target::Tollgate, Target::Direct]
        };
        for target in order {
            eprint!(
                "[failover] {:<9} rep {}/{} … ",
                target.name(),
                rep + 1,
                settings.reps
            );
            let _ = std::io::stderr().flush();
            let run = run_arm(&runtime, tollgate_bin, &files, settings, target, rep)
                .with_context(|| format!("failover against {} (rep {})", target.name(), rep + 1))?;
            eprintln!("{}", progress(&run));
            runs.push(run);
        }
    }
    Ok(FailoverResult { settings, runs })
}

/// A primary with the `acks` table and its synchronous replica.
struct Pair {
    /// Crashed during the run.
    primary: Cluster,
    /// Promoted during the run: the new writer.
    replica: Cluster,
}

impl Pair {
    /// Starts both; returns once the replica streams synchronously.
    fn start() -> Result<Pair> {
        let primary = Cluster::start(ClusterOptions {
            replication: true,
            ..ClusterOptions::default()
        })
        .context("start a primary")?;
        primary.create_user(BENCH_USER, BENCH_PASSWORD, false)?;
        primary.create_database(BENCH_DB, BENCH_USER)?;
        primary.psql(
            BENCH_DB,
            &format!(
                "CREATE TABLE acks (client int, n int, PRIMARY KEY (client, n));\n\
                 ALTER TABLE acks OWNER TO {BENCH_USER};\n"
            ),
        )?;
        let replica = primary
            .start_replica()
            .context("start a synchronous replica")?;
        Ok(Pair { primary, replica })
    }
}

/// The instants a run's numbers are measured between.
#[derive(Debug, Clone, Copy)]
struct Marks {
    /// Every client has committed once: the measured load starts.
    steady: Instant,
    /// The primary is killed.
    kill: Instant,
    /// The primary is gone.
    down: Instant,
    /// The replica has left recovery.
    promoted: Instant,
    /// The load stops.
    stop: Instant,
}

/// One run: a fresh pair, Tollgate in front of it for that arm, the load, the crash.
fn run_arm(
    runtime: &Runtime,
    tollgate_bin: &Path,
    files: &PoolerFiles,
    settings: FailoverSettings,
    target: Target,
    rep: usize,
) -> Result<RunResult> {
    let mut pair = Pair::start()?;
    let ports = [pair.primary.port(), pair.replica.port()];
    // Declared after the pair, so it stops first and logs no lost backend.
    let mut tollgate = match target {
        Target::Tollgate => Some(start_tollgate(
            tollgate_bin,
            files,
            ports,
            settings.pool_size,
        )?),
        _ => None,
    };
    let config = match &tollgate {
        Some(t) => client_config(&[t.port()], false),
        None => client_config(&ports, true),
    };
    let measured = measure(runtime, &mut pair, config, target, settings.clients);
    let with_log = |err: anyhow::Error| match &tollgate {
        Some(t) => err.context(format!("tollgate's recent log:\n{}", t.log_tail())),
        None => err,
    };
    let (logs, marks, stuck) = measured.map_err(with_log)?;
    if let Some(t) = &mut tollgate {
        t.check_running()?;
    }
    let on_new_writer = runtime
        .block_on(acknowledged_rows(pair.replica.port()))
        .context("read the acks table on the new writer")?;
    let run = summarize(target, rep, &logs, marks, &on_new_writer, stuck);
    if let (Some(t), true) = (&tollgate, run.lost > 0 || run.missing > 0 || stuck > 0) {
        eprintln!("  tollgate's recent log:\n{}", t.log_tail());
    }
    Ok(run)
}

/// Tollgate in front of both servers (the primary is also its upstream).
fn start_tollgate(
    bin: &Path,
    files: &PoolerFiles,
    ports: [u16; 2],
    pool_size: u32,
) -> Result<Tollgate> {
    let mut flags = Vec::new();
    for port in ports {
        flags.extend(["--instance".to_owned(), format!("127.0.0.1:{port}")]);
    }
    flags.extend([
        "--health-check-user".to_owned(),
        BENCH_USER.to_owned(),
        "--health-check-interval".to_owned(),
        HEALTH_CHECK_INTERVAL_S.to_string(),
        "--connection-borrow-timeout".to_owned(),
        BORROW_TIMEOUT_S.to_string(),
    ]);
    Tollgate::start(&TollgateSpec {
        extra: flags,
        ..TollgateSpec::new(bin, files, ports[0], pool_size, 1)
    })
}

/// A client's connection settings: one host (Tollgate), or every server in order with
/// `target_session_attrs=read-write`, as a libpq multi-host string would have it.
fn client_config(ports: &[u16], read_write: bool) -> Config {
    let mut config = Config::new();
    config
        .user(BENCH_USER)
        .password(BENCH_PASSWORD)
        .dbname(BENCH_DB)
        .application_name("tollgate-bench-failover")
        .ssl_mode(SslMode::Disable)
        .connect_timeout(CONNECT_TIMEOUT);
    for &port in ports {
        config.host("127.0.0.1").port(port);
    }
    if read_write {
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    config
}

/// Runs the load, crashes the primary and promotes the replica inside it; returns each
/// client's log, the marks, and how many clients were stuck at the end.
fn measure(
    runtime: &Runtime,
    pair: &mut Pair,
    config: Config,
    target: Target,
    clients: usize,
) -> Result<(Vec<ClientLog>, Marks, usize)> {
    let load = Load::start(runtime, config, target, clients);
    load.wait_until_each_committed(START_TIMEOUT)?;
    let steady = Instant::now();
    // The measurement window, not synchronisation: the clients commit meanwhile.
    thread::sleep(BEFORE);
    let kill = Instant::now();
    pair.primary
        .stop_immediate()
        .context("crash the primary (immediate shutdown)")?;
    let down = Instant::now();
    pair.replica.promote().context("promote the replica")?;
    let promoted = Instant::now();
    thread::sleep((kill + AFTER).saturating_duration_since(Instant::now()));
    let stop = Instant::now();
    let (logs, stuck) = load.finish(runtime, FINISH_TIMEOUT);
    Ok((
        logs,
        Marks {
            steady,
            kill,
            down,
            promoted,
            stop,
        },
        stuck,
    ))
}

/// The (client, n) pairs in the acks table of the server on `port`.
async fn acknowledged_rows(port: u16) -> Result<HashSet<(i32, i32)>> {
    let (client, connection) = client_config(&[port], false).connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let rows = client.query("SELECT client, n FROM acks", &[]).await?;
    drop(client);
    // The connection ends with the client; its own error would repeat the query's.
    let _ = driver.await;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Turns the client logs into a run's numbers (pure, for the tests).
fn summarize(
    target: Target,
    rep: usize,
    logs: &[ClientLog],
    marks: Marks,
    on_new_writer: &HashSet<(i32, i32)>,
    stuck: usize,
) -> RunResult {
    let mut times: Vec<Instant> = logs
        .iter()
        .flat_map(|l| l.commits.iter().map(|&(_, at)| at))
        .collect();
    times.sort_unstable();
    let (gap_start, gap_end) = longest_gap(&times, marks.steady, marks.stop);
    let count_in =
        |from: Instant, to: Instant| times.iter().filter(|&&t| t > from && t <= to).count() as f64;
    let rate = |from: Instant, to: Instant| {
        let secs = to.saturating_duration_since(from).as_secs_f64();
        if secs > 0.0 {
            count_in(from, to) / secs
        } else {
            0.0
        }
    };
    let mut error_kinds: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (kind, (count, message)) in logs.iter().flat_map(|l| &l.error_kinds) {
        let entry = error_kinds
            .entry(kind.clone())
            .or_insert((0, message.clone()));
        entry.0 += count;
    }
    let mut connect_errors: BTreeMap<String, u64> = BTreeMap::new();
    for (message, count) in logs.iter().flat_map(|l| &l.connect_errors) {
        *connect_errors.entry(message.clone()).or_insert(0) += count;
    }
    let after_kill = |t: Instant| {
        if t >= marks.kill {
            (t - marks.kill).as_secs_f64() * 1e3
        } else {
            -((marks.kill - t).as_secs_f64() * 1e3)
        }
    };
    let mut missing = 0;
    for (id, log) in logs.iter().enumerate() {
        let id = id as i32;
        missing += log
            .commits
            .iter()
            .filter(|&&(n, _)| !on_new_writer.contains(&(id, n)))
            .count() as u64;
    }
    RunResult {
        target,
        rep,
        errors: logs.iter().map(|l| l.errors).sum(),
        max_errors_per_client: logs.iter().map(|l| l.errors).max().unwrap_or(0),
        error_kinds,
        lost: logs.iter().map(|l| l.lost).sum(),
        reconnects: logs.iter().map(|l| l.reconnects).sum(),
        failed_connects: logs.iter().map(|l| l.failed_connects).sum(),
        connect_errors,
        longest_gap: gap_end.saturating_duration_since(gap_start),
        gap_after_kill_ms: (after_kill(gap_start), after_kill(gap_end)),
        crash: marks.down.saturating_duration_since(marks.kill),
        promotion: marks.promoted.saturating_duration_since(marks.down),
        acked: logs.iter().map(|l| l.commits.len() as u64).sum(),
        missing,
        before_rate: rate(marks.steady, marks.kill),
        after_rate: rate(gap_end, marks.stop),
        stuck,
    }
}

/// The longest stretch between `from`, the sorted commit times inside (`from`, `to`], and
/// `to`: its start and end.
fn longest_gap(sorted: &[Instant], from: Instant, to: Instant) -> (Instant, Instant) {
    let inside = sorted.iter().copied().filter(|&t| t > from && t <= to);
    let mut best = (from, from);
    let mut previous = from;
    for t in inside.chain(std::iter::once(to)) {
        if t - previous > best.1 - best.0 {
            best = (previous, t);
        }
        previous = t;
    }
    best
}

/// The end of a progress line.
fn progress(r: &RunResult) -> String {
    format!(
        "{} errors, {} connections lost, longest gap {} ms, {} acknowledged, {} missing",
        r.errors,
        r.lost,
        r.longest_gap.as_millis(),
        r.acked,
        r.missing
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn longest_gap_counts_the_ends_of_the_window() {
        let t0 = Instant::now();
        let times = [at(t0, 100), at(t0, 200), at(t0, 900), at(t0, 950)];
        assert_eq!(
            longest_gap(&times, t0, at(t0, 1000)),
            (at(t0, 200), at(t0, 900))
        );
        // Nothing after the kill until the end: the gap runs to the end of the window.
        assert_eq!(
            longest_gap(&times[..2], t0, at(t0, 1000)),
            (at(t0, 200), at(t0, 1000))
        );
        assert_eq!(longest_gap(&[], t0, at(t0, 10)), (t0, at(t0, 10)));
    }

    #[test]
    fn summary_counts_errors_rates_and_missing_commits() {
        let t0 = Instant::now();
        let marks = Marks {
            steady: t0,
            kill: at(t0, 1000),
            down: at(t0, 1100),
            promoted: at(t0, 1500),
            stop: at(t0, 3000),
        };
        let mut a = ClientLog {
            commits: vec![(1, at(t0, 500)), (2, at(t0, 900)), (4, at(t0, 2000))],
            errors: 1,
            lost: 1,
            reconnects: 1,
            ..ClientLog::default()
        };
        a.error_kinds
            .insert("FATAL 57P01".into(), (1, "terminating".into()));
        let b = ClientLog {
            commits: vec![(1, at(t0, 600)), (2, at(t0, 2500))],
            failed_connects: 3,
            connect_errors: BTreeMap::from([("refused".into(), 3)]),
            ..ClientLog::default()
        };
        // Client 1's n = 2 is not on the new writer.
        let rows: HashSet<(i32, i32)> = [(0, 1), (0, 2), (0, 4), (1, 1)].into();
        let r = summarize(Target::Direct, 0, &[a, b], marks, &rows, 0);
        assert_eq!((r.errors, r.max_errors_per_client, r.lost), (1, 1, 1));
        assert_eq!((r.reconnects, r.failed_connects), (1, 3));
        assert_eq!((r.acked, r.missing), (5, 1));
        assert_eq!(r.longest_gap, Duration::from_millis(1100));
        assert_eq!(r.gap_after_kill_ms, (-100.0, 1000.0));
        assert_eq!(
            (r.crash, r.promotion),
            (Duration::from_millis(100), Duration::from_millis(400))
        );
        assert_eq!(r.connect_errors["refused"], 3);
        // 3 commits in the first second; 2 in the 1 s after the gap ended at 2000 ms.
        assert!((r.before_rate - 3.0).abs() < 1e-9);
        assert!((r.after_rate - 1.0).abs() < 1e-9);
        assert_eq!(r.error_kinds["FATAL 57P01"].0, 1);
    }

    #[test]
    fn report_has_the_verdict_and_a_row_per_run() {
        let run = |target, lost, gap_ms| RunResult {
            target,
            rep: 0,
            errors: 20,
            max_errors_per_client: 1,
            error_kinds: BTreeMap::from([("ERROR 08006".into(), (20, "lost".into()))]),
            lost,
            reconnects: lost,
            failed_connects: 0,
            connect_errors: BTreeMap::new(),
            longest_gap: Duration::from_millis(gap_ms),
            gap_after_kill_ms: (10.0, gap_ms as f64 + 10.0),
            crash: Duration::from_millis(100),
            promotion: Duration::from_millis(300),
            acked: 1000,
            missing: 0,
            before_rate: 500.0,
            after_rate: 450.0,
            stuck: 0,
        };
        let result = FailoverResult {
            settings: FailoverSettings {
                reps: 1,
                clients: 20,
                pool_size: 20,
            },
            runs: vec![run(Target::Direct, 20, 800), run(Target::Tollgate, 0, 900)],
        };
        assert!(result.ok());
        let mut out = String::new();
        render(&mut out, &result);
        assert!(
            out.contains("Tollgate: 0 connections lost vs 20 direct; 20 statement errors vs 20"),
            "{out}"
        );
        assert!(out.contains("longest gap with no commit 0.90 s vs 0.80 s"));
        assert!(out.contains("health_check_interval = 0.2"));
        assert!(out
            .contains("| tollgate | 1 | 20 (1) | 0 | 0 | 0 | 900 | 10 → 910 | 0 → 100 → 400 | 1000 | 0 | 500 | 450 |"));
        assert!(out.contains("- direct rep 1: ERROR 08006 ×20 (\"lost\")"));
    }
}

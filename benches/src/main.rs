//! Benchmark harness: Tollgate against direct PostgreSQL and PgBouncer, reported as ratios.
//!
//! `cargo run --release -p tollgate-bench -- [--quick] [--scenario NAME] [--reps N]` starts a
//! throwaway PostgreSQL, PgBouncer and two Tollgates (`--worker-threads 1` and 2) by itself, runs
//! every scenario against direct PostgreSQL and the three poolers back to back (rotating their
//! order between repetitions, from the same database state), and writes
//! `target/bench-report.md`.

mod failover;
mod iam;
mod iam_rate;
mod idle_clients;
mod machine;
mod measure;
mod open_files;
mod pgbench;
mod procstat;
mod report;
mod scenario;
mod targets;
mod wire_client;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;

use measure::{Bench, Outcome, RunRecord};
use report::{CaseResult, Header, Report};
use scenario::Case;
use targets::files::PoolerFiles;
use targets::pgbouncer::{PgBouncer, PGBOUNCER_BIN};
use targets::postgres::{Postgres, BENCH_USER, IDLE_USER};
use targets::tollgate::{self as tollgate_target, Tollgate, TollgateArm, TollgateSpec};
use targets::Target;

/// Backend connections per pool, for every pooler.
const POOL_SIZE: u32 = 20;
/// PgBouncer's `max_client_conn` (Tollgate's default is the same).
const MAX_CLIENT_CONN: u32 = 20_000;
/// Writing clients in the failover scenario: as many as a pool has backends, so none waits
/// for one except during the failover itself.
const FAILOVER_CLIENTS: usize = 20;

/// Tollgate against direct PostgreSQL and PgBouncer, as ratios.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench", about)]
struct Cli {
    /// CI smoke test: a few seconds per run, one repetition, 500 idle clients; checks that
    /// every target runs, not how fast.
    #[arg(long)]
    quick: bool,
    /// Run only this scenario (repeatable): select-simple, select-extended, select-prepared,
    /// tpcb, connect-storm, connect-storm-iam, idle-clients, latency-c1, failover.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Repetitions of every case [default: 3; 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    reps: Option<u32>,
    /// Seconds per pgbench run (-T) [default: 30; 3 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: Option<u32>,
    /// Idle client connections in the idle-clients scenario [default: 10000; 500 with --quick].
    #[arg(long)]
    idle_clients: Option<usize>,
    /// pgbench -i scale factor.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Where to write the report [default: target/bench-report.md].
    #[arg(long)]
    output: Option<PathBuf>,
    /// New IAM-token TLS connections per second in connect-storm-iam's fixed-rate run (the
    /// harness's own client; pgbench cannot open TLS connections that fast on a small machine).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    iam_rate: u32,
}

/// The settings after defaults.
#[derive(Debug)]
struct Settings {
    quick: bool,
    reps: usize,
    seconds: u32,
    idle_clients: usize,
    scale: u32,
    output: PathBuf,
    iam_rate: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("tollgate-bench: some runs failed (see above and the report)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("tollgate-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up, runs every case, writes the report; `Ok(false)` when a run failed unexpectedly.
fn run(cli: Cli) -> Result<bool> {
    let started = Instant::now();
    let settings = Settings {
        quick: cli.quick,
        reps: cli
            .reps
            .map_or(if cli.quick { 1 } else { 3 }, |r| r as usize),
        seconds: cli.seconds.unwrap_or(if cli.quick { 3 } else { 30 }),
        idle_clients: cli
            .idle_clients
            .unwrap_or(if cli.quick { 500 } else { 10_000 }),
        scale: cli.scale,
        output: match cli.output {
            Some(path) => path,
            None => target_dir()?.join("bench-report.md"),
        },
        iam_rate: cli.iam_rate,
    };
    let cases = scenario::select(scenario::all_cases(settings.idle_clients), &cli.scenarios)?;
    let run_failover = scenario::runs_failover(&cli.scenarios, settings.quick);
    // The harness holds the idle clients' sockets; pgbench (which inherits the limit) one per
    // client, and it refuses to start with fewer descriptors than clients.
    let most_sockets = (settings.idle_clients as u64).max(u64::from(scenario::max_clients(&cases)));
    let fd_limit = open_files::raise(most_sockets + 1024)?;

    let tollgate_bin = tollgate_target::locate_binary()?;
    let pgbench_bin = tollgate_localpg::find_bin("pgbench").context("find pgbench")?;

    let mut report = Report::default();
    let mut all_ok = true;
    if cases.is_empty() {
        // Only the failover scenario, which starts its own servers: the facts alone.
        let postgres_bin = tollgate_localpg::find_bin("postgres").context("find postgres")?;
        report.header.facts = facts(
            machine::program_version(&postgres_bin),
            &tollgate_bin,
            &pgbench_bin,
        );
    } else {
        let ran = run_cases(&settings, &cases, fd_limit, &tollgate_bin, &pgbench_bin)?;
        all_ok &= ran.all_ok;
        report.header = ran.header;
        report.cases = ran.results;
        report.iam_rate = ran.iam_rate;
    }
    if run_failover {
        step(
            "failover: a primary and a synchronous replica per run, the primary killed under load",
        );
        let result = failover::run(
            &tollgate_bin,
            failover::FailoverSettings {
                reps: settings.reps,
                clients: FAILOVER_CLIENTS,
                pool_size: POOL_SIZE,
            },
        )?;
        all_ok &= result.ok();
        report.failover = Some(result);
    }
    report.header.tls.extend(negotiated_tls(&report.cases));
    report.header.setup.push(format!(
        "Total wall time of this harness run: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    let text = report::render(&report);
    std::fs::write(&settings.output, &text)
        .with_context(|| format!("write {}", settings.output.display()))?;
    println!("{text}");
    eprintln!(
        "tollgate-bench: report written to {} ({:.0} s)",
        settings.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(all_ok)
}

/// What the pgbench cases (and connect-storm-iam's fixed-rate run) produced.
struct CasesRan {
    /// Machine, setup and TLS, for the report.
    header: Header,
    /// Every case's runs.
    results: Vec<CaseResult>,
    /// connect-storm-iam's fixed-rate run, when that scenario ran.
    iam_rate: Vec<(&'static str, iam_rate::RateResult)>,
    /// False when a run failed unexpectedly.
    all_ok: bool,
}

/// Starts PostgreSQL, PgBouncer and both Tollgate arms, runs every case against the four
/// targets, and stops them again.
fn run_cases(
    settings: &Settings,
    cases: &[Case],
    fd_limit: u64,
    tollgate_bin: &Path,
    pgbench_bin: &Path,
) -> Result<CasesRan> {
    step("starting PostgreSQL");
    let postgres = Postgres::start()?;
    step(&format!("pgbench -i -s {}", settings.scale));
    postgres.init_pgbench(pgbench_bin, settings.scale)?;
    let files = PoolerFiles::create(&[
        (BENCH_USER, &postgres.stored_secret(BENCH_USER)?),
        (IDLE_USER, &postgres.stored_secret(IDLE_USER)?),
    ])?;
    step("starting PgBouncer and Tollgate (1 and 2 worker threads)");
    let pgbouncer = PgBouncer::start(&files, postgres.port(), POOL_SIZE, MAX_CLIENT_CONN)?;
    let iam_settings = if cases.iter().any(|c| c.iam) {
        step("starting a Tollgate per arm that requires IAM auth tokens");
        // Tollgate logs in to PostgreSQL with the bench user's password for IAM-verified
        // clients: a SCRAM verifier alone (the other auth file) cannot log in for them.
        let auth_file = files.dir().join("iam-userlist.txt");
        targets::files::write_readable(
            &auth_file,
            &targets::files::auth_file_text(&[(BENCH_USER, targets::postgres::BENCH_PASSWORD)]),
        )?;
        Some((auth_file, iam::write_files(files.dir())?))
    } else {
        None
    };
    let start_arm = |target: Target| -> Result<TollgateArm> {
        let threads = target
            .worker_threads()
            .context("only a Tollgate arm has worker threads")?;
        let spec = TollgateSpec::new(tollgate_bin, &files, postgres.port(), POOL_SIZE, threads);
        let iam = match &iam_settings {
            Some((auth_file, flags)) => Some(Tollgate::start(&TollgateSpec {
                auth_file: auth_file.clone(),
                extra: flags.clone(),
                ..spec.clone()
            })?),
            None => None,
        };
        Ok(TollgateArm {
            plain: Tollgate::start(&spec)?,
            iam,
        })
    };
    let tollgate = start_arm(Target::Tollgate)?;
    let tollgate2 = start_arm(Target::Tollgate2)?;

    let postgres_version = postgres
        .version()
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    let mut header = header(
        settings,
        fd_limit,
        postgres_version,
        tollgate_bin,
        pgbench_bin,
    );
    if iam_settings.is_some() {
        let iterations = if settings.quick { 2_000 } else { 20_000 };
        let cost = iam::verify_cost(iterations)?;
        header.setup.push(format!(
            "connect-storm-iam: a second Tollgate per arm (same worker threads) with iam_auth = \
             required, the local verifier, a 100-key trusted keys file and a 2-statement policy; \
             pgbench's password is a fresh token (as the AWS SDKs sign it) per run; the \
             fixed-rate run goes to each in turn. PgBouncer and PostgreSQL have no IAM \
             authentication (n/a). Verify cost per connection, in process: \
             LocalVerifier::verify (parse, checks, SigV4 recompute, keys-file allow, policy) \
             takes {:.1} µs per token (mean of {} verifications).",
            cost.per_token_us, cost.iterations
        ));
        eprintln!(
            "tollgate-bench: IAM token verification: {:.1} µs per token ({} in process)",
            cost.per_token_us, cost.iterations
        );
    }
    let idle_tls = wire_client::tls_config(&files.tls.ca_pem)?;
    let mut bench = Bench {
        pgbouncer,
        tollgate,
        tollgate2,
        postgres,
        files,
        pool_size: POOL_SIZE,
        max_client_conn: MAX_CLIENT_CONN,
        pgbench: pgbench_bin.to_path_buf(),
        idle_tls,
        seconds: settings.seconds,
    };

    let total_runs = cases.len() * settings.reps * Target::ALL.len();
    let mut done = 0;
    let mut results = Vec::with_capacity(cases.len());
    let mut all_ok = true;
    for case in cases {
        let mut records = Vec::new();
        for rep in 0..settings.reps {
            for target in Target::order_for_rep(rep) {
                done += 1;
                eprint!(
                    "[{done:>3}/{total_runs}] {:<24} {:<11} rep {}/{} … ",
                    case.label,
                    target.name(),
                    rep + 1,
                    settings.reps
                );
                let _ = std::io::stderr().flush();
                let outcome = bench.run(case, target).with_context(|| {
                    format!("{} against {} (rep {})", case.label, target.name(), rep + 1)
                })?;
                eprintln!("{}", progress_result(&outcome));
                if matches!(
                    outcome,
                    Outcome::Failed {
                        expected: false,
                        ..
                    }
                ) {
                    all_ok = false;
                    let whose = match target {
                        Target::Direct => "PostgreSQL",
                        _ => target.name(),
                    };
                    eprintln!(
                        "  {whose}'s recent log:\n{}",
                        indent(&bench.log_tail(target, case.iam))
                    );
                }
                records.push(RunRecord {
                    target,
                    rep,
                    outcome,
                });
            }
        }
        results.push(CaseResult {
            case: case.clone(),
            command: command_line(case, settings.seconds),
            records,
        });
    }
    let mut iam_rate = Vec::new();
    if cases.iter().any(|c| c.iam) {
        for (target, arm) in [
            (Target::Tollgate, &bench.tollgate),
            (Target::Tollgate2, &bench.tollgate2),
        ] {
            if let Some(iam) = &arm.iam {
                let result = run_iam_rate(&bench, target.name(), iam, settings)?;
                all_ok &= result.succeeded == result.attempted && result.steady_error.is_none();
                iam_rate.push((target.name(), result));
            }
        }
    }
    // Stop the poolers before PostgreSQL, so neither logs a lost backend.
    drop(bench);
    Ok(CasesRan {
        header,
        results,
        iam_rate,
        all_ok,
    })
}

/// connect-storm-iam's fixed-rate run against the IAM Tollgate, with progress on stderr.
fn run_iam_rate(
    bench: &Bench,
    name: &str,
    iam: &Tollgate,
    settings: &Settings,
) -> Result<iam_rate::RateResult> {
    let rate_settings = iam_rate::RateSettings {
        rate: settings.iam_rate,
        storm: Duration::from_secs(u64::from(settings.seconds)),
        baseline: Duration::from_secs(u64::from(settings.seconds.min(5))),
    };
    eprint!(
        "[iam] {name}: {} IAM-token TLS connections/s for {} s beside a steady client … ",
        rate_settings.rate, settings.seconds
    );
    let _ = std::io::stderr().flush();
    let login = wire_client::Login {
        addr: SocketAddr::from(([127, 0, 0, 1], iam.port())),
        user: BENCH_USER.to_owned(),
        password: iam::token(BENCH_USER)?,
        database: targets::postgres::BENCH_DB.to_owned(),
        tls: Some(Arc::clone(&bench.idle_tls)),
    };
    let result = iam_rate::run(&login, iam.pid()?, rate_settings)
        .context("connect-storm-iam at a fixed rate")?;
    eprintln!("{}", iam_rate::summary(&result));
    if result.succeeded < result.attempted {
        eprintln!("  tollgate's recent log:\n{}", indent(&iam.log_tail()));
    }
    Ok(result)
}

/// `target/` of the workspace: the harness runs from `target/<profile>/tollgate-bench`.
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("find the harness's own executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the harness is not inside a cargo target directory")
}

/// A setup step, on stderr.
fn step(what: &str) {
    eprintln!("tollgate-bench: {what}");
}

/// Indents a log excerpt for stderr.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The command line shown in the report for a case.
fn command_line(case: &Case, seconds: u32) -> String {
    let mut line = case.command_line(seconds);
    if let Some(idle) = case.idle {
        line.push_str(&format!(
            " with {} idle {} clients held open",
            idle.count,
            if idle.tls { "TLS" } else { "plain" }
        ));
    }
    line
}

/// The end of a progress line: the result of one run.
fn progress_result(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured(m) => {
            let mut line = format!(
                "{:.0} tps, {:.2} ms, {} failed",
                m.summary.tps, m.summary.latency_ms, m.summary.failed
            );
            if let Some(us) = m.pooler_us_per_tx() {
                line.push_str(&format!(", pooler {us:.1} µs/tx"));
            }
            if let Some(l) = m.latency {
                line.push_str(&format!(", p50 {} µs, p99 {} µs", l.p50_us, l.p99_us));
            }
            if let Some(i) = &m.idle {
                line.push_str(&format!(
                    ", {} idle clients, {:.1} KiB RSS each",
                    i.clients,
                    i.kib_per_client()
                ));
            }
            line
        }
        Outcome::Failed {
            reason,
            expected: true,
        } => format!("fails as expected: {reason}"),
        Outcome::Failed {
            reason,
            expected: false,
        } => format!("FAILED: {reason}"),
        Outcome::NotApplicable(why) => format!("n/a ({why})"),
    }
}

/// The machine and software facts at the top of the report.
fn facts(
    postgres_version: String,
    tollgate_bin: &Path,
    pgbench_bin: &Path,
) -> Vec<(String, String)> {
    let machine = machine::Machine::read();
    let built = std::fs::metadata(tollgate_bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(String::new, |age| {
            format!(", binary built {} min before this run", age.as_secs() / 60)
        });
    vec![
        ("CPU".to_owned(), machine.cpu_model),
        ("Cores".to_owned(), machine.cores.to_string()),
        ("Memory".to_owned(), machine.memory),
        ("Kernel".to_owned(), machine.kernel),
        ("PostgreSQL".to_owned(), postgres_version),
        ("pgbench".to_owned(), machine::program_version(pgbench_bin)),
        (
            "PgBouncer".to_owned(),
            machine::program_version(Path::new(PGBOUNCER_BIN)),
        ),
        (
            "Tollgate".to_owned(),
            format!(
                "commit {} ({}{built})",
                machine::git_commit(&tollgate_target::workspace_root()),
                tollgate_bin.display()
            ),
        ),
    ]
}

/// The report's header: machine, software, setup and TLS.
fn header(
    settings: &Settings,
    fd_limit: u64,
    postgres_version: String,
    tollgate_bin: &Path,
    pgbench_bin: &Path,
) -> Header {
    let facts = facts(postgres_version, tollgate_bin, pgbench_bin);
    let fd_note = if fd_limit < open_files::WANTED {
        format!(" (raising it to {} was refused)", open_files::WANTED)
    } else {
        String::new()
    };
    let setup = vec![
        format!(
            "Mode: {}; {} repetition(s) of every case; pgbench -T {} s per run; scale factor {}.",
            if settings.quick {
                "--quick (smoke test: numbers are not meaningful)"
            } else {
                "full"
            },
            settings.reps,
            settings.seconds,
            settings.scale
        ),
        format!(
            "Poolers (PgBouncer, and Tollgate with --worker-threads 1 as tollgate and 2 as \
             tollgate-2t, each its own process): transaction mode, pool size {POOL_SIZE} per \
             (database, user), \
             max_client_conn {MAX_CLIENT_CONN}, the same auth file (bench user: the server's \
             SCRAM verifier, so SCRAM with pass-through to PostgreSQL; idle user: md5 hash), \
             plain TCP to PostgreSQL on 127.0.0.1. PgBouncer runs as an unprivileged user when \
             the harness is root. Open-files limit (inherited by the poolers and pgbench): \
             {fd_limit}{fd_note}. Direct PostgreSQL: max_connections {}, room for \
             select-simple c=1000.",
            targets::postgres::MAX_CONNECTIONS
        ),
        "Each repetition runs the four targets back to back, rotating their order between \
         repetitions; before every run pgbench_history is truncated, the pgbench tables are \
         vacuumed and PostgreSQL checkpoints."
            .to_owned(),
        "pgbench: -j 2 (1 for one client), -n, connecting to 127.0.0.1 over TCP. Ratios are per \
         repetition (runs of one repetition are back to back), then the median over \
         repetitions with min–max."
            .to_owned(),
        "CPU: PostgreSQL = postmaster + all its backends (utime+stime from /proc, exited \
         backends included); pooler = the pooler process; pgbench = its rusage from wait4. \
         Other load = machine-wide busy CPU (/proc/stat) minus those three, in cores, averaged \
         over the run; loadavg is /proc/loadavg's 1-minute value at the end of the run."
            .to_owned(),
        format!(
            "Idle clients: {} connections opened by the harness (raw protocol, md5 login, TLS \
             via rustls for the TLS case) and held open during a 32-client select-simple run; \
             each such run gets a freshly started pooler, and RSS per idle client = pooler \
             VmRSS after opening them minus before, divided by their number. Direct PostgreSQL is not measured there (it would need one backend \
             per client).",
            settings.idle_clients
        ),
    ];
    let tls = vec![
        "Certificates: ECDSA P-256 (prime256v1) CA and leaf generated by \
         tollgate_localpg::certs::generate; Tollgate and PgBouncer (client_tls_sslmode = allow) \
         present the same certificate and key; PostgreSQL presents its own from the same \
         generator for the direct TLS runs."
            .to_owned(),
        "Clients: pgbench (libpq, OpenSSL) with sslmode=require for connect-storm tls and \
         connect-storm-iam; the harness's idle TLS clients use rustls with the ring provider."
            .to_owned(),
        "Poolers to PostgreSQL: plain TCP (sslmode=disable).".to_owned(),
    ];
    Header { facts, setup, tls }
}

/// "Negotiated with the idle TLS clients: ..." lines, one per pooler, from the runs.
fn negotiated_tls(cases: &[CaseResult]) -> Vec<String> {
    let mut lines = Vec::new();
    for target in Target::POOLERS {
        let session = cases
            .iter()
            .flat_map(|c| &c.records)
            .filter(|r| r.target == target)
            .find_map(|r| match &r.outcome {
                Outcome::Measured(m) => m.idle.as_ref()?.tls_session.clone(),
                _ => None,
            });
        if let Some(session) = session {
            lines.push(format!(
                "Negotiated by the idle TLS clients with {}: {session}.",
                target.name()
            ));
        }
    }
    lines
}

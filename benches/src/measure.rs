//! One run: a case against one target, with everything measured around it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::ClientConfig;

use crate::idle_clients::{self, HeldClients};
use crate::pgbench::{self, Connection, Percentiles, Summary};
use crate::procstat::{self, SystemTicks};
use crate::scenario::{Case, IdleClients};
use crate::targets::files::PoolerFiles;
use crate::targets::pgbouncer::PgBouncer;
use crate::targets::postgres::{self, Postgres};
use crate::targets::tollgate::{Tollgate, TollgateArm};
use crate::targets::Target;
use crate::wire_client::Login;

/// How long the pooler may take to notice that the idle clients went away.
const IDLE_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooler with no clients left has at most this many descriptors open (listen sockets, two
/// pools of 20 backends, logs); above it, some idle clients are still being closed.
const SETTLED_FDS: usize = 128;

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// pgbench's own summary.
    pub summary: Summary,
    /// Wall time of the pgbench process, s.
    pub wall_s: f64,
    /// CPU seconds of the postmaster and all backends during the run.
    pub postgres_cpu_s: f64,
    /// CPU seconds of the pooler during the run; `None` for direct.
    pub pooler_cpu_s: Option<f64>,
    /// CPU seconds of pgbench itself.
    pub pgbench_cpu_s: f64,
    /// Other load: cores kept busy on average by everything not measured above.
    pub other_cores: f64,
    /// 1-minute load average at the end of the run.
    pub loadavg: f64,
    /// Per-transaction latency percentiles, when the case logs transactions.
    pub latency: Option<Percentiles>,
    /// Pooler memory around the idle clients, for idle-clients cases.
    pub idle: Option<IdleMemory>,
}

impl Measured {
    /// The pooler's CPU per transaction, µs.
    pub fn pooler_us_per_tx(&self) -> Option<f64> {
        let cpu = self.pooler_cpu_s?;
        (self.summary.processed > 0).then(|| cpu * 1e6 / self.summary.processed as f64)
    }
}

/// The pooler's resident memory before and after the idle clients logged in.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleMemory {
    /// How many idle clients were held.
    pub clients: usize,
    /// VmRSS before opening them, KiB.
    pub rss_before_kib: u64,
    /// VmRSS once all were logged in, KiB.
    pub rss_after_kib: u64,
    /// TLS version and cipher suite they negotiated (TLS cases).
    pub tls_session: Option<String>,
}

impl IdleMemory {
    /// Growth per idle client, KiB (negative growth counts as zero).
    pub fn kib_per_client(&self) -> f64 {
        if self.clients == 0 {
            return 0.0;
        }
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / self.clients as f64
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// pgbench finished cleanly.
    Measured(Measured),
    /// pgbench (or the idle clients) failed; `expected` for known limitations.
    Failed {
        /// What went wrong, in one line.
        reason: String,
        /// A documented limitation (PgBouncer and named prepared statements).
        expected: bool,
    },
    /// The case does not apply to this target.
    NotApplicable(&'static str),
}

/// One run's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// What pgbench pointed at.
    pub target: Target,
    /// Repetition, 0-based.
    pub rep: usize,
    /// How it went.
    pub outcome: Outcome,
}

/// Everything a run needs: the four targets, pgbench and the run length.
///
/// Fields drop in order: the poolers stop before PostgreSQL, and the files they read go last.
#[derive(Debug)]
pub struct Bench {
    /// The pooler compared with.
    pub pgbouncer: PgBouncer,
    /// The pooler measured, on one worker thread.
    pub tollgate: TollgateArm,
    /// The same on two worker threads.
    pub tollgate2: TollgateArm,
    /// The database.
    pub postgres: Postgres,
    /// Auth file and certificate the poolers read (to restart them).
    pub files: PoolerFiles,
    /// Backend connections per pool, every pooler.
    pub pool_size: u32,
    /// PgBouncer's max_client_conn.
    pub max_client_conn: u32,
    /// The pgbench binary (same install as the server).
    pub pgbench: PathBuf,
    /// TLS settings for the idle TLS clients (trusting the poolers' CA).
    pub idle_tls: Arc<ClientConfig>,
    /// pgbench `-T`.
    pub seconds: u32,
}

/// How long a pgbench run of `seconds` may take before it counts as hung.
fn run_timeout(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds) * 2 + 180)
}

/// Resource counters read right before and right after pgbench.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    postgres_cpu_s: f64,
    pooler_cpu_s: Option<f64>,
    system: SystemTicks,
}

impl Bench {
    /// Runs `case` against `target`: resets the database, opens idle clients if the case has
    /// them, runs pgbench, and measures. `Err` is a harness failure (stop everything);
    /// pgbench failing is an [`Outcome::Failed`].
    pub fn run(&mut self, case: &Case, target: Target) -> Result<Outcome> {
        if let Some(why) = case.not_applicable(target) {
            return Ok(Outcome::NotApplicable(why));
        }
        self.postgres.reset_state()?;

        let held = match case.idle {
            Some(idle) => {
                // A fresh pooler process: memory an earlier run's idle clients left behind in
                // its allocator would otherwise hide this run's growth.
                self.restart_pooler(target)?;
                match self.open_idle(target, idle)? {
                    Ok(held) => Some(held),
                    Err(reason) => {
                        return Ok(Outcome::Failed {
                            reason,
                            expected: false,
                        })
                    }
                }
            }
            None => None,
        };

        let workdir = tempfile::Builder::new()
            .prefix("tollgate-bench-run-")
            .tempdir()
            .context("create a temp dir for pgbench")?;
        // A fresh token per run: a full run can outlast a token's 15 minutes.
        let token;
        let password = if case.iam {
            token = crate::iam::token(postgres::BENCH_USER)?;
            token.as_str()
        } else {
            postgres::BENCH_PASSWORD
        };
        let conn = Connection {
            port: self.port(target, case.iam)?,
            user: postgres::BENCH_USER,
            password,
            db: postgres::BENCH_DB,
            tls: case.client_tls,
        };
        let mut seconds = self.seconds;
        let (before, finished, after) = loop {
            let mut args = case.pgbench_args(seconds);
            if case.latency_log {
                args.push("-l".into());
            }
            // Generous: Tollgate's clients may wait up to connection_borrow_timeout (120 s)
            // for a backend, and a hang should be reported, not waited out forever.
            let timeout = run_timeout(seconds);
            let before = self.snapshot(target, case.iam)?;
            let finished = pgbench::run(&self.pgbench, &conn, &args, workdir.path(), timeout)?;
            let after = self.snapshot(target, case.iam)?;
            // A clock that ran out during the logins measured nothing: give it more time
            // (doubling, up to 16 times the run's) rather than report a run that never
            // started. 1,000 SCRAM logins to PostgreSQL took 6-12 s in a CI smoke run on 2 cores.
            if finished.success
                && pgbench::ran_out_while_connecting(&finished.stdout)
                && seconds < self.seconds.saturating_mul(16)
            {
                seconds = seconds.saturating_mul(2);
                eprint!("(connecting used up the run; again with -T {seconds}) … ");
                continue;
            }
            break (before, finished, after);
        };
        let loadavg = procstat::loadavg_1min()?;

        let idle_memory = held.map(|(held, memory)| {
            drop(held);
            memory
        });
        if idle_memory.is_some() {
            self.wait_for_idle_close(target)?;
        }
        self.check_poolers()?;

        if !finished.success {
            let what = if finished.timed_out {
                format!(
                    "pgbench hung and was killed after {}s",
                    run_timeout(seconds).as_secs()
                )
            } else {
                format!("pgbench failed ({})", finished.status)
            };
            let mut detail = pgbench::first_error(&finished.stderr)
                .unwrap_or_else(|| finished.stderr.trim().to_owned());
            // Clients that did not abort may still have run: say how much they did.
            if let Ok(partial) = pgbench::parse_summary(&finished.stdout) {
                detail.push_str(&format!(
                    " (pgbench's summary anyway: {} transactions, {:.0} tps, over {:.1} s)",
                    partial.processed,
                    partial.tps,
                    finished.wall.as_secs_f64()
                ));
            }
            return Ok(Outcome::Failed {
                reason: format!("{what}: {detail}"),
                expected: target == Target::PgBouncer && case.pgbouncer_fails_because.is_some(),
            });
        }
        let summary = pgbench::parse_summary(&finished.stdout)?;
        let latency = if case.latency_log {
            pgbench::percentiles(pgbench::read_transaction_logs(workdir.path())?)
        } else {
            None
        };

        let wall_s = finished.wall.as_secs_f64();
        let postgres_cpu_s = after.postgres_cpu_s - before.postgres_cpu_s;
        let pooler_cpu_s = match (before.pooler_cpu_s, after.pooler_cpu_s) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        let machine_busy_s = after.system.busy.saturating_sub(before.system.busy) as f64
            / procstat::clock_ticks_per_second();
        let measured_s = postgres_cpu_s + pooler_cpu_s.unwrap_or(0.0) + finished.cpu_seconds;
        let other_cores = ((machine_busy_s - measured_s) / wall_s.max(1e-3)).max(0.0);
        Ok(Outcome::Measured(Measured {
            summary,
            wall_s,
            postgres_cpu_s,
            pooler_cpu_s,
            pgbench_cpu_s: finished.cpu_seconds,
            other_cores,
            loadavg,
            latency,
            idle: idle_memory,
        }))
    }

    /// The Tollgate arm behind `target`; `None` for direct and PgBouncer.
    fn arm(&self, target: Target) -> Option<&TollgateArm> {
        match target {
            Target::Tollgate => Some(&self.tollgate),
            Target::Tollgate2 => Some(&self.tollgate2),
            Target::Direct | Target::PgBouncer => None,
        }
    }

    /// The Tollgate process pgbench talks to for `target` (the IAM one for IAM cases);
    /// `None` for direct and PgBouncer.
    pub fn tollgate(&self, target: Target, iam: bool) -> Result<Option<&Tollgate>> {
        self.arm(target).map(|arm| arm.get(iam)).transpose()
    }

    /// The recent log of whatever served `target` in a run that failed: the pooler's, or
    /// PostgreSQL's for direct.
    pub fn log_tail(&self, target: Target, iam: bool) -> String {
        match (target, self.tollgate(target, iam)) {
            (Target::PgBouncer, _) => self.pgbouncer.log_tail(),
            (_, Ok(Some(tollgate))) => tollgate.log_tail(),
            (_, Err(err)) => format!("{err:#}"),
            (_, Ok(None)) => self.postgres.log_tail(),
        }
    }

    /// The port pgbench connects to for `target` (the IAM Tollgate's for IAM cases).
    fn port(&self, target: Target, iam: bool) -> Result<u16> {
        Ok(match (target, self.tollgate(target, iam)?) {
            (_, Some(tollgate)) => tollgate.port(),
            (Target::PgBouncer, None) => self.pgbouncer.port(),
            (_, None) => self.postgres.port(),
        })
    }

    /// The pooler's pid; `None` for direct.
    fn pooler_pid(&self, target: Target, iam: bool) -> Result<Option<u32>> {
        Ok(match (target, self.tollgate(target, iam)?) {
            (_, Some(tollgate)) => Some(tollgate.pid()?),
            (Target::PgBouncer, None) => Some(self.pgbouncer.pid()?),
            (_, None) => None,
        })
    }

    /// Reads the CPU counters.
    fn snapshot(&self, target: Target, iam: bool) -> Result<Snapshot> {
        let pooler_cpu_s = self
            .pooler_pid(target, iam)?
            .map(procstat::process_cpu_seconds)
            .transpose()?;
        Ok(Snapshot {
            postgres_cpu_s: self.postgres.cpu_seconds()?,
            pooler_cpu_s,
            system: procstat::system_ticks()?,
        })
    }

    /// Opens the idle clients against a pooler and measures its RSS around them. The inner
    /// `Err` is the pooler failing to take them (a result, not a harness failure).
    fn open_idle(
        &self,
        target: Target,
        idle: IdleClients,
    ) -> Result<std::result::Result<(HeldClients, IdleMemory), String>> {
        let pid = self
            .pooler_pid(target, false)?
            .context("idle clients need a pooler")?;
        let login = Login {
            addr: SocketAddr::from(([127, 0, 0, 1], self.port(target, false)?)),
            user: postgres::IDLE_USER.to_owned(),
            password: postgres::IDLE_PASSWORD.to_owned(),
            database: postgres::BENCH_DB.to_owned(),
            tls: idle.tls.then(|| Arc::clone(&self.idle_tls)),
        };
        let rss_before_kib = procstat::rss_kib(pid)?;
        let held = match idle_clients::open(&login, idle.count) {
            Ok(held) => held,
            Err(err) => return Ok(Err(format!("{err:#}"))),
        };
        let rss_after_kib = procstat::rss_kib(pid)?;
        let memory = IdleMemory {
            clients: held.len(),
            rss_before_kib,
            rss_after_kib,
            tls_session: held.tls_session.clone(),
        };
        Ok(Ok((held, memory)))
    }

    /// Waits until the pooler has closed its side of the idle clients, so the next run does
    /// not pay for that. /proc offers no event for this, so it polls the descriptor count.
    fn wait_for_idle_close(&self, target: Target) -> Result<()> {
        let Some(pid) = self.pooler_pid(target, false)? else {
            return Ok(());
        };
        let deadline = Instant::now() + IDLE_CLOSE_TIMEOUT;
        let mut last = procstat::open_fds(pid)?;
        while last > SETTLED_FDS {
            if Instant::now() > deadline {
                eprintln!(
                    "warning: {} still has {last} open descriptors {}s after the idle clients \
                     closed",
                    target.name(),
                    IDLE_CLOSE_TIMEOUT.as_secs()
                );
                break;
            }
            thread::sleep(Duration::from_millis(100));
            last = procstat::open_fds(pid)?;
        }
        Ok(())
    }

    /// Replaces the pooler behind `target` with a freshly started one (on a new port).
    fn restart_pooler(&mut self, target: Target) -> Result<()> {
        let pg_port = self.postgres.port();
        match target {
            Target::Direct => {}
            Target::PgBouncer => {
                self.pgbouncer.stop();
                self.pgbouncer =
                    PgBouncer::start(&self.files, pg_port, self.pool_size, self.max_client_conn)?;
            }
            Target::Tollgate => self.tollgate.plain.restart()?,
            Target::Tollgate2 => self.tollgate2.plain.restart()?,
        }
        Ok(())
    }

    /// Fails, with its log, if a pooler has exited.
    fn check_poolers(&mut self) -> Result<()> {
        self.pgbouncer.check_running()?;
        self.tollgate.check_running()?;
        self.tollgate2.check_running()
    }
}

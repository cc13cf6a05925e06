//! connect-storm-iam at a fixed rate: new TLS connections with an IAM auth token arrive on a
//! schedule (open loop, default 2,000 per second) while one already-connected client runs a
//! steady trickle of queries; reports the rate achieved, connection latency, Tollgate's CPU
//! per connection, and the steady client's latency before and during the storm.
//!
//! pgbench cannot drive this rate on a small machine: libpq builds a fresh OpenSSL context for
//! every connection, which costs it ~750 µs of CPU per connection here, more than Tollgate's
//! side of the handshake. The harness's own rustls client costs far less, so the pooler, not
//! the load generator, is what this measures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::procstat;
use crate::wire_client::{self, Login};

/// How the storm runs.
#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    /// New connections per second, scheduled evenly.
    pub rate: u32,
    /// How long the storm lasts.
    pub storm: Duration,
    /// How long the steady client runs alone first, for its baseline latency.
    pub baseline: Duration,
}

/// Latency quantiles, µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Quantiles {
    /// Nearest-rank quantiles of `samples` (µs).
    pub fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            // Nearest rank: ceil(q * n), 1-based.
            let rank = (q * samples.len() as f64).ceil().max(1.0) as usize;
            samples
                .get(rank.min(samples.len()) - 1)
                .copied()
                .unwrap_or(0)
        };
        Self {
            count: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: samples.last().copied().unwrap_or(0),
        }
    }
}

/// What one fixed-rate storm measured.
#[derive(Debug, Clone)]
pub struct RateResult {
    /// The settings it ran with.
    pub settings: RateSettings,
    /// Connections scheduled (and attempted).
    pub attempted: u64,
    /// Connections that logged in, ran `SELECT 1` and closed.
    pub succeeded: u64,
    /// The first failure, if any failed.
    pub first_error: Option<String>,
    /// Succeeded connections per second of storm wall time.
    pub achieved_rate: f64,
    /// From a connection's scheduled start to its `SELECT 1` answered (includes any lag of
    /// the generator behind the schedule, so a stalled pooler cannot hide).
    pub connect: Quantiles,
    /// Tollgate's CPU per connection, µs, the steady client's share subtracted.
    pub pooler_us_per_conn: f64,
    /// The steady client's query latency alone.
    pub steady_before: Quantiles,
    /// The steady client's query latency during the storm.
    pub steady_during: Quantiles,
    /// Whether the steady client's connection failed (its error) during the run.
    pub steady_error: Option<String>,
}

/// Generator threads: enough that a few slow handshakes don't make the schedule slip.
const WORKERS: usize = 48;
/// The steady client's query interval (500 queries per second).
const STEADY_INTERVAL: Duration = Duration::from_millis(2);

/// Runs the steady client alone for `settings.baseline`, then the storm beside it.
pub fn run(login: &Login, pooler_pid: u32, settings: RateSettings) -> Result<RateResult> {
    let steady = SteadyClient::start(login)?;
    let cpu_start = procstat::process_cpu_seconds(pooler_pid)?;
    // A measurement window, not synchronisation: the steady client records meanwhile.
    thread::sleep(settings.baseline);
    let cpu_baseline = procstat::process_cpu_seconds(pooler_pid)? - cpu_start;
    steady.mark_storm();

    let storm = storm(login, settings)?;
    let cpu_storm = procstat::process_cpu_seconds(pooler_pid)? - cpu_start - cpu_baseline;
    let (before, during, steady_error) = steady.finish();

    let steady_share = cpu_baseline / settings.baseline.as_secs_f64().max(1e-3) * storm.elapsed;
    let pooler_us_per_conn = if storm.succeeded == 0 {
        0.0
    } else {
        (cpu_storm - steady_share).max(0.0) * 1e6 / storm.succeeded as f64
    };
    Ok(RateResult {
        settings,
        attempted: storm.attempted,
        succeeded: storm.succeeded,
        first_error: storm.first_error,
        achieved_rate: storm.succeeded as f64 / storm.elapsed.max(1e-3),
        connect: Quantiles::of(storm.latencies_us),
        pooler_us_per_conn,
        steady_before: Quantiles::of(before),
        steady_during: Quantiles::of(during),
        steady_error,
    })
}

/// What the generator threads saw.
struct StormOutcome {
    attempted: u64,
    succeeded: u64,
    first_error: Option<String>,
    latencies_us: Vec<u64>,
    /// Seconds from the first slot to the last connection's end.
    elapsed: f64,
}

/// The open-loop generator: slot `i` is due at `start + i / rate`; a free worker takes the
/// next slot, waits for it if it is early, and runs one whole connection.
fn storm(login: &Login, settings: RateSettings) -> Result<StormOutcome> {
    let slots = (f64::from(settings.rate) * settings.storm.as_secs_f64()) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let next = Arc::clone(&next);
            let login = login.clone();
            let rate = f64::from(settings.rate.max(1));
            thread::Builder::new()
                .name(format!("iam-storm-{w}"))
                .spawn(move || {
                    let mut latencies = Vec::new();
                    let mut first_error = None;
                    loop {
                        let slot = next.fetch_add(1, Ordering::Relaxed);
                        if slot >= slots {
                            break;
                        }
                        let due = start + Duration::from_secs_f64(slot as f64 / rate);
                        if let Some(early) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(early); // pacing to the schedule
                        }
                        match one_connection(&login) {
                            Ok(()) => latencies.push(micros(due.elapsed())),
                            Err(err) => {
                                first_error.get_or_insert_with(|| format!("{err:#}"));
                            }
                        }
                    }
                    (latencies, first_error)
                })
        })
        .collect::<std::io::Result<_>>()
        .context("start the storm's threads")?;

    let mut outcome = StormOutcome {
        attempted: slots,
        succeeded: 0,
        first_error: None,
        latencies_us: Vec::with_capacity(usize::try_from(slots).unwrap_or(0)),
        elapsed: 0.0,
    };
    for handle in handles {
        let (latencies, first_error) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a storm thread panicked"))?;
        outcome.succeeded += latencies.len() as u64;
        outcome.latencies_us.extend(latencies);
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
    }
    outcome.elapsed = start.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Log in with the token over TLS, `SELECT 1`, Terminate: what a Lambda invocation does.
fn one_connection(login: &Login) -> Result<()> {
    let mut conn = wire_client::connect(login)?;
    conn.query("SELECT 1")?;
    conn.terminate()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One already-connected client querying at a steady pace, recording each query's latency
/// as "before" until the storm is marked, then as "during".
struct SteadyClient {
    storm: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<(Vec<u64>, Vec<u64>)>>,
    handle: thread::JoinHandle<Option<String>>,
}

impl SteadyClient {
    fn start(login: &Login) -> Result<Self> {
        let mut conn = wire_client::connect(login).context("connect the steady client")?;
        let storm = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let handle = {
            let (storm, stop, samples) =
                (Arc::clone(&storm), Arc::clone(&stop), Arc::clone(&samples));
            thread::Builder::new()
                .name("iam-steady".into())
                .spawn(move || {
                    let mut due = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(early) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(early); // pacing
                        }
                        let during = storm.load(Ordering::Relaxed);
                        let began = Instant::now();
                        if let Err(err) = conn.query("SELECT 1") {
                            return Some(format!("{err:#}"));
                        }
                        let us = micros(began.elapsed());
                        if let Ok(mut s) = samples.lock() {
                            if during {
                                s.1.push(us)
                            } else {
                                s.0.push(us)
                            }
                        }
                        due += STEADY_INTERVAL;
                    }
                    conn.terminate().err().map(|e| format!("{e:#}"))
                })
                .context("start the steady client's thread")?
        };
        Ok(Self {
            storm,
            stop,
            samples,
            handle,
        })
    }

    fn mark_storm(&self) {
        self.storm.store(true, Ordering::Relaxed);
    }

    /// Stops the client; its before and during samples and its error, if it had one.
    fn finish(self) -> (Vec<u64>, Vec<u64>, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let error = self
            .handle
            .join()
            .unwrap_or_else(|_| Some("the steady client's thread panicked".into()));
        let (before, during) = self
            .samples
            .lock()
            .map(|mut s| (std::mem::take(&mut s.0), std::mem::take(&mut s.1)))
            .unwrap_or_default();
        (before, during, error)
    }
}

/// One line for the progress output.
pub fn summary(r: &RateResult) -> String {
    let mut line = format!(
        "{:.0}/s achieved ({} of {} connected), connect p50 {} µs p99 {} µs, \
         Tollgate {:.0} µs CPU/conn; steady client p99 {} µs alone, {} µs during",
        r.achieved_rate,
        r.succeeded,
        r.attempted,
        r.connect.p50_us,
        r.connect.p99_us,
        r.pooler_us_per_conn,
        r.steady_before.p99_us,
        r.steady_during.p99_us
    );
    if let Some(err) = r.first_error.as_ref().or(r.steady_error.as_ref()) {
        line.push_str(&format!("; first error: {err}"));
    }
    line
}

/// The fixed-rate section: one row per Tollgate arm (`(name, result)`, all run with the same
/// settings), so the runtimes can be compared under the same storm.
pub fn render(out: &mut String, runs: &[(&str, RateResult)]) {
    use std::fmt::Write as _;
    let Some((_, first)) = runs.first() else {
        return;
    };
    let s = first.settings;
    out.push_str("## connect-storm-iam at a fixed rate\n\n");
    let _ = writeln!(
        out,
        "The issue's load target: {} new TLS connections per second, each presenting an RDS IAM \
         auth token (local verifier: parse, checks, SigV4, keys file, policy), logging in, \
         running `SELECT 1` and closing, scheduled evenly for {} s (open loop: latency counts \
         from each connection's scheduled start). Alongside, one already-connected client runs \
         `SELECT 1` every {} ms; its latency alone ({} s first) and during the storm shows \
         whether the storm stalls connected clients. The connections come from the harness's \
         own rustls client ({WORKERS} threads, no TLS resumption), because pgbench's libpq \
         spends ~750 µs of CPU per TLS connection on this machine building an OpenSSL context \
         and cannot reach this rate. Each Tollgate arm gets the same storm, one after the other.\n",
        s.rate,
        s.storm.as_secs(),
        STEADY_INTERVAL.as_millis(),
        s.baseline.as_secs()
    );
    let _ = writeln!(
        out,
        "| pooler | target rate | achieved rate | connected / scheduled | connect p50 | \
         connect p99 | connect p99.9 | connect max | Tollgate CPU per connection |"
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (name, r) in runs {
        let _ = writeln!(
            out,
            "| {name} | {}/s | {:.0}/s | {} / {} | {} µs | {} µs | {} µs | {} µs | {:.0} µs |",
            r.settings.rate,
            r.achieved_rate,
            r.succeeded,
            r.attempted,
            r.connect.p50_us,
            r.connect.p99_us,
            r.connect.p999_us,
            r.connect.max_us,
            r.pooler_us_per_conn
        );
    }
    out.push_str("\n| pooler | steady client | queries | p50 | p99 | p99.9 | max |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for (name, r) in runs {
        for (when, q) in [
            ("alone", r.steady_before),
            ("during the storm", r.steady_during),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {when} | {} | {} µs | {} µs | {} µs | {} µs |",
                q.count, q.p50_us, q.p99_us, q.p999_us, q.max_us
            );
        }
    }
    out.push('\n');
    for (name, r) in runs {
        for err in [&r.first_error, &r.steady_error].into_iter().flatten() {
            let _ = writeln!(out, "First error ({name}): {}\n", err.replace('\n', " "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let q = Quantiles::of((1..=1000).rev().collect());
        assert_eq!(q.count, 1000);
        assert_eq!(q.p50_us, 500);
        assert_eq!(q.p99_us, 990);
        assert_eq!(q.p999_us, 999);
        assert_eq!(q.max_us, 1000);
        let empty = Quantiles::of(Vec::new());
        assert_eq!((empty.count, empty.p50_us, empty.max_us), (0, 0, 0));
        assert_eq!(Quantiles::of(vec![7]).p99_us, 7);
    }
}

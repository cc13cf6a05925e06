//! Running pgbench (with its CPU time, from `wait4`) and reading what it printed.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where and as whom pgbench connects.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Role.
    pub user: &'a str,
    /// Its password (passed as `PGPASSWORD`).
    pub password: &'a str,
    /// Database.
    pub db: &'a str,
    /// `sslmode=require` when true, `disable` otherwise (never libpq's default `prefer`, which
    /// would silently use TLS wherever it is offered).
    pub tls: bool,
}

/// How a pgbench run ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit status 0.
    pub success: bool,
    /// "exit status 2", "killed by signal 9", for messages.
    pub status: String,
    /// Whether the harness killed it for running past its timeout.
    pub timed_out: bool,
    /// What it printed on stdout (the summary).
    pub stdout: String,
    /// What it printed on stderr (errors, client aborts).
    pub stderr: String,
    /// Its user + system CPU seconds (all threads), from `wait4`'s rusage.
    pub cpu_seconds: f64,
    /// Wall time from spawn to exit.
    pub wall: Duration,
}

/// Runs pgbench with `args` in `workdir` (its per-transaction logs land there) and waits for
/// it, killing it after `timeout`.
///
/// It is reaped with `wait4` rather than `Child::wait` to get its own rusage: the CPU pgbench
/// itself burns is load on the same cores the pooler and PostgreSQL share.
pub fn run(
    bin: &Path,
    conn: &Connection<'_>,
    args: &[String],
    workdir: &Path,
    timeout: Duration,
) -> Result<Finished> {
    let stdout_path = workdir.join("pgbench.stdout");
    let stderr_path = workdir.join("pgbench.stderr");
    let stdout =
        File::create(&stdout_path).with_context(|| format!("create {}", stdout_path.display()))?;
    let stderr =
        File::create(&stderr_path).with_context(|| format!("create {}", stderr_path.display()))?;
    let started = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .args(["-h", "127.0.0.1", "-p", &conn.port.to_string()])
        .args(["-U", conn.user, conn.db])
        .env("PGPASSWORD", conn.password)
        .env("PGSSLMODE", if conn.tls { "require" } else { "disable" })
        .env("PGCONNECT_TIMEOUT", "30")
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pid = libc::pid_t::try_from(child.id()).context("pgbench's pid is out of range")?;
    // `child` is never waited on through std: the thread below reaps it with wait4.
    drop(child);

    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("pgbench-wait4".into())
        .spawn(move || {
            let _ = tx.send(wait4(pid));
        })
        .context("start the thread waiting for pgbench")?;
    let (waited, timed_out) = match rx.recv_timeout(timeout) {
        Ok(result) => (result, false),
        Err(RecvTimeoutError::Timeout) => {
            // SAFETY: kill has no memory preconditions; pgbench is not reaped yet (the wait4
            // thread has not returned), so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let result = rx
                .recv()
                .context("the thread waiting for pgbench disappeared")?;
            (result, true)
        }
        Err(RecvTimeoutError::Disconnected) => {
            bail!("the thread waiting for pgbench disappeared")
        }
    };
    let (status, rusage) = waited?;
    let wall = started.elapsed();
    let cpu_seconds = timeval_seconds(rusage.ru_utime) + timeval_seconds(rusage.ru_stime);
    Ok(Finished {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        status: describe_status(status),
        timed_out,
        stdout: fs::read_to_string(&stdout_path)
            .with_context(|| format!("read {}", stdout_path.display()))?,
        stderr: fs::read_to_string(&stderr_path)
            .with_context(|| format!("read {}", stderr_path.display()))?,
        cpu_seconds,
        wall,
    })
}

/// Blocks in `wait4(pid)` until the child exits; its wait status and rusage.
fn wait4(pid: libc::pid_t) -> Result<(libc::c_int, libc::rusage)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; all-zero is a valid value and wait4 overwrites it.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers refer to live, correctly typed locals.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if rc == pid {
            return Ok((status, rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4 for pgbench");
        }
    }
}

/// Seconds in a `timeval`.
fn timeval_seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// "exit status N" or "killed by signal N".
fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// The numbers pgbench prints at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// "number of transactions actually processed: N".
    pub processed: u64,
    /// "number of failed transactions: F (x%)" (pgbench 15+; 0 when absent).
    pub failed: u64,
    /// "tps = X (...)": the first tps line. With `-C` it includes the reconnections, which is
    /// the point of that scenario; without, pgbench 14+ excludes the initial connections.
    pub tps: f64,
    /// "latency average = X ms".
    pub latency_ms: f64,
}

/// Parses pgbench's stdout summary.
pub fn parse_summary(stdout: &str) -> Result<Summary> {
    let mut processed = None;
    let mut failed = 0;
    let mut tps = None;
    let mut latency_ms = None;
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            // "N" with -T, "N/M" with -t.
            let done = rest.split('/').next().unwrap_or("").trim();
            processed = Some(parse_number::<u64>(done, line)?);
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            failed = parse_number(rest.split_whitespace().next().unwrap_or(""), line)?;
        } else if let Some(rest) = line.strip_prefix("latency average =") {
            let value = rest.trim().strip_suffix("ms").unwrap_or(rest).trim();
            latency_ms = Some(parse_number::<f64>(value, line)?);
        } else if let Some(rest) = line.strip_prefix("tps =") {
            if tps.is_none() {
                tps = Some(parse_number::<f64>(
                    rest.split_whitespace().next().unwrap_or(""),
                    line,
                )?);
            }
        }
    }
    let (Some(processed), Some(tps)) = (processed, tps) else {
        bail!("no pgbench summary (processed count and tps) in its output:\n{stdout}");
    };
    Ok(Summary {
        processed,
        failed,
        tps,
        // pgbench omits the average when nothing was processed.
        latency_ms: latency_ms.unwrap_or(f64::NAN),
    })
}

/// Whether a run that exited cleanly did no transaction at all because its `-T` clock ran out
/// while the clients were still connecting. pgbench 15 starts that clock before the initial
/// connections, so hundreds of SCRAM logins on a busy small machine can use up a short run;
/// it then prints a processed count of 0 and no tps line.
pub fn ran_out_while_connecting(stdout: &str) -> bool {
    stdout.lines().map(str::trim).any(|line| {
        line.strip_prefix("number of transactions actually processed:")
            .is_some_and(|rest| rest.split('/').next().unwrap_or("").trim() == "0")
    }) && !stdout
        .lines()
        .any(|line| line.trim_start().starts_with("tps ="))
}

/// Parses one number out of a summary line, naming the line on failure.
fn parse_number<T: std::str::FromStr>(text: &str, line: &str) -> Result<T> {
    text.trim()
        .parse()
        .ok()
        .with_context(|| format!("cannot read a number from pgbench's line {line:?}"))
}

/// The first line of pgbench's stderr that reports an error (client aborts, connection
/// failures), shortened for a table cell.
pub fn first_error(stderr: &str) -> Option<String> {
    let line = stderr.lines().map(str::trim).find(|l| {
        l.contains("error:") || l.contains("ERROR") || l.contains("FATAL") || l.contains("aborted")
    })?;
    let line = line.strip_prefix("pgbench: ").unwrap_or(line);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    const MAX: usize = 200;
    Some(match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", line.get(..cut).unwrap_or(line)),
        None => line.to_owned(),
    })
}

/// Per-transaction latencies (µs) from pgbench's `-l` log text: the third field of each line
/// (`client_id transaction_no time script_no time_epoch time_us`); lines whose third field is
/// not a number ("skipped", "failed") are left out.
pub fn parse_transaction_log(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

/// Latencies from every `pgbench_log.*` file in `dir` (one per pgbench thread).
pub fn read_transaction_logs(dir: &Path) -> Result<Vec<u64>> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("pgbench_log.")
        {
            let text = fs::read_to_string(entry.path())
                .with_context(|| format!("read {}", entry.path().display()))?;
            all.extend(parse_transaction_log(&text));
        }
    }
    if all.is_empty() {
        bail!("pgbench wrote no per-transaction log in {}", dir.display());
    }
    Ok(all)
}

/// p50 and p99 of per-transaction latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
}

/// Nearest-rank percentiles of `latencies`; `None` when empty.
pub fn percentiles(mut latencies: Vec<u64>) -> Option<Percentiles> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let rank = |p: f64| -> u64 {
        let n = latencies.len();
        let index = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
        latencies.get(index).copied().unwrap_or(0)
    };
    Some(Percentiles {
        p50_us: rank(50.0),
        p99_us: rank(99.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgbench 15's output for `-S -M simple -c 32 -j 2 -T 3`.
    const SELECT_ONLY: &str = "\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 41234
number of failed transactions: 0 (0.000%)
latency average = 2.318 ms
initial connection time = 28.412 ms
tps = 13806.421731 (without initial connection time)
";

    /// pgbench 15's output with `-C`.
    const CONNECT_EACH: &str = "\
transaction type: <builtin: select only>
number of transactions actually processed: 2400
number of failed transactions: 0 (0.000%)
latency average = 40.112 ms
average connection time = 19.8 ms
tps = 797.766 (including reconnection times)
";

    /// pgbench 13's two tps lines.
    const OLD_PGBENCH: &str = "\
number of transactions actually processed: 1000/1000
latency average = 1.000 ms
tps = 990.1 (including connections establishing)
tps = 1000.2 (excluding connections establishing)
";

    #[test]
    fn a_run_whose_clock_ran_out_while_connecting_is_recognised() {
        let nothing = "\
number of clients: 256
duration: 3 s
number of transactions actually processed: 0
number of failed transactions: 0 (NaN%)
";
        assert!(ran_out_while_connecting(nothing));
        assert!(parse_summary(nothing).is_err());
        assert!(!ran_out_while_connecting(SELECT_ONLY));
        assert!(!ran_out_while_connecting(OLD_PGBENCH));
    }

    #[test]
    fn reads_the_summary_of_a_timed_run() {
        let s = parse_summary(SELECT_ONLY).unwrap();
        assert_eq!(s.processed, 41234);
        assert_eq!(s.failed, 0);
        assert!((s.tps - 13806.421731).abs() < 1e-9);
        assert!((s.latency_ms - 2.318).abs() < 1e-9);
    }

    #[test]
    fn connect_per_transaction_tps_includes_reconnections() {
        let s = parse_summary(CONNECT_EACH).unwrap();
        assert!((s.tps - 797.766).abs() < 1e-9);
        assert!((s.latency_ms - 40.112).abs() < 1e-9);
    }

    #[test]
    fn old_pgbench_counts_and_first_tps_line() {
        let s = parse_summary(OLD_PGBENCH).unwrap();
        assert_eq!(s.processed, 1000);
        assert_eq!(s.failed, 0);
        assert!((s.tps - 990.1).abs() < 1e-9);
    }

    #[test]
    fn failed_transactions_are_counted() {
        let out = SELECT_ONLY.replace(
            "number of failed transactions: 0 (0.000%)",
            "number of failed transactions: 17 (0.041%)",
        );
        assert_eq!(parse_summary(&out).unwrap().failed, 17);
    }

    #[test]
    fn output_without_a_summary_is_an_error() {
        let err = parse_summary("pgbench (15.18)\n").unwrap_err();
        assert!(err.to_string().contains("no pgbench summary"));
        let bad = SELECT_ONLY.replace("tps = 13806.421731", "tps = lots");
        assert!(parse_summary(&bad).is_err());
    }

    #[test]
    fn first_error_finds_the_client_abort() {
        let stderr = "pgbench: warning: something harmless\n\
            pgbench: error: client 3 script 0 aborted in command 1 query 0: ERROR:  \
            prepared statement \"P0_1\" does not exist\n\
            pgbench: error: Run was aborted; the above results are incomplete.\n";
        assert_eq!(
            first_error(stderr).unwrap(),
            "client 3 script 0 aborted in command 1 query 0: ERROR:  prepared statement \
             \"P0_1\" does not exist"
        );
        assert_eq!(first_error("all good\n"), None);
        assert!(first_error(&format!("error: {}", "x".repeat(500)))
            .unwrap()
            .ends_with('…'));
    }

    #[test]
    fn transaction_log_latencies_and_percentiles() {
        let log = "0 0 210 0 1700000000 1\n0 1 190 0 1700000000 2\n0 2 skipped 0 1700000000 3\n\
                   0 3 5000 0 1700000000 4\n";
        let lat = parse_transaction_log(log);
        assert_eq!(lat, vec![210, 190, 5000]);
        assert_eq!(
            percentiles(lat),
            Some(Percentiles {
                p50_us: 210,
                p99_us: 5000
            })
        );
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            percentiles(hundred),
            Some(Percentiles {
                p50_us: 50,
                p99_us: 99
            })
        );
        assert_eq!(percentiles(Vec::new()), None);
    }
}

//! Tollgate as users run it: the release binary, a child process, configured by flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::child::Daemon;
use super::files::PoolerFiles;
use super::free_port;

/// Tollgate logs this (target `tollgate::server`, level info) once it listens.
const READY_LINE: &str = "accepting connections";

/// Warnings and errors only, except the one start-up line the harness waits for.
const LOG_FILTER: &str = "warn,tollgate::server=info";

/// How long Tollgate may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root (this crate is `<root>/benches`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `tollgate` release binary: next to this harness's own executable (both live in
/// `target/release`), built with `cargo build --release -p tollgate` first if it is missing.
pub fn locate_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("find the harness's own executable")?;
    let dir = exe
        .parent()
        .context("the harness's executable has no directory")?;
    let bin = dir.join("tollgate");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "{} is missing; running cargo build --release -p tollgate",
        bin.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "tollgate"])
        .current_dir(workspace_root())
        .status()
        .context("run cargo build --release -p tollgate")?;
    if !status.success() {
        bail!("cargo build --release -p tollgate failed ({status})");
    }
    if !bin.is_file() {
        bail!(
            "cargo built tollgate but {} still does not exist (is CARGO_TARGET_DIR set \
             differently for the harness?)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Everything one Tollgate's command line is built from, kept so a run can restart it as it
/// was (the idle-clients cases want a fresh process).
#[derive(Debug, Clone)]
pub struct TollgateSpec {
    /// The release binary.
    pub bin: PathBuf,
    /// PostgreSQL's port on 127.0.0.1.
    pub pg_port: u16,
    /// Backend connections per pool.
    pub pool_size: u32,
    /// `--worker-threads`: always passed, so a report's label stays true whatever the
    /// default becomes.
    pub worker_threads: usize,
    /// The auth file (the IAM Tollgate has its own).
    pub auth_file: PathBuf,
    /// TLS certificate offered to clients.
    pub tls_cert: PathBuf,
    /// Its key.
    pub tls_key: PathBuf,
    /// Further flags (the IAM settings, the failover scenario's instances).
    pub extra: Vec<String>,
}

impl TollgateSpec {
    /// Tollgate in front of PostgreSQL on `pg_port`, with the shared auth file and TLS
    /// certificate (TLS is offered, not required, like PgBouncer's `client_tls_sslmode = allow`).
    pub fn new(
        bin: &Path,
        files: &PoolerFiles,
        pg_port: u16,
        pool_size: u32,
        worker_threads: usize,
    ) -> TollgateSpec {
        TollgateSpec {
            bin: bin.to_path_buf(),
            pg_port,
            pool_size,
            worker_threads,
            auth_file: files.auth_file.clone(),
            tls_cert: files.cert.clone(),
            tls_key: files.key.clone(),
            extra: Vec::new(),
        }
    }

    /// The command-line arguments for a Tollgate listening on `port`.
    pub fn args(&self, port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--upstream".into(),
            format!("postgres://127.0.0.1:{}/?sslmode=disable", self.pg_port).into(),
            "--auth-file".into(),
            self.auth_file.clone().into(),
            "--pool-mode".into(),
            "transaction".into(),
            "--pool-size".into(),
            self.pool_size.to_string().into(),
            "--worker-threads".into(),
            self.worker_threads.to_string().into(),
            "--tls-cert".into(),
            self.tls_cert.clone().into(),
            "--tls-key".into(),
            self.tls_key.clone().into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--log-level".into(),
            LOG_FILTER.into(),
        ];
        args.extend(self.extra.iter().map(OsString::from));
        args
    }
}

/// A running Tollgate, stopped on drop (SIGTERM: it drains and exits).
#[derive(Debug)]
pub struct Tollgate {
    /// The process.
    daemon: Daemon,
    /// Port on 127.0.0.1.
    port: u16,
    /// How it was started.
    spec: TollgateSpec,
}

impl Tollgate {
    /// Starts a Tollgate as `spec` says, on a free port.
    pub fn start(spec: &TollgateSpec) -> Result<Tollgate> {
        let port = free_port()?;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(spec.args(port));
        // Settings must come from the flags above only: RUST_LOG would override the log
        // filter and any TOLLGATE_* variable in the caller's environment would change the setup.
        cmd.env_remove("RUST_LOG");
        // Plain log lines: they end up in error messages and the report, not on a terminal.
        cmd.env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TOLLGATE_") {
                cmd.env_remove(key);
            }
        }
        let daemon = Daemon::spawn("tollgate", &mut cmd, READY_LINE, START_TIMEOUT)?;
        Ok(Tollgate {
            daemon,
            port,
            spec: spec.clone(),
        })
    }

    /// Stops this process and starts a fresh one from the same spec (on a new port).
    pub fn restart(&mut self) -> Result<()> {
        self.daemon.stop();
        *self = Tollgate::start(&self.spec)?;
        Ok(())
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// One Tollgate arm of the comparison: its process for the plain cases and, when IAM cases
/// run, a twin with the same worker threads that requires IAM auth tokens.
#[derive(Debug)]
pub struct TollgateArm {
    /// Password and SCRAM logins.
    pub plain: Tollgate,
    /// iam_auth = required (local verifier); `None` when no IAM case is selected.
    pub iam: Option<Tollgate>,
}

impl TollgateArm {
    /// The process for a case: the IAM one for IAM cases.
    pub fn get(&self, iam: bool) -> Result<&Tollgate> {
        if iam {
            self.iam
                .as_ref()
                .context("an IAM case runs but no IAM Tollgate was started")
        } else {
            Ok(&self.plain)
        }
    }

    /// Fails, with its log, if either process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(iam) = &mut self.iam {
            iam.check_running()?;
        }
        self.plain.check_running()
    }
}

/// The process's pid, stop, liveness check and log (all of Tollgate's threads are in it).
impl std::ops::Deref for Tollgate {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Tollgate {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_is_always_on_the_command_line() {
        let mut spec = TollgateSpec {
            bin: "tollgate".into(),
            pg_port: 5432,
            pool_size: 20,
            worker_threads: 2,
            auth_file: "users.txt".into(),
            tls_cert: "cert.pem".into(),
            tls_key: "key.pem".into(),
            extra: vec!["--iam-auth".into(), "required".into()],
        };
        let line = |spec: &TollgateSpec| {
            spec.args(6432)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let two = line(&spec);
        assert!(two.contains("--listen 127.0.0.1:6432 --upstream postgres://127.0.0.1:5432/"));
        assert!(two.contains("--pool-size 20 --worker-threads 2 "), "{two}");
        assert!(two.ends_with(" --iam-auth required"), "{two}");
        spec.worker_threads = 1;
        assert!(line(&spec).contains("--worker-threads 1 "));
    }
}

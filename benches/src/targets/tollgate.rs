//! Tollgate as users run it: the release binary, a child process, configured by flags.

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

/// A running Tollgate, stopped on drop (SIGTERM: it drains and exits).
#[derive(Debug)]
pub struct Tollgate {
    /// The process.
    daemon: Daemon,
    /// Port on 127.0.0.1.
    port: u16,
}

impl Tollgate {
    /// Starts `bin` in front of PostgreSQL on `pg_port`, with the shared auth file and TLS
    /// certificate (TLS is offered, not required, like PgBouncer's `client_tls_sslmode = allow`).
    pub fn start(
        bin: &Path,
        files: &PoolerFiles,
        pg_port: u16,
        pool_size: u32,
    ) -> Result<Tollgate> {
        Self::start_with(bin, files, pg_port, pool_size, &files.auth_file, &[])
    }

    /// Like [`Tollgate::start`], with another auth file and further flags (the IAM settings).
    pub fn start_with(
        bin: &Path,
        files: &PoolerFiles,
        pg_port: u16,
        pool_size: u32,
        auth_file: &Path,
        extra: &[String],
    ) -> Result<Tollgate> {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--upstream")
            .arg(format!("postgres://127.0.0.1:{pg_port}/?sslmode=disable"))
            .arg("--auth-file")
            .arg(auth_file)
            .args(["--pool-mode", "transaction"])
            .arg("--pool-size")
            .arg(pool_size.to_string())
            .arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key)
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--log-level", LOG_FILTER])
            .args(extra);
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
        Ok(Tollgate { daemon, port })
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
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

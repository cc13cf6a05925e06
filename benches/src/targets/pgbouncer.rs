//! PgBouncer, configured like Tollgate: transaction mode, the same pool size, the same auth
//! file and certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use super::child::Daemon;
use super::files::{write_readable, PoolerFiles};
use super::free_port;

/// Where the Debian package `pgbouncer` installs it.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";

/// PgBouncer logs this once it listens.
const READY_LINE: &str = "process up";

/// How long PgBouncer may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The settings the harness chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBouncerConfig {
    /// Port on 127.0.0.1 clients connect to.
    pub listen_port: u16,
    /// PostgreSQL's port on 127.0.0.1.
    pub pg_port: u16,
    /// Backend connections per (database, user), like Tollgate's `--pool-size`.
    pub pool_size: u32,
    /// Client connections at once (the idle-clients scenario holds 10,000).
    pub max_client_conn: u32,
    /// The shared auth file.
    pub auth_file: PathBuf,
    /// TLS certificate and key offered to clients (`client_tls_sslmode = allow`).
    pub tls_cert: PathBuf,
    /// See `tls_cert`.
    pub tls_key: PathBuf,
}

/// The `pgbouncer.ini` text.
///
/// `auth_type = md5` because that is the one mode in which PgBouncer takes both kinds of
/// secret: it runs SCRAM for users whose auth-file entry is a SCRAM verifier (the bench user,
/// as Tollgate does) and md5 for users with an md5 hash (the idle user, as Tollgate does). With
/// a SCRAM verifier PgBouncer logs in to PostgreSQL by SCRAM pass-through, again like Tollgate.
pub fn config_text(cfg: &PgBouncerConfig) -> String {
    format!(
        "[databases]\n\
         * = host=127.0.0.1 port={pg_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen_port}\n\
         unix_socket_dir =\n\
         auth_type = md5\n\
         auth_file = {auth_file}\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = {max_client_conn}\n\
         client_tls_sslmode = allow\n\
         client_tls_cert_file = {cert}\n\
         client_tls_key_file = {key}\n\
         ignore_startup_parameters = extra_float_digits\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        pg_port = cfg.pg_port,
        listen_port = cfg.listen_port,
        auth_file = cfg.auth_file.display(),
        pool_size = cfg.pool_size,
        max_client_conn = cfg.max_client_conn,
        cert = cfg.tls_cert.display(),
        key = cfg.tls_key.display(),
    )
}

/// A running PgBouncer, stopped on drop.
#[derive(Debug)]
pub struct PgBouncer {
    /// The process.
    daemon: Daemon,
    /// Port on 127.0.0.1.
    port: u16,
}

impl PgBouncer {
    /// Writes `pgbouncer.ini` next to the shared files and starts PgBouncer in the foreground,
    /// as the unprivileged user when we are root (PgBouncer refuses root). It inherits the
    /// harness's raised open-files limit.
    pub fn start(
        files: &PoolerFiles,
        pg_port: u16,
        pool_size: u32,
        max_client_conn: u32,
    ) -> Result<PgBouncer> {
        if !Path::new(PGBOUNCER_BIN).is_file() {
            bail!("{PGBOUNCER_BIN} not found: install the Debian package pgbouncer");
        }
        let port = free_port()?;
        let cfg = PgBouncerConfig {
            listen_port: port,
            pg_port,
            pool_size,
            max_client_conn,
            auth_file: files.auth_file.clone(),
            tls_cert: files.cert.clone(),
            tls_key: files.key.clone(),
        };
        let ini = files.dir().join("pgbouncer.ini");
        write_readable(&ini, &config_text(&cfg))?;
        let mut cmd = Command::new(PGBOUNCER_BIN);
        cmd.arg(&ini).current_dir(files.dir());
        tollgate_localpg::as_server_user(&mut cmd);
        let daemon = Daemon::spawn("pgbouncer", &mut cmd, READY_LINE, START_TIMEOUT)?;
        Ok(PgBouncer { daemon, port })
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The process's pid, stop, liveness check and log (PgBouncer is one process, so its CPU and
/// RSS are all there).
impl std::ops::Deref for PgBouncer {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for PgBouncer {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_transaction_mode_without_unix_sockets() {
        let text = config_text(&PgBouncerConfig {
            listen_port: 40001,
            pg_port: 40000,
            pool_size: 20,
            max_client_conn: 20000,
            auth_file: PathBuf::from("/t/userlist.txt"),
            tls_cert: PathBuf::from("/t/server.crt"),
            tls_key: PathBuf::from("/t/server.key"),
        });
        for line in [
            "* = host=127.0.0.1 port=40000",
            "listen_port = 40001",
            "unix_socket_dir =",
            "pool_mode = transaction",
            "default_pool_size = 20",
            "max_client_conn = 20000",
            "auth_file = /t/userlist.txt",
            "client_tls_sslmode = allow",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}

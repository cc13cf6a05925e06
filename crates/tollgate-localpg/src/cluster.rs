//! A throwaway PostgreSQL server: start, use, stop, restart, and clean-up on drop.
//!
//! Replicas of a cluster, and promoting them, are in `replica.rs`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::binaries::{find_bin, find_sibling};
use crate::error::LocalPgError;
use crate::initdb;
use crate::layout::ClusterDir;
use crate::options::ClusterOptions;
use crate::port::free_port;
use crate::postmaster::Postmaster;
use crate::psql;
use crate::readiness::wait_until_ready;
use crate::server_log;

/// The address every cluster listens on.
const HOST: &str = "127.0.0.1";

/// How long fast shutdown may take before we SIGKILL the postmaster.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How many ports a start tries when another process takes the one we picked.
const PORT_ATTEMPTS: usize = 3;

/// A PostgreSQL server in its own temp dir, stopped and deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Temp dir with the data dir, log and certificates; `Drop` stops the server first.
    pub(crate) dir: ClusterDir,
    /// `<dir>/ca.crt` when TLS is on.
    pub(crate) ca_cert: Option<PathBuf>,
    /// TCP port on 127.0.0.1, kept across restarts.
    pub(crate) port: u16,
    /// The `postgres` superuser's password.
    pub(crate) password: String,
    /// The `postgres` binary from the same install as initdb.
    pub(crate) postgres_bin: PathBuf,
    /// The `psql` binary.
    pub(crate) psql_bin: PathBuf,
    /// The running server, `None` while stopped.
    pub(crate) postmaster: Option<Postmaster>,
    /// Started with `ClusterOptions::replication` (or a replica, which inherits it).
    pub(crate) replication: bool,
    /// For a replica: its `application_name` towards its primary.
    pub(crate) standby_name: Option<String>,
    /// For a primary: the replicas started from it, all named in synchronous_standby_names.
    /// A mutex because `start_replica` takes `&self`, like every other use of a running
    /// cluster.
    pub(crate) sync_standbys: Mutex<Vec<String>>,
}

impl Cluster {
    /// Creates a data dir with initdb and starts a server on a free port; blocks until it
    /// accepts connections (at most 30 s).
    pub fn start(opts: ClusterOptions) -> Result<Cluster, LocalPgError> {
        let began = Instant::now();
        let initdb_bin = find_bin("initdb")?;
        let postgres_bin = find_sibling(&initdb_bin, "postgres")?;
        let psql_bin = find_bin("psql")?;

        let dir = ClusterDir::create()?;
        let pwfile = dir.write_pwfile(&opts.superuser_password)?;
        initdb::run(&initdb_bin, dir.data(), &pwfile, dir.root())?;
        std::fs::remove_file(&pwfile)
            .map_err(LocalPgError::io(format!("remove {}", pwfile.display())))?;
        dir.configure(&opts)?;
        let ca_cert = if opts.tls {
            Some(dir.install_tls()?)
        } else {
            None
        };

        let mut cluster = Cluster {
            dir,
            ca_cert,
            port: 0,
            password: opts.superuser_password,
            postgres_bin,
            psql_bin,
            postmaster: None,
            replication: opts.replication,
            standby_name: None,
            sync_standbys: Mutex::default(),
        };
        cluster.start_on_free_port()?;
        tracing::info!(
            port = cluster.port,
            data_dir = %cluster.data_dir().display(),
            tls = opts.tls,
            replication = opts.replication,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "throwaway PostgreSQL is ready"
        );
        Ok(cluster)
    }

    /// Picks a port and starts the server, picking again if someone else binds it first.
    pub(crate) fn start_on_free_port(&mut self) -> Result<(), LocalPgError> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            match self.spawn_and_wait() {
                Err(LocalPgError::ServerExited { tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("Address already in use") =>
                {
                    tracing::warn!(
                        port = self.port,
                        "port was taken before PostgreSQL bound it; trying another"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Starts the postmaster on `self.port` and waits until it is ready; kills it on failure.
    fn spawn_and_wait(&mut self) -> Result<(), LocalPgError> {
        let mut postmaster = Postmaster::spawn(
            &self.postgres_bin,
            self.dir.data(),
            self.port,
            self.dir.log(),
            self.dir.root(),
        )?;
        if let Err(err) = wait_until_ready(&mut postmaster, self.port, self.dir.log()) {
            if let Err(stop_err) = postmaster.stop(STOP_GRACE) {
                tracing::warn!(%stop_err, "could not stop a PostgreSQL that failed to start");
            }
            return Err(err);
        }
        self.postmaster = Some(postmaster);
        Ok(())
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: always "127.0.0.1".
    pub fn host(&self) -> &str {
        HOST
    }

    /// The data directory (also the unix socket directory).
    pub fn data_dir(&self) -> &Path {
        self.dir.data()
    }

    /// PEM file of the CA that signed the server certificate; `None` without TLS.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The postmaster's process id while it runs (for tests that crash the server on purpose).
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Postmaster::pid)
    }

    /// A URL for the superuser: `postgres://postgres:PASS@127.0.0.1:PORT/postgres`.
    pub fn superuser_url(&self) -> String {
        format!(
            "postgres://postgres:{}@{HOST}:{}/postgres",
            percent_encode(&self.password),
            self.port
        )
    }

    /// Runs SQL as the superuser through psql (`-X -v ON_ERROR_STOP=1 -At`, `PGPASSWORD` env)
    /// and returns stdout without trailing newlines.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, LocalPgError> {
        if self.postmaster.is_none() {
            return Err(LocalPgError::Stopped { port: self.port });
        }
        let target = psql::Target {
            psql: &self.psql_bin,
            port: self.port,
            user: "postgres",
            password: &self.password,
            db,
        };
        psql::run(&target, sql)
    }

    /// Stops the server now (fast shutdown, SIGKILL after 10 s); does nothing if stopped.
    pub fn stop(&mut self) -> Result<(), LocalPgError> {
        let Some(mut postmaster) = self.postmaster.take() else {
            return Ok(());
        };
        postmaster.stop(STOP_GRACE)?;
        tracing::info!(port = self.port, "throwaway PostgreSQL stopped");
        Ok(())
    }

    /// Stops the server the way a crash would: immediate shutdown (`pg_ctl stop -m
    /// immediate`), no checkpoint, so the next start runs crash recovery; does nothing if
    /// stopped. [`Cluster::restart`] starts it again.
    pub fn stop_immediate(&mut self) -> Result<(), LocalPgError> {
        let Some(mut postmaster) = self.postmaster.take() else {
            return Ok(());
        };
        postmaster.stop_immediate(STOP_GRACE)?;
        tracing::info!(port = self.port, "throwaway PostgreSQL stopped immediately");
        Ok(())
    }

    /// Stops the server if it runs, then starts it again on the same port and data dir.
    pub fn restart(&mut self) -> Result<(), LocalPgError> {
        self.stop()?;
        self.spawn_and_wait()?;
        tracing::info!(port = self.port, "throwaway PostgreSQL restarted");
        Ok(())
    }

    /// Like [`Cluster::restart`] but with an immediate shutdown (`pg_ctl restart -m
    /// immediate`): a crash and recovery on the same port; blocks until it accepts
    /// connections again.
    pub fn restart_immediate(&mut self) -> Result<(), LocalPgError> {
        self.stop_immediate()?;
        self.spawn_and_wait()?;
        tracing::info!(
            port = self.port,
            "throwaway PostgreSQL restarted after an immediate shutdown"
        );
        Ok(())
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        server_log::tail(self.dir.log(), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::warn!(%err, "could not stop throwaway PostgreSQL");
        }
        if let Err(err) = self.dir.remove() {
            tracing::warn!(%err, "could not remove throwaway PostgreSQL's directory");
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the URL's userinfo.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

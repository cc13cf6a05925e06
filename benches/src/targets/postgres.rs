//! The PostgreSQL every run ends up at: a throwaway cluster with the pgbench tables.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use tollgate_localpg::{Cluster, ClusterOptions};

use crate::procstat;

/// The role and database pgbench uses; its password is stored as SCRAM, like a modern server's.
pub const BENCH_USER: &str = "bench";
/// Password of [`BENCH_USER`].
pub const BENCH_PASSWORD: &str = "bench-password";
/// Database holding the pgbench tables, owned by [`BENCH_USER`].
pub const BENCH_DB: &str = "bench";
/// The role the idle clients log in as: its password is stored as md5 so the harness can open
/// thousands of connections without running SCRAM's 4096 PBKDF2 rounds for each.
pub const IDLE_USER: &str = "idle";
/// Password of [`IDLE_USER`].
pub const IDLE_PASSWORD: &str = "idle-password";

/// Room for select-simple c=1000's direct clients, the five pools of 20 that stay connected
/// meanwhile (PgBouncer's, and each Tollgate arm's plain and IAM process) and the harness's
/// own psql. Each connection slot costs PostgreSQL a few tens of KiB of shared memory (its
/// PGPROC, lock and snapshot entries), so this adds tens of MiB, not a sizing concern.
pub const MAX_CONNECTIONS: u32 = 1200;

/// A running cluster with the bench role, database and (after [`Postgres::init_pgbench`]) data.
#[derive(Debug)]
pub struct Postgres {
    /// Stopped and removed on drop.
    cluster: Cluster,
}

impl Postgres {
    /// Starts a cluster (TLS on, so direct runs can use `sslmode=require` too) and creates the
    /// bench and idle roles.
    pub fn start() -> Result<Postgres> {
        let cluster = Cluster::start(ClusterOptions {
            tls: true,
            max_connections: MAX_CONNECTIONS,
            ..ClusterOptions::default()
        })
        .context("start a throwaway PostgreSQL (needs the Debian package postgresql)")?;
        cluster
            .create_user(BENCH_USER, BENCH_PASSWORD, false)
            .context("create the bench role")?;
        cluster
            .create_database(BENCH_DB, BENCH_USER)
            .context("create the bench database")?;
        cluster
            .create_user(IDLE_USER, IDLE_PASSWORD, true)
            .context("create the idle-clients role")?;
        Ok(Postgres { cluster })
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The postmaster's pid, the root of the process tree whose CPU time is measured.
    pub fn postmaster_pid(&self) -> Result<u32> {
        self.cluster
            .pid()
            .context("PostgreSQL is not running any more")
    }

    /// CPU seconds used so far by the postmaster and all its backends, living and exited.
    pub fn cpu_seconds(&self) -> Result<f64> {
        procstat::tree_cpu_seconds(self.postmaster_pid()?)
    }

    /// The stored secret of a role (SCRAM verifier or md5 hash), for the poolers' auth file.
    pub fn stored_secret(&self, user: &str) -> Result<String> {
        self.cluster
            .stored_secret(user)
            .with_context(|| format!("read the stored password of {user}"))
    }

    /// `SHOW server_version`.
    pub fn version(&self) -> Result<String> {
        self.cluster
            .psql("postgres", "SHOW server_version;")
            .context("ask PostgreSQL its version")
    }

    /// `pgbench -i -s scale` straight at PostgreSQL, as the bench user.
    pub fn init_pgbench(&self, pgbench: &Path, scale: u32) -> Result<()> {
        let out = Command::new(pgbench)
            .args(["-i", "-q", "-s", &scale.to_string()])
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string()])
            .args(["-U", BENCH_USER, BENCH_DB])
            .env("PGPASSWORD", BENCH_PASSWORD)
            .env("PGSSLMODE", "disable")
            .output()
            .with_context(|| format!("run {} -i", pgbench.display()))?;
        if !out.status.success() {
            bail!(
                "pgbench -i -s {scale} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(())
    }

    /// Puts the database back in the same state before a run: empties pgbench_history (which
    /// TPC-B appends to), vacuums the tables TPC-B updates, and checkpoints so no run pays for
    /// the previous one's dirty pages.
    pub fn reset_state(&self) -> Result<()> {
        self.cluster
            .psql(
                BENCH_DB,
                "TRUNCATE pgbench_history;\n\
                 VACUUM pgbench_branches, pgbench_tellers, pgbench_accounts;\n\
                 CHECKPOINT;\n",
            )
            .context("reset the pgbench tables between runs")
            .map(drop)
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        self.cluster.log_tail(20)
    }
}

//! Streaming replicas of a cluster, synchronous so a promotion loses no acknowledged commit,
//! and promoting one: the pieces of a writer-failover test.
//!
//! A replica is an ordinary [`Cluster`] in its own temp dir, copied from its primary with
//! pg_basebackup and started as a hot standby ("Log-Shipping Standby Servers" in the docs).
//! Both run and drop independently: a replica whose primary is gone still stops and cleans
//! up, and a promoted replica is just a primary.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::basebackup;
use crate::binaries::find_sibling;
use crate::cluster::Cluster;
use crate::conf;
use crate::error::LocalPgError;
use crate::layout::ClusterDir;
use crate::poll::{Poll, REPLICATION_TIMEOUT};
use crate::psql::quote_literal;

/// How long `pg_promote` may take to end recovery.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers replicas across the process, so every replica's name is its own.
static NEXT_STANDBY: AtomicU32 = AtomicU32::new(1);

impl Cluster {
    /// Starts a streaming replica of this cluster and makes it synchronous; blocks until
    /// the primary reports it `streaming` with `sync_state = 'sync'` (at most about 30 s
    /// after its start).
    ///
    /// Needs `ClusterOptions { replication: true, .. }`. Every replica of a primary is a
    /// synchronous standby (`FIRST n (every replica)`), so a commit returns only once each
    /// of them has flushed it and promoting any of them loses no acknowledged commit. The
    /// flip side: while a replica is down, commits on the primary wait for it.
    pub fn start_replica(&self) -> Result<Cluster, LocalPgError> {
        if !self.replication {
            return Err(LocalPgError::ReplicationOff { port: self.port });
        }
        if self.postmaster.is_none() {
            return Err(LocalPgError::Stopped { port: self.port });
        }
        let began = Instant::now();
        let name = format!(
            "localpg_replica_{}",
            NEXT_STANDBY.fetch_add(1, Ordering::Relaxed)
        );
        let dir = ClusterDir::create()?;
        let source = basebackup::Source {
            pg_basebackup: &find_sibling(&self.postgres_bin, "pg_basebackup")?,
            port: self.port,
            password: &self.password,
        };
        basebackup::run(&source, dir.data(), dir.root())?;
        let conninfo = conf::primary_conninfo(self.port, &self.password, &name);
        dir.configure_standby(&conf::standby_conf(&name, &conninfo, dir.data()))?;
        let ca_cert = match &self.ca_cert {
            Some(ca) => Some(dir.copy_ca(ca)?),
            None => None,
        };

        let mut replica = Cluster {
            dir,
            ca_cert,
            port: 0,
            password: self.password.clone(),
            postgres_bin: self.postgres_bin.clone(),
            psql_bin: self.psql_bin.clone(),
            postmaster: None,
            replication: true,
            standby_name: Some(name.clone()),
            sync_standbys: Default::default(),
        };
        replica.start_on_free_port()?;
        if !replica.is_in_recovery()? {
            return Err(LocalPgError::NotInRecovery {
                port: replica.port,
                found: "a primary (it did not enter recovery)".to_owned(),
            });
        }
        self.add_sync_standby(&name)?;
        tracing::info!(
            primary_port = self.port,
            port = replica.port,
            standby = %name,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "throwaway PostgreSQL replica is streaming synchronously"
        );
        Ok(replica)
    }

    /// Promotes this replica to a primary (`pg_promote`, which `pg_ctl promote` also
    /// triggers) and blocks until it has left recovery (at most 30 s).
    ///
    /// It keeps its port; its old primary may be stopped, crashed or still running (then
    /// there are two primaries, which is the caller's test to make).
    pub fn promote(&self) -> Result<(), LocalPgError> {
        if !self.is_in_recovery()? {
            return Err(LocalPgError::NotInRecovery {
                port: self.port,
                found: "a primary".to_owned(),
            });
        }
        // pg_promote(wait => true) itself polls until recovery has ended, with this bound.
        let sql = format!("SELECT pg_promote(true, {})", PROMOTE_TIMEOUT.as_secs());
        let promoted = self.psql("postgres", &sql)?;
        if promoted != "t" || self.is_in_recovery()? {
            return Err(LocalPgError::WaitTimeout {
                what: "promotion to end recovery".to_owned(),
                port: self.port,
                secs: PROMOTE_TIMEOUT.as_secs(),
                last: format!("pg_promote returned {promoted:?}"),
                tail: self.log_tail(20),
            });
        }
        tracing::info!(port = self.port, "throwaway PostgreSQL replica promoted");
        Ok(())
    }

    /// True while the server is a standby replaying WAL (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> Result<bool, LocalPgError> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// A replica's `application_name` (and `cluster_name`), as its primary's
    /// `pg_stat_replication` shows it; `None` for a cluster made by [`Cluster::start`].
    pub fn standby_name(&self) -> Option<&str> {
        self.standby_name.as_deref()
    }

    /// Names `name` a synchronous standby too and waits until it is one; on failure, takes
    /// it out again so commits on this primary do not wait for a replica that never came.
    fn add_sync_standby(&self, name: &str) -> Result<(), LocalPgError> {
        let names = {
            let mut standbys = self.lock_sync_standbys();
            standbys.push(name.to_owned());
            standbys.clone()
        };
        let result = self
            .set_sync_standbys(&names)
            .and_then(|()| self.wait_until_sync(name));
        if result.is_err() {
            let names = {
                let mut standbys = self.lock_sync_standbys();
                standbys.retain(|n| n != name);
                standbys.clone()
            };
            if let Err(err) = self.set_sync_standbys(&names) {
                tracing::warn!(%err, standby = name, "could not stop waiting for a failed replica");
            }
        }
        result
    }

    /// Sets synchronous_standby_names to `names` and reloads the configuration.
    fn set_sync_standbys(&self, names: &[String]) -> Result<(), LocalPgError> {
        let value = conf::synchronous_standby_names(names);
        let sql = format!(
            "ALTER SYSTEM SET synchronous_standby_names = {};\nSELECT pg_reload_conf();\n",
            quote_literal(&value)
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// Polls `pg_stat_replication` until `name` streams as a synchronous standby.
    ///
    /// A reload is asynchronous and the view shows sync_state as the querying backend's
    /// configuration sees it, so the first polls may still say `async`.
    fn wait_until_sync(&self, name: &str) -> Result<(), LocalPgError> {
        let sql = format!(
            "SELECT state || '/' || sync_state FROM pg_stat_replication \
             WHERE application_name = {}",
            quote_literal(name)
        );
        let what = format!("replica {name} to stream as a synchronous standby");
        self.poll_until(&what, REPLICATION_TIMEOUT, || {
            let seen = self.psql("postgres", &sql)?;
            Ok(if seen == "streaming/sync" {
                Poll::Done
            } else if seen.is_empty() {
                Poll::NotYet("not connected".to_owned())
            } else {
                Poll::NotYet(seen)
            })
        })
    }

    /// The list of synchronous standbys; a panic elsewhere cannot leave it half-changed, so
    /// a poisoned lock is still good.
    fn lock_sync_standbys(&self) -> MutexGuard<'_, Vec<String>> {
        self.sync_standbys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

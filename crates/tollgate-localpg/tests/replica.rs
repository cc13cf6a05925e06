//! Synchronous streaming replicas, crashes and promotion, on real PostgreSQL servers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tollgate_localpg::{Cluster, ClusterOptions, LocalPgError};

/// A primary ready for replicas, with a password that needs quoting in every layer it
/// passes through (postgresql.auto.conf around a libpq connection string).
fn primary() -> Cluster {
    Cluster::start(ClusterOptions {
        replication: true,
        superuser_password: r"it's a \secret".into(),
        ..ClusterOptions::default()
    })
    .unwrap()
}

/// `state/sync_state` of each standby the primary sees, sorted by name.
fn replication_states(primary: &Cluster) -> String {
    primary
        .psql(
            "postgres",
            "SELECT application_name || ' ' || state || '/' || sync_state \
             FROM pg_stat_replication ORDER BY application_name",
        )
        .unwrap()
}

#[test]
fn promoted_replica_has_every_acknowledged_commit_after_the_primary_crashes() {
    let mut primary = primary();
    let replica = primary.start_replica().unwrap();
    let other = primary.start_replica().unwrap();
    let (name, other_name) = (
        replica.standby_name().unwrap(),
        other.standby_name().unwrap(),
    );
    assert_ne!(name, other_name);
    assert_eq!(primary.standby_name(), None);
    assert!(!primary.is_in_recovery().unwrap());
    assert!(replica.is_in_recovery().unwrap());
    assert_eq!(
        replication_states(&primary),
        format!("{name} streaming/sync\n{other_name} streaming/sync")
    );
    assert_eq!(replica.psql("postgres", "SHOW cluster_name").unwrap(), name);

    let data = replica.data_dir().metadata().unwrap();
    assert_eq!(data.permissions().mode() & 0o777, 0o700);
    if tollgate_localpg::is_root() {
        assert_ne!(
            data.uid(),
            0,
            "the replica's data dir must belong to the server user"
        );
    }

    primary
        .psql(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        )
        .unwrap();
    replica
        .wait_for_value("postgres", "SELECT count(*) FROM t", "1")
        .unwrap();
    let err = replica
        .psql("postgres", "INSERT INTO t VALUES (0)")
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");

    // Each commit returned, so each replica has flushed it; then the primary crashes.
    for i in 2..=50 {
        primary
            .psql("postgres", &format!("INSERT INTO t VALUES ({i})"))
            .unwrap();
    }
    primary.stop_immediate().unwrap();
    assert_eq!(primary.pid(), None);

    replica.promote().unwrap();
    assert!(!replica.is_in_recovery().unwrap());
    assert_eq!(
        replica
            .psql("postgres", "SELECT count(*), sum(x) FROM t")
            .unwrap(),
        "50|1275"
    );
    // The primary's synchronous_standby_names did not come along: commits do not wait.
    replica
        .psql("postgres", "INSERT INTO t VALUES (51)")
        .unwrap();
    assert!(matches!(
        replica.promote(),
        Err(LocalPgError::NotInRecovery { .. })
    ));

    // A replica whose primary is gone, and a promoted one, still stop and clean up.
    for cluster in [other, replica] {
        let root = cluster.data_dir().parent().unwrap().to_owned();
        drop(cluster);
        assert!(!root.exists(), "{} still exists", root.display());
    }
}

#[test]
fn replicas_reconnect_after_the_primary_restarts_immediately() {
    let mut primary = primary();
    let mut replica = primary.start_replica().unwrap();
    let port = primary.port();
    let first_pid = primary.pid().unwrap();
    primary
        .psql(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        )
        .unwrap();

    primary.restart_immediate().unwrap();
    assert_eq!(primary.port(), port);
    assert_ne!(primary.pid(), Some(first_pid));
    assert!(primary
        .log_tail(50)
        .contains("database system was not properly shut down; automatic recovery in progress"));
    // This commit waits until the replica has reconnected and flushed it.
    primary
        .psql("postgres", "INSERT INTO t VALUES (2)")
        .unwrap();
    replica
        .wait_for_value("postgres", "SELECT count(*) FROM t", "2")
        .unwrap();

    // The replica crashes and comes back still a standby, and catches up.
    replica.restart_immediate().unwrap();
    assert!(replica.is_in_recovery().unwrap());
    primary
        .psql("postgres", "INSERT INTO t VALUES (3)")
        .unwrap();
    replica
        .wait_for_value("postgres", "SELECT count(*) FROM t", "3")
        .unwrap();
}

#[test]
fn restart_immediate_keeps_committed_rows() {
    let mut cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .psql(
            "postgres",
            "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7);",
        )
        .unwrap();
    cluster.restart_immediate().unwrap();
    assert_eq!(cluster.psql("postgres", "SELECT x FROM kept").unwrap(), "7");
    cluster.stop_immediate().unwrap();
    cluster.stop_immediate().unwrap();
    cluster.restart().unwrap();
    assert_eq!(cluster.psql("postgres", "SELECT x FROM kept").unwrap(), "7");
}

#[test]
fn replication_needs_the_option_and_only_standbys_promote() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let err = cluster.start_replica().unwrap_err();
    assert!(matches!(err, LocalPgError::ReplicationOff { .. }), "{err}");
    assert!(err.to_string().contains("replication: true"), "{err}");
    assert!(matches!(
        cluster.promote(),
        Err(LocalPgError::NotInRecovery { .. })
    ));
    assert!(!cluster.is_in_recovery().unwrap());
}

//! Aurora PostgreSQL topology from recorded `aurora_replica_status()` rows.
//!
//! Pure: the caller runs [`REPLICA_STATUS_QUERY`] on the cluster endpoint, decodes the rows into
//! [`ReplicaStatusRow`]s and hands them here. Keeping the I/O out lets the rules below (what
//! counts as stale, which row is the writer, which server_id may become a host name) be tested
//! on recorded output, since Aurora cannot be reached from CI.

use std::collections::btree_map::{BTreeMap, Entry};
use std::time::Duration;

/// The query Tollgate runs on the cluster endpoint to discover instances.
///
/// Columns are those of `aurora_replica_status` in the Aurora PostgreSQL functions reference.
/// Both numbers are cast to `float8` and the timestamp turned into epoch seconds in SQL, so the
/// caller decodes four plain columns and never parses a timestamp.
pub const REPLICA_STATUS_QUERY: &str = "SELECT server_id, session_id, \
     replica_lag_in_msec::float8 AS replica_lag_ms, \
     EXTRACT(EPOCH FROM last_update_timestamp)::float8 AS last_update_epoch_secs \
     FROM aurora_replica_status()";

/// How far behind the newest row a row may be before its instance is taken as removed.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);

/// The `session_id` Aurora reports for the writer ("aurora_replica_status", session_id).
const WRITER_SESSION_ID: &str = "MASTER_SESSION_ID";

/// A DNS label's limit (RFC 1035 §2.3.4); RDS instance identifiers are at most 63 too.
const MAX_LABEL: usize = 63;
/// Rejected server_ids are echoed into logs; keep an odd row from flooding them.
const MAX_ECHOED_ID: usize = 64;

const EMPTY_ID: &str = "server_id is empty";
const LONG_ID: &str = "server_id is longer than 63 characters, the DNS label limit";
const BAD_CHAR: &str = "server_id has a character other than an ASCII letter, digit or hyphen";
const EDGE_HYPHEN: &str = "server_id starts or ends with a hyphen";
const BAD_TIME: &str = "last_update_timestamp is not a finite number";
const STALE: &str =
    "row is older than the staleness bound behind the newest row (instance likely removed)";
const DUPLICATE: &str = "duplicate server_id; the newest row for it was kept";

/// One row as read from aurora_replica_status().
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatusRow {
    pub server_id: String,
    pub session_id: String,
    pub replica_lag_ms: Option<f64>,
    /// `None` is normal for the instance the query ran on: since Aurora PostgreSQL 13.9 its own
    /// row has a NULL last_update_timestamp ("aurora_replica_status").
    pub last_update_epoch_secs: Option<f64>,
}

/// An instance discovered from the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraInstance {
    /// Lowercased; DNS and RDS identifiers are case-insensitive.
    pub server_id: String,
    /// `<server_id>.<cluster suffix>`: the instance endpoint to dial.
    pub host: String,
    pub writer: bool,
    /// A reader's lag; always `None` for a writer, where Aurora reports NULL or 0.
    pub replica_lag_ms: Option<f64>,
}

/// What one round of discovery found.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Writer(s) first, then by server_id; one entry per server_id.
    pub instances: Vec<AuroraInstance>,
    /// Rows not used: the server_id as recorded (truncated) and why, for a log line or metric.
    pub rejected: Vec<(String, &'static str)>,
}

impl Discovery {
    /// The single writer, or None if there are zero or (mid-failover) two rows claiming it.
    ///
    /// Two claimants means Aurora is part way through a failover; guessing would send writes
    /// to an instance that may be about to become a reader, so the caller should retry.
    pub fn writer(&self) -> Option<&AuroraInstance> {
        let mut writers = self.instances.iter().filter(|i| i.writer);
        match (writers.next(), writers.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }
}

/// Why instance host names cannot be derived; both say how to configure around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuroraError {
    /// An IP, `localhost`, or a private DNS alias: nothing in the name says where instances live.
    #[error(
        "upstream host {host:?} is not an Amazon RDS endpoint (…rds.amazonaws.com or \
         …rds.amazonaws.com.cn), so Tollgate cannot derive the Aurora instance host names; \
         list the instances in the upstream config with `instance = [\"HOST:PORT\", ...]` instead"
    )]
    NotRdsHost { host: String },
    /// An RDS name, but not a cluster, reader, custom or instance endpoint (a global database
    /// or RDS Proxy endpoint, say), whose instance suffix is not in the name.
    #[error(
        "upstream host {host:?} is not an Aurora cluster, reader, custom or instance endpoint \
         (<name>.cluster-<id>.<region>.rds.amazonaws.com and the like), so Tollgate cannot \
         derive the Aurora instance host names; list the instances in the upstream config \
         with `instance = [\"HOST:PORT\", ...]` instead"
    )]
    UnrecognisedRdsHost { host: String },
}

/// True for SQLSTATE 42883 (undefined_function): `aurora_replica_status()` does not exist, so
/// this is not Aurora and the caller falls back to `pg_is_in_recovery()`.
pub fn is_undefined_function(sqlstate: &str) -> bool {
    sqlstate == "42883"
}

/// The cluster's instance endpoint suffix (e.g. "abc123.us-east-1.rds.amazonaws.com") from the
/// cluster/reader/custom/instance endpoint host.
///
/// Shapes are those in "Amazon Aurora endpoint connections" (Aurora User Guide): every
/// endpoint of a cluster shares `<id>.<region>.rds.amazonaws.com[.cn]`, and only the first two
/// labels differ.
pub fn cluster_suffix(host: &str) -> Result<String, AuroraError> {
    let trimmed = host.trim();
    let name = trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    let host = host.to_string();
    let (head, domain) = ["rds.amazonaws.com", "rds.amazonaws.com.cn"]
        .into_iter()
        .find_map(|domain| Some((name.strip_suffix(domain)?.strip_suffix('.')?, domain)))
        .ok_or_else(|| AuroraError::NotRdsHost { host: host.clone() })?;

    let labels: Vec<&str> = head.split('.').collect();
    let [first, id_label, region] = labels.as_slice() else {
        return Err(AuroraError::UnrecognisedRdsHost { host });
    };
    // Readers and custom endpoints first: "cluster-" is a prefix of both.
    let id = ["cluster-custom-", "cluster-ro-", "cluster-"]
        .iter()
        .find_map(|prefix| id_label.strip_prefix(prefix))
        .unwrap_or(id_label);
    // The cluster id is an AWS-generated alphanumeric string; a hyphen here means some other
    // endpoint kind (proxy-, global-, shardgrp-) whose instances are not `<id>` siblings.
    // With every label at most 63, `<server_id>.<id>.<region>.<domain>` stays within the
    // 253-character host name limit (RFC 1035 §2.3.4), so discover needs no length check.
    let id_ok = label_problem(id).is_none() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !id_ok || label_problem(region).is_some() || label_problem(first).is_some() {
        return Err(AuroraError::UnrecognisedRdsHost { host });
    }
    Ok(format!("{id}.{region}.{domain}"))
}

/// Instances from the rows: stale rows dropped, invalid server_ids dropped (reported in the
/// result), writer(s) marked. Sorted writer first then by server_id, deduplicated by server_id
/// (newest row wins). Uses [`DEFAULT_STALE_AFTER`].
pub fn discover(endpoint_host: &str, rows: &[ReplicaStatusRow]) -> Result<Discovery, AuroraError> {
    discover_with_stale_bound(endpoint_host, rows, DEFAULT_STALE_AFTER)
}

/// [`discover`] with the staleness bound given, for when it comes from config.
///
/// Aurora keeps a removed instance's row for a while without refreshing it
/// ("aurora_replica_status", last_update_timestamp). Age is measured against the newest row
/// rather than the local clock, so clock skew between Tollgate and Aurora cannot empty the list.
pub fn discover_with_stale_bound(
    endpoint_host: &str,
    rows: &[ReplicaStatusRow],
    stale_after: Duration,
) -> Result<Discovery, AuroraError> {
    let suffix = cluster_suffix(endpoint_host)?;
    let mut rejected = Vec::new();
    let mut reject = |id: &str, why| rejected.push((id.chars().take(MAX_ECHOED_ID).collect(), why));

    let mut valid = Vec::with_capacity(rows.len());
    for row in rows {
        let problem = label_problem(&row.server_id).or_else(|| {
            row.last_update_epoch_secs
                .is_some_and(|t| !t.is_finite())
                .then_some(BAD_TIME)
        });
        match problem {
            Some(why) => reject(&row.server_id, why),
            None => valid.push(row),
        }
    }

    let newest = valid
        .iter()
        .filter_map(|r| r.last_update_epoch_secs)
        .fold(f64::NEG_INFINITY, f64::max);
    let bound = stale_after.as_secs_f64();
    // Newest first (stable, so ties keep row order): the first row seen for an id is kept.
    valid.sort_by(|a, b| freshness(b).total_cmp(&freshness(a)));
    let mut by_id: BTreeMap<String, &ReplicaStatusRow> = BTreeMap::new();
    for row in valid {
        // NULL is the instance the query ran on, which is as fresh as it gets.
        let age = row.last_update_epoch_secs.map_or(0.0, |t| newest - t);
        if age > bound {
            reject(&row.server_id, STALE);
            continue;
        }
        let key = row.server_id.to_ascii_lowercase();
        match by_id.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(row);
            }
            Entry::Occupied(_) => reject(&row.server_id, DUPLICATE),
        }
    }

    let mut instances: Vec<AuroraInstance> = by_id
        .into_iter()
        .map(|(server_id, row)| {
            let writer = row.session_id == WRITER_SESSION_ID;
            let lag = row
                .replica_lag_ms
                .filter(|l| !writer && l.is_finite() && *l >= 0.0);
            AuroraInstance {
                host: format!("{server_id}.{suffix}"),
                server_id,
                writer,
                replica_lag_ms: lag,
            }
        })
        .collect();
    // BTreeMap already ordered them by server_id; a stable sort keeps that within each group.
    instances.sort_by_key(|i| !i.writer);
    Ok(Discovery {
        instances,
        rejected,
    })
}

/// Newer rows are larger; NULL (the instance the query ran on) is newest.
fn freshness(row: &ReplicaStatusRow) -> f64 {
    row.last_update_epoch_secs.unwrap_or(f64::INFINITY)
}

/// Why `label` may not be a DNS label (RFC 1035 §2.3.1 as relaxed by RFC 1123), if it may not.
/// This is the only gate between database text and a host name Tollgate will dial.
fn label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        Some(EMPTY_ID)
    } else if label.len() > MAX_LABEL {
        Some(LONG_ID)
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Some(BAD_CHAR)
    } else if label.starts_with('-') || label.ends_with('-') {
        Some(EDGE_HYPHEN)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLUSTER: &str = "mydb.cluster-abc123.us-east-1.rds.amazonaws.com";
    const SUFFIX: &str = "abc123.us-east-1.rds.amazonaws.com";
    const T: f64 = 1_714_560_000.25;
    const HINT: &str = "with `instance = [\"HOST:PORT\", ...]` instead";
    const READER: &str = "5e2b6d9a-3c1f-4e8b-9a0d-7f4c2b1e6a93";
    const I1: &str = "mydb-instance-1";
    const I2: &str = "mydb-instance-2";
    const I3: &str = "mydb-instance-3";

    fn row(id: &str, session: &str, lag: Option<f64>, ts: Option<f64>) -> ReplicaStatusRow {
        let (server_id, session_id) = (id.to_string(), session.to_string());
        ReplicaStatusRow {
            server_id,
            session_id,
            replica_lag_ms: lag,
            last_update_epoch_secs: ts,
        }
    }
    fn writer(id: &str, lag: Option<f64>, ts: Option<f64>) -> ReplicaStatusRow {
        row(id, WRITER_SESSION_ID, lag, ts)
    }
    fn reader(id: &str, lag: f64, ts: f64) -> ReplicaStatusRow {
        row(id, READER, Some(lag), Some(ts))
    }
    fn ids(d: &Discovery) -> Vec<&str> {
        d.instances.iter().map(|i| i.server_id.as_str()).collect()
    }
    fn reasons(d: &Discovery) -> Vec<&'static str> {
        d.rejected.iter().map(|(_, why)| *why).collect()
    }

    #[test]
    fn suffix_is_derived_from_every_endpoint_shape_in_any_case() {
        let cn = "xyz789.cn-north-1.rds.amazonaws.com.cn";
        for (host, want) in [
            (CLUSTER, SUFFIX),
            ("mydb.cluster-ro-abc123.us-east-1.rds.amazonaws.com", SUFFIX),
            (
                "x.cluster-custom-abc123.us-east-1.rds.amazonaws.com",
                SUFFIX,
            ),
            ("inst-1.abc123.us-east-1.rds.amazonaws.com", SUFFIX),
            ("mydb.cluster-ro-xyz789.cn-north-1.rds.amazonaws.com.cn", cn),
            ("MyDB.Cluster-ABC123.US-EAST-1.RDS.AmazonAWS.com.", SUFFIX),
            (" inst-1.abc123.us-east-1.rds.amazonaws.com. ", SUFFIX),
        ] {
            assert_eq!(cluster_suffix(host).as_deref(), Ok(want), "{host}");
        }
    }

    #[test]
    fn non_rds_hosts_are_refused_with_the_instance_list_hint() {
        let lookalike = "mydb.cluster-abc123.us-east-1.rds.amazonaws.com.evil.com";
        for host in [
            "10.0.3.7",
            "::1",
            "localhost",
            "",
            "db.internal.example",
            lookalike,
        ] {
            let err = cluster_suffix(host).unwrap_err();
            assert_eq!(err, AuroraError::NotRdsHost { host: host.into() });
            assert!(err.to_string().contains(HINT), "{err}");
        }
        let rows = [writer(I1, None, None)];
        let refused = discover("localhost", &rows);
        assert!(matches!(refused, Err(AuroraError::NotRdsHost { .. })));
    }

    #[test]
    fn rds_names_of_other_shapes_are_refused_with_the_instance_list_hint() {
        let long_id = format!("db.cluster-{}.us-east-1.rds.amazonaws.com", "a".repeat(64));
        for host in [
            "us-east-1.rds.amazonaws.com",
            "mydb.global-abc123.global.rds.amazonaws.com",
            "myproxy.proxy-abc123.us-east-1.rds.amazonaws.com",
            "a.b.cluster-abc123.us-east-1.rds.amazonaws.com",
            "mydb.cluster-.us-east-1.rds.amazonaws.com",
            "my_db.cluster-abc123.us-east-1.rds.amazonaws.com",
            &long_id,
        ] {
            let err = cluster_suffix(host).unwrap_err();
            assert_eq!(err, AuroraError::UnrecognisedRdsHost { host: host.into() });
            assert!(err.to_string().contains(HINT), "{err}");
        }
    }

    #[test]
    fn three_instance_cluster_lists_writer_first_then_readers_by_id() {
        // As recorded on the cluster endpoint of a three-instance Aurora PostgreSQL 15 cluster.
        let rows = [
            reader(I3, 17.0, T - 0.4),
            writer(I1, None, None),
            reader(I2, 12.5, T),
        ];
        let d = discover(CLUSTER, &rows).unwrap();
        assert_eq!(ids(&d), [I1, I2, I3]);
        assert!(d.rejected.is_empty());
        assert_eq!(d.writer().unwrap().host, format!("{I1}.{SUFFIX}"));
        let lags: Vec<_> = d.instances.iter().map(|i| i.replica_lag_ms).collect();
        assert_eq!(lags, [None, Some(12.5), Some(17.0)]);
    }

    #[test]
    fn two_writer_rows_mid_failover_give_no_single_writer() {
        let rows = [
            writer(I1, None, Some(T - 1.0)),
            writer(I2, Some(0.0), Some(T)),
            reader(I3, 20.0, T),
        ];
        let d = discover(CLUSTER, &rows).unwrap();
        assert_eq!(d.writer(), None);
        assert_eq!(ids(&d), [I1, I2, I3]);
        assert_eq!(
            d.instances[1].replica_lag_ms, None,
            "a writer's 0 is not a lag"
        );
        assert_eq!(discover(CLUSTER, &[]).unwrap().writer(), None);
    }

    #[test]
    fn stale_row_of_a_deleted_instance_is_dropped() {
        let rows = [
            writer(I1, None, None),
            reader(I2, 9.0, T),
            reader("mydb-deleted", 9.0, T - 301.0),
            reader("mydb-at-bound", 9.0, T - 300.0),
        ];
        let d = discover(CLUSTER, &rows).unwrap();
        assert_eq!(ids(&d), [I1, "mydb-at-bound", I2]);
        assert_eq!(d.rejected, [("mydb-deleted".to_string(), STALE)]);
        let tight = discover_with_stale_bound(CLUSTER, &rows, Duration::from_secs(10)).unwrap();
        assert_eq!(ids(&tight), [I1, I2]);
    }

    #[test]
    fn malicious_server_ids_are_rejected_and_never_become_hosts() {
        let bad = [
            "a.evil.com",
            "x/../",
            "",
            "-x",
            "x-",
            "inst 1",
            "i\n",
            "іnst",
            "a:5432",
        ];
        let mut rows: Vec<_> = bad.iter().map(|id| reader(id, 1.0, T)).collect();
        rows.push(reader(&"a".repeat(64), 1.0, T));
        rows.push(writer("ok-1", None, Some(T)));
        let d = discover(CLUSTER, &rows).unwrap();
        assert_eq!(ids(&d), ["ok-1"]);
        let (c, h) = (BAD_CHAR, EDGE_HYPHEN);
        assert_eq!(reasons(&d), [c, c, EMPTY_ID, h, h, c, c, c, c, LONG_ID]);
        assert_eq!(d.rejected[0].0, "a.evil.com");
    }

    #[test]
    fn longest_labels_still_build_a_host_within_253_characters() {
        let l63 = "a".repeat(63);
        let host = format!("{l63}.cluster-{l63}.{l63}.rds.amazonaws.com.cn");
        let d = discover(&host, &[reader(&l63, 1.0, T)]).unwrap();
        assert!(d.instances.len() == 1 && d.instances.iter().all(|i| i.host.len() <= 253));
    }

    #[test]
    fn non_finite_timestamps_are_rejected_and_do_not_make_others_stale() {
        let inf = row("future", "r", None, Some(f64::INFINITY));
        let nan = row("nan", "r", None, Some(f64::NAN));
        let d = discover(CLUSTER, &[inf, nan, writer("w", None, Some(T))]).unwrap();
        assert_eq!(ids(&d), ["w"]);
        assert_eq!(reasons(&d), [BAD_TIME, BAD_TIME]);
    }

    #[test]
    fn duplicate_server_ids_keep_the_newest_row_case_insensitively() {
        let rows = [
            writer("Mydb-Instance-2", None, Some(T - 30.0)),
            reader(I2, 4.0, T),
            writer(I1, None, Some(T - 2.0)),
            writer(I1, None, None),
            writer(I1, None, Some(T)),
        ];
        let d = discover(CLUSTER, &rows).unwrap();
        assert_eq!(ids(&d), [I1, I2]);
        assert_eq!(d.writer().unwrap().server_id, I1);
        assert_eq!(d.instances[1].replica_lag_ms, Some(4.0));
        assert_eq!(reasons(&d), [DUPLICATE; 3]);
    }

    #[test]
    fn undefined_function_sqlstate_means_not_aurora() {
        assert!(is_undefined_function("42883"));
        assert!(!is_undefined_function("42501") && !is_undefined_function(""));
    }

    proptest! {
        #[test]
        fn any_input_yields_valid_hosts_or_errors_without_panicking(
            host in ".{0,80}",
            rows in prop::collection::vec(
                (".{0,70}", ".{0,20}", any::<Option<f64>>(), any::<Option<f64>>()), 0..8),
        ) {
            let _ = cluster_suffix(&host);
            let rows: Vec<_> = rows.into_iter().map(|(id, s, l, t)| row(&id, &s, l, t)).collect();
            let d = discover(CLUSTER, &rows).unwrap();
            prop_assert_eq!(d.instances.len() + d.rejected.len(), rows.len());
            for i in &d.instances {
                prop_assert!(label_problem(&i.server_id).is_none());
                prop_assert_eq!(&i.host, &format!("{}.{SUFFIX}", i.server_id));
            }
        }
    }
}

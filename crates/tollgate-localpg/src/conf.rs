//! The text we write into a cluster's `postgresql.conf`, `postgresql.auto.conf` and
//! `pg_hba.conf`.

use std::fmt::Write as _;
use std::path::Path;

use crate::options::ClusterOptions;

/// File names (relative to the data dir) of the server certificate and key.
pub(crate) const SERVER_CERT_FILE: &str = "server.crt";
/// See [`SERVER_CERT_FILE`].
pub(crate) const SERVER_KEY_FILE: &str = "server.key";

/// Settings appended to initdb's `postgresql.conf`; later lines override earlier ones.
///
/// The port is not here: it is passed as `postgres -p` so a start can retry on another one.
pub(crate) fn postgresql_conf(opts: &ClusterOptions, data_dir: &Path) -> String {
    let mut settings: Vec<(&str, String)> = vec![
        ("listen_addresses", "127.0.0.1".to_owned()),
        (
            "unix_socket_directories",
            data_dir.to_string_lossy().into_owned(),
        ),
        ("max_connections", opts.max_connections.to_string()),
        ("password_encryption", "scram-sha-256".to_owned()),
        // A throwaway cluster never needs to survive a power cut; this makes initdb-sized
        // writes and checkpoints cheap.
        ("fsync", "off".to_owned()),
    ];
    if opts.tls {
        settings.push(("ssl", "on".to_owned()));
        settings.push(("ssl_cert_file", SERVER_CERT_FILE.to_owned()));
        settings.push(("ssl_key_file", SERVER_KEY_FILE.to_owned()));
    }
    if opts.replication {
        // Most of these are PostgreSQL 15's defaults; spelled out because a failover test
        // depends on them. synchronous_standby_names stays empty until a replica streams
        // (Cluster::start_replica): with it set and no standby connected, commits would hang.
        settings.extend([
            ("wal_level", "replica".to_owned()),
            ("max_wal_senders", "10".to_owned()),
            ("hot_standby", "on".to_owned()),
            ("synchronous_commit", "on".to_owned()),
            // Streaming replicas use no slot; this keeps WAL a briefly lagging one still needs.
            ("wal_keep_size", "64MB".to_owned()),
        ]);
    }
    let extra = opts
        .extra_conf
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let mut out = String::from("\n# Added by tollgate-localpg.\n");
    write_settings(
        &mut out,
        settings.iter().map(|(k, v)| (*k, v.as_str())).chain(extra),
    );
    out
}

/// Settings appended to a replica's `postgresql.auto.conf` after pg_basebackup copied the
/// primary's data dir (and with it the primary's configuration files).
///
/// `postgresql.auto.conf` is read last, so these beat whatever the primary had: its socket
/// directory (which is inside the primary's temp dir) and its synchronous_standby_names
/// (which would make the replica's commits hang once it is promoted and has no standby).
pub(crate) fn standby_conf(name: &str, primary_conninfo: &str, data_dir: &Path) -> String {
    let data_dir = data_dir.to_string_lossy();
    let settings = [
        ("unix_socket_directories", &*data_dir),
        ("cluster_name", name),
        ("primary_conninfo", primary_conninfo),
        ("synchronous_standby_names", ""),
        // After the primary restarts, reconnect within a blink rather than the default 5 s,
        // so a synchronous commit on it does not wait that long.
        ("wal_retrieve_retry_interval", "100ms"),
    ];
    let mut out = String::from("\n# Added by tollgate-localpg for a streaming replica.\n");
    write_settings(&mut out, settings.into_iter());
    out
}

/// The libpq connection string a replica streams from its primary with; `name` becomes its
/// `application_name`, which is what synchronous_standby_names matches.
pub(crate) fn primary_conninfo(primary_port: u16, password: &str, name: &str) -> String {
    format!(
        "host=127.0.0.1 port={primary_port} user=postgres password={} application_name={}",
        conninfo_quote(password),
        conninfo_quote(name)
    )
}

/// A synchronous_standby_names value that makes every listed standby synchronous, so each
/// of them has every acknowledged commit ("Multiple Synchronous Standbys" in the docs).
pub(crate) fn synchronous_standby_names(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    format!("FIRST {} ({})", names.len(), quoted.join(", "))
}

/// The whole `pg_hba.conf`: password login over loopback, SCRAM or md5 by how the role's
/// password is stored; with `replication`, also replication connections for the superuser.
///
/// The method is `md5` because for a role whose password is stored as SCRAM the server then
/// runs SCRAM anyway ("Password Authentication" in the docs), while a role stored as md5 gets
/// md5. A regex user column (`/^md5_`) would say the same more narrowly but needs
/// PostgreSQL 16, and Debian 12 ships 15. The `all` database keyword does not cover
/// replication connections ("The pg_hba.conf File"), hence the separate line.
pub(crate) fn pg_hba_conf(replication: bool) -> String {
    let mut out = String::from(
        "# Written by tollgate-localpg.\n\
         # TYPE  DATABASE     USER      ADDRESS       METHOD\n\
         local   all          all                     md5\n\
         host    all          all       127.0.0.1/32  md5\n",
    );
    if replication {
        out.push_str("host    replication  postgres  127.0.0.1/32  md5\n");
    }
    out
}

/// Writes `key = 'value'` lines; every configuration value may be single-quoted, whatever
/// its type.
fn write_settings<'a>(out: &mut String, settings: impl Iterator<Item = (&'a str, &'a str)>) {
    for (key, value) in settings {
        let _ = writeln!(out, "{key} = {}", conf_quote(value));
    }
}

/// Quotes a configuration file value: the parser turns `''` into `'` and also reads
/// backslash escapes, so both are escaped.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a libpq connection string value ("Connection Strings" in the libpq docs).
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_listens_on_loopback_and_quotes_extra_values() {
        let opts = ClusterOptions {
            tls: true,
            max_connections: 7,
            extra_conf: vec![("application_name".into(), "it's".into())],
            ..ClusterOptions::default()
        };
        let conf = postgresql_conf(&opts, Path::new("/tmp/x/data"));
        assert!(conf.contains("listen_addresses = '127.0.0.1'\n"));
        assert!(conf.contains("unix_socket_directories = '/tmp/x/data'\n"));
        assert!(conf.contains("max_connections = '7'\n"));
        assert!(conf.contains("ssl = 'on'\n"));
        assert!(conf.ends_with("application_name = 'it''s'\n"));
    }

    #[test]
    fn conf_without_tls_or_replication_leaves_them_at_defaults() {
        let conf = postgresql_conf(&ClusterOptions::default(), Path::new("/d"));
        assert!(!conf.contains("ssl"));
        assert!(!conf.contains("wal_level"));
        assert!(!conf.contains("synchronous"));
    }

    #[test]
    fn replication_conf_streams_but_names_no_standby_yet() {
        let opts = ClusterOptions {
            replication: true,
            ..ClusterOptions::default()
        };
        let conf = postgresql_conf(&opts, Path::new("/d"));
        assert!(conf.contains("wal_level = 'replica'\n"));
        assert!(conf.contains("synchronous_commit = 'on'\n"));
        assert!(!conf.contains("synchronous_standby_names"));
    }

    #[test]
    fn backslashes_and_quotes_survive_both_quotings() {
        assert_eq!(conf_quote(r"a\b'c"), r"'a\\b''c'");
        assert_eq!(conninfo_quote(r"a\b'c"), r"'a\\b\'c'");
        let conninfo = primary_conninfo(5555, "p w", "replica_1");
        assert_eq!(
            conninfo,
            "host=127.0.0.1 port=5555 user=postgres password='p w' application_name='replica_1'"
        );
    }

    #[test]
    fn standby_conf_overrides_what_the_primary_had() {
        let conf = standby_conf("r1", "host=x", Path::new("/r/data"));
        assert!(conf.contains("unix_socket_directories = '/r/data'\n"));
        assert!(conf.contains("cluster_name = 'r1'\n"));
        assert!(conf.contains("primary_conninfo = 'host=x'\n"));
        assert!(conf.contains("synchronous_standby_names = ''\n"));
    }

    #[test]
    fn every_listed_standby_is_synchronous() {
        assert_eq!(synchronous_standby_names(&[]), "");
        let names = vec!["a".to_owned(), "b\"c".to_owned()];
        assert_eq!(
            synchronous_standby_names(&names),
            "FIRST 2 (\"a\", \"b\"\"c\")"
        );
    }

    #[test]
    fn hba_allows_only_password_logins_over_loopback() {
        for replication in [false, true] {
            let hba = pg_hba_conf(replication);
            let rules: Vec<&str> = hba.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(rules.len(), if replication { 3 } else { 2 });
            assert!(rules.iter().all(|l| l.ends_with(" md5")));
            assert!(rules[1..].iter().all(|l| l.contains("127.0.0.1/32")));
            assert_eq!(
                rules.iter().any(|l| l.contains(" replication ")),
                replication
            );
        }
    }
}

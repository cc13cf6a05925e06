//! The text we write into a fresh cluster's `postgresql.conf` and `pg_hba.conf`.

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
    let mut out = String::from("\n# Added by tollgate-localpg.\n");
    for (key, value) in settings.iter().map(|(k, v)| (*k, v.as_str())).chain(
        opts.extra_conf
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    ) {
        // Every postgresql.conf value may be single-quoted, whatever its type.
        let _ = writeln!(out, "{key} = '{}'", value.replace('\'', "''"));
    }
    out
}

/// The whole `pg_hba.conf`: password login over loopback, SCRAM or md5 by how the role's
/// password is stored.
///
/// The method is `md5` because for a role whose password is stored as SCRAM the server then
/// runs SCRAM anyway ("Password Authentication" in the docs), while a role stored as md5 gets
/// md5. A regex user column (`/^md5_`) would say the same more narrowly but needs
/// PostgreSQL 16, and Debian 12 ships 15.
pub(crate) fn pg_hba_conf() -> &'static str {
    "# Written by tollgate-localpg.\n\
     # TYPE  DATABASE  USER  ADDRESS       METHOD\n\
     local   all       all                 md5\n\
     host    all       all   127.0.0.1/32  md5\n"
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
    fn conf_without_tls_leaves_ssl_off() {
        let conf = postgresql_conf(&ClusterOptions::default(), Path::new("/d"));
        assert!(!conf.contains("ssl"));
    }

    #[test]
    fn hba_allows_only_password_logins_over_loopback() {
        let rules: Vec<&str> = pg_hba_conf()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|l| l.ends_with(" md5")));
        assert!(rules[1].contains("127.0.0.1/32"));
    }
}

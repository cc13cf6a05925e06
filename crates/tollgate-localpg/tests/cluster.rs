//! Starts real throwaway clusters from the installed PostgreSQL binaries.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use tollgate_localpg::{find_bin, Cluster, ClusterOptions, LocalPgError};

/// Runs `SELECT current_user` as `user` over TCP with `conninfo` extras; returns trimmed stdout.
fn login_as(cluster: &Cluster, user: &str, password: &str, extra: &str) -> Result<String, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres {extra}",
        cluster.port()
    );
    let out = Command::new(find_bin("psql").unwrap())
        .args(["-X", "-At", "-c", "SELECT current_user", &conninfo])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The authentication request code the server opens with for `user` (10 = SASL, 5 = MD5).
fn auth_request_for(cluster: &Cluster, user: &str) -> u32 {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for part in ["user", user, "database", "postgres", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut packet = (body.len() as u32 + 4).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    let mut conn = TcpStream::connect((cluster.host(), cluster.port())).unwrap();
    conn.write_all(&packet).unwrap();
    let mut reply = [0u8; 9];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], b'R');
    u32::from_be_bytes([reply[5], reply[6], reply[7], reply[8]])
}

#[test]
fn plain_cluster_runs_sql_creates_roles_and_reports_secrets() {
    let cluster = Cluster::start(ClusterOptions {
        max_connections: 42,
        superuser_password: "pa ss@word".into(),
        extra_conf: vec![("cluster_name".into(), "it's localpg".into())],
        ..ClusterOptions::default()
    })
    .unwrap();
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_ne!(cluster.port(), 5432);
    assert_eq!(cluster.ca_cert_path(), None);
    assert_eq!(
        cluster.superuser_url(),
        format!(
            "postgres://postgres:pa%20ss%40word@127.0.0.1:{}/postgres",
            cluster.port()
        )
    );
    assert_eq!(cluster.psql("postgres", "SELECT 1 + 1").unwrap(), "2");
    assert_eq!(
        cluster.psql("postgres", "SHOW max_connections").unwrap(),
        "42"
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW cluster_name").unwrap(),
        "it's localpg"
    );
    assert_eq!(cluster.psql("postgres", "SHOW ssl").unwrap(), "off");

    cluster.create_user("app", "app-secret", false).unwrap();
    cluster.create_database("appdb", "app").unwrap();
    cluster
        .create_user("md5_legacy", "old-secret", true)
        .unwrap();
    let owner = cluster
        .psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'",
        )
        .unwrap();
    assert_eq!(owner, "app");
    cluster
        .psql(
            "appdb",
            "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (2);",
        )
        .unwrap();
    assert_eq!(
        cluster.psql("appdb", "SELECT x FROM t ORDER BY x").unwrap(),
        "1\n2"
    );

    assert!(cluster
        .stored_secret("app")
        .unwrap()
        .starts_with("SCRAM-SHA-256$"));
    let md5 = cluster.stored_secret("md5_legacy").unwrap();
    assert!(md5.starts_with("md5") && md5.len() == 35, "{md5}");
    assert!(matches!(
        cluster.stored_secret("nobody_here"),
        Err(LocalPgError::NoStoredSecret { .. })
    ));

    // Each role logs in with the mechanism its stored secret allows.
    assert_eq!(
        auth_request_for(&cluster, "app"),
        10,
        "SCRAM for a SCRAM-stored role"
    );
    assert_eq!(
        auth_request_for(&cluster, "md5_legacy"),
        5,
        "md5 for an md5-stored role"
    );
    assert_eq!(login_as(&cluster, "app", "app-secret", "").unwrap(), "app");
    assert_eq!(
        login_as(&cluster, "md5_legacy", "old-secret", "").unwrap(),
        "md5_legacy"
    );
    assert!(login_as(&cluster, "app", "wrong", "").is_err());

    let err = cluster
        .psql("postgres", "SELECT * FROM missing_table")
        .unwrap_err();
    assert!(err.to_string().contains("missing_table"), "{err}");
}

#[test]
fn tls_cluster_verifies_against_its_generated_ca() {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .unwrap();
    assert_eq!(cluster.psql("postgres", "SHOW ssl").unwrap(), "on");
    let ca = cluster.ca_cert_path().unwrap().to_owned();
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    for host in ["host=localhost hostaddr=127.0.0.1", "host=127.0.0.1"] {
        let extra = format!("{host} sslmode=verify-full sslrootcert={}", ca.display());
        let conninfo_user = login_as(&cluster, "postgres", "postgres", &extra);
        assert_eq!(
            conninfo_user.unwrap(),
            "postgres",
            "verify-full with {host}"
        );
    }
    let ssl_in_use = cluster
        .psql(
            "postgres",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .unwrap();
    assert_eq!(ssl_in_use, "t");
}

#[test]
fn restart_keeps_port_and_data_and_stop_is_idempotent() {
    let mut cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let port = cluster.port();
    cluster
        .psql(
            "postgres",
            "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7);",
        )
        .unwrap();

    cluster.stop().unwrap();
    cluster.stop().unwrap();
    assert_eq!(cluster.pid(), None);
    assert!(matches!(
        cluster.psql("postgres", "SELECT 1"),
        Err(LocalPgError::Stopped { .. })
    ));

    cluster.restart().unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql("postgres", "SELECT x FROM kept").unwrap(), "7");
    let first_pid = cluster.pid().unwrap();
    cluster.restart().unwrap();
    assert_ne!(cluster.pid(), Some(first_pid));
    assert_eq!(cluster.psql("postgres", "SELECT x FROM kept").unwrap(), "7");
    assert!(cluster
        .log_tail(50)
        .contains("database system is ready to accept connections"));
}

#[test]
fn drop_stops_the_server_and_removes_the_dir() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    let pid = libc::pid_t::try_from(cluster.pid().unwrap()).unwrap();
    let root = cluster.data_dir().parent().unwrap().to_owned();
    assert!(root.join("data/PG_VERSION").is_file());
    if tollgate_localpg::is_root() {
        // initdb and postgres refuse root, so the server must run as someone else.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            !uid_line.split_whitespace().skip(1).any(|id| id == "0"),
            "{uid_line}"
        );
    }
    // An open client connection must not hold up shutdown.
    let _ = cluster.psql("postgres", "SELECT 1").unwrap();
    drop(cluster);
    assert!(!root.exists(), "{} still exists", root.display());
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ESRCH)
    );
}

#[test]
fn a_server_that_cannot_start_reports_its_log() {
    let err = Cluster::start(ClusterOptions {
        extra_conf: vec![("no_such_setting_tollgate".into(), "1".into())],
        ..ClusterOptions::default()
    })
    .unwrap_err();
    assert!(matches!(err, LocalPgError::ServerExited { .. }), "{err}");
    assert!(
        err.to_string().contains("no_such_setting_tollgate"),
        "{err}"
    );
}

//! The `tollgate` binary as an operator meets it: config validation at start, settings from
//! flags, file and environment, and a graceful drain on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tollgate_localpg::{Cluster, ClusterOptions};

fn tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn stderr_of(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run tollgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_value_exits_nonzero_naming_the_key() {
    let (ok, err) = stderr_of(tollgate().args([
        "--upstream",
        "postgres://127.0.0.1:1",
        "--auth-file",
        "/nonexistent",
        "--pool-mode",
        "statement",
    ]));
    assert!(!ok);
    assert!(err.contains("`pool_mode`"), "{err}");
}

#[test]
fn missing_upstream_says_how_to_start() {
    let (ok, err) = stderr_of(tollgate().args(["--auth-file", "x"]));
    assert!(!ok);
    assert!(
        err.contains("`upstream`") && err.contains("quickstart"),
        "{err}"
    );
}

#[test]
fn unknown_key_in_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        "upstream = \"postgres://127.0.0.1:5432\"\npool_sise = 3\n",
    )
    .unwrap();
    let (ok, err) = stderr_of(tollgate().arg("--config").arg(&path));
    assert!(!ok);
    assert!(err.contains("pool_sise"), "{err}");
}

#[test]
fn environment_variables_are_settings_too() {
    let (ok, err) = stderr_of(
        tollgate()
            .env("TOLLGATE_UPSTREAM", "postgres://127.0.0.1:5432")
            .env("TOLLGATE_AUTH_FILE", "x")
            .env("TOLLGATE_POOL_SIZE", "0"),
    );
    assert!(!ok);
    assert!(err.contains("`pool_size`"), "{err}");
}

#[test]
fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        "upstream = \"postgres://127.0.0.1:5432\"\nauth_file = \"x\"\npool_mode = \"statement\"\n",
    )
    .unwrap();
    // The file's bad pool_mode is overridden by the flag; the run then fails later, on the
    // missing auth file, which proves validation passed.
    let (ok, err) = stderr_of(
        tollgate()
            .arg("--config")
            .arg(&path)
            .args(["--pool-mode", "session"]),
    );
    assert!(!ok);
    assert!(
        !err.contains("pool_mode") && err.contains("auth file"),
        "{err}"
    );
}

/// The IAM flags are the contract scripts rely on: `--iam-endpoint` repeats, and each flag
/// reaches validation (and start-up) under its config key.
#[test]
fn iam_flags_are_settings_and_errors_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "\"app\" \"pw\"\n").unwrap();
    let base_with = |cmd: &mut Command, (auth, verifier, endpoint): (&str, &str, &str)| {
        cmd.args(["--upstream", "postgres://127.0.0.1:5432/?sslmode=require"])
            .arg("--auth-file")
            .arg(&users)
            .args(["--admin-listen", "off", "--listen", "127.0.0.1:0"])
            .args(["--iam-auth", auth, "--iam-verifier", verifier])
            .args(["--iam-region", "us-east-1"])
            .args(["--iam-endpoint", "tollgate.example.com:6432"])
            .args(["--iam-endpoint", endpoint]);
    };
    let base = |cmd: &mut Command| {
        base_with(cmd, ("required", "local", "tollgate.internal:6432"));
    };
    // IAM needs TLS to clients.
    let mut cmd = tollgate();
    base(&mut cmd);
    cmd.args(["--iam-keys-file", "/nonexistent/keys.toml"]);
    let (ok, err) = stderr_of(&mut cmd);
    assert!(!ok);
    assert!(err.contains("`iam_auth`") && err.contains("TLS"), "{err}");
    // With TLS configured, validation passes and start-up reads the keys file, and says so.
    let mut cmd = tollgate();
    base(&mut cmd);
    cmd.args(["--iam-keys-file", "/nonexistent/keys.toml"])
        .args([
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ]);
    let (ok, err) = stderr_of(&mut cmd);
    assert!(!ok);
    assert!(
        err.contains("iam_keys_file /nonexistent/keys.toml"),
        "{err}"
    );
    // The keys can come from the environment instead; their text is never repeated.
    let mut cmd = tollgate();
    base(&mut cmd);
    cmd.env(
        "TOLLGATE_IAM_KEYS",
        "[[key]]\naccess_key_id = \"AKIA1\"\nsecret_access_key = \"hunter2\" oops\n",
    )
    .args([
        "--tls-cert",
        "/nonexistent/c.pem",
        "--tls-key",
        "/nonexistent/k.pem",
    ]);
    let (ok, err) = stderr_of(&mut cmd);
    assert!(!ok);
    assert!(
        err.contains("iam_keys") && !err.contains("hunter2"),
        "{err}"
    );
    // Bad values name their key.
    for (values, key) in [
        (
            ("sometimes", "local", "tollgate.internal:6432"),
            "`iam_auth`",
        ),
        (
            ("required", "aws", "tollgate.internal:6432"),
            "`iam_verifier`",
        ),
        (("required", "local", "no-port"), "`iam_endpoint`"),
    ] {
        let mut cmd = tollgate();
        base_with(&mut cmd, values);
        let (ok, err) = stderr_of(&mut cmd);
        assert!(!ok);
        assert!(err.contains(key), "{values:?}: {err}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn sigterm_lets_the_open_transaction_finish_then_exits() {
    let pg = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default()))
        .await
        .unwrap()
        .unwrap();
    pg.create_user("app", "pw", false).unwrap();
    pg.create_database("app", "app").unwrap();
    pg.psql("app", "CREATE TABLE t(x int); ALTER TABLE t OWNER TO app")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "\"app\" \"pw\"\n").unwrap();
    let port = free_port();
    let mut child = tollgate()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--upstream",
            &format!("postgres://127.0.0.1:{}/?sslmode=disable", pg.port()),
        ])
        .arg("--auth-file")
        .arg(&users)
        .args(["--shutdown-timeout", "20"])
        // Any free port: the default 127.0.0.1:9930 may be in use on a shared test machine.
        .args(["--admin-listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "accepting" log line (the event), keeping the rest of the log for later.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tollgate did not start");
        if line.contains("accepting connections") {
            break;
        }
    }
    let url = format!("host=127.0.0.1 port={port} user=app password=pw dbname=app");
    let (busy, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (idle, idle_conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let idle_task = tokio::spawn(idle_conn);
    idle.simple_query("SELECT 1").await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // The idle client is told and closed: its connection future ends with an error.
    let idle_end = tokio::time::timeout(Duration::from_secs(10), idle_task)
        .await
        .unwrap()
        .unwrap();
    let err = idle_end.unwrap_err();
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("57P01"),
        "{err}"
    );
    // The transaction in progress may finish.
    busy.batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    drop(busy);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM t").unwrap().trim(),
        "2"
    );
}

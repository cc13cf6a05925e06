//! `tollgate status` as an operator runs it against a live Tollgate, and the admin listener's
//! start-up rules (off means off; a taken address stops the start naming admin_listen).

use std::net::SocketAddr;
use std::process::Output;
use tollgate::config::{Config, RawConfig};
use tollgate::Server;
use tollgate_localpg::{Cluster, ClusterOptions};

/// `tollgate <args>` with no TOLLGATE_* settings inherited from the environment.
async fn tollgate(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().await.unwrap()
}

fn config(dir: &std::path::Path, upstream: String, admin_listen: &str) -> Config {
    let users = dir.join("users.txt");
    std::fs::write(&users, "\"app\" \"pw\"\n").unwrap();
    Config::validate(RawConfig {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(upstream),
        auth_file: Some(users),
        admin_listen: Some(admin_listen.into()),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_running_tollgates_pools_and_ratios() {
    let pg = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default()))
        .await
        .unwrap()
        .unwrap();
    pg.create_user("app", "pw", false).unwrap();
    pg.create_database("app", "app").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("postgres://127.0.0.1:{}/?sslmode=disable", pg.port());
    let server = Server::bind(config(dir.path(), upstream, "127.0.0.1:0"))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let admin = server.admin_addr().expect("admin listener on");
    let shutdown = server.shutdown_handle();
    let running = tokio::spawn(server.run());

    let url = format!(
        "host=127.0.0.1 port={} user=app password=pw dbname=app",
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();
    // A pinned client keeps its backend, so what the screen shows does not depend on when
    // the pool takes a released backend back.
    client.simple_query("SET search_path = x").await.unwrap();

    let out = tollgate(&["status", "--admin", &admin.to_string()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].ends_with(&format!(" at {admin}")), "{stdout}");
    assert_eq!(
        lines[1],
        format!("database 127.0.0.1:{}: available", pg.port())
    );
    assert_eq!(
        lines[2],
        "clients 1 on 1 database connections: multiplexing ratio 1.0"
    );
    assert!(
        lines[3].starts_with("database connections: 1 borrowed of ")
            && lines[3].ends_with(", 0 in transaction, 1 pinned"),
        "{stdout}"
    );
    assert_eq!(lines[4], "pins since start: session_set 1");
    let pool: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("app/app "))
        .unwrap_or_else(|| panic!("no app/app row in\n{stdout}"))
        .split_whitespace()
        .collect();
    // clients, waiting, borrowed/open/max, utilisation (1 of pool_size 20), in-tx, pinned
    assert_eq!(pool[1..7], ["1", "0", "1/1/20", "5%", "0", "1"], "{stdout}");

    drop(client);
    shutdown.shutdown();
    running.await.unwrap();
}

#[tokio::test]
async fn status_without_a_running_tollgate_exits_nonzero_saying_so() {
    // A port nothing listens on: bound, then released.
    let free: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = tollgate(&["status", "--admin", &free.to_string()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Tollgate's admin listener at {free}")),
        "{stderr}"
    );
    let out = tollgate(&["--admin-listen", "off", "status"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_listen is off"));
}

#[tokio::test]
async fn admin_listen_off_binds_nothing_and_a_taken_address_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // Binding does not reach the database; any upstream will do.
    let upstream = || "postgres://127.0.0.1:1/?sslmode=disable".to_string();
    let off = Server::bind(config(dir.path(), upstream(), "off"))
        .await
        .unwrap();
    assert_eq!(off.admin_addr(), None);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let err = match Server::bind(config(dir.path(), upstream(), &at.to_string())).await {
        Ok(_) => panic!("{at} is taken"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("admin_listen") && err.contains(&at.to_string()),
        "{err}"
    );
}

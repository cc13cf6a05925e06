//! `tollgate quickstart`: Tollgate's main job on an embedded default. Starts a throwaway
//! PostgreSQL from the installed binaries, puts Tollgate in front of it with TLS on both sides,
//! runs a short pgbench through it with progress, prints how to connect, and serves until
//! Ctrl-C, then cleans up.

use crate::config::{Config, RawConfig};
use crate::server::Server;
use anyhow::Context;
use std::io::Write;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tollgate_localpg::{certs, find_bin, Cluster, ClusterOptions};

/// Options of the quickstart command.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// Seconds of pgbench load to run through Tollgate.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// pgbench clients (more than the pool size, to show multiplexing).
    #[arg(long, default_value_t = 50)]
    pub clients: u32,
    /// Exit after the benchmark instead of serving until Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
    /// Any Tollgate setting (--listen, --pool-size, ...), over the quickstart's defaults.
    #[command(flatten)]
    pub settings: RawConfig,
}

fn say(msg: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{msg}");
    let _ = out.flush();
}

/// Runs the quickstart; `cli` carries any flags the user set (listen address, pool size, ...).
pub async fn run(args: QuickstartArgs, cli: RawConfig) -> anyhow::Result<()> {
    say("[1/4] starting a throwaway PostgreSQL (with TLS) from the installed binaries ...");
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(ClusterOptions {
            tls: true,
            ..Default::default()
        })
    })
    .await
    .context("PostgreSQL start task failed")??;
    let password = format!("qs-{:016x}", rand::random::<u64>());
    cluster.create_user("app", &password, false)?;
    cluster.create_database("app", "app")?;
    say(&format!(
        "      PostgreSQL {} is up on 127.0.0.1:{} (data in {})",
        server_version(&cluster),
        cluster.port(),
        cluster.data_dir().display()
    ));

    let dir = tempfile::Builder::new()
        .prefix("tollgate-quickstart-")
        .tempdir()?;
    let auth_file = dir.path().join("userlist.txt");
    std::fs::write(&auth_file, format!("\"app\" \"{password}\"\n"))?;
    let tls = certs::generate(&["localhost", "127.0.0.1"])?;
    let (cert, key) = (
        dir.path().join("tollgate.crt"),
        dir.path().join("tollgate.key"),
    );
    std::fs::write(&cert, format!("{}{}", tls.cert_pem, tls.ca_pem))?;
    std::fs::write(&key, &tls.key_pem)?;
    std::fs::write(dir.path().join("ca.crt"), &tls.ca_pem)?;
    let ca = cluster
        .ca_cert_path()
        .context("the throwaway cluster has no CA certificate")?;
    let defaults = RawConfig {
        upstream: Some(format!(
            "postgres://127.0.0.1:{}/?sslmode=verify-full&sslrootcert={}",
            cluster.port(),
            ca.display()
        )),
        auth_file: Some(auth_file),
        tls_cert: Some(cert),
        tls_key: Some(key),
        pool_mode: Some("transaction".into()),
        pool_size: Some(10),
        ..Default::default()
    };
    let config = Config::validate(args.settings.clone().over(cli).over(defaults))?;
    let (pool_size, mode) = (config.pool_size, config.pool_mode.as_str());
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let admin = server.admin_addr();
    let shutdown = server.shutdown_handle();
    let serving = tokio::spawn(server.run());
    let url = format!(
        "postgresql://app:{password}@{}:{}/app?sslmode=require",
        addr.ip(),
        addr.port()
    );
    say(&format!("[2/4] Tollgate listens on {addr} ({mode} pooling, pool_size {pool_size}, TLS on both sides)"));

    say("[3/4] initialising pgbench tables through Tollgate ...");
    pgbench(&url, &["-i", "-s", "1", "-q"], false).await?;
    say(&format!("[4/4] running pgbench through Tollgate: {} clients for {} s over {pool_size} database connections", args.clients, args.seconds));
    let summary = pgbench(
        &url,
        &[
            "-c",
            &args.clients.to_string(),
            "-j",
            "2",
            "-T",
            &args.seconds.to_string(),
            "-P",
            "1",
            "-S",
        ],
        true,
    )
    .await?;
    say("");
    for line in summary
        .lines()
        .filter(|l| l.starts_with("tps") || l.contains("latency average") || l.contains("failed"))
    {
        say(&format!("      {line}"));
    }
    let backends = cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
        )
        .unwrap_or_default();
    say(&format!(
        "      database connections from Tollgate now: {}",
        backends.trim()
    ));
    say("");
    say("Connect your own client through Tollgate:");
    say(&format!("  psql \"{url}\""));
    say(&format!("  pgbench -S -c 20 -T 10 \"{url}\""));
    if let Some(admin) = admin {
        say("Watch the pool:");
        say(&format!(
            "  tollgate status --admin {admin}        (or curl http://{admin}/metrics)"
        ));
    }
    if args.no_wait {
        shutdown.shutdown();
    } else {
        say("Serving until Ctrl-C ...");
        let _ = tokio::signal::ctrl_c().await;
        say("stopping: draining clients, then removing the throwaway database");
        shutdown.shutdown();
    }
    let _ = serving.await;
    drop(cluster);
    drop(dir);
    Ok(())
}

fn server_version(cluster: &Cluster) -> String {
    cluster
        .psql("postgres", "SHOW server_version")
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Runs pgbench against `url`, echoing progress lines (stderr) as they come; returns stdout.
async fn pgbench(url: &str, args: &[&str], show_progress: bool) -> anyhow::Result<String> {
    let bin = find_bin("pgbench")?;
    let mut child = tokio::process::Command::new(&bin)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stderr = child.stderr.take().context("pgbench stderr")?;
    let echo = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if show_progress && line.starts_with("progress:") {
                say(&format!("      {line}"));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let out = child.wait_with_output().await?;
    let err = echo.await.unwrap_or_default();
    if !out.status.success() {
        anyhow::bail!("pgbench failed ({}):\n{}", out.status, err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

//! The end-to-end harness: a real PostgreSQL (from the installed binaries, via
//! `tollgate-localpg`), a Tollgate in front of it in this process, and helpers to drive real
//! clients (tokio-postgres, psql, pgbench) through it.

pub mod raw;

pub mod connected;
pub mod http;
pub mod iam;
pub mod moto;
pub mod pg_tls;
pub mod pgbench;
pub mod poll;

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use tempfile::TempDir;
use tollgate::config::{Config, ConfigSource, RawConfig};
use tollgate::shared::Shared;
use tollgate::{Server, ShutdownHandle};
use tollgate_localpg::{certs, find_bin, Cluster, ClusterOptions};

/// The main test user: SCRAM on the server, plaintext in Tollgate's auth file.
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "app-secret";
/// A user whose auth-file entry is the server's own SCRAM verifier (no plaintext anywhere).
pub const SCRAM_USER: &str = "scram_user";
/// Its password (known only to the client).
pub const SCRAM_PASSWORD: &str = "scram-secret";
/// A user stored as md5 on the server and in the auth file.
pub const MD5_USER: &str = "md5_user";
/// Its password.
pub const MD5_PASSWORD: &str = "md5-secret";

/// How to set up one test environment.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// "session" or "transaction".
    pub pool_mode: &'static str,
    /// Per-pool size.
    pub pool_size: u32,
    /// Tollgate offers TLS to clients.
    pub client_tls: bool,
    /// Tollgate connects to PostgreSQL over TLS (verify-full).
    pub backend_tls: bool,
    /// Any further settings.
    pub extra: RawConfig,
    /// The server's max_connections.
    pub max_connections: u32,
    /// Write the settings to a TOML file and start from it, as `tollgate -c FILE` does, so
    /// RELOAD and SIGHUP can re-read it ([`Env::config_file`], [`Env::edit_config`]).
    pub config_file: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            pool_mode: "transaction",
            pool_size: 10,
            client_tls: false,
            backend_tls: false,
            extra: RawConfig::default(),
            max_connections: 100,
            config_file: false,
        }
    }
}

/// A running PostgreSQL with Tollgate in front.
pub struct Env {
    /// The database server.
    pub pg: Cluster,
    /// Temp files (auth file, certs).
    pub dir: TempDir,
    /// Where Tollgate listens.
    pub addr: SocketAddr,
    /// Tollgate's shared state (stats, pools).
    pub shared: Arc<Shared>,
    /// Client-side TLS CA (PEM path) when client_tls.
    pub client_ca: Option<PathBuf>,
    /// The TOML config file Tollgate started from, when `EnvOptions::config_file`.
    pub config_file: Option<PathBuf>,
    /// Where the admin HTTP listener is (`None` when a test turned admin_listen off).
    admin_addr: Option<SocketAddr>,
    /// Where the read-only endpoint listens, when reader_listen is set.
    reader_addr: Option<SocketAddr>,
    shutdown: ShutdownHandle,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a throwaway PostgreSQL with the three test users and a `app` database.
pub async fn start_postgres(tls: bool, max_connections: u32) -> Result<Cluster> {
    start_postgres_with(tls, max_connections, false).await
}

/// The same, set up as a primary for synchronous streaming replicas when `replication`
/// (`Cluster::start_replica`).
pub async fn start_postgres_with(
    tls: bool,
    max_connections: u32,
    replication: bool,
) -> Result<Cluster> {
    let pg = tokio::task::spawn_blocking(move || {
        Cluster::start(ClusterOptions {
            tls,
            max_connections,
            replication,
            ..Default::default()
        })
    })
    .await??;
    pg.create_user(APP_USER, APP_PASSWORD, false)?;
    pg.create_user(SCRAM_USER, SCRAM_PASSWORD, false)?;
    pg.create_user(MD5_USER, MD5_PASSWORD, true)?;
    pg.create_database("app", APP_USER)?;
    pg.psql("app", "GRANT ALL ON SCHEMA public TO PUBLIC")?;
    Ok(pg)
}

impl Env {
    /// Starts PostgreSQL and Tollgate.
    pub async fn start(opts: EnvOptions) -> Result<Env> {
        let pg = start_postgres(opts.backend_tls, opts.max_connections).await?;
        Env::in_front_of(pg, opts).await
    }

    /// Starts Tollgate in front of an existing cluster.
    pub async fn in_front_of(pg: Cluster, opts: EnvOptions) -> Result<Env> {
        let dir = tempfile::Builder::new().prefix("tollgate-e2e-").tempdir()?;
        let auth_file = dir.path().join("userlist.txt");
        let scram = pg.stored_secret(SCRAM_USER)?;
        let md5 = pg.stored_secret(MD5_USER)?;
        std::fs::write(
            &auth_file,
            format!("\"{APP_USER}\" \"{APP_PASSWORD}\"\n\"{SCRAM_USER}\" \"{scram}\"\n\"{MD5_USER}\" \"{md5}\"\n"),
        )?;
        let upstream = match pg.ca_cert_path() {
            Some(ca) if opts.backend_tls => {
                format!(
                    "postgres://localhost:{}/?sslmode=verify-full&sslrootcert={}",
                    pg.port(),
                    ca.display()
                )
            }
            _ => format!("postgres://127.0.0.1:{}/?sslmode=disable", pg.port()),
        };
        let mut client_ca = None;
        let mut raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            upstream: Some(upstream),
            auth_file: Some(auth_file),
            pool_mode: Some(opts.pool_mode.into()),
            pool_size: Some(opts.pool_size),
            // A free port, so tests can run side by side; a test's `extra` may override it.
            admin_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        if opts.client_tls {
            let tls = certs::generate(&["localhost", "127.0.0.1"])?;
            let (cert, key, ca) = (
                dir.path().join("server.crt"),
                dir.path().join("server.key"),
                dir.path().join("ca.crt"),
            );
            std::fs::write(&cert, &tls.cert_pem)?;
            std::fs::write(&key, &tls.key_pem)?;
            std::fs::write(&ca, &tls.ca_pem)?;
            raw.tls_cert = Some(cert);
            raw.tls_key = Some(key);
            client_ca = Some(ca);
        }
        let raw = opts.extra.clone().over(raw);
        let (config, source) = if opts.config_file {
            let path = dir.path().join("tollgate.toml");
            std::fs::write(&path, raw.to_toml()?)?;
            let source = ConfigSource {
                cli: RawConfig::default(),
                file: Some(path),
            };
            (source.load()?, Some(source))
        } else {
            (Config::validate(raw)?, None)
        };
        let config_file = source.as_ref().and_then(|s| s.file.clone());
        let server = Server::bind(config).await?;
        if let Some(source) = source {
            server.set_config_source(source);
        }
        let addr = server.local_addr()?;
        let admin_addr = server.admin_addr();
        let reader_addr = server.reader_addr();
        let shared = server.shared();
        let shutdown = server.shutdown_handle();
        let task = tokio::spawn(server.run());
        Ok(Env {
            pg,
            dir,
            addr,
            shared,
            client_ca,
            config_file,
            admin_addr,
            reader_addr,
            shutdown,
            task: Some(task),
        })
    }

    /// A libpq URL for Tollgate (sslmode=require when Tollgate offers TLS, else disable).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        let ssl = if self.client_ca.is_some() {
            "require"
        } else {
            "disable"
        };
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}?sslmode={ssl}",
            self.addr.port()
        )
    }

    /// The read-only endpoint's address, if reader_listen is set.
    pub fn reader_addr(&self) -> Option<SocketAddr> {
        self.reader_addr
    }

    /// The admin HTTP listener's address, if admin_listen is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// `GET path` from the admin HTTP listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self
            .admin_addr
            .context("admin_listen is off in this test")?;
        http::get(addr, path).await
    }

    /// Rewrites the config file (`EnvOptions::config_file`) with `change` applied; Tollgate
    /// sees it at the next RELOAD or SIGHUP.
    pub fn edit_config(&self, change: impl FnOnce(&mut RawConfig)) -> Result<()> {
        let path = self
            .config_file
            .as_ref()
            .context("this Env has no config file (EnvOptions::config_file)")?;
        let mut raw = RawConfig::from_toml(&std::fs::read_to_string(path)?)?;
        change(&mut raw);
        std::fs::write(path, raw.to_toml()?)?;
        Ok(())
    }

    /// The app user's URL.
    pub fn app_url(&self) -> String {
        self.url(APP_USER, APP_PASSWORD, "app")
    }

    /// A libpq URL straight to PostgreSQL (bypassing Tollgate).
    pub fn direct_url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.pg.port()
        )
    }

    /// tokio-postgres config for Tollgate (plain TCP).
    pub fn pg_config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname("app");
        c
    }

    /// Connects with tokio-postgres through Tollgate as `user` (plain TCP).
    pub async fn connect_as(&self, user: &str, password: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = self
            .pg_config(user, password)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Connects as the app user.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        self.connect_as(APP_USER, APP_PASSWORD).await
    }

    /// Connects straight to PostgreSQL as the superuser.
    pub async fn connect_direct_superuser(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(
            &self.direct_url("postgres", "postgres", "postgres"),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Backend connections `user` has open on the server right now (from pg_stat_activity).
    pub fn backend_count(&self, user: &str) -> Result<usize> {
        let out = self.pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"),
        )?;
        Ok(out.trim().parse()?)
    }

    /// Runs psql against `url` with `args`, returning its output (stdin closed).
    pub async fn psql(&self, url: &str, args: &[&str]) -> Result<Output> {
        run_tool(
            "psql",
            &[&["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url], args].concat(),
            None,
        )
        .await
    }

    /// Runs psql with `input` on stdin.
    pub async fn psql_stdin(&self, url: &str, args: &[&str], input: Vec<u8>) -> Result<Output> {
        run_tool(
            "psql",
            &[&["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url], args].concat(),
            Some(input),
        )
        .await
    }

    /// Runs pgbench against `url`.
    pub async fn pgbench(&self, url: &str, args: &[&str]) -> Result<Output> {
        run_tool("pgbench", &[args, &[url]].concat(), None).await
    }

    /// Stops Tollgate and waits for it to drain.
    pub async fn stop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

/// Runs an installed PostgreSQL client tool.
pub async fn run_tool(name: &str, args: &[&str], stdin: Option<Vec<u8>>) -> Result<Output> {
    run_tool_env(name, args, stdin, &[]).await
}

/// Runs an installed PostgreSQL client tool with extra environment variables (`PGPASSWORD`
/// carrying an IAM auth token, say).
pub async fn run_tool_env(
    name: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
    env: &[(&str, &str)],
) -> Result<Output> {
    let bin = find_bin(name)?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args)
        .envs(env.iter().copied())
        .env("PGCONNECT_TIMEOUT", "30")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().context("stdin")?;
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    Ok(child.wait_with_output().await?)
}

/// Fails with the tool's stderr unless it exited 0; returns stdout.
pub fn success(out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The SQLSTATE of a tokio-postgres error, if it carried one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

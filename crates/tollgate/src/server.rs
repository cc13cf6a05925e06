//! The listener: binds, accepts, bounds the number of clients, starts one session task per
//! connection, and drains on shutdown. Everything a session needs is in
//! [`Shared`](crate::shared::Shared).

use crate::auth::Authenticator;
use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::Stats;
use crate::pool::{PoolSettings, Pools};
use crate::shared::{shutdown_started, Shared};
use crate::topology::Endpoint;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The admin HTTP listener's address is taken or not ours.
    #[error("cannot listen on admin_listen {addr}: {error}; choose a free address or set admin_listen = \"off\"")]
    AdminBind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The auth file could not be read.
    #[error("auth file: {0}")]
    AuthFile(#[from] tollgate_auth::AuthFileError),
    /// TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The IAM trusted keys or policy could not be loaded.
    #[error("IAM auth: {0}")]
    Iam(#[from] crate::iam::IamLoadError),
    /// Tollgate's own AWS identity could not be set up (backend_iam).
    #[error("backend_iam: {0}")]
    BackendIam(#[from] crate::backend::BackendError),
    /// A Secrets Manager secret is missing, unreadable or malformed (auth_secret).
    #[error("{0}")]
    Secrets(#[from] crate::secrets::SecretError),
    /// The health checks cannot log in (health_check_user).
    #[error("health checks: {0}")]
    HealthCheck(String),
    /// The reader listener's address is taken or not ours.
    #[error("cannot listen on reader_listen {addr}: {source}")]
    ReaderBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Starts shutdown when triggered.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Stop accepting; let running transactions finish up to shutdown_timeout.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

/// A bound, not yet running proxy.
pub struct Server {
    listener: TcpListener,
    /// The read-only endpoint (reader_listen), if configured.
    reader: Option<TcpListener>,
    /// How the health checks log in, when they run.
    probe: Option<crate::topology::check::ProbeSettings>,
    /// The admin HTTP listener (`/metrics`, `/healthz`, `/readyz`), unless admin_listen is off.
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
    shutdown_tx: Arc<watch::Sender<bool>>,
}

impl Server {
    /// Loads the auth file and TLS material and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let auth = Authenticator::load(config.auth_file.as_deref())?;
        let iam = crate::iam::ClientIam::new(&config.iam)?;
        log_iam(&config, &iam);
        let backend_iam = match &config.iam.backend_region {
            Some(region) => {
                let source =
                    Arc::new(crate::backend::IamTokenSource::from_default_chain(region).await?);
                tokio::spawn(announce_backend_iam(source.clone()));
                Some(source)
            }
            None => None,
        };
        if !config.secrets.names.is_empty() {
            let store = crate::secrets::SecretStore::load(
                &config.secrets.names,
                config.secrets.refresh_interval,
            )
            .await?;
            for user in store.users() {
                let name = store
                    .entry(user)
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                let conflict = |why: &str| crate::secrets::SecretError::Conflict {
                    name: name.clone(),
                    user: user.to_string(),
                    why: why.to_string(),
                };
                if auth.secret(user).is_some() {
                    return Err(conflict(
                        "is also in the auth file; keep one source of its password",
                    )
                    .into());
                }
                if backend_iam.is_some() {
                    return Err(conflict("would log in to the database both with the secret and with backend_iam; turn one off").into());
                }
            }
            auth.set_secrets(store);
        }
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::server::ClientTls::new(
                crate::tls::server::acceptor(&files.cert, &files.key)?,
            )),
            None => None,
        };
        let topology = crate::topology::Topology::new(&config);
        let connector = Arc::new(Connector::new(
            config.upstream.clone(),
            config.server_connect_timeout,
            config.init_query.clone(),
            topology.clone(),
        )?);
        let probe = match &config.topology.health_check_user {
            Some(user) => Some(crate::topology::check::ProbeSettings {
                user: user.clone(),
                database: config.topology.health_check_database.clone(),
                login: check_login(&auth, user, backend_iam.as_ref())?,
                sslmode: config.upstream.sslmode,
                tls: connector.tls(),
                timeout: config.server_connect_timeout.min(
                    config
                        .topology
                        .health_check_interval
                        .max(Duration::from_secs(1))
                        * 3,
                ),
            }),
            None => None,
        };
        let settings = PoolSettings::from(&config);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let reader = match config.topology.reader_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::ReaderBind { addr, source })?,
            ),
            None => None,
        };
        let admin = match config.admin_listen {
            Some(addr) => Some(
                crate::admin::http::bind(addr)
                    .await
                    .map_err(|error| StartError::AdminBind { addr, error })?,
            ),
            None => None,
        };
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            live: std::sync::RwLock::new(Arc::new(config.clone())),
            reload: Default::default(),
            pools: Pools::new(settings, connector),
            topology,
            auth,
            iam,
            backend_iam,
            cancels: CancelRegistry::default(),
            clients: Default::default(),
            tls,
            stats: Stats::default(),
            shutdown: rx,
            config,
        });
        Ok(Server {
            listener,
            reader,
            probe,
            admin,
            shared,
            shutdown_tx: Arc::new(tx),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The read-only endpoint's address, if it is on (useful with port 0).
    pub fn reader_addr(&self) -> Option<SocketAddr> {
        self.reader.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The admin HTTP listener's address, if it is on (useful with port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle that starts shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// The shared state (for tests and the admin side).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Remembers where the configuration came from, so SIGHUP and RELOAD can read it again.
    /// Without it a reload re-reads only the auth file.
    pub fn set_config_source(&self, source: crate::config::ConfigSource) {
        self.shared.reload.set_source(source);
    }

    /// Accepts clients until shutdown, then waits for sessions to end (up to shutdown_timeout).
    pub async fn run(self) {
        let shared = self.shared;
        let max = shared.config.max_client_conn;
        let limit = Arc::new(Semaphore::new(max));
        tracing::info!(listen = %shared.config.listen, upstream = %shared.pools.connector().addr(),
            pool_mode = shared.config.pool_mode.as_str(), pool_size = shared.config.pool_size,
            tls = shared.tls.is_some(), "Tollgate is accepting connections");

        let maint = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut shutdown = shared.shutdown.clone();
                loop {
                    tokio::select! {
                        _ = tick.tick() => shared.pools.maintain(),
                        _ = shutdown_started(&mut shutdown) => break,
                    }
                }
            })
        };

        let secrets = shared
            .auth
            .secrets()
            .cloned()
            .map(|store| tokio::spawn(store.run(shared.shutdown.clone())));
        let monitor = self
            .probe
            .map(|probe| tokio::spawn(crate::topology::monitor::run(shared.clone(), probe)));
        let reader = self.reader.map(|l| {
            tokio::spawn(accept_loop(
                l,
                shared.clone(),
                limit.clone(),
                Endpoint::Reader,
            ))
        });
        if let Some(addr) = shared.config.topology.reader_listen {
            tracing::info!(reader_listen = %addr, reader_fallback = shared.config.topology.reader_fallback.as_str(),
                "the read-only endpoint is accepting connections");
        }

        // The admin listener serves through the drain (so /readyz can say "shutting down")
        // and stops with the rest below.
        let admin = self
            .admin
            .map(|l| tokio::spawn(crate::admin::http::serve(l, shared.clone())));

        accept_loop(
            self.listener,
            shared.clone(),
            limit.clone(),
            Endpoint::Writer,
        )
        .await;
        let drain = shared.live().shutdown_timeout;
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutting down: no new connections; waiting for sessions to finish"
        );
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = max - limit.available_permits(),
                "shutdown_timeout reached; closing remaining sessions"
            );
        }
        shared.pools.close_idle();
        maint.abort();
        if let Some(m) = monitor {
            m.abort();
        }
        if let Some(t) = secrets {
            t.abort();
        }
        if let Some(r) = reader {
            r.abort();
        }
        if let Some(admin) = admin {
            admin.abort();
        }
    }
}

/// Accepts clients on one listener until shutdown; one session task each, all listeners
/// sharing max_client_conn.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    endpoint: Endpoint,
) {
    let max = shared.config.max_client_conn;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown_started(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    crate::session::run(shared, tcp, peer, endpoint).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%peer, max_client_conn = max, "refusing client: max_client_conn reached");
                tokio::spawn(refuse(tcp, max));
            }
        }
    }
}

/// How the health checks log in as `user`: its plaintext password from the auth file, or
/// Tollgate's own IAM tokens (backend_iam). A hashed password cannot be used by a client
/// login such as tokio-postgres', so it is refused at start with what to do.
fn check_login(
    auth: &Authenticator,
    user: &str,
    backend_iam: Option<&Arc<crate::backend::IamTokenSource>>,
) -> Result<crate::topology::check::CheckLogin, StartError> {
    use crate::topology::check::CheckLogin;
    use tollgate_auth::Secret;
    if let Some(store) = auth.secrets().filter(|s| s.entry(user).is_some()) {
        return Ok(CheckLogin::Secret(store.clone(), user.to_string()));
    }
    match (auth.secret(user), backend_iam) {
        (_, Some(iam)) => Ok(CheckLogin::Iam(iam.clone())),
        (Some(Secret::Plain(p)), None) => Ok(CheckLogin::Password(p)),
        (Some(_), None) => Err(StartError::HealthCheck(format!(
            "health_check_user {user:?} has a hashed password (md5 or SCRAM) in the auth file; \
             Tollgate's health checks log in as a client does and need its plaintext password \
             there (or backend_iam)"
        ))),
        (None, None) => Err(StartError::HealthCheck(format!(
            "health_check_user {user:?} is not in the auth file; add it with its plaintext \
             password (a role that may log in; it needs no privileges)"
        ))),
    }
}

/// One line at start saying how clients may use IAM auth tokens.
fn log_iam(config: &Config, iam: &crate::iam::ClientIam) {
    let state = iam.state();
    if !state.accepts_tokens() {
        return;
    }
    let endpoints: Vec<String> = config.iam.endpoints.iter().map(|e| e.to_string()).collect();
    tracing::info!(
        iam_auth = state.mode.as_str(),
        verifier = config.iam.verifier.as_str(),
        region = %config.iam.region,
        endpoints = %endpoints.join(","),
        trusted_keys = state.key_count(),
        policy = config.iam.policy_file.is_some(),
        "IAM authentication is on"
    );
    if state.allow_plaintext {
        tracing::warn!("iam_allow_plaintext is on: IAM auth tokens are accepted from clients over plain TCP; this setting is for tests only");
    }
}

/// Resolves Tollgate's AWS identity once at start, so a missing credential shows in the log
/// before the first login needs it.
async fn announce_backend_iam(source: Arc<crate::backend::IamTokenSource>) {
    match source.access_key_id().await {
        Ok(id) => tracing::info!(access_key_id = %id, region = source.region(),
            "backend_iam: Tollgate logs in to the database with IAM auth tokens for its own AWS identity"),
        Err(e) => tracing::warn!(error = %e, region = source.region(),
            "backend_iam: no AWS credentials yet; database logins will fail until there are"),
    }
}

/// Tells a client over the limit why it is refused, before it even starts up.
async fn refuse(mut tcp: TcpStream, max: usize) {
    let mut out = BytesMut::new();
    let msg = format!("too many client connections to Tollgate (max_client_conn = {max}); raise max_client_conn or close idle clients");
    tollgate_wire::build::error_response(&mut out, "FATAL", "53300", &msg, None, None);
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&out)).await;
}

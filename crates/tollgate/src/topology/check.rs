//! One health check of one instance, on the control path: tokio-postgres through a
//! deadpool-postgres pool of one connection per target, logged in as `health_check_user` with
//! the data path's TLS settings. The check reads the role (`pg_is_in_recovery()`), the WAL
//! position (for replica lag) and `max_connections`.

use super::aurora::{self, ReplicaStatusRow};
use super::lag::parse_lsn;
use super::pg_tls::MakeRustls;
use super::role::Observation;
use crate::backend::IamTokenSource;
use crate::config::{InstanceAddr, SslMode};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the health checks prove who they are.
#[derive(Clone)]
pub enum CheckLogin {
    /// The plaintext password from the auth file.
    Password(String),
    /// Tollgate's own IAM auth tokens (backend_iam).
    Iam(Arc<IamTokenSource>),
    /// The password in a Secrets Manager secret, read before each check (rotation).
    Secret(Arc<crate::secrets::SecretStore>, String),
    /// No password (the server trusts the user).
    Nothing,
}

/// What every probe shares.
#[derive(Clone)]
pub struct ProbeSettings {
    /// The health_check_user.
    pub user: String,
    /// The health_check_database.
    pub database: String,
    /// Its credential.
    pub login: CheckLogin,
    /// The upstream's sslmode.
    pub sslmode: SslMode,
    /// The data path's TLS connector (None: sslmode=disable).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// Bound on one check (connect, login, query).
    pub timeout: Duration,
}

/// The role query: one round trip for role, WAL position and max_connections.
const ROLE_QUERY: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
      ELSE pg_catalog.pg_current_wal_lsn() END)::text, \
     pg_catalog.current_setting('max_connections')::int4";

/// Connects with the password slot's current value (an IAM token is fetched before each
/// check, so a reconnect never waits on AWS inside deadpool).
struct Connector {
    tls: Option<MakeRustls>,
    password: Arc<Mutex<Option<String>>>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let mut config = pg_config.clone();
        if let Some(p) = crate::sync::lock(&self.password).clone() {
            config.password(p);
        }
        let tls = self.tls.clone();
        Box::pin(async move {
            fn spawn<F>(conn: F) -> tokio::task::JoinHandle<()>
            where
                F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
            {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "health check connection ended");
                    }
                })
            }
            match tls {
                Some(tls) => {
                    let (client, conn) = config.connect(tls).await?;
                    Ok((client, spawn(conn)))
                }
                None => {
                    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                    Ok((client, spawn(conn)))
                }
            }
        })
    }
}

/// One target's control-path pool.
pub struct Probe {
    addr: InstanceAddr,
    pool: deadpool_postgres::Pool,
    settings: ProbeSettings,
    password: Arc<Mutex<Option<String>>>,
}

impl Probe {
    /// A probe of `addr`; connects lazily, at the first check.
    pub fn new(addr: InstanceAddr, settings: ProbeSettings) -> Result<Probe, String> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&addr.host)
            .port(addr.port)
            .user(&settings.user)
            .dbname(&settings.database)
            .application_name("tollgate health check")
            .connect_timeout(settings.timeout)
            .ssl_mode(match settings.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        let password = Arc::new(Mutex::new(match &settings.login {
            CheckLogin::Password(p) => Some(p.clone()),
            _ => None,
        }));
        let connector = Connector {
            tls: settings.tls.clone().map(MakeRustls),
            password: password.clone(),
        };
        let manager = deadpool_postgres::Manager::from_connect(
            pg,
            connector,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| format!("cannot set up health checks for {addr}: {e}"))?;
        Ok(Probe {
            addr,
            pool,
            settings,
            password,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, Observation> {
        if let CheckLogin::Secret(store, user) = &self.settings.login {
            *crate::sync::lock(&self.password) = store.current(user).map(|p| p.to_string());
        }
        if let CheckLogin::Iam(source) = &self.settings.login {
            match source
                .token(&self.addr.host, self.addr.port, &self.settings.user)
                .await
            {
                Ok(t) => *crate::sync::lock(&self.password) = Some(t),
                Err(e) => return Err(Observation::Unreachable(e.to_string())),
            }
        }
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e),
            deadpool_postgres::PoolError::Timeout(_) => Observation::Unreachable(format!(
                "no answer within {} ms",
                self.settings.timeout.as_millis()
            )),
            other => Observation::Unreachable(other.to_string()),
        })
    }

    /// Checks the instance once: its role and WAL position, or why it cannot say.
    pub async fn check(&self) -> (Observation, Option<u32>) {
        let client = match self.client().await {
            Ok(c) => c,
            Err(obs) => return (obs, None),
        };
        let row =
            tokio::time::timeout(self.settings.timeout, client.query_one(ROLE_QUERY, &[])).await;
        let row = match row {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => return (classify(&e), None),
            Err(_) => {
                // A connection that does not answer is not reused.
                let _ = deadpool_postgres::Object::take(client);
                return (
                    Observation::Unreachable(format!(
                        "the role query got no answer within {} ms",
                        self.settings.timeout.as_millis()
                    )),
                    None,
                );
            }
        };
        let in_recovery: Option<bool> = row.try_get(0).ok();
        let lsn: Option<String> = row.try_get(1).ok().flatten();
        let max_connections: Option<i32> = row.try_get(2).ok();
        let lsn = lsn.as_deref().and_then(parse_lsn);
        let obs = match in_recovery {
            Some(true) => Observation::Standby { replay_lsn: lsn },
            Some(false) => Observation::Primary { lsn },
            None => Observation::Unreachable("the role query returned no role".into()),
        };
        (obs, max_connections.and_then(|n| u32::try_from(n).ok()))
    }

    /// Reads `aurora_replica_status()`; `Ok(None)` when the server is not Aurora.
    pub async fn aurora_rows(&self) -> Result<Option<Vec<ReplicaStatusRow>>, String> {
        let client = self.client().await.map_err(|o| format!("{o:?}"))?;
        let rows = tokio::time::timeout(
            self.settings.timeout,
            client.query(aurora::REPLICA_STATUS_QUERY, &[]),
        )
        .await
        .map_err(|_| "aurora_replica_status() got no answer in time".to_string())?;
        match rows {
            Ok(rows) => Ok(Some(
                rows.iter()
                    .map(|r| ReplicaStatusRow {
                        server_id: r.try_get(0).unwrap_or_default(),
                        session_id: r.try_get(1).unwrap_or_default(),
                        replica_lag_ms: r.try_get::<_, Option<f64>>(2).ok().flatten(),
                        last_update_epoch_secs: r.try_get::<_, Option<f64>>(3).ok().flatten(),
                    })
                    .collect(),
            )),
            Err(e) => match e.code() {
                Some(code) if aurora::is_undefined_function(code.code()) => Ok(None),
                _ => Err(e.to_string()),
            },
        }
    }

    /// Closes the pooled control connection (the instance left rotation).
    pub fn close(&self) {
        self.pool.retain(|_, _| false);
    }
}

/// Sorts a tokio-postgres failure into what it says about the instance.
fn classify(e: &tokio_postgres::Error) -> Observation {
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    match e.code().map(|c| c.code()) {
        // cannot_connect_now (starting up, shutting down, not yet accepting connections),
        // admin_shutdown, crash_shutdown.
        Some("57P03" | "57P01" | "57P02") => Observation::Starting(text),
        _ => Observation::Unreachable(text),
    }
}

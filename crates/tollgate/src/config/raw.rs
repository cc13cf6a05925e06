//! The settings as a user writes them: one struct that is both the TOML file's shape and the
//! command line's (`--flag` / `TOLLGATE_*`), every field optional so the layers can be merged
//! (flags and env over the file over built-in defaults) before validation.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every setting, unvalidated. Names follow RDS Proxy where it has one, PgBouncer where not.
#[derive(Debug, Default, Clone, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address clients connect to [default: 127.0.0.1:6432].
    #[arg(long, env = "TOLLGATE_LISTEN")]
    pub listen: Option<String>,

    /// The database behind the proxy: postgres://host:port/[db]?sslmode=...&sslrootcert=...
    #[arg(long, env = "TOLLGATE_UPSTREAM")]
    pub upstream: Option<String>,

    /// PgBouncer-format auth file (`"user" "password-or-verifier"` per line).
    #[arg(long, env = "TOLLGATE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// session | transaction [default: transaction].
    #[arg(long, env = "TOLLGATE_POOL_MODE")]
    pub pool_mode: Option<String>,

    /// Most backend connections one (database, user) pool may open [default: 20].
    #[arg(long, env = "TOLLGATE_POOL_SIZE")]
    pub pool_size: Option<u32>,

    /// Cap on all backend connections together, as a percent of the server's max_connections [default: 100].
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS_PERCENT")]
    pub max_connections_percent: Option<u32>,

    /// Idle backend connections kept, as a percent of the server's max_connections [default: 50].
    #[arg(long, env = "TOLLGATE_MAX_IDLE_CONNECTIONS_PERCENT")]
    pub max_idle_connections_percent: Option<u32>,

    /// Seconds a client waits for a backend connection before an error [default: 120].
    #[arg(long, env = "TOLLGATE_CONNECTION_BORROW_TIMEOUT")]
    pub connection_borrow_timeout: Option<u64>,

    /// Seconds a client may stay silent before it is disconnected [default: 1800].
    #[arg(long, env = "TOLLGATE_IDLE_CLIENT_TIMEOUT")]
    pub idle_client_timeout: Option<u64>,

    /// SQL run on every new backend connection.
    #[arg(long, env = "TOLLGATE_INIT_QUERY")]
    pub init_query: Option<String>,

    /// Refuse clients that do not use TLS.
    #[arg(long, env = "TOLLGATE_REQUIRE_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub require_tls: Option<bool>,

    /// PEM certificate chain presented to clients.
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Query that cleans a backend before another client gets it in session mode [default: DISCARD ALL].
    #[arg(long, env = "TOLLGATE_SERVER_RESET_QUERY")]
    pub server_reset_query: Option<String>,

    /// Seconds after which a backend connection is replaced between transactions [default: 3600].
    #[arg(long, env = "TOLLGATE_SERVER_LIFETIME")]
    pub server_lifetime: Option<u64>,

    /// Seconds an idle backend connection is kept before it is closed [default: 600].
    #[arg(long, env = "TOLLGATE_SERVER_IDLE_TIMEOUT")]
    pub server_idle_timeout: Option<u64>,

    /// Seconds allowed to open and log in a backend connection [default: 15].
    #[arg(long, env = "TOLLGATE_SERVER_CONNECT_TIMEOUT")]
    pub server_connect_timeout: Option<u64>,

    /// Seconds a client gets to finish TLS, startup and login [default: 60].
    #[arg(long, env = "TOLLGATE_CLIENT_LOGIN_TIMEOUT")]
    pub client_login_timeout: Option<u64>,

    /// Most client connections accepted at once [default: 20000].
    #[arg(long, env = "TOLLGATE_MAX_CLIENT_CONN")]
    pub max_client_conn: Option<u32>,

    /// Largest client message the proxy must read whole (queries, Parse, Bind), in bytes [default: 67108864].
    #[arg(long, env = "TOLLGATE_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,

    /// Named statements a client may hold in transaction mode before it is pinned instead
    /// (PgBouncer's name; 0 pins every client that prepares one) [default: 1000].
    #[arg(long, env = "TOLLGATE_MAX_PREPARED_STATEMENTS")]
    pub max_prepared_statements: Option<usize>,

    /// Seconds running transactions get to finish on shutdown [default: 30].
    #[arg(long, env = "TOLLGATE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,

    /// Admin HTTP listener for /metrics, /healthz, /readyz ("off" disables) [default: 127.0.0.1:9930].
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// Users who may open the admin console (database "tollgate"), comma-separated.
    #[arg(long, env = "TOLLGATE_ADMIN_USERS", value_delimiter = ',')]
    pub admin_users: Option<Vec<String>>,

    /// Log filter, as RUST_LOG [default: info].
    #[arg(long, env = "TOLLGATE_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// text | json [default: text].
    #[arg(long, env = "TOLLGATE_LOG_FORMAT")]
    pub log_format: Option<String>,
}

macro_rules! merge_fields {
    ($hi:ident, $lo:ident, $($f:ident),* $(,)?) => {
        RawConfig { $($f: $hi.$f.or($lo.$f)),* }
    };
}

impl RawConfig {
    /// Parses a TOML file's text; unknown keys are errors that name the key.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Writes the settings that are set as a TOML file's text (unset ones are left out).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Keeps every value set in `self`, filling the rest from `lower`.
    pub fn over(self, lower: RawConfig) -> RawConfig {
        let hi = self;
        let lo = lower;
        merge_fields!(
            hi,
            lo,
            listen,
            upstream,
            auth_file,
            pool_mode,
            pool_size,
            max_connections_percent,
            max_idle_connections_percent,
            connection_borrow_timeout,
            idle_client_timeout,
            init_query,
            require_tls,
            tls_cert,
            tls_key,
            server_reset_query,
            server_lifetime,
            server_idle_timeout,
            server_connect_timeout,
            client_login_timeout,
            max_client_conn,
            max_message_size,
            max_prepared_statements,
            shutdown_timeout,
            admin_listen,
            admin_users,
            log_level,
            log_format,
        )
    }
}

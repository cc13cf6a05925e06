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

    /// Most (database, user) pools at once; a login that would need one more gets SQLSTATE
    /// 53300 (pools with no clients and no connections are freed first) [default: 1000].
    #[arg(long, env = "TOLLGATE_MAX_POOLS")]
    pub max_pools: Option<usize>,

    /// Threads that run client sessions: 1 runs everything on one thread (a client, its
    /// backend and their wake-ups never cross threads); more uses tokio's multi-thread
    /// runtime; 0 means one per CPU [default: 1].
    #[arg(long, env = "TOLLGATE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

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

    /// Memory all clients together may hold in large messages being read whole, in bytes (at
    /// least max_message_size; more get 53200) [default: 1073741824].
    #[arg(long, env = "TOLLGATE_MAX_MESSAGE_MEMORY")]
    pub max_message_memory: Option<usize>,

    /// Named statements a client may hold in transaction mode before it is pinned instead,
    /// and the most a backend holds (least recently used closed first) (PgBouncer's name; 0
    /// pins every client that prepares one) [default: 1000].
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

    /// IAM database authentication for clients, as RDS Proxy's IAMAuth: disabled | enabled
    /// (IAM auth tokens or passwords) | required (tokens only) [default: disabled].
    #[arg(long, env = "TOLLGATE_IAM_AUTH")]
    pub iam_auth: Option<String>,

    /// How client tokens are verified: local (trusted keys held by Tollgate) | delegate (the
    /// database checks them, as Aurora does) [default: local].
    #[arg(long, env = "TOLLGATE_IAM_VERIFIER")]
    pub iam_verifier: Option<String>,

    /// AWS region IAM auth tokens are signed for, e.g. us-east-1.
    #[arg(long, env = "TOLLGATE_IAM_REGION")]
    pub iam_region: Option<String>,

    /// HOST:PORT a client may sign its token for: the name apps connect to (repeatable;
    /// comma-separated in the environment variable).
    #[arg(
        long = "iam-endpoint",
        env = "TOLLGATE_IAM_ENDPOINT",
        value_delimiter = ','
    )]
    pub iam_endpoint: Option<Vec<String>>,

    /// TOML file of trusted signing keys for the local verifier ([[key]] access_key_id,
    /// secret_access_key, allow).
    #[arg(long, env = "TOLLGATE_IAM_KEYS_FILE")]
    pub iam_keys_file: Option<PathBuf>,

    /// The trusted keys file's text itself, for secret stores that hand it over as an
    /// environment variable (TOLLGATE_IAM_KEYS); never shown, logged or put in SHOW CONFIG.
    #[arg(long, env = "TOLLGATE_IAM_KEYS", hide_env_values = true)]
    pub iam_keys: Option<SecretText>,

    /// IAM-policy-shaped JSON file that must also allow rds-db:connect (local verifier).
    #[arg(long, env = "TOLLGATE_IAM_POLICY_FILE")]
    pub iam_policy_file: Option<PathBuf>,

    /// Account id in this proxy's rds-db:connect resource ARNs [default: *].
    #[arg(long, env = "TOLLGATE_IAM_ACCOUNT_ID")]
    pub iam_account_id: Option<String>,

    /// Resource id in this proxy's rds-db:connect resource ARNs (RDS Proxy's prx-...) [default: *].
    #[arg(long, env = "TOLLGATE_IAM_PROXY_ID")]
    pub iam_proxy_id: Option<String>,

    /// Seconds a token's X-Amz-Date may be ahead of Tollgate's clock [default: 300].
    #[arg(long, env = "TOLLGATE_IAM_CLOCK_SKEW")]
    pub iam_clock_skew: Option<u64>,

    /// FOR TESTS ONLY: accept IAM auth tokens (cleartext passwords) over plain TCP.
    #[arg(long, env = "TOLLGATE_IAM_ALLOW_PLAINTEXT", num_args = 0..=1, default_missing_value = "true")]
    pub iam_allow_plaintext: Option<bool>,

    /// Verdicts the delegate verifier keeps (by token hash, until each token expires) [default: 10000].
    #[arg(long, env = "TOLLGATE_IAM_TOKEN_CACHE_SIZE")]
    pub iam_token_cache_size: Option<usize>,

    /// Delegate token checks (database logins) running at once; more wait their turn [default: 10].
    #[arg(long, env = "TOLLGATE_IAM_DELEGATE_MAX_CHECKS")]
    pub iam_delegate_max_checks: Option<usize>,

    /// Log in to the database with IAM auth tokens Tollgate generates for its own AWS identity
    /// (RDS Proxy's end-to-end IAM), instead of auth-file passwords.
    #[arg(long, env = "TOLLGATE_BACKEND_IAM", num_args = 0..=1, default_missing_value = "true")]
    pub backend_iam: Option<bool>,

    /// Region Tollgate signs its own tokens for [default: iam_region].
    #[arg(long, env = "TOLLGATE_BACKEND_IAM_REGION")]
    pub backend_iam_region: Option<String>,
    /// The cluster's instances for plain PostgreSQL (HOST:PORT, repeatable; comma-separated in
    /// the environment); Tollgate connects to them by address and finds the writer itself.
    /// Empty: the upstream alone (Aurora: its instances are discovered).
    #[arg(long, env = "TOLLGATE_INSTANCE", value_delimiter = ',')]
    pub instance: Option<Vec<String>>,

    /// Seconds between health checks of each instance (faster during a failover) [default: 1].
    #[arg(long, env = "TOLLGATE_HEALTH_CHECK_INTERVAL")]
    pub health_check_interval: Option<f64>,

    /// The user Tollgate's health checks log in as (plaintext password in the auth file, or
    /// backend_iam); required with instance or reader_listen.
    #[arg(long, env = "TOLLGATE_HEALTH_CHECK_USER")]
    pub health_check_user: Option<String>,

    /// The database health checks log in to [default: the upstream's, else postgres].
    #[arg(long, env = "TOLLGATE_HEALTH_CHECK_DATABASE")]
    pub health_check_database: Option<String>,

    /// A second listener whose sessions run on readers only (RDS Proxy's READ_ONLY endpoint).
    #[arg(long, env = "TOLLGATE_READER_LISTEN")]
    pub reader_listen: Option<String>,

    /// writer | wait | error: what reader_listen does with no reader up [default: wait].
    #[arg(long, env = "TOLLGATE_READER_FALLBACK")]
    pub reader_fallback: Option<String>,

    /// Seconds a reader may lag behind the writer and stay in the reader set (0: no bound).
    #[arg(long, env = "TOLLGATE_MAX_REPLICA_LAG")]
    pub max_replica_lag: Option<f64>,

    /// Secrets Manager secrets (ARN or name; repeatable; comma-separated in the environment)
    /// holding users' RDS-format credentials, as RDS Proxy's `--auth SecretArn=...`.
    #[arg(long, env = "TOLLGATE_AUTH_SECRET", value_delimiter = ',')]
    pub auth_secret: Option<Vec<String>>,

    /// Seconds between re-reads of each secret [default: 300].
    #[arg(long, env = "TOLLGATE_SECRET_REFRESH_INTERVAL")]
    pub secret_refresh_interval: Option<u64>,

    /// How clients prove a secret's password: scram-sha-256 | md5 (RDS Proxy's
    /// ClientPasswordAuthType; POSTGRES_SCRAM_SHA_256 / POSTGRES_MD5 accepted) [default: scram-sha-256].
    #[arg(long, env = "TOLLGATE_CLIENT_PASSWORD_AUTH_TYPE")]
    pub client_password_auth_type: Option<String>,
}

/// A setting whose value is a secret: kept as given, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretText {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretText(s.to_string()))
    }
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
            max_pools,
            worker_threads,
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
            max_message_memory,
            max_prepared_statements,
            shutdown_timeout,
            admin_listen,
            admin_users,
            log_level,
            log_format,
            iam_auth,
            iam_verifier,
            iam_region,
            iam_endpoint,
            iam_keys_file,
            iam_keys,
            iam_policy_file,
            iam_account_id,
            iam_proxy_id,
            iam_clock_skew,
            iam_allow_plaintext,
            iam_token_cache_size,
            iam_delegate_max_checks,
            backend_iam,
            backend_iam_region,
            instance,
            health_check_interval,
            health_check_user,
            health_check_database,
            reader_listen,
            reader_fallback,
            max_replica_lag,
            auth_secret,
            secret_refresh_interval,
            client_password_auth_type,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example is a valid file: every key in it is a setting.
    #[test]
    fn the_example_config_file_parses_and_validates() {
        let text = include_str!("../../../../tollgate.example.toml");
        let raw = RawConfig::from_toml(text).unwrap();
        assert_eq!(raw.iam_auth.as_deref(), Some("disabled"));
        crate::config::Config::validate(raw).unwrap();
    }

    #[test]
    fn secret_text_is_never_shown_by_debug() {
        let raw = RawConfig {
            iam_keys: Some("secret_access_key = \"hunter2\"".parse().unwrap()),
            ..Default::default()
        };
        assert!(!format!("{raw:?}").contains("hunter2"));
    }
}

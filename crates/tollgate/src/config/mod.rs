//! Configuration: one typed struct, built once at start from the TOML file, `TOLLGATE_*`
//! environment variables and `--flags` (highest wins), and validated into types that cannot
//! hold a bad value.

pub mod entries;
pub mod iam;
pub mod raw;
pub mod secrets;
pub mod topology;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use iam::{IamConfig, IamMode, IamVerifierKind};
pub use raw::{RawConfig, SecretText};
pub use secrets::{ClientPasswordAuth, SecretsConfig};
pub use topology::{InstanceAddr, ReaderFallback, TopologyConfig};
pub use upstream::{SslMode, Upstream};

/// When a backend connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A client keeps one backend for its whole session.
    Session,
    /// The backend returns to the pool at the end of each transaction.
    Transaction,
}

impl PoolMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Transaction => "transaction",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Client-facing TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listener address.
    pub listen: SocketAddr,
    /// The database server.
    pub upstream: Upstream,
    /// Auth file path (PgBouncer userlist format); `None` with only auth_secret users.
    pub auth_file: Option<PathBuf>,
    /// Session or transaction pooling.
    pub pool_mode: PoolMode,
    /// Per-(database, user) pool limit.
    pub pool_size: usize,
    /// Most (database, user) pools at once.
    pub max_pools: usize,
    /// Runtime threads (see [`worker_threads`]); already resolved: 0 never reaches here.
    pub worker_threads: usize,
    /// Global cap, percent of the server's max_connections.
    pub max_connections_percent: u32,
    /// Idle connections kept, percent of the server's max_connections.
    pub max_idle_connections_percent: u32,
    /// RDS Proxy's ConnectionBorrowTimeout.
    pub connection_borrow_timeout: Duration,
    /// RDS Proxy's IdleClientTimeout.
    pub idle_client_timeout: Duration,
    /// SQL for every new backend connection.
    pub init_query: Option<String>,
    /// RDS Proxy's RequireTLS.
    pub require_tls: bool,
    /// Client-side TLS; `None` answers SSLRequest with `N`.
    pub tls: Option<TlsFiles>,
    /// Reset query for session-mode release and for pinned backends.
    pub server_reset_query: String,
    /// Max backend connection age.
    pub server_lifetime: Duration,
    /// Idle backend connections older than this close.
    pub server_idle_timeout: Duration,
    /// Backend connect + login timeout.
    pub server_connect_timeout: Duration,
    /// Time allowed for TLS + startup + login.
    pub client_login_timeout: Duration,
    /// Client connection cap.
    pub max_client_conn: usize,
    /// Largest client message read whole.
    pub max_message_size: usize,
    /// Memory all sessions may spend on large client messages read whole.
    pub max_message_memory: usize,
    /// Named statements per client in transaction mode before pinning (0: always pin).
    pub max_prepared_statements: usize,
    /// Drain time on shutdown.
    pub shutdown_timeout: Duration,
    /// Admin HTTP listener; `None` when off.
    pub admin_listen: Option<SocketAddr>,
    /// Who may open the admin console.
    pub admin_users: Vec<String>,
    /// tracing filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// IAM auth for clients and Tollgate's own IAM login to the database.
    pub iam: IamConfig,
    /// Instances, health checks and the read-only endpoint.
    pub topology: TopologyConfig,
    /// Credentials from Secrets Manager.
    pub secrets: SecretsConfig,
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// A value is missing or out of range.
    #[error("invalid setting `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// Where the configuration came from, kept so a reload can read the file again and merge the
/// same flags and environment over it.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// Settings from `--flags` and `TOLLGATE_*` (they win over the file).
    pub cli: RawConfig,
    /// The TOML file, if one was given.
    pub file: Option<PathBuf>,
}

/// Default runtime threads: one. Measured on the 2-core benchmark box (ARCHITECTURE.md,
/// "Runtime"), one thread spent less CPU per transaction than two at every client count
/// (32 to 1,000) for the same throughput: a relay's work per message is small, and a second
/// thread mostly adds wake-ups between threads. Hosts where one core cannot carry the
/// traffic set more.
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// `worker_threads` resolved: unset is [`DEFAULT_WORKER_THREADS`], 0 is one per CPU.
pub fn worker_threads(raw: Option<usize>) -> Result<usize, ConfigError> {
    match raw.unwrap_or(DEFAULT_WORKER_THREADS) {
        0 => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        n if n <= 1024 => Ok(n),
        n => Err(invalid(
            "worker_threads",
            format!("{n} is not between 0 (one per CPU) and 1024"),
        )),
    }
}

impl ConfigSource {
    /// Reads and validates the configuration as it stands now.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.cli.clone(), self.file.as_deref())
    }
}

impl Config {
    /// Merges `cli` (flags and env) over the file at `file` (if any) and validates.
    pub fn load(cli: RawConfig, file: Option<&Path>) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                RawConfig::from_toml(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => RawConfig::default(),
        };
        Config::validate(cli.over(from_file))
    }

    /// Checks every value and fills defaults.
    pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        // The IAM checks read several settings the steps below take apart.
        let iam_raw = raw.clone();
        let listen_s = raw.listen.unwrap_or_else(|| "127.0.0.1:6432".into());
        let listen = listen_s
            .parse::<SocketAddr>()
            .map_err(|_| invalid("listen", format!("{listen_s:?} is not an IP:port address")))?;
        let upstream_s = raw.upstream.ok_or_else(|| {
            invalid("upstream", "is required: --upstream postgres://HOST:PORT/?sslmode=require (or `tollgate quickstart` to try Tollgate on a throwaway database)")
        })?;
        let upstream =
            upstream::parse_upstream(&upstream_s).map_err(|why| invalid("upstream", why))?;
        let secrets = SecretsConfig::validate(&iam_raw)?;
        let auth_file = raw.auth_file;
        if auth_file.is_none() && secrets.names.is_empty() {
            return Err(invalid(
                "auth_file",
                "is required (or auth_secret): a PgBouncer-style userlist (\"user\" \"password\" per line)",
            ));
        }
        let pool_mode = match raw.pool_mode.as_deref().unwrap_or("transaction") {
            "session" => PoolMode::Session,
            "transaction" => PoolMode::Transaction,
            other => {
                return Err(invalid(
                    "pool_mode",
                    format!("{other:?} is not session or transaction"),
                ))
            }
        };
        let pool_size = raw.pool_size.unwrap_or(20);
        if pool_size == 0 || pool_size > 10_000 {
            return Err(invalid(
                "pool_size",
                format!("{pool_size} is not between 1 and 10000"),
            ));
        }
        let max_pools = raw.max_pools.unwrap_or(1000);
        if max_pools == 0 || max_pools > 1_000_000 {
            return Err(invalid(
                "max_pools",
                format!("{max_pools} is not between 1 and 1000000"),
            ));
        }
        let worker_threads = worker_threads(raw.worker_threads)?;
        let pct = |key, v: Option<u32>, default: u32, min: u32| -> Result<u32, ConfigError> {
            let v = v.unwrap_or(default);
            if v < min || v > 100 {
                return Err(invalid(
                    key,
                    format!("{v} is not a percentage between {min} and 100"),
                ));
            }
            Ok(v)
        };
        let max_connections_percent = pct(
            "max_connections_percent",
            raw.max_connections_percent,
            100,
            1,
        )?;
        let max_idle_connections_percent = pct(
            "max_idle_connections_percent",
            raw.max_idle_connections_percent,
            50,
            0,
        )?;
        if max_idle_connections_percent > max_connections_percent {
            return Err(invalid(
                "max_idle_connections_percent",
                format!("{max_idle_connections_percent} exceeds max_connections_percent ({max_connections_percent})"),
            ));
        }
        let secs = |key,
                    v: Option<u64>,
                    default: u64,
                    min: u64,
                    max: u64|
         -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v < min || v > max {
                return Err(invalid(
                    key,
                    format!("{v} s is not between {min} and {max} seconds"),
                ));
            }
            Ok(Duration::from_secs(v))
        };
        let connection_borrow_timeout = secs(
            "connection_borrow_timeout",
            raw.connection_borrow_timeout,
            120,
            1,
            3600,
        )?;
        let idle_client_timeout = secs(
            "idle_client_timeout",
            raw.idle_client_timeout,
            1800,
            1,
            28_800,
        )?;
        let server_lifetime = secs("server_lifetime", raw.server_lifetime, 3600, 1, 7 * 86_400)?;
        let server_idle_timeout = secs(
            "server_idle_timeout",
            raw.server_idle_timeout,
            600,
            1,
            86_400,
        )?;
        let server_connect_timeout = secs(
            "server_connect_timeout",
            raw.server_connect_timeout,
            15,
            1,
            600,
        )?;
        let client_login_timeout = secs(
            "client_login_timeout",
            raw.client_login_timeout,
            60,
            1,
            3600,
        )?;
        let shutdown_timeout = secs("shutdown_timeout", raw.shutdown_timeout, 30, 0, 3600)?;
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls_key", "is required when tls_cert is set")),
            (None, Some(_)) => return Err(invalid("tls_cert", "is required when tls_key is set")),
        };
        let require_tls = raw.require_tls.unwrap_or(false);
        if require_tls && tls.is_none() {
            return Err(invalid(
                "require_tls",
                "needs tls_cert and tls_key so clients can start TLS",
            ));
        }
        let iam = IamConfig::validate(&iam_raw, &upstream, tls.is_some())?;
        let topology = TopologyConfig::validate(&iam_raw, upstream.database.as_deref())?;
        if topology.reader_listen == Some(listen) && listen.port() != 0 {
            return Err(invalid("reader_listen", "is the same address as listen"));
        }
        let max_client_conn = raw.max_client_conn.unwrap_or(20_000) as usize;
        if max_client_conn == 0 {
            return Err(invalid("max_client_conn", "must be at least 1"));
        }
        let max_prepared_statements = raw.max_prepared_statements.unwrap_or(1000);
        if max_prepared_statements > 100_000 {
            return Err(invalid(
                "max_prepared_statements",
                format!("{max_prepared_statements} is more than 100000"),
            ));
        }
        let max_message_size = raw.max_message_size.unwrap_or(64 << 20);
        if !(1024..=(1 << 30)).contains(&max_message_size) {
            return Err(invalid(
                "max_message_size",
                format!("{max_message_size} is not between 1 KiB and 1 GiB"),
            ));
        }
        let max_message_memory = raw
            .max_message_memory
            .unwrap_or((1 << 30).max(max_message_size));
        if max_message_memory < max_message_size {
            return Err(invalid(
                "max_message_memory",
                format!(
                    "{max_message_memory} is less than max_message_size ({max_message_size}): \
                     one message as large as allowed could never be read"
                ),
            ));
        }
        let init_query = raw.init_query.filter(|q| !q.trim().is_empty());
        let server_reset_query = raw
            .server_reset_query
            .unwrap_or_else(|| "DISCARD ALL".into());
        let admin_listen = match raw.admin_listen.as_deref().unwrap_or("127.0.0.1:9930") {
            "off" | "" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "admin_listen",
                    format!("{a:?} is not an IP:port address (or \"off\")"),
                )
            })?),
        };
        let admin_users: Vec<String> = raw
            .admin_users
            .unwrap_or_default()
            .into_iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let log_format = match raw.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        Ok(Config {
            listen,
            upstream,
            auth_file,
            pool_mode,
            pool_size: pool_size as usize,
            max_pools,
            worker_threads,
            max_connections_percent,
            max_idle_connections_percent,
            connection_borrow_timeout,
            idle_client_timeout,
            init_query,
            require_tls,
            tls,
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
            log_level: raw.log_level.unwrap_or_else(|| "info".into()),
            log_format,
            iam,
            topology,
            secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RawConfig {
        RawConfig {
            upstream: Some("postgres://127.0.0.1:5432".into()),
            auth_file: Some("users.txt".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_rds_proxy() {
        let c = Config::validate(base()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(c.connection_borrow_timeout, Duration::from_secs(120));
        assert_eq!(c.idle_client_timeout, Duration::from_secs(1800));
        assert_eq!(c.max_connections_percent, 100);
        assert_eq!(c.pool_mode, PoolMode::Transaction);
        assert_eq!(c.server_reset_query, "DISCARD ALL");
    }

    #[test]
    fn max_message_memory_defaults_to_1_gib_and_holds_at_least_one_largest_message() {
        let c = Config::validate(base()).unwrap();
        assert_eq!(c.max_message_memory, 1 << 30);
        let e = Config::validate(RawConfig {
            max_message_size: Some(1 << 20),
            max_message_memory: Some(1 << 19),
            ..base()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`max_message_memory`") && e.contains("max_message_size"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let mut r = base();
        r.pool_mode = Some("statement".into());
        assert!(Config::validate(r)
            .unwrap_err()
            .to_string()
            .contains("`pool_mode`"));
        let mut r = base();
        r.max_connections_percent = Some(0);
        assert!(Config::validate(r)
            .unwrap_err()
            .to_string()
            .contains("`max_connections_percent`"));
        let mut r = base();
        r.require_tls = Some(true);
        assert!(Config::validate(r)
            .unwrap_err()
            .to_string()
            .contains("`require_tls`"));
        let r = RawConfig {
            auth_file: Some("x".into()),
            ..Default::default()
        };
        assert!(Config::validate(r)
            .unwrap_err()
            .to_string()
            .contains("`upstream`"));
    }

    #[test]
    fn flags_win_over_file_and_unknown_file_keys_fail() {
        let file = RawConfig::from_toml("pool_size = 5\nlisten = \"127.0.0.1:7000\"\n").unwrap();
        let cli = RawConfig {
            pool_size: Some(9),
            ..base()
        };
        let c = Config::validate(cli.over(file)).unwrap();
        assert_eq!((c.pool_size, c.listen.port()), (9, 7000));
        let written = RawConfig::from_toml(&cli_over_file_toml()).unwrap();
        assert_eq!(written.pool_size, Some(5));
        assert_eq!(
            written.admin_users,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let err = RawConfig::from_toml("pool_sise = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_sise"), "{err}");
    }

    fn cli_over_file_toml() -> String {
        RawConfig {
            pool_size: Some(5),
            admin_users: Some(vec!["a".into(), "b".into()]),
            ..base()
        }
        .to_toml()
        .unwrap()
    }
}

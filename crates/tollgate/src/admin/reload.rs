//! Live reload, on SIGHUP or the console's `RELOAD`: read the config file again, merge the
//! same flags and `TOLLGATE_*` variables over it as at start, validate, re-read the auth file,
//! and apply what can change while clients stay connected, including a renewed client TLS
//! certificate. Settings that cannot (the listen address, the upstream, turning TLS on or off,
//! pool_mode, ...) keep their old value and are reported with the reason. A reload never closes a client connection; a smaller pool_size closes surplus
//! *backend* connections as they come back to the pool.
//!
//! [`plan`] is the pure part (what changed, what applies, what is refused); [`reload`] reads
//! the files and applies the plan.

use crate::config::{Config, ConfigError};
use crate::pool::PoolSettings;
use crate::shared::Shared;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings a running Tollgate cannot change, with the reason given when a reload meets a new
/// value. Everything else applies live.
pub const RESTART_ONLY: &[(&str, &str)] = &[
    ("listen", "the client listener is bound at start"),
    (
        "upstream",
        "open backend connections and cancel targets point at the old database",
    ),
    (
        "auth_file",
        "the auth file's path is fixed at start (its contents are re-read on every reload)",
    ),
    (
        "pool_mode",
        "connected clients were set up for the old mode",
    ),
    (
        "max_client_conn",
        "the client connection limit is sized at start",
    ),
    ("admin_listen", "the admin HTTP listener is bound at start"),
    ("log_format", "the log formatter is installed at start"),
    (
        "backend_iam",
        "Tollgate's AWS credential chain is set up at start",
    ),
    (
        "backend_iam_region",
        "Tollgate's AWS credential chain is set up at start",
    ),
    (
        "worker_threads",
        "the runtime's threads start with the process",
    ),
    ("instance", TOPOLOGY),
    ("health_check_interval", TOPOLOGY),
    ("health_check_user", TOPOLOGY),
    ("health_check_database", TOPOLOGY),
    ("reader_listen", "the reader listener is bound at start"),
    ("auth_secret", "the secrets are read and checked at start"),
    ("reader_fallback", TOPOLOGY),
    ("max_replica_lag", TOPOLOGY),
    (
        "iam_allow_plaintext",
        "lifting IAM's TLS rules (tests only) must be a deliberate restart",
    ),
];

/// Why the topology settings wait for a restart.
const TOPOLOGY: &str = "the instances and their health checks are set up at start";

/// Why `require_tls` can be refused although it is reloadable on its own.
const REQUIRE_TLS_WITHOUT_TLS: &str =
    "it needs tls_cert and tls_key, and those change only on restart";

/// Why new `tls_cert` / `tls_key` values are refused when they would turn TLS on or off.
const TLS_ON_OFF: &str =
    "client TLS can be renewed live (new files, or new contents at the same paths) but not turned on or off";

/// Why turning `iam_auth` on can be refused although it is reloadable on its own.
const IAM_WITHOUT_TLS: &str =
    "clients send IAM auth tokens only over TLS, which needs tls_cert and tls_key, and TLS is turned on only at start";

/// Whether a reload can change `key` live.
pub fn reloadable(key: &str) -> bool {
    !RESTART_ONLY.iter().any(|(k, _)| *k == key)
}

/// One setting whose value differs between the configuration in force and the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The config key.
    pub key: &'static str,
    /// The value in force before the reload.
    pub old: String,
    /// The value the new configuration asks for.
    pub new: String,
    /// `None` when applied; otherwise why it needs a restart.
    pub refused: Option<&'static str>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Every setting that differed, applied or refused.
    pub changes: Vec<Change>,
    /// Users in the auth file after re-reading it.
    pub auth_users: usize,
    /// The config file re-read (`None`: started without one, only the auth file was re-read).
    pub config_file: Option<PathBuf>,
    /// Anything else worth telling the operator (e.g. `RUST_LOG` overriding `log_level`).
    pub notes: Vec<String>,
}

impl ReloadReport {
    /// The changes that were applied.
    pub fn applied(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.refused.is_none())
    }

    /// The changes that need a restart.
    pub fn refused(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.refused.is_some())
    }
}

/// Why a reload applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration does not load or validate.
    #[error("{0}; nothing was changed")]
    Config(#[from] ConfigError),
    /// The auth file does not load.
    #[error("auth file: {0}; nothing was changed")]
    AuthFile(#[from] tollgate_auth::AuthFileError),
    /// The client TLS certificate or key does not load.
    #[error("client TLS: {0}; nothing was changed, the certificate in force stays")]
    Tls(#[from] crate::tls::TlsError),
    /// The IAM trusted keys or policy do not load.
    #[error("IAM auth: {0}; nothing was changed")]
    Iam(#[from] crate::iam::IamLoadError),
    /// The new log_level is not a filter.
    #[error("invalid setting `log_level`: {0}; nothing was changed")]
    LogLevel(String),
}

/// Decides a reload without doing it: the configuration to put in force (`new`, with the
/// restart-only settings kept at their `old` values) and every setting that differs.
pub fn plan(old: &Config, new: Config) -> (Config, Vec<Change>) {
    let wanted = new.entries();
    let mut next = new;
    next.listen = old.listen;
    next.worker_threads = old.worker_threads;
    next.upstream = old.upstream.clone();
    next.auth_file = old.auth_file.clone();
    next.pool_mode = old.pool_mode;
    // New certificate files apply; TLS itself stays on or off as it started.
    let tls_on_off_refused = old.tls.is_some() != next.tls.is_some();
    if tls_on_off_refused {
        next.tls = old.tls.clone();
    }
    next.max_client_conn = old.max_client_conn;
    next.admin_listen = old.admin_listen;
    next.log_format = old.log_format;
    next.iam.backend_region = old.iam.backend_region.clone();
    next.iam.allow_plaintext = old.iam.allow_plaintext;
    next.topology = old.topology.clone();
    next.secrets.names = old.secrets.names.clone();
    // require_tls on with no TLS to offer would refuse every client.
    let require_tls_refused = next.require_tls && next.tls.is_none();
    if require_tls_refused {
        next.require_tls = old.require_tls;
    }
    // Likewise IAM auth: tokens travel only over TLS.
    let iam_refused = next.iam.mode != crate::config::IamMode::Disabled
        && next.tls.is_none()
        && !next.iam.allow_plaintext;
    if iam_refused {
        next.iam.mode = old.iam.mode;
    }
    let changes = old
        .entries()
        .into_iter()
        .zip(wanted)
        .filter(|((_, was), (_, want))| was != want)
        .map(|((key, was), (_, want))| {
            let refused = RESTART_ONLY
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, why)| *why)
                .or((key == "require_tls" && require_tls_refused)
                    .then_some(REQUIRE_TLS_WITHOUT_TLS))
                .or((key == "iam_auth" && iam_refused).then_some(IAM_WITHOUT_TLS))
                .or(
                    (matches!(key, "tls_cert" | "tls_key") && tls_on_off_refused)
                        .then_some(TLS_ON_OFF),
                );
            Change {
                key,
                old: was,
                new: want,
                refused,
            }
        })
        .collect();
    (next, changes)
}

impl From<&Config> for PoolSettings {
    fn from(c: &Config) -> Self {
        PoolSettings {
            pool_size: c.pool_size,
            max_pools: c.max_pools,
            borrow_timeout: c.connection_borrow_timeout,
            server_lifetime: c.server_lifetime,
            server_idle_timeout: c.server_idle_timeout,
            max_connections_percent: c.max_connections_percent,
            max_idle_connections_percent: c.max_idle_connections_percent,
        }
    }
}

/// Re-reads the configuration and the auth file and applies what can change live; logs the
/// outcome. `trigger` names what asked ("SIGHUP", "RELOAD by ops") for the log. All-or-nothing:
/// if the config or the auth file does not load, nothing changes.
pub fn reload(shared: &Shared, trigger: &str) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = shared.reload.one_at_a_time();
    let result = reload_locked(shared);
    match &result {
        Ok(report) => log_report(report, trigger),
        Err(e) => tracing::error!(trigger, error = %e, "configuration reload failed"),
    }
    result
}

fn reload_locked(shared: &Shared) -> Result<ReloadReport, ReloadError> {
    let current = shared.live();
    let source = shared.reload.source();
    let new = match source {
        Some(src) => src.load()?,
        None => (*current).clone(),
    };
    if new.log_level != current.log_level {
        crate::logging::check_level(&new.log_level).map_err(ReloadError::LogLevel)?;
    }
    let (next, changes) = plan(&current, new);
    // The trusted keys and policy are re-read too; a bad one stops the reload here.
    let iam = crate::iam::IamState::load(&next.iam)?;
    // So are the certificate and key, changed paths or not: renewal tools (certbot,
    // cert-manager) rewrite the same files. A bad pair stops the reload here.
    let tls = match (&shared.tls, &next.tls) {
        (Some(_), Some(files)) => Some((
            crate::tls::server::acceptor(&files.cert, &files.key)?,
            files.cert.clone(),
        )),
        _ => None,
    };
    // Last check, and the first change: the auth file swaps in whole or not at all.
    let auth_users = shared.auth.reload()?;
    shared.iam.replace(iam, &next.iam);
    if let (Some(slot), Some((acceptor, cert))) = (&shared.tls, tls) {
        slot.replace(acceptor);
        tracing::info!(cert = %cert.display(), "client TLS certificate re-read: new handshakes use it");
    }
    shared.pools.update_settings(PoolSettings::from(&next));
    shared
        .pools
        .connector()
        .update(next.server_connect_timeout, next.init_query.clone());
    let mut notes = Vec::new();
    if next.log_level != current.log_level {
        match crate::logging::set_level(&next.log_level) {
            Ok(crate::logging::LevelChange::Applied) => {}
            Ok(crate::logging::LevelChange::OverriddenByRustLog) => {
                notes.push("log_level: RUST_LOG is set and overrides it, as at start".to_string())
            }
            Ok(crate::logging::LevelChange::NotInstalled) => {}
            Err(e) => notes.push(format!("log_level: not applied: {e}")),
        }
    }
    *shared.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    Ok(ReloadReport {
        changes,
        auth_users,
        config_file: source.and_then(|s| s.file.clone()),
        notes,
    })
}

fn log_report(report: &ReloadReport, trigger: &str) {
    for c in report.applied() {
        tracing::info!(trigger, setting = c.key, old = %c.old, new = %c.new, "setting changed by reload");
    }
    for c in report.refused() {
        tracing::warn!(trigger, setting = c.key, kept = %c.old, wanted = %c.new,
            reason = c.refused.unwrap_or_default(), "setting not changed by reload: needs a restart");
    }
    for note in &report.notes {
        tracing::warn!(trigger, "{note}");
    }
    tracing::info!(
        trigger,
        applied = report.applied().count(),
        refused = report.refused().count(),
        auth_users = report.auth_users,
        config_file = ?report.config_file,
        "configuration reloaded"
    );
}

/// Reloads on every SIGHUP until shutdown. The handler is installed before this returns, so
/// a SIGHUP sent afterwards never takes the default action (ending the process).
pub fn spawn_on_sighup(shared: Arc<Shared>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut shutdown = shared.shutdown.clone();
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received: reloading the configuration");
                    // Errors are logged by reload; the old configuration stays in force.
                    let _ = reload(&shared, "SIGHUP");
                }
                _ = crate::shared::shutdown_started(&mut shutdown) => return,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, RawConfig};

    fn base() -> RawConfig {
        RawConfig {
            upstream: Some("postgres://127.0.0.1:5432/?sslmode=disable".into()),
            auth_file: Some("users.txt".into()),
            ..Default::default()
        }
    }

    fn config(raw: RawConfig) -> Config {
        Config::validate(raw.over(base())).unwrap()
    }

    #[test]
    fn nothing_changed_means_no_changes() {
        let c = config(RawConfig::default());
        let (next, changes) = plan(&c, c.clone());
        assert!(changes.is_empty());
        assert_eq!(next.entries(), c.entries());
    }

    #[test]
    fn live_settings_apply_and_restart_only_ones_are_refused_with_a_reason() {
        let old = config(RawConfig::default());
        let new = config(RawConfig {
            pool_size: Some(7),
            idle_client_timeout: Some(60),
            listen: Some("127.0.0.1:7777".into()),
            pool_mode: Some("session".into()),
            ..Default::default()
        });
        let (next, changes) = plan(&old, new);
        assert_eq!(next.pool_size, 7);
        assert_eq!(next.idle_client_timeout.as_secs(), 60);
        assert_eq!(next.listen, old.listen);
        assert_eq!(next.pool_mode, old.pool_mode);
        let by_key = |k: &str| changes.iter().find(|c| c.key == k).unwrap();
        assert_eq!(by_key("pool_size").refused, None);
        assert_eq!(
            (
                by_key("pool_size").old.as_str(),
                by_key("pool_size").new.as_str()
            ),
            ("20", "7")
        );
        assert!(by_key("listen").refused.unwrap().contains("bound at start"));
        assert!(by_key("pool_mode").refused.is_some());
        assert_eq!(changes.len(), 4, "{changes:?}");
    }

    /// Every setting changed at once: the restart-only ones (and only those) keep their old
    /// values, so `plan` and [`RESTART_ONLY`] cannot drift apart.
    #[test]
    fn plan_keeps_exactly_the_restart_only_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let old = config(RawConfig::default());
        let new = Config::validate(RawConfig {
            listen: Some("0.0.0.0:1".into()),
            upstream: Some("postgres://db:1/x?sslmode=verify-full&sslrootcert=ca.pem".into()),
            auth_file: Some("other.txt".into()),
            pool_mode: Some("session".into()),
            pool_size: Some(3),
            max_pools: Some(4),
            worker_threads: Some(2),
            max_connections_percent: Some(90),
            max_idle_connections_percent: Some(10),
            connection_borrow_timeout: Some(5),
            idle_client_timeout: Some(6),
            init_query: Some("SELECT 1".into()),
            require_tls: Some(true),
            tls_cert: Some(cert),
            tls_key: Some(key),
            server_reset_query: Some("RESET ALL".into()),
            server_lifetime: Some(7),
            server_idle_timeout: Some(8),
            server_connect_timeout: Some(9),
            client_login_timeout: Some(10),
            max_client_conn: Some(11),
            max_message_size: Some(4096),
            max_message_memory: Some(1 << 20),
            max_prepared_statements: Some(5),
            shutdown_timeout: Some(12),
            admin_listen: Some("off".into()),
            admin_users: Some(vec!["ops".into()]),
            log_level: Some("debug".into()),
            log_format: Some("json".into()),
            iam_auth: Some("enabled".into()),
            iam_verifier: Some("local".into()),
            iam_region: Some("eu-west-1".into()),
            iam_endpoint: Some(vec!["tollgate.example.com:6432".into()]),
            iam_keys_file: Some("keys.toml".into()),
            iam_keys: None,
            iam_policy_file: Some("policy.json".into()),
            iam_account_id: Some("123456789012".into()),
            iam_proxy_id: Some("prx-1".into()),
            iam_clock_skew: Some(60),
            iam_allow_plaintext: Some(true),
            iam_token_cache_size: Some(5),
            iam_delegate_max_checks: Some(3),
            backend_iam: Some(true),
            backend_iam_region: Some("eu-west-2".into()),
            instance: Some(vec!["db1:5432".into(), "db2:5432".into()]),
            health_check_interval: Some(2.0),
            health_check_user: Some("health".into()),
            health_check_database: Some("app".into()),
            reader_listen: Some("127.0.0.1:6433".into()),
            reader_fallback: Some("error".into()),
            max_replica_lag: Some(3.0),
            auth_secret: Some(vec!["db/app".into()]),
            secret_refresh_interval: Some(60),
            client_password_auth_type: Some("md5".into()),
        })
        .unwrap();
        let (next, changes) = plan(&old, new.clone());
        // Every setting differs but two: iam_keys cannot be set beside iam_keys_file, and the
        // keys and policy files need iam_verifier's default, local.
        let same = ["iam_keys", "iam_verifier"];
        assert_eq!(
            changes.len(),
            old.entries().len() - same.len(),
            "every setting differs"
        );
        let (was, want, now) = (old.entries(), new.entries(), next.entries());
        for (((key, was), (_, want)), (_, now)) in was.iter().zip(&want).zip(&now) {
            if same.contains(key) {
                continue;
            }
            // require_tls, iam_auth and the TLS files are refused here because TLS itself
            // cannot be turned on live (nor iam_allow_plaintext, which would excuse it).
            let needs_tls_on = ["require_tls", "iam_auth", "tls_cert", "tls_key"];
            if reloadable(key) && !needs_tls_on.contains(key) {
                assert_eq!(now, want, "{key} should apply live");
            } else {
                assert_eq!(now, was, "{key} should keep its value until restart");
                let c = changes.iter().find(|c| c.key == *key).unwrap();
                assert!(c.refused.is_some(), "{key} should be reported as refused");
            }
        }
    }

    #[test]
    fn require_tls_applies_when_tls_is_already_configured() {
        let dir = tempfile::tempdir().unwrap();
        let tls = RawConfig {
            tls_cert: Some(dir.path().join("c.pem")),
            tls_key: Some(dir.path().join("k.pem")),
            ..Default::default()
        };
        let old = config(tls.clone());
        let new = config(RawConfig {
            require_tls: Some(true),
            ..tls
        });
        let (next, changes) = plan(&old, new);
        assert!(next.require_tls);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].refused, None);
    }

    #[test]
    fn flags_still_win_over_the_reloaded_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.toml");
        std::fs::write(&file, "pool_size = 5\nidle_client_timeout = 30\n").unwrap();
        let source = ConfigSource {
            cli: RawConfig {
                pool_size: Some(9),
                ..base()
            },
            file: Some(file.clone()),
        };
        let first = source.load().unwrap();
        assert_eq!(
            (first.pool_size, first.idle_client_timeout.as_secs()),
            (9, 30)
        );
        std::fs::write(&file, "pool_size = 6\nidle_client_timeout = 40\n").unwrap();
        let (next, changes) = plan(&first, source.load().unwrap());
        assert_eq!(
            (next.pool_size, next.idle_client_timeout.as_secs()),
            (9, 40)
        );
        assert_eq!(changes.len(), 1, "{changes:?}");
    }
}

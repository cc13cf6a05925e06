//! Every setting as its key and the value in force, spelled as the config file spells it
//! (durations in seconds): what `SHOW CONFIG` prints and what a reload compares.

use super::iam::KeysSource;
use super::{Config, LogFormat};
use std::fmt::Write as _;

impl LogFormat {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::fmt::Display for super::Upstream {
    /// The URL form `--upstream` takes (paths are not percent-encoded: this is for people).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "postgres://[{}]:{}/", self.host, self.port)?;
        } else {
            write!(f, "postgres://{}:{}/", self.host, self.port)?;
        }
        if let Some(db) = &self.database {
            f.write_str(db)?;
        }
        write!(f, "?sslmode={}", self.sslmode.as_str())?;
        if let Some(ca) = &self.sslrootcert {
            write!(f, "&sslrootcert={}", ca.display())?;
        }
        Ok(())
    }
}

impl Config {
    /// Every setting, in the order of the README's table, as (key, value).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let secs = |d: std::time::Duration| d.as_secs().to_string();
        let (tls_cert, tls_key) = match &self.tls {
            Some(t) => (t.cert.display().to_string(), t.key.display().to_string()),
            None => (String::new(), String::new()),
        };
        let mut upstream = String::new();
        let _ = write!(upstream, "{}", self.upstream);
        vec![
            ("listen", self.listen.to_string()),
            ("upstream", upstream),
            (
                "auth_file",
                self.auth_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("pool_mode", self.pool_mode.as_str().to_string()),
            ("pool_size", self.pool_size.to_string()),
            ("max_pools", self.max_pools.to_string()),
            ("worker_threads", self.worker_threads.to_string()),
            (
                "max_connections_percent",
                self.max_connections_percent.to_string(),
            ),
            (
                "max_idle_connections_percent",
                self.max_idle_connections_percent.to_string(),
            ),
            (
                "connection_borrow_timeout",
                secs(self.connection_borrow_timeout),
            ),
            ("idle_client_timeout", secs(self.idle_client_timeout)),
            ("init_query", self.init_query.clone().unwrap_or_default()),
            ("require_tls", self.require_tls.to_string()),
            ("tls_cert", tls_cert),
            ("tls_key", tls_key),
            ("server_reset_query", self.server_reset_query.clone()),
            ("server_lifetime", secs(self.server_lifetime)),
            ("server_idle_timeout", secs(self.server_idle_timeout)),
            ("server_connect_timeout", secs(self.server_connect_timeout)),
            ("client_login_timeout", secs(self.client_login_timeout)),
            ("max_client_conn", self.max_client_conn.to_string()),
            ("max_message_size", self.max_message_size.to_string()),
            ("max_message_memory", self.max_message_memory.to_string()),
            (
                "max_prepared_statements",
                self.max_prepared_statements.to_string(),
            ),
            ("shutdown_timeout", secs(self.shutdown_timeout)),
            (
                "admin_listen",
                self.admin_listen
                    .map_or_else(|| "off".to_string(), |a| a.to_string()),
            ),
            ("admin_users", self.admin_users.join(",")),
            ("log_level", self.log_level.clone()),
            ("log_format", self.log_format.as_str().to_string()),
            ("iam_auth", self.iam.mode.as_str().to_string()),
            ("iam_verifier", self.iam.verifier.as_str().to_string()),
            ("iam_region", self.iam.region.clone()),
            (
                "iam_endpoint",
                self.iam
                    .endpoints
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "iam_keys_file",
                match &self.iam.keys {
                    Some(KeysSource::File(p)) => p.display().to_string(),
                    _ => String::new(),
                },
            ),
            (
                "iam_keys",
                match &self.iam.keys {
                    Some(KeysSource::Inline(text)) => redacted(&text.0),
                    _ => String::new(),
                },
            ),
            (
                "iam_policy_file",
                self.iam
                    .policy_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("iam_account_id", self.iam.account_id.clone()),
            ("iam_proxy_id", self.iam.proxy_id.clone()),
            ("iam_clock_skew", secs(self.iam.clock_skew)),
            ("iam_allow_plaintext", self.iam.allow_plaintext.to_string()),
            (
                "iam_token_cache_size",
                self.iam.token_cache_size.to_string(),
            ),
            (
                "iam_delegate_max_checks",
                self.iam.delegate_max_checks.to_string(),
            ),
            ("backend_iam", self.iam.backend_region.is_some().to_string()),
            (
                "backend_iam_region",
                self.iam.backend_region.clone().unwrap_or_default(),
            ),
            (
                "instance",
                self.topology
                    .instances
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "health_check_interval",
                self.topology
                    .health_check_interval
                    .as_secs_f64()
                    .to_string(),
            ),
            (
                "health_check_user",
                self.topology.health_check_user.clone().unwrap_or_default(),
            ),
            (
                "health_check_database",
                self.topology.health_check_database.clone(),
            ),
            (
                "reader_listen",
                self.topology
                    .reader_listen
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "off".into()),
            ),
            (
                "reader_fallback",
                self.topology.reader_fallback.as_str().to_string(),
            ),
            (
                "max_replica_lag",
                self.topology
                    .max_replica_lag
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
                    .to_string(),
            ),
            ("auth_secret", self.secrets.names.join(",")),
            (
                "secret_refresh_interval",
                secs(self.secrets.refresh_interval),
            ),
            (
                "client_password_auth_type",
                self.secrets.client_auth.as_str().to_string(),
            ),
        ]
    }
}

/// Stands in for a secret in SHOW CONFIG: a short fingerprint, so an operator can tell that a
/// reload changed it, and nothing that helps recover it.
fn redacted(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    let mut fp = String::new();
    for b in digest.iter().take(4) {
        let _ = write!(fp, "{b:02x}");
    }
    format!("<redacted, sha256 {fp}…>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    #[test]
    fn every_raw_setting_has_an_entry_and_values_read_back() {
        let raw = RawConfig {
            upstream: Some("postgres://[::1]:5433/app?sslmode=require".into()),
            auth_file: Some("users.txt".into()),
            pool_size: Some(7),
            admin_users: Some(vec!["ops".into(), "dba".into()]),
            admin_listen: Some("off".into()),
            iam_keys: Some(crate::config::SecretText("[[key]] secret".into())),
            ..Default::default()
        };
        let c = Config::validate(raw).unwrap();
        let entries = c.entries();
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("pool_size"), Some("7"));
        assert_eq!(get("connection_borrow_timeout"), Some("120"));
        assert_eq!(get("admin_users"), Some("ops,dba"));
        assert_eq!(get("admin_listen"), Some("off"));
        assert_eq!(
            get("upstream"),
            Some("postgres://[::1]:5433/app?sslmode=require")
        );
        let keys = get("iam_keys").unwrap();
        assert!(
            keys.starts_with("<redacted") && !keys.contains("secret"),
            "{keys}"
        );
        assert_eq!(get("iam_auth"), Some("disabled"));
        // Keys are the config file's: each one is a RawConfig field (a wrong type, not an
        // unknown key).
        assert_eq!(entries.len(), 54);
        for (k, _) in &entries {
            let e = RawConfig::from_toml(&format!("{k} = {{}}\n"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("unknown field"), "{k} is not a config key: {e}");
        }
    }
}

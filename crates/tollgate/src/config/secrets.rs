//! The Secrets Manager settings (`auth_secret`, `secret_refresh_interval`) and how clients
//! prove a secret's password (`client_password_auth_type`, RDS Proxy's ClientPasswordAuthType).

use super::{invalid, ConfigError, RawConfig};
use std::time::Duration;

/// How clients prove a password held in a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPasswordAuth {
    /// SCRAM-SHA-256 (RDS Proxy's POSTGRES_SCRAM_SHA_256).
    ScramSha256,
    /// md5 (POSTGRES_MD5).
    Md5,
}

impl ClientPasswordAuth {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientPasswordAuth::ScramSha256 => "scram-sha-256",
            ClientPasswordAuth::Md5 => "md5",
        }
    }
}

/// The validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretsConfig {
    /// Secret ARNs or names, each holding one user's RDS-format credentials.
    pub names: Vec<String>,
    /// How often each secret is re-read.
    pub refresh_interval: Duration,
    /// How clients prove a secret's password.
    pub client_auth: ClientPasswordAuth,
}

impl SecretsConfig {
    /// Validates the secrets settings.
    pub fn validate(raw: &RawConfig) -> Result<Self, ConfigError> {
        let mut names: Vec<String> = Vec::new();
        for n in raw.auth_secret.iter().flatten() {
            let n = n.trim();
            if n.is_empty() {
                continue;
            }
            if n.len() > 2048 || n.chars().any(|c| c.is_control() || c == ' ') {
                return Err(invalid(
                    "auth_secret",
                    format!("{n:?} is not a secret name or ARN"),
                ));
            }
            if names.iter().any(|m| m == n) {
                return Err(invalid("auth_secret", format!("{n} is listed twice")));
            }
            names.push(n.to_string());
        }
        let secs = raw.secret_refresh_interval.unwrap_or(300);
        if !(1..=86_400).contains(&secs) {
            return Err(invalid(
                "secret_refresh_interval",
                format!("{secs} s is not between 1 and 86400 seconds"),
            ));
        }
        let client_auth = match raw
            .client_password_auth_type
            .as_deref()
            .unwrap_or("scram-sha-256")
            .to_ascii_lowercase()
            .as_str()
        {
            "scram-sha-256" | "postgres_scram_sha_256" => ClientPasswordAuth::ScramSha256,
            "md5" | "postgres_md5" => ClientPasswordAuth::Md5,
            other => {
                return Err(invalid(
                    "client_password_auth_type",
                    format!(
                    "{other:?} is not scram-sha-256 (POSTGRES_SCRAM_SHA_256) or md5 (POSTGRES_MD5)"
                ),
                ))
            }
        };
        Ok(SecretsConfig {
            names,
            refresh_interval: Duration::from_secs(secs),
            client_auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_proxy_spellings_are_accepted_and_defaults_are_scram_and_five_minutes() {
        let c = SecretsConfig::validate(&RawConfig::default()).unwrap();
        assert_eq!(
            (c.client_auth, c.refresh_interval.as_secs()),
            (ClientPasswordAuth::ScramSha256, 300)
        );
        let c = SecretsConfig::validate(&RawConfig {
            client_password_auth_type: Some("POSTGRES_MD5".into()),
            auth_secret: Some(vec![
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf".into(),
                "db/app".into(),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.client_auth, c.names.len()), (ClientPasswordAuth::Md5, 2));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (r, key) in [
            (
                RawConfig {
                    client_password_auth_type: Some("plain".into()),
                    ..Default::default()
                },
                "client_password_auth_type",
            ),
            (
                RawConfig {
                    secret_refresh_interval: Some(0),
                    ..Default::default()
                },
                "secret_refresh_interval",
            ),
            (
                RawConfig {
                    auth_secret: Some(vec!["a b".into()]),
                    ..Default::default()
                },
                "auth_secret",
            ),
            (
                RawConfig {
                    auth_secret: Some(vec!["a".into(), "a".into()]),
                    ..Default::default()
                },
                "auth_secret",
            ),
        ] {
            let e = SecretsConfig::validate(&r).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }
}

//! IAM database authentication for clients (RDS Proxy's IAMAuth): a client sends an RDS IAM
//! auth token as its cleartext password over TLS, and a verifier decides whether it is
//! genuine. The checks themselves are `tollgate_auth::iam` (pure); this module holds the
//! configured verifier, swaps it on reload, and runs it: `local` recomputes the signature with
//! trusted keys, `delegate` ([`delegate`]) asks the database. `session/authenticate.rs` drives
//! the exchange and decides what Tollgate then presents to the database.

pub mod delegate;

use crate::backend::Connector;
use crate::config::iam::{partition, KeysSource};
use crate::config::{IamConfig, IamMode, IamVerifierKind};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_auth::iam::{
    precheck, DbResource, Expectations, IamError, KeyStore, KeysFileError, LocalVerifier, Policy,
    PolicyError,
};

/// Why the trusted keys or the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IamLoadError {
    /// The trusted keys (file or inline) are unreadable or invalid.
    #[error("{what}: {source}")]
    Keys {
        /// Which setting: `iam_keys_file PATH` or `iam_keys`.
        what: String,
        /// What is wrong (never a secret).
        source: KeysFileError,
    },
    /// The policy file is unreadable or invalid.
    #[error("iam_policy_file {path}: {source}")]
    Policy {
        /// The file.
        path: String,
        /// What is wrong.
        source: PolicyError,
    },
}

/// A token refused, or a login refused under `iam_auth`. Its SQLSTATE, metric/log label and
/// client message are decided here, once: `28P01` for bad, stale or forged tokens; `28000` for
/// what policy or settings forbid. Messages never quote the signature or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A check of the token itself failed (parse, pre-signature checks, signature, policy).
    #[error("{0}")]
    Token(IamError),
    /// `iam_auth = required` and the client did not start TLS.
    #[error("IAM authentication requires TLS; connect with sslmode=require")]
    TlsRequired,
    /// `iam_auth = required` and the password is not an IAM auth token.
    #[error(
        "this Tollgate requires IAM authentication (iam_auth = required): send an RDS IAM auth \
         token as the password (aws rds generate-db-auth-token, or your AWS SDK's RDS auth \
         token generator)"
    )]
    NotAToken,
    /// delegate: the database refused the token (its own message).
    #[error(
        "the database refused the IAM auth token: {server_message}; generate the token for the \
         endpoint and region Tollgate delegates to, and check that the IAM identity may \
         rds-db:connect as {user:?} and that the user has the rds_iam role"
    )]
    DatabaseRefused {
        /// The login's user.
        user: String,
        /// The database's message.
        server_message: String,
    },
    /// delegate: the database's answer cannot tell a good token from a bad one: it let
    /// Tollgate in without asking for the password (pg_hba.conf `trust` for Tollgate's
    /// address), or asked for it in a way Tollgate will not answer.
    #[error("Tollgate cannot check IAM auth tokens with the database: {0}")]
    CannotCheck(String),
    /// delegate: the database could not be asked (down, timeout, TLS failure).
    #[error("could not check the IAM auth token with the database; try again shortly")]
    DatabaseUnavailable,
    /// The password message was longer than any login message may be.
    #[error(
        "the password is over {limit} bytes, longer than any RDS IAM auth token; send the \
         token itself"
    )]
    TooLong {
        /// The login message limit, bytes.
        limit: usize,
    },
}

impl From<IamError> for Refusal {
    fn from(e: IamError) -> Self {
        Refusal::Token(e)
    }
}

impl Refusal {
    /// `28P01` for bad, stale or forged tokens; `28000` for what policy or settings forbid;
    /// `08001` when the database could not be asked.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.sqlstate(),
            Refusal::TlsRequired | Refusal::NotAToken | Refusal::CannotCheck(_) => "28000",
            Refusal::DatabaseRefused { .. } | Refusal::TooLong { .. } => "28P01",
            Refusal::DatabaseUnavailable => "08001",
        }
    }

    /// A fixed label for metrics and logs (`expired`, `wrong_user`, `signature_mismatch`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.reason(),
            Refusal::TlsRequired => "tls_required",
            Refusal::NotAToken => "not_a_token",
            Refusal::DatabaseRefused { .. } => "database_refused",
            Refusal::DatabaseUnavailable => "database_unavailable",
            Refusal::CannotCheck(_) => "database_cannot_check",
            Refusal::TooLong { .. } => "too_long",
        }
    }
}

/// How a token was accepted; the label of `tollgate_iam_auth_total{outcome="success"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The local verifier checked the signature with this trusted key.
    Local {
        /// The signing access key id (not secret).
        access_key_id: String,
    },
    /// The database accepted the token (`cached`: it had, earlier, and the verdict was reused).
    Delegate {
        /// Whether the verdict came from the cache, costing no database login.
        cached: bool,
    },
}

impl Accepted {
    /// The metric label.
    pub fn how(&self) -> &'static str {
        match self {
            Accepted::Local { .. } => "local",
            Accepted::Delegate { cached: false } => "delegate",
            Accepted::Delegate { cached: true } => "delegate_cache",
        }
    }
}

enum Verifier {
    Local(Box<LocalVerifier>),
    Delegate(Expectations),
}

/// The IAM settings in force, with the keys and policy loaded.
pub struct IamState {
    /// iam_auth.
    pub mode: IamMode,
    /// iam_allow_plaintext (tests only).
    pub allow_plaintext: bool,
    verifier: Verifier,
}

impl IamState {
    /// Builds the verifier the settings describe, reading the keys and policy files.
    pub fn load(cfg: &IamConfig) -> Result<IamState, IamLoadError> {
        let mut expect = Expectations::new(
            &cfg.region,
            cfg.endpoints.clone(),
            DbResource {
                partition: partition(&cfg.region).to_string(),
                account_id: cfg.account_id.clone(),
                resource_id: cfg.proxy_id.clone(),
            },
        );
        expect.clock_skew_secs = i64::try_from(cfg.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let verifier = match cfg.verifier {
            IamVerifierKind::Delegate => Verifier::Delegate(expect),
            IamVerifierKind::Local => {
                let keys = match &cfg.keys {
                    Some(KeysSource::File(path)) => {
                        KeyStore::load(path).map_err(|source| IamLoadError::Keys {
                            what: format!("iam_keys_file {}", path.display()),
                            source,
                        })?
                    }
                    Some(KeysSource::Inline(text)) => {
                        KeyStore::parse(&text.0).map_err(|source| IamLoadError::Keys {
                            what: "iam_keys".into(),
                            source,
                        })?
                    }
                    None => KeyStore::default(),
                };
                let policy = match &cfg.policy_file {
                    Some(path) => {
                        Some(Policy::load(path).map_err(|source| IamLoadError::Policy {
                            path: path.display().to_string(),
                            source,
                        })?)
                    }
                    None => None,
                };
                if cfg.mode != IamMode::Disabled && keys.is_empty() {
                    tracing::warn!("iam_auth is on but the trusted keys list no key: every IAM token will be refused");
                }
                Verifier::Local(Box::new(LocalVerifier {
                    keys,
                    policy,
                    expect,
                }))
            }
        };
        Ok(IamState {
            mode: cfg.mode,
            allow_plaintext: cfg.allow_plaintext,
            verifier,
        })
    }

    /// Trusted keys loaded (local verifier), for logs; `None` for delegate.
    pub fn key_count(&self) -> Option<usize> {
        match &self.verifier {
            Verifier::Local(v) => Some(v.keys.len()),
            Verifier::Delegate(_) => None,
        }
    }

    /// Whether clients can log in with tokens at all.
    pub fn accepts_tokens(&self) -> bool {
        self.mode != IamMode::Disabled
    }
}

/// Client IAM auth as configured now, and the delegate verifier's cache (kept across reloads).
pub struct ClientIam {
    state: RwLock<Arc<IamState>>,
    delegate: delegate::DelegateVerifier,
}

impl ClientIam {
    /// Loads the verifier.
    pub fn new(cfg: &IamConfig) -> Result<ClientIam, IamLoadError> {
        let state = IamState::load(cfg)?;
        Ok(ClientIam {
            state: RwLock::new(Arc::new(state)),
            delegate: delegate::DelegateVerifier::new(
                cfg.token_cache_size,
                cfg.delegate_max_checks,
            ),
        })
    }

    /// The settings in force (read once per login).
    pub fn state(&self) -> Arc<IamState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts reloaded settings in force for new logins.
    pub fn replace(&self, state: IamState, cfg: &IamConfig) {
        self.delegate.resize(cfg.token_cache_size);
        self.delegate.set_max_checks(cfg.delegate_max_checks);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// Decides whether `token` lets its sender log in as `user`. Every check that needs no
    /// secret runs first, so no bad token costs a database connection unless only the
    /// database can judge it (delegate: a well-formed, current token for the right user).
    pub async fn verify(
        &self,
        state: &IamState,
        token: &str,
        user: &str,
        database: &str,
        connector: &Connector,
        now_unix: i64,
    ) -> Result<Accepted, Refusal> {
        match &state.verifier {
            Verifier::Local(v) => v
                .verify(token, user, now_unix)
                .map(|ok| Accepted::Local {
                    access_key_id: ok.access_key_id,
                })
                .map_err(Refusal::from),
            Verifier::Delegate(expect) => {
                let parsed = precheck(token, expect, user, now_unix)?;
                let valid_until = parsed
                    .amz_date_unix()
                    .saturating_add(i64::try_from(parsed.expires_secs()).unwrap_or(0));
                self.delegate
                    .verify(token, valid_until, now_unix, || {
                        delegate::check_with_database(connector, token, user, database)
                    })
                    .await
                    .map(|cached| Accepted::Delegate { cached })
            }
        }
    }
}

/// Whether a password looks like an RDS IAM auth token (so, under `iam_auth = enabled`, goes to
/// the verifier rather than the auth file). Every token carries its SigV4 parameters.
pub fn looks_like_token(password: &str) -> bool {
    password.contains("X-Amz-") || password.contains("Action=connect")
}

/// Seconds since the Unix epoch by the system clock.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};
    use tollgate_auth::iam::{generate_token, TokenRequest};

    const NOW: i64 = 1_724_709_600;

    fn config(dir: &std::path::Path, policy: Option<&str>) -> IamConfig {
        let keys = dir.join("keys.toml");
        std::fs::write(
            &keys,
            "[[key]]\naccess_key_id = \"AKIAAPP\"\nsecret_access_key = \"s3cret\"\nallow = [\"app\"]\n",
        )
        .unwrap();
        let policy_file = policy.map(|json| {
            let p = dir.join("policy.json");
            std::fs::write(&p, json).unwrap();
            p
        });
        Config::validate(RawConfig {
            upstream: Some("postgres://db:5432/?sslmode=require".into()),
            auth_file: Some("users.txt".into()),
            iam_auth: Some("required".into()),
            iam_region: Some("us-east-1".into()),
            iam_endpoint: Some(vec!["tollgate.example.com:6432".into()]),
            iam_keys_file: Some(keys),
            iam_policy_file: policy_file,
            iam_account_id: Some("123456789012".into()),
            iam_proxy_id: Some("prx-1".into()),
            iam_allow_plaintext: Some(true),
            ..Default::default()
        })
        .unwrap()
        .iam
    }

    fn token(user: &str) -> String {
        generate_token(&TokenRequest {
            host_port: "tollgate.example.com:6432",
            region: "us-east-1",
            user,
            access_key_id: "AKIAAPP",
            secret_access_key: "s3cret",
            session_token: None,
            unix_time: NOW as u64,
            expires_secs: 900,
        })
        .unwrap()
    }

    fn verify_local(state: &IamState, token: &str, user: &str) -> Result<Accepted, Refusal> {
        let Verifier::Local(v) = &state.verifier else {
            panic!("local verifier expected")
        };
        v.verify(token, user, NOW)
            .map(|ok| Accepted::Local {
                access_key_id: ok.access_key_id,
            })
            .map_err(Refusal::from)
    }

    #[test]
    fn loads_keys_and_policy_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let state = IamState::load(&config(dir.path(), None)).unwrap();
        assert_eq!(state.key_count(), Some(1));
        assert_eq!(
            verify_local(&state, &token("app"), "app").unwrap().how(),
            "local"
        );
        let refused = verify_local(&state, &token("app"), "other").unwrap_err();
        assert_eq!(
            (refused.sqlstate(), refused.reason()),
            ("28P01", "wrong_user")
        );

        // The policy names this proxy's resource ARN, built from the account and proxy ids.
        let state = IamState::load(&config(
            dir.path(),
            Some(
                r#"{"Statement": {"Effect": "Deny", "Action": "rds-db:connect",
                 "Resource": "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-1/app"}}"#,
            ),
        ))
        .unwrap();
        let refused = verify_local(&state, &token("app"), "app").unwrap_err();
        assert_eq!(
            (refused.sqlstate(), refused.reason()),
            ("28000", "policy_denied")
        );
    }

    #[test]
    fn load_errors_name_the_setting_and_hide_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), None);
        cfg.keys = Some(KeysSource::Inline(crate::config::SecretText(
            "[[key]]\naccess_key_id = \"A\"\nsecret_access_key = \"hunter2\" x\n".into(),
        )));
        let e = IamState::load(&cfg).err().unwrap().to_string();
        assert!(e.starts_with("iam_keys:") && !e.contains("hunter2"), "{e}");
        cfg.keys = Some(KeysSource::File(dir.path().join("missing.toml")));
        let e = IamState::load(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("iam_keys_file") && e.contains("missing.toml"),
            "{e}"
        );
        let mut cfg = config(dir.path(), Some("{not json"));
        let e = IamState::load(&cfg).err().unwrap().to_string();
        assert!(e.contains("iam_policy_file"), "{e}");
        cfg.policy_file = None;
        assert!(IamState::load(&cfg).is_ok());
    }

    #[test]
    fn tokens_are_recognised_by_their_sigv4_parameters() {
        assert!(looks_like_token(&token("app")));
        assert!(looks_like_token("host:1/?Action=connect&DBUser=app"));
        assert!(!looks_like_token("correct horse battery staple"));
        assert!(!looks_like_token("SCRAM-SHA-256$4096:..."));
    }

    #[test]
    fn refusals_for_settings_say_what_to_do() {
        let p = Refusal::TlsRequired;
        assert_eq!((p.sqlstate(), p.reason()), ("28000", "tls_required"));
        assert!(p.to_string().contains("sslmode=require"));
        let n = Refusal::NotAToken;
        assert_eq!((n.sqlstate(), n.reason()), ("28000", "not_a_token"));
        assert!(n.to_string().contains("generate-db-auth-token"));
        let d = Refusal::DatabaseRefused {
            user: "app".into(),
            server_message: "PAM authentication failed for user \"app\"".into(),
        };
        assert_eq!((d.sqlstate(), d.reason()), ("28P01", "database_refused"));
        assert!(d.to_string().contains("rds_iam") && d.to_string().contains("PAM"));
        let u = Refusal::DatabaseUnavailable;
        assert_eq!(
            (u.sqlstate(), u.reason()),
            ("08001", "database_unavailable")
        );
        let t = Refusal::TooLong { limit: 16384 };
        assert_eq!((t.sqlstate(), t.reason()), ("28P01", "too_long"));
    }
}

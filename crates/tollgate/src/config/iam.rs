//! The IAM settings, validated: client IAM auth (`iam_*`, RDS Proxy's IAMAuth) and Tollgate's
//! own IAM login to the database (`backend_iam*`). Checked once here into types that cannot
//! hold a bad value; the keys and policy files are read by `iam::IamState::load`, like the auth
//! file, so a reload can re-read them.

use super::raw::{RawConfig, SecretText};
use super::upstream::{SslMode, Upstream};
use super::{invalid, ConfigError};
use std::path::PathBuf;
use std::time::Duration;
use tollgate_auth::iam::Endpoint;

/// Whether clients may or must log in with IAM auth tokens (RDS Proxy's IAMAuth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamMode {
    /// Passwords only (SCRAM / md5), as without IAM.
    Disabled,
    /// IAM auth tokens or auth-file passwords, both as cleartext passwords over TLS.
    Enabled,
    /// IAM auth tokens only.
    Required,
}

impl IamMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IamMode::Disabled => "disabled",
            IamMode::Enabled => "enabled",
            IamMode::Required => "required",
        }
    }
}

/// Who decides whether a client's token is genuine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamVerifierKind {
    /// Tollgate recomputes the SigV4 signature with trusted keys it holds.
    Local,
    /// Tollgate logs in to the database with the token; the database (Aurora) decides.
    Delegate,
}

impl IamVerifierKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IamVerifierKind::Local => "local",
            IamVerifierKind::Delegate => "delegate",
        }
    }
}

/// Where the local verifier's trusted keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysSource {
    /// A TOML file, re-read on reload.
    File(PathBuf),
    /// The same TOML text, given inline (`TOLLGATE_IAM_KEYS`).
    Inline(SecretText),
}

/// The validated IAM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamConfig {
    /// iam_auth.
    pub mode: IamMode,
    /// iam_verifier.
    pub verifier: IamVerifierKind,
    /// iam_region (required when iam_auth is not disabled).
    pub region: String,
    /// The endpoint names tokens may be signed for: iam_endpoint, or for `delegate` the
    /// upstream's host:port when iam_endpoint is not set.
    pub endpoints: Vec<Endpoint>,
    /// The trusted keys (local verifier only).
    pub keys: Option<KeysSource>,
    /// iam_policy_file (local verifier only).
    pub policy_file: Option<PathBuf>,
    /// iam_account_id, for resource ARNs.
    pub account_id: String,
    /// iam_proxy_id, for resource ARNs.
    pub proxy_id: String,
    /// iam_clock_skew.
    pub clock_skew: Duration,
    /// iam_allow_plaintext (tests only).
    pub allow_plaintext: bool,
    /// iam_token_cache_size.
    pub token_cache_size: usize,
    /// iam_delegate_max_checks.
    pub delegate_max_checks: usize,
    /// backend_iam: the region to sign Tollgate's own tokens for, when on.
    pub backend_region: Option<String>,
}

/// The longest clock skew allowed. A token dated this far ahead stays usable for the skew plus
/// its 900 s, so the bound keeps a stolen token's life short; NTP keeps real skew to seconds.
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What to set so IAM auth tokens may go upstream (backend_iam's own, delegate's clients'):
/// both are cleartext passwords to the database, and `backend/connect.rs` answers a cleartext
/// password request only over TLS that verified the server's name, so below `verify-full`
/// every such login would fail; `require` and `verify-ca` would also hand the token to
/// whoever sits in between. `iam_allow_plaintext` does not excuse this (it is about clients'
/// connections to Tollgate): the refusal in `backend/connect.rs` has no escape either.
const UPSTREAM_FOR_TOKENS: &str = "set sslmode=verify-full and sslrootcert=PATH (the CA bundle \
     that signed the database's certificate; for Aurora, the RDS global bundle) in upstream, \
     e.g. postgres://db.example.com:5432/?sslmode=verify-full&sslrootcert=/etc/ssl/rds-global-bundle.pem";

impl IamConfig {
    /// Validates the IAM settings of `raw`; `tls` says whether client TLS is configured.
    pub fn validate(
        raw: &RawConfig,
        upstream: &Upstream,
        tls: bool,
    ) -> Result<IamConfig, ConfigError> {
        let mode = match raw.iam_auth.as_deref().unwrap_or("disabled") {
            "disabled" => IamMode::Disabled,
            "enabled" => IamMode::Enabled,
            "required" => IamMode::Required,
            other => {
                return Err(invalid(
                    "iam_auth",
                    format!("{other:?} is not disabled, enabled or required"),
                ))
            }
        };
        let verifier = match raw.iam_verifier.as_deref().unwrap_or("local") {
            "local" => IamVerifierKind::Local,
            "delegate" => IamVerifierKind::Delegate,
            other => {
                return Err(invalid(
                    "iam_verifier",
                    format!("{other:?} is not local or delegate"),
                ))
            }
        };
        let region = match &raw.iam_region {
            Some(r) => check_region("iam_region", r)?,
            None => String::new(),
        };
        let allow_plaintext = raw.iam_allow_plaintext.unwrap_or(false);
        let clock_skew = raw.iam_clock_skew.unwrap_or(300);
        if clock_skew > MAX_CLOCK_SKEW_SECS {
            return Err(invalid(
                "iam_clock_skew",
                format!(
                    "{clock_skew} s is more than {MAX_CLOCK_SKEW_SECS} s: a token dated that far \
                     ahead would stay usable for the skew plus 15 minutes; fix the clocks (NTP) \
                     instead"
                ),
            ));
        }
        let token_cache_size = raw.iam_token_cache_size.unwrap_or(10_000);
        if token_cache_size > 1_000_000 {
            return Err(invalid(
                "iam_token_cache_size",
                format!("{token_cache_size} is more than 1000000"),
            ));
        }
        let delegate_max_checks = raw.iam_delegate_max_checks.unwrap_or(10);
        if !(1..=1000).contains(&delegate_max_checks) {
            return Err(invalid(
                "iam_delegate_max_checks",
                format!("{delegate_max_checks} is not between 1 and 1000"),
            ));
        }
        let mut endpoints = Vec::new();
        for e in raw.iam_endpoint.iter().flatten() {
            let e = e.trim();
            if e.is_empty() {
                continue;
            }
            endpoints.push(Endpoint::parse(e).ok_or_else(|| {
                invalid(
                    "iam_endpoint",
                    format!("{e:?} is not HOST:PORT (a DNS name or [IPv6] address and a port)"),
                )
            })?);
        }
        let keys = match (&raw.iam_keys_file, &raw.iam_keys) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "iam_keys",
                    "is set together with iam_keys_file; give the trusted keys one way",
                ))
            }
            (Some(path), None) => Some(KeysSource::File(path.clone())),
            (None, Some(text)) => Some(KeysSource::Inline(text.clone())),
            (None, None) => None,
        };
        let account_id = name_part("iam_account_id", raw.iam_account_id.as_deref())?;
        let proxy_id = name_part("iam_proxy_id", raw.iam_proxy_id.as_deref())?;

        if mode != IamMode::Disabled {
            if region.is_empty() {
                return Err(invalid(
                    "iam_region",
                    "is required with iam_auth: the AWS region clients sign their tokens for, e.g. us-east-1",
                ));
            }
            if !tls && !allow_plaintext {
                return Err(invalid(
                    "iam_auth",
                    "needs tls_cert and tls_key: clients send IAM auth tokens as cleartext \
                     passwords, which Tollgate accepts only over TLS",
                ));
            }
            match verifier {
                IamVerifierKind::Local => {
                    if endpoints.is_empty() {
                        return Err(invalid(
                            "iam_endpoint",
                            "is required with iam_verifier = local: the HOST:PORT apps connect to \
                             and sign their tokens for (e.g. tollgate.example.com:6432)",
                        ));
                    }
                    if keys.is_none() {
                        return Err(invalid(
                            "iam_keys_file",
                            "is required with iam_verifier = local: the trusted signing keys \
                             (or give them inline in TOLLGATE_IAM_KEYS)",
                        ));
                    }
                }
                IamVerifierKind::Delegate => {
                    if keys.is_some() {
                        return Err(invalid(
                            "iam_keys_file",
                            "applies only to iam_verifier = local; the database checks tokens in delegate mode",
                        ));
                    }
                    if raw.iam_policy_file.is_some() {
                        return Err(invalid(
                            "iam_policy_file",
                            "applies only to iam_verifier = local; in delegate mode the principal's own IAM policy decides",
                        ));
                    }
                    if endpoints.is_empty() {
                        endpoints.push(Endpoint::new(&token_host(&upstream.host), upstream.port));
                    }
                    if upstream.sslmode != SslMode::VerifyFull {
                        return Err(invalid(
                            "iam_verifier",
                            format!(
                                "delegate sends each client's IAM auth token to the database as \
                                 a cleartext password, which Tollgate sends only over verified \
                                 TLS, and upstream has sslmode={}: {UPSTREAM_FOR_TOKENS}",
                                upstream.sslmode.as_str()
                            ),
                        ));
                    }
                }
            }
        }

        let backend_region = if raw.backend_iam.unwrap_or(false) {
            let region = match &raw.backend_iam_region {
                Some(r) => check_region("backend_iam_region", r)?,
                None if !region.is_empty() => region.clone(),
                None => {
                    return Err(invalid(
                        "backend_iam_region",
                        "is required with backend_iam (or set iam_region): the region of the database Tollgate logs in to",
                    ))
                }
            };
            if upstream.sslmode != SslMode::VerifyFull {
                return Err(invalid(
                    "backend_iam",
                    format!(
                        "sends Tollgate's IAM auth tokens to the database as cleartext passwords, \
                         which Tollgate sends only over verified TLS, and upstream has \
                         sslmode={}: {UPSTREAM_FOR_TOKENS}",
                        upstream.sslmode.as_str()
                    ),
                ));
            }
            Some(region)
        } else {
            None
        };

        Ok(IamConfig {
            mode,
            verifier,
            region,
            endpoints,
            keys,
            policy_file: raw.iam_policy_file.clone(),
            account_id,
            proxy_id,
            clock_skew: Duration::from_secs(clock_skew),
            allow_plaintext,
            token_cache_size,
            delegate_max_checks,
            backend_region,
        })
    }

    /// The AWS partition the region is in, for resource ARNs.
    pub fn partition(&self) -> &'static str {
        partition(&self.region)
    }
}

/// The AWS partition of a region: `aws-cn` for China, `aws-us-gov` for GovCloud, else `aws`.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The host as a token spells it: IPv6 literals in brackets.
pub fn token_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn check_region(key: &'static str, r: &str) -> Result<String, ConfigError> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(invalid(
            key,
            format!("{r:?} is not an AWS region name like us-east-1"),
        ));
    }
    Ok(r.to_string())
}

/// An ARN part: `*` by default, else letters, digits, `-`, `_`, `.`.
fn name_part(key: &'static str, v: Option<&str>) -> Result<String, ConfigError> {
    let v = v.unwrap_or("*");
    let ok = !v.is_empty()
        && v.len() <= 128
        && (v == "*"
            || v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    if !ok {
        return Err(invalid(
            key,
            format!("{v:?} is not an ARN part (letters, digits, '-', '_', '.'; or \"*\")"),
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, RawConfig};

    fn base() -> RawConfig {
        RawConfig {
            upstream: Some("postgres://db.example.com:5432/?sslmode=require".into()),
            auth_file: Some("users.txt".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..Default::default()
        }
    }

    fn local() -> RawConfig {
        RawConfig {
            iam_auth: Some("required".into()),
            iam_region: Some("us-east-1".into()),
            iam_endpoint: Some(vec!["tollgate.example.com:6432".into()]),
            iam_keys_file: Some("keys.toml".into()),
            ..base()
        }
    }

    /// An upstream that may be sent IAM auth tokens.
    const VERIFIED: &str = "postgres://db.example.com:5432/?sslmode=verify-full&sslrootcert=ca.pem";

    /// The sslmodes that keep tokens from the database: all but verify-full.
    const BELOW_VERIFY_FULL: [&str; 4] = ["disable", "prefer", "require", "verify-ca"];

    fn upstream_with(mode: &str) -> Option<String> {
        let root = if mode == "verify-ca" {
            "&sslrootcert=ca.pem"
        } else {
            ""
        };
        Some(format!(
            "postgres://db.example.com:5432/?sslmode={mode}{root}"
        ))
    }

    /// Says which setting is wrong and exactly what to put in upstream instead.
    fn says_set_verify_full(e: &str, key: &str, mode: &str) -> bool {
        e.contains(key)
            && e.contains(&format!("upstream has sslmode={mode}"))
            && e.contains("set sslmode=verify-full and sslrootcert=PATH")
    }

    fn err(raw: RawConfig) -> String {
        Config::validate(raw).unwrap_err().to_string()
    }

    #[test]
    fn disabled_by_default_and_needs_nothing() {
        let c = Config::validate(base()).unwrap();
        assert_eq!(c.iam.mode, super::IamMode::Disabled);
        assert_eq!(c.iam.verifier, super::IamVerifierKind::Local);
        assert_eq!(c.iam.backend_region, None);
        assert_eq!(c.iam.clock_skew.as_secs(), 300);
    }

    #[test]
    fn local_mode_needs_region_endpoint_keys_and_tls() {
        let c = Config::validate(local()).unwrap();
        assert_eq!(c.iam.endpoints.len(), 1);
        assert_eq!(
            (c.iam.account_id.as_str(), c.iam.proxy_id.as_str()),
            ("*", "*")
        );
        for (change, key) in [
            (
                RawConfig {
                    iam_region: None,
                    ..local()
                },
                "`iam_region`",
            ),
            (
                RawConfig {
                    iam_endpoint: None,
                    ..local()
                },
                "`iam_endpoint`",
            ),
            (
                RawConfig {
                    iam_keys_file: None,
                    ..local()
                },
                "`iam_keys_file`",
            ),
            (
                RawConfig {
                    tls_cert: None,
                    tls_key: None,
                    ..local()
                },
                "`iam_auth`",
            ),
            (
                RawConfig {
                    iam_endpoint: Some(vec!["no-port".into()]),
                    ..local()
                },
                "`iam_endpoint`",
            ),
            (
                RawConfig {
                    iam_auth: Some("on".into()),
                    ..local()
                },
                "`iam_auth`",
            ),
            (
                RawConfig {
                    iam_verifier: Some("aws".into()),
                    ..local()
                },
                "`iam_verifier`",
            ),
            (
                RawConfig {
                    iam_region: Some("US East".into()),
                    ..local()
                },
                "`iam_region`",
            ),
            (
                RawConfig {
                    iam_clock_skew: Some(901),
                    ..local()
                },
                "`iam_clock_skew`",
            ),
            (
                RawConfig {
                    iam_keys: Some(super::SecretText("x".into())),
                    ..local()
                },
                "`iam_keys`",
            ),
            (
                RawConfig {
                    iam_proxy_id: Some("prx/1".into()),
                    ..local()
                },
                "`iam_proxy_id`",
            ),
        ] {
            let e = err(change);
            assert!(e.contains(key), "{key}: {e}");
        }
        // The test-only escape hatch allows plain TCP.
        Config::validate(RawConfig {
            tls_cert: None,
            tls_key: None,
            iam_allow_plaintext: Some(true),
            ..local()
        })
        .unwrap();
        // Keys inline instead of a file.
        Config::validate(RawConfig {
            iam_keys_file: None,
            iam_keys: Some(super::SecretText("[[key]]".into())),
            ..local()
        })
        .unwrap();
    }

    #[test]
    fn delegate_mode_defaults_the_endpoint_to_the_upstream_and_refuses_local_files() {
        let raw = RawConfig {
            iam_verifier: Some("delegate".into()),
            iam_endpoint: None,
            iam_keys_file: None,
            upstream: Some(VERIFIED.into()),
            ..local()
        };
        let c = Config::validate(raw.clone()).unwrap();
        assert_eq!(c.iam.endpoints[0].to_string(), "db.example.com:5432");
        let e = err(RawConfig {
            iam_keys_file: Some("k".into()),
            ..raw.clone()
        });
        assert!(e.contains("`iam_keys_file`"), "{e}");
        let e = err(RawConfig {
            iam_policy_file: Some("p".into()),
            ..raw.clone()
        });
        assert!(e.contains("`iam_policy_file`"), "{e}");
    }

    #[test]
    fn delegate_mode_needs_verify_full_upstream_even_with_iam_allow_plaintext() {
        // Clients' tokens go to the database as cleartext passwords, which the backend login
        // sends only over verify-full TLS: anything less would start and then fail every login.
        let raw = RawConfig {
            iam_verifier: Some("delegate".into()),
            iam_endpoint: None,
            iam_keys_file: None,
            ..local()
        };
        for mode in BELOW_VERIFY_FULL {
            for allow_plaintext in [None, Some(true)] {
                let e = err(RawConfig {
                    upstream: upstream_with(mode),
                    iam_allow_plaintext: allow_plaintext,
                    ..raw.clone()
                });
                assert!(says_set_verify_full(&e, "`iam_verifier`", mode), "{e}");
            }
        }
        Config::validate(RawConfig {
            upstream: Some(VERIFIED.into()),
            ..raw
        })
        .unwrap();
    }

    #[test]
    fn clock_skew_is_at_most_five_minutes() {
        let c = Config::validate(RawConfig {
            iam_clock_skew: Some(300),
            ..local()
        })
        .unwrap();
        assert_eq!(c.iam.clock_skew.as_secs(), 300);
        let e = err(RawConfig {
            iam_clock_skew: Some(301),
            ..local()
        });
        assert!(e.contains("`iam_clock_skew`") && e.contains("NTP"), "{e}");
    }

    #[test]
    fn backend_iam_needs_a_region_and_verify_full_to_the_database() {
        let verified = || RawConfig {
            upstream: Some(VERIFIED.into()),
            ..base()
        };
        let c = Config::validate(RawConfig {
            backend_iam: Some(true),
            iam_region: Some("eu-west-1".into()),
            ..verified()
        })
        .unwrap();
        assert_eq!(c.iam.backend_region.as_deref(), Some("eu-west-1"));
        let c = Config::validate(RawConfig {
            backend_iam: Some(true),
            backend_iam_region: Some("us-west-2".into()),
            ..verified()
        })
        .unwrap();
        assert_eq!(c.iam.backend_region.as_deref(), Some("us-west-2"));
        let e = err(RawConfig {
            backend_iam: Some(true),
            ..verified()
        });
        assert!(e.contains("`backend_iam_region`"), "{e}");
        // Tokens are cleartext passwords, which the backend login sends only over verify-full
        // TLS: anything less would start and then fail every login.
        for mode in BELOW_VERIFY_FULL {
            for allow_plaintext in [None, Some(true)] {
                let e = err(RawConfig {
                    backend_iam: Some(true),
                    backend_iam_region: Some("us-west-2".into()),
                    upstream: upstream_with(mode),
                    iam_allow_plaintext: allow_plaintext,
                    ..base()
                });
                assert!(says_set_verify_full(&e, "`backend_iam`", mode), "{e}");
            }
        }
    }

    #[test]
    fn partitions_and_ipv6_hosts() {
        assert_eq!(super::partition("us-east-1"), "aws");
        assert_eq!(super::partition("cn-north-1"), "aws-cn");
        assert_eq!(super::partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(super::token_host("::1"), "[::1]");
        assert_eq!(super::token_host("db"), "db");
    }
}

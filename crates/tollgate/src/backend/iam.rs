//! Tollgate's own IAM login to the database (RDS Proxy's end-to-end IAM, `backend_iam`): it
//! answers the database's cleartext password request with an RDS IAM auth token it generates
//! for its own AWS identity, so no database password is stored anywhere.
//!
//! Credentials come from the standard AWS chain (`aws-config`: environment, shared profile and
//! `credential_process`, web identity / IRSA, ECS, IMDSv2) and are kept until five minutes
//! before they expire. Tokens are signed with `tollgate_auth::iam::generate_token` (aws-sigv4),
//! one per (host, port, user), and re-used for ten minutes of their fifteen, never past their
//! credentials' expiry. Neither is ever logged.

use super::BackendError;
use crate::sync::lock;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate_auth::iam::{generate_token, TokenRequest};

/// Lifetime written into each token (`X-Amz-Expires`): RDS's maximum.
const TOKEN_LIFETIME_SECS: u64 = 900;
/// How long a token is handed out again: its lifetime less five minutes' margin for clock
/// drift and slow logins.
const TOKEN_REUSE_SECS: u64 = 600;
/// Credentials are refreshed this long before they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);
/// Credentials without an expiry (static keys, profiles) are re-read this often, so rotated
/// keys are picked up.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(900);
/// Most tokens kept: one per (host, port, user) in use.
const MAX_CACHED_TOKENS: usize = 10_000;

struct HeldCredentials {
    creds: Credentials,
    /// When to fetch again.
    refresh_at: SystemTime,
}

struct CachedToken {
    token: String,
    reuse_until: u64,
}

/// Makes RDS IAM auth tokens for Tollgate's own AWS identity.
pub struct IamTokenSource {
    region: String,
    provider: SharedCredentialsProvider,
    credentials: tokio::sync::Mutex<Option<HeldCredentials>>,
    tokens: Mutex<HashMap<(String, u16, String), CachedToken>>,
}

impl std::fmt::Debug for IamTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamTokenSource")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl IamTokenSource {
    /// Signs for `region` with credentials from `provider`.
    pub fn new(region: &str, provider: SharedCredentialsProvider) -> Self {
        IamTokenSource {
            region: region.to_string(),
            provider,
            credentials: tokio::sync::Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Signs for `region` with credentials from the standard AWS chain.
    pub async fn from_default_chain(region: &str) -> Result<Self, BackendError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .http_client(http)
            .load()
            .await;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            BackendError::IamCredentials("the AWS SDK built no credential chain".into())
        })?;
        Ok(Self::new(region, provider))
    }

    /// The region tokens are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The access key id Tollgate signs with now (not secret; for the start-up log).
    pub async fn access_key_id(&self) -> Result<String, BackendError> {
        Ok(self.credentials().await?.access_key_id().to_string())
    }

    /// A token for logging in to `host:port` as `user`: a cached one with at least five
    /// minutes left, else a new one.
    pub async fn token(&self, host: &str, port: u16, user: &str) -> Result<String, BackendError> {
        let now = unix(SystemTime::now());
        let key = (host.to_string(), port, user.to_string());
        if let Some(t) = lock(&self.tokens).get(&key) {
            if now < t.reuse_until {
                return Ok(t.token.clone());
            }
        }
        let creds = self.credentials().await?;
        let host_port = format!("{}:{port}", crate::config::iam::token_host(host));
        let token = generate_token(&TokenRequest {
            host_port: &host_port,
            region: &self.region,
            user,
            access_key_id: creds.access_key_id(),
            secret_access_key: creds.secret_access_key(),
            session_token: creds.session_token(),
            unix_time: now,
            expires_secs: TOKEN_LIFETIME_SECS,
        })
        .map_err(|e| BackendError::IamCredentials(e.to_string()))?;
        let creds_end = creds.expiry().map_or(u64::MAX, |t| {
            unix(t).saturating_sub(CREDENTIALS_MARGIN.as_secs())
        });
        let reuse_until = now.saturating_add(TOKEN_REUSE_SECS).min(creds_end);
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_CACHED_TOKENS {
            tokens.retain(|_, t| now < t.reuse_until);
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(
            key,
            CachedToken {
                token: token.clone(),
                reuse_until,
            },
        );
        Ok(token)
    }

    /// Current credentials, fetched from the chain when none are held or they are due.
    async fn credentials(&self) -> Result<Credentials, BackendError> {
        let mut held = self.credentials.lock().await;
        let now = SystemTime::now();
        if let Some(h) = held.as_ref() {
            if now < h.refresh_at {
                return Ok(h.creds.clone());
            }
        }
        let creds = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| BackendError::IamCredentials(error_chain(&e)))?;
        let recheck = now + CREDENTIALS_RECHECK;
        let refresh_at = match creds.expiry() {
            Some(expiry) => expiry
                .checked_sub(CREDENTIALS_MARGIN)
                .unwrap_or(UNIX_EPOCH)
                .min(recheck),
            None => recheck,
        };
        *held = Some(HeldCredentials {
            creds: creds.clone(),
            refresh_at,
        });
        Ok(creds)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An error and its causes on one line: the chain's errors say which providers were tried.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_auth::iam::{DbResource, Endpoint, Expectations, KeyStore, LocalVerifier};

    fn source(session_token: Option<&str>, expiry: Option<SystemTime>) -> IamTokenSource {
        let creds = Credentials::new(
            "AKIATOLLGATE",
            "tollgate/secret+key",
            session_token.map(str::to_string),
            expiry,
            "test",
        );
        IamTokenSource::new("eu-west-1", SharedCredentialsProvider::new(creds))
    }

    fn verifier(endpoint: &str) -> LocalVerifier {
        LocalVerifier {
            keys: KeyStore::parse(
                "[[key]]\naccess_key_id = \"AKIATOLLGATE\"\nsecret_access_key = \"tollgate/secret+key\"\nallow = [\"*\"]\n",
            )
            .unwrap(),
            policy: None,
            expect: Expectations::new(
                "eu-west-1",
                vec![Endpoint::parse(endpoint).unwrap()],
                DbResource::new("*", "*"),
            ),
        }
    }

    #[tokio::test]
    async fn tokens_have_the_rds_shape_and_verify_locally() {
        let src = source(None, None);
        let t = src
            .token("db.cluster-x.eu-west-1.rds.amazonaws.com", 5432, "app")
            .await
            .unwrap();
        assert!(
            t.starts_with(
                "db.cluster-x.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app\
                 &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIATOLLGATE%2F"
            ),
            "{t}"
        );
        assert!(t.contains("%2Feu-west-1%2Frds-db%2Faws4_request&"), "{t}");
        assert!(t.contains("&X-Amz-Expires=900&"), "{t}");
        assert!(!t.contains("tollgate/secret"), "{t}");
        let v = verifier("db.cluster-x.eu-west-1.rds.amazonaws.com:5432");
        let now = unix(SystemTime::now()) as i64;
        assert_eq!(
            v.verify(&t, "app", now).unwrap().access_key_id,
            "AKIATOLLGATE"
        );
        assert_eq!(src.access_key_id().await.unwrap(), "AKIATOLLGATE");
    }

    #[tokio::test]
    async fn session_tokens_are_signed_in_and_ipv6_hosts_bracketed() {
        let src = source(Some("FwoGZXIvYXdzE+session/token=="), None);
        let t = src.token("::1", 5432, "app").await.unwrap();
        assert!(t.starts_with("[::1]:5432/?"), "{t}");
        assert!(
            t.ends_with("&X-Amz-Security-Token=FwoGZXIvYXdzE%2Bsession%2Ftoken%3D%3D"),
            "{t}"
        );
        let now = unix(SystemTime::now()) as i64;
        verifier("[::1]:5432").verify(&t, "app", now).unwrap();
    }

    #[tokio::test]
    async fn tokens_are_reused_per_endpoint_and_user() {
        let src = source(None, None);
        let a = src.token("db", 5432, "app").await.unwrap();
        assert_eq!(src.token("db", 5432, "app").await.unwrap(), a);
        assert_ne!(src.token("db", 5432, "other").await.unwrap(), a);
        assert_ne!(src.token("db", 5433, "app").await.unwrap(), a);
    }

    #[tokio::test]
    async fn tokens_are_not_reused_past_their_credentials_expiry() {
        // Credentials that expire within the margin: every login signs afresh.
        let soon = SystemTime::now() + Duration::from_secs(60);
        let src = source(Some("sess"), Some(soon));
        src.token("db", 5432, "app").await.unwrap();
        let cached = lock(&src.tokens)
            .get(&("db".to_string(), 5432, "app".to_string()))
            .map(|t| t.reuse_until)
            .unwrap();
        assert!(cached <= unix(soon), "{cached}");
    }

    #[tokio::test]
    async fn missing_credentials_are_an_error_that_names_the_problem() {
        #[derive(Debug)]
        struct None_;
        impl ProvideCredentials for None_ {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                    aws_credential_types::provider::error::CredentialsError::not_loaded(
                        "no providers in chain provided credentials",
                    ),
                ))
            }
        }
        let src = IamTokenSource::new("us-east-1", SharedCredentialsProvider::new(None_));
        let e = src.token("db", 5432, "app").await.unwrap_err().to_string();
        assert!(e.contains("no providers in chain"), "{e}");
        assert_eq!(
            src.token("db", 5432, "app").await.unwrap_err().sqlstate(),
            "08001"
        );
    }
}

//! The connect-storm-iam scenario's fixtures: the trusted keys and policy of the IAM Tollgate,
//! the tokens pgbench presents (made as the AWS SDKs make them), and the in-process cost of
//! verifying one.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tollgate_auth::iam::{
    generate_token, DbResource, Endpoint, Expectations, KeyStore, LocalVerifier, Policy,
    TokenRequest,
};

/// The region tokens are signed for.
pub const REGION: &str = "us-east-1";
/// The name pgbench's tokens are signed for (Tollgate's DNS name as apps would see it).
pub const ENDPOINT: &str = "tollgate.bench.test:6432";
const ACCOUNT_ID: &str = "123456789012";
const PROXY_ID: &str = "prx-0bench";
const KEY_ID: &str = "AKIABENCHEXAMPLE0001";
const SECRET: &str = "bench/Secret+Key/wJalrXUtnFEMIK7MDENGbPxRfiC";

/// The keys file: the bench key plus 99 others, so look-ups are not in a one-entry map.
fn keys_text() -> String {
    let mut text = format!(
        "[[key]]\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SECRET}\"\nallow = [\"bench\", \"report_*\"]\n"
    );
    for i in 0..99 {
        text.push_str(&format!(
            "\n[[key]]\naccess_key_id = \"AKIAOTHER{i:011}\"\nsecret_access_key = \"other-{i}\"\nallow = [\"app_{i}\"]\n"
        ));
    }
    text
}

fn policy_text() -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [
  {{"Effect": "Allow", "Action": "rds-db:connect",
    "Resource": "arn:aws:rds-db:{REGION}:{ACCOUNT_ID}:dbuser:{PROXY_ID}/*"}},
  {{"Effect": "Deny", "Action": "rds-db:connect",
    "Resource": "arn:aws:rds-db:{REGION}:{ACCOUNT_ID}:dbuser:{PROXY_ID}/admin"}}]}}"#
    )
}

/// Writes the keys and policy files into `dir`; returns the IAM Tollgate's extra flags.
pub fn write_files(dir: &Path) -> Result<Vec<String>> {
    let keys: PathBuf = dir.join("iam-keys.toml");
    let policy: PathBuf = dir.join("iam-policy.json");
    std::fs::write(&keys, keys_text()).with_context(|| format!("write {}", keys.display()))?;
    std::fs::write(&policy, policy_text())
        .with_context(|| format!("write {}", policy.display()))?;
    Ok(vec![
        "--iam-auth".into(),
        "required".into(),
        "--iam-verifier".into(),
        "local".into(),
        "--iam-region".into(),
        REGION.into(),
        "--iam-endpoint".into(),
        ENDPOINT.into(),
        "--iam-keys-file".into(),
        keys.display().to_string(),
        "--iam-policy-file".into(),
        policy.display().to_string(),
        "--iam-account-id".into(),
        ACCOUNT_ID.into(),
        "--iam-proxy-id".into(),
        PROXY_ID.into(),
    ])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `user`, issued now and valid 15 minutes (one per run: runs can outlast it).
pub fn token(user: &str) -> Result<String> {
    generate_token(&TokenRequest {
        host_port: ENDPOINT,
        region: REGION,
        user,
        access_key_id: KEY_ID,
        secret_access_key: SECRET,
        session_token: None,
        unix_time: unix_now(),
        expires_secs: 900,
    })
    .context("generate an IAM auth token")
}

/// What verifying one token costs in this process.
#[derive(Debug, Clone, Copy)]
pub struct VerifyCost {
    /// Tokens verified.
    pub iterations: u32,
    /// Mean wall time per token, µs.
    pub per_token_us: f64,
}

/// Times `LocalVerifier::verify` (parse, checks, SigV4 recompute, keys-file allow, policy)
/// over `iterations` verifications of a valid token, as the IAM Tollgate is configured.
pub fn verify_cost(iterations: u32) -> Result<VerifyCost> {
    let verifier = LocalVerifier {
        keys: KeyStore::parse(&keys_text()).context("bench keys")?,
        policy: Some(Policy::parse(&policy_text()).context("bench policy")?),
        expect: Expectations::new(
            REGION,
            vec![Endpoint::parse(ENDPOINT).context("bench endpoint")?],
            DbResource::new(ACCOUNT_ID, PROXY_ID),
        ),
    };
    let token = token("bench")?;
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    verifier
        .verify(&token, "bench", now)
        .context("the bench token does not verify")?;
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(verifier.verify(std::hint::black_box(&token), "bench", now))
            .context("the bench token does not verify")?;
    }
    Ok(VerifyCost {
        iterations,
        per_token_us: started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_token_verifies_and_the_flags_name_the_files() {
        let cost = verify_cost(3).unwrap();
        assert_eq!(cost.iterations, 3);
        assert!(cost.per_token_us > 0.0);
        let dir = tempfile::tempdir().unwrap();
        let flags = write_files(dir.path()).unwrap();
        assert!(flags.iter().any(|f| f.ends_with("iam-keys.toml")));
        assert!(token("bench")
            .unwrap()
            .starts_with("tollgate.bench.test:6432/?"));
    }
}

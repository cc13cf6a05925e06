//! IAM auth fixtures: trusted keys and a policy for Tollgate's `local` verifier, the settings
//! that turn it on, and the real AWS tools (boto3, the AWS CLI) and psycopg run as the apps
//! that use them would. The tools need no network: a token is signed offline.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Output;
use tollgate::config::RawConfig;

/// The region tokens are signed for.
pub const REGION: &str = "us-east-1";
/// The name apps sign their tokens for: Tollgate's DNS name and port as apps see them.
pub const ENDPOINT_HOST: &str = "tollgate.iam.test";
/// Its port.
pub const ENDPOINT_PORT: u16 = 6432;
/// The account and proxy ids in this proxy's resource ARNs.
pub const ACCOUNT_ID: &str = "123456789012";
/// See [`ACCOUNT_ID`].
pub const PROXY_ID: &str = "prx-0tollgate";

/// AWS credentials as an app holds them.
#[derive(Debug, Clone, Copy)]
pub struct AwsKey {
    /// The access key id.
    pub id: &'static str,
    /// The secret access key.
    pub secret: &'static str,
    /// The STS session token of temporary credentials.
    pub session_token: Option<&'static str>,
}

/// Long-term keys of the app's IAM user: may log in as the three test users.
pub const APP_KEY: AwsKey = AwsKey {
    id: "AKIAAPPEXAMPLE000001",
    secret: "app/Secret+Key/wJalrXUtnFEMIK7MDENGbPxRfiCY",
    session_token: None,
};
/// Temporary credentials (an assumed role, as Lambda and ECS tasks have): any user.
pub const TEMP_KEY: AwsKey = AwsKey {
    id: "ASIATEMPEXAMPLE00001",
    secret: "temp/Secret+Key/je7MtGbClwBF2Zp9Utk/h3yCo8nvb",
    session_token: Some(
        "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD6m+session/token+for/tests==",
    ),
};
/// Keys whose keys-file entry allows only `md5_user`.
pub const LIMITED_KEY: AwsKey = AwsKey {
    id: "AKIALIMITEDEXAMPLE01",
    secret: "limited-secret",
    session_token: None,
};
/// Keys the policy forbids to log in as `app`.
pub const REPORT_KEY: AwsKey = AwsKey {
    id: "AKIAREPORTEXAMPLE001",
    secret: "report-secret",
    session_token: None,
};
/// Keys no file trusts.
pub const UNKNOWN_KEY: AwsKey = AwsKey {
    id: "AKIAUNKNOWNEXAMPLE01",
    secret: "unknown-secret",
    session_token: None,
};

/// Tollgate's own AWS identity when it logs in with IAM (backend_iam): another Tollgate
/// playing Aurora trusts it.
pub const TOLLGATE_KEY: AwsKey = AwsKey {
    id: "ASIATOLLGATEEXAMPLE1",
    secret: "tollgate/Own+Secret/Key0example0000000000",
    session_token: Some("FwoGZXIvYXdzEXAMPLE//tollgate+session/token=="),
};

/// Writes the trusted keys file and the policy into `dir`; returns their paths.
pub fn write_trust(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let keys = dir.join("iam-keys.toml");
    let entry = |k: AwsKey, principal: Option<&str>, allow: &str| {
        format!(
            "[[key]]\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{}allow = {allow}\n\n",
            k.id,
            k.secret,
            principal.map_or(String::new(), |p| format!("principal = \"{p}\"\n"))
        )
    };
    std::fs::write(
        &keys,
        [
            entry(
                APP_KEY,
                None,
                r#"["app", "scram_user", "md5_user", "iam_*"]"#,
            ),
            entry(
                TEMP_KEY,
                Some("arn:aws:iam::123456789012:role/lambda-app"),
                r#"["*"]"#,
            ),
            entry(LIMITED_KEY, None, r#"["md5_user"]"#),
            entry(REPORT_KEY, None, r#"["*"]"#),
            entry(
                TOLLGATE_KEY,
                Some("arn:aws:iam::123456789012:role/tollgate"),
                r#"["*"]"#,
            ),
        ]
        .concat(),
    )?;
    let policy = dir.join("iam-policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"Version": "2012-10-17", "Statement": [
  {{"Sid": "AppsMayConnect", "Effect": "Allow", "Action": "rds-db:connect",
    "Resource": "arn:aws:rds-db:{REGION}:{ACCOUNT_ID}:dbuser:{PROXY_ID}/*"}},
  {{"Sid": "ReportsNeverAsApp", "Effect": "Deny", "Action": "rds-db:connect",
    "Resource": "arn:aws:rds-db:{REGION}:{ACCOUNT_ID}:dbuser:{PROXY_ID}/app",
    "Principal": {{"AWS": "{}"}}}}]}}"#,
            REPORT_KEY.id
        ),
    )?;
    Ok((keys, policy))
}

/// Settings for `local` verification with the keys and policy in `dir` (written here).
pub fn local_settings(dir: &Path, mode: &str) -> Result<RawConfig> {
    let (keys, policy) = write_trust(dir)?;
    Ok(RawConfig {
        iam_auth: Some(mode.into()),
        iam_verifier: Some("local".into()),
        iam_region: Some(REGION.into()),
        iam_endpoint: Some(vec![format!("{ENDPOINT_HOST}:{ENDPOINT_PORT}")]),
        iam_keys_file: Some(keys),
        iam_policy_file: Some(policy),
        iam_account_id: Some(ACCOUNT_ID.into()),
        iam_proxy_id: Some(PROXY_ID.into()),
        ..Default::default()
    })
}

/// The environment an app's AWS SDK reads its credentials and region from, and nothing else
/// (no profile files, no instance metadata).
fn aws_env(cmd: &mut tokio::process::Command, key: AwsKey) {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", key.id)
        .env("AWS_SECRET_ACCESS_KEY", key.secret)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some(t) = key.session_token {
        cmd.env("AWS_SESSION_TOKEN", t);
    }
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Result<Output> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.output()
        .await
        .with_context(|| format!("cannot run {what}; run .ci/run, which installs it"))
}

fn stdout_line(out: &Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fails, saying to run `.ci/run`, unless boto3, psycopg and the AWS CLI are installed.
pub async fn require_tools() -> Result<()> {
    let mut py = tokio::process::Command::new("python3");
    py.args(["-c", "import boto3, psycopg"]);
    let out = run(py, "python3").await?;
    if !out.status.success() {
        bail!(
            "the IAM tests need boto3 and psycopg for python3 (and the AWS CLI): run .ci/run, \
             which pip-installs boto3 awscli 'psycopg[binary]'\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut aws = tokio::process::Command::new("aws");
    aws.arg("--version");
    let out = run(aws, "the AWS CLI (aws)").await?;
    if !out.status.success() {
        bail!("the AWS CLI does not run: run .ci/run, which pip-installs awscli");
    }
    Ok(())
}

/// A token from boto3's `generate_db_auth_token`, as a Python app makes one.
pub async fn boto3_token(key: AwsKey, host: &str, port: u16, user: &str) -> Result<String> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        "-c",
        "import sys, boto3\n\
         rds = boto3.client('rds')\n\
         print(rds.generate_db_auth_token(DBHostname=sys.argv[1], Port=int(sys.argv[2]), \
         DBUsername=sys.argv[3], Region=sys.argv[4]))",
        host,
        &port.to_string(),
        user,
        REGION,
    ]);
    aws_env(&mut cmd, key);
    stdout_line(
        &run(cmd, "python3 (boto3)").await?,
        "boto3 generate_db_auth_token",
    )
}

/// A token from `aws rds generate-db-auth-token`, as a shell script makes one.
pub async fn aws_cli_token(key: AwsKey, host: &str, port: u16, user: &str) -> Result<String> {
    let mut cmd = tokio::process::Command::new("aws");
    cmd.args([
        "rds",
        "generate-db-auth-token",
        "--hostname",
        host,
        "--port",
        &port.to_string(),
        "--username",
        user,
        "--region",
        REGION,
    ]);
    aws_env(&mut cmd, key);
    stdout_line(&run(cmd, "aws").await?, "aws rds generate-db-auth-token")
}

/// Connects with psycopg (libpq underneath) using `token` as the password and returns
/// `current_user` (or the error psycopg raised, as text).
pub async fn psycopg_current_user(
    port: u16,
    user: &str,
    token: &str,
    sslmode: &str,
) -> Result<std::result::Result<String, String>> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        "-c",
        "import os, sys, psycopg\n\
         try:\n\
         \x20   with psycopg.connect(host='127.0.0.1', port=int(sys.argv[1]), user=sys.argv[2], \
         dbname='app', password=os.environ['IAM_TOKEN'], sslmode=sys.argv[3], \
         connect_timeout=30) as c:\n\
         \x20       print(c.execute('SELECT current_user').fetchone()[0])\n\
         except psycopg.Error as e:\n\
         \x20   print(f'{getattr(e, \"sqlstate\", None)} {e}', file=sys.stderr)\n\
         \x20   sys.exit(3)",
        &port.to_string(),
        user,
        sslmode,
    ])
    .env("IAM_TOKEN", token);
    let out = run(cmd, "python3 (psycopg)").await?;
    Ok(match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Some(3) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        _ => bail!(
            "psycopg script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

//! IAM database authentication end to end, as RDS Proxy does it: apps present an RDS IAM auth
//! token (from boto3, the AWS CLI or any SDK's signer, unchanged) as their password over TLS;
//! Tollgate verifies it (`local`: trusted keys; `delegate`: the database decides) and logs in
//! to the database with credentials it holds itself, or with its own IAM token (`backend_iam`).
//! Every forged or stale token is refused with the check that failed and costs no database
//! connection.

use anyhow::{Context, Result};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollgate::config::{Config, RawConfig};
use tollgate_auth::iam::{generate_token, DbResource, Endpoint, Expectations, LocalVerifier};
use tollgate_e2e::connected::scalar;
use tollgate_e2e::http::sample;
use tollgate_e2e::iam::{
    aws_cli_token, boto3_token, local_settings, psycopg_current_user, require_tools, AwsKey,
    ACCOUNT_ID, APP_KEY, ENDPOINT_HOST, ENDPOINT_PORT, LIMITED_KEY, PROXY_ID, REGION, REPORT_KEY,
    TEMP_KEY, TOLLGATE_KEY, UNKNOWN_KEY,
};
use tollgate_e2e::pgbench::PgbenchSummary;
use tollgate_e2e::poll::until_idle_backends;
use tollgate_e2e::{
    run_tool_env, success, Env, EnvOptions, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER,
    SCRAM_PASSWORD, SCRAM_USER,
};

/// Tollgate's own AWS identity reaches it the way it does in production: through the
/// environment the AWS credential chain reads. Every test calls this first, so the variables
/// are written once, before any test of this binary has work running on other threads.
fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", TOLLGATE_KEY.id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", TOLLGATE_KEY.secret);
        if let Some(t) = TOLLGATE_KEY.session_token {
            std::env::set_var("AWS_SESSION_TOKEN", t);
        }
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    });
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The endpoint apps sign for.
fn endpoint() -> String {
    format!("{ENDPOINT_HOST}:{ENDPOINT_PORT}")
}

/// A token as the AWS SDKs make it, for any time, endpoint and region.
fn token_at(key: AwsKey, host_port: &str, region: &str, user: &str, issued: i64) -> String {
    generate_token(&tollgate_auth::iam::TokenRequest {
        host_port,
        region,
        user,
        access_key_id: key.id,
        secret_access_key: key.secret,
        session_token: key.session_token,
        unix_time: issued as u64,
        expires_secs: 900,
    })
    .unwrap()
}

fn token(key: AwsKey, user: &str) -> String {
    token_at(key, &endpoint(), REGION, user, now())
}

async fn start_local(dir: &std::path::Path, mode: &str) -> Env {
    Env::start(EnvOptions {
        client_tls: true,
        extra: local_settings(dir, mode).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Logs in over TLS (verify-full) with `password` and returns `current_user`.
async fn current_user(env: &Env, user: &str, password: &str) -> Result<String> {
    let c = env.connect_with(env.pg_config(user, password)).await?;
    scalar(&c.client, "SELECT current_user").await
}

/// The SQLSTATE and message of a refused login.
fn refusal(e: anyhow::Error) -> (String, String) {
    match e
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
    {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => panic!("expected a database error, got {e:#}"),
    }
}

async fn metrics(env: &Env) -> String {
    let (status, body) = env.admin_get("/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn iam_count(page: &str, outcome: &str, reason: &str) -> f64 {
    sample(
        page,
        &format!("tollgate_iam_auth_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_boto3_and_the_aws_cli_log_in_with_psql_psycopg_and_tokio_postgres() {
    init();
    require_tools().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = start_local(dir.path(), "required").await;

    // The real tools, for long-term keys and for temporary credentials with a session token.
    let (boto_static, boto_temp, cli_static, cli_temp) = tokio::join!(
        boto3_token(APP_KEY, ENDPOINT_HOST, ENDPOINT_PORT, APP_USER),
        boto3_token(TEMP_KEY, ENDPOINT_HOST, ENDPOINT_PORT, APP_USER),
        aws_cli_token(APP_KEY, ENDPOINT_HOST, ENDPOINT_PORT, APP_USER),
        aws_cli_token(TEMP_KEY, ENDPOINT_HOST, ENDPOINT_PORT, MD5_USER),
    );
    let tokens = [
        ("boto3", boto_static.unwrap(), APP_USER),
        ("boto3 + session token", boto_temp.unwrap(), APP_USER),
        ("aws cli", cli_static.unwrap(), APP_USER),
        ("aws cli + session token", cli_temp.unwrap(), MD5_USER),
    ];
    for (tool, t, _) in &tokens {
        assert!(
            t.starts_with(&format!("{ENDPOINT_HOST}:{ENDPOINT_PORT}/?")),
            "{tool}: {t}"
        );
        assert_eq!(
            t.contains("X-Amz-Security-Token="),
            tool.contains("session"),
            "{tool}: {t}"
        );
    }

    // Each tool is its own process: run them side by side.
    let port = env.addr.port();
    let mut runs = tokio::task::JoinSet::new();
    for (i, (tool, t, user)) in tokens.iter().enumerate() {
        let (tool, t, user) = (*tool, t.clone(), *user);
        runs.spawn(async move {
            let url = format!("postgresql://{user}@127.0.0.1:{port}/app?sslmode=require");
            let psql = run_tool_env(
                "psql",
                &["-X", "-At", "-d", &url, "-c", "SELECT current_user"],
                None,
                &[("PGPASSWORD", &t)],
            )
            .await
            .and_then(|out| success(&out))
            .map(|s| s.trim().to_string());
            let psycopg = psycopg_current_user(port, user, &t, "require").await;
            (i, tool, psql, psycopg)
        });
    }
    while let Some(done) = runs.join_next().await {
        let (i, tool, psql, psycopg) = done.unwrap();
        let user = tokens[i].2;
        assert_eq!(psql.unwrap(), user, "psql with the {tool} token");
        assert_eq!(
            psycopg.unwrap().unwrap(),
            user,
            "psycopg with the {tool} token"
        );
    }
    assert_eq!(
        current_user(&env, APP_USER, &tokens[0].1).await.unwrap(),
        APP_USER
    );
    let page = metrics(&env).await;
    assert_eq!(iam_count(&page, "success", "local"), 9.0, "{page}");
}

/// Changes one character of the token's X-Amz-Date seconds, keeping it a valid time.
fn shift_date(t: &str) -> String {
    let at = t.find("X-Amz-Date=").unwrap() + "X-Amz-Date=".len() + 14;
    let mut b = t.as_bytes().to_vec();
    b[at] = if b[at] == b'0' { b'1' } else { b[at] - 1 };
    String::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_the_failing_check_and_no_backend_connection() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let env = start_local(dir.path(), "required").await;
    let t = now();
    let good = token(APP_KEY, APP_USER);
    let temp = token(TEMP_KEY, APP_USER);
    let signature = good.rsplit_once("X-Amz-Signature=").unwrap().1.to_string();
    let flip_last = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        let last = b.len() - 1;
        b[last] = if b[last] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let before_signature = good.split("&X-Amz-Signature=").next().unwrap().to_string();

    // (what, user, token, SQLSTATE, metric reason, words the message must contain)
    let cases: Vec<(&str, &str, String, &str, &str, &str)> = vec![
        (
            "expired",
            APP_USER,
            token_at(APP_KEY, &endpoint(), REGION, APP_USER, t - 1000),
            "28P01",
            "expired",
            "IAM auth token expired",
        ),
        (
            "from the future",
            APP_USER,
            token_at(APP_KEY, &endpoint(), REGION, APP_USER, t + 900),
            "28P01",
            "from_future",
            "in the future",
        ),
        (
            "X-Amz-Expires over 900",
            APP_USER,
            good.replace("X-Amz-Expires=900", "X-Amz-Expires=3600"),
            "28P01",
            "expires_out_of_range",
            "X-Amz-Expires is 3600 s",
        ),
        (
            "wrong DBUser",
            APP_USER,
            token(APP_KEY, MD5_USER),
            "28P01",
            "wrong_user",
            "for database user \"md5_user\" but the connection logs in as \"app\"",
        ),
        (
            "wrong host",
            APP_USER,
            token_at(
                APP_KEY,
                &format!("db.iam.test:{ENDPOINT_PORT}"),
                REGION,
                APP_USER,
                t,
            ),
            "28P01",
            "wrong_endpoint",
            "generated for endpoint \"db.iam.test:6432\"",
        ),
        (
            "wrong port",
            APP_USER,
            token_at(
                APP_KEY,
                &format!("{ENDPOINT_HOST}:5432"),
                REGION,
                APP_USER,
                t,
            ),
            "28P01",
            "wrong_endpoint",
            "tollgate.iam.test:5432",
        ),
        (
            "wrong region",
            APP_USER,
            token_at(APP_KEY, &endpoint(), "eu-west-1", APP_USER, t),
            "28P01",
            "wrong_region",
            "signed for region \"eu-west-1\" but this proxy expects us-east-1",
        ),
        (
            "wrong service",
            APP_USER,
            good.replace("%2Frds-db%2F", "%2Fs3%2F"),
            "28P01",
            "wrong_service",
            "signed for service \"s3\", not rds-db",
        ),
        (
            "from the future, just past the clock skew (300 s)",
            APP_USER,
            token_at(APP_KEY, &endpoint(), REGION, APP_USER, t + 330),
            "28P01",
            "from_future",
            "in the future",
        ),
        (
            "wrong action",
            APP_USER,
            good.replace("Action=connect", "Action=connecx"),
            "28P01",
            "wrong_action",
            "RDS auth tokens say Action=connect",
        ),
        (
            "wrong algorithm",
            APP_USER,
            good.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            "28P01",
            "wrong_algorithm",
            "only AWS4-HMAC-SHA256 (SigV4) is accepted",
        ),
        (
            "wrong signed headers",
            APP_USER,
            good.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host%3Bx-amz-date"),
            "28P01",
            "wrong_signed_headers",
            "RDS auth tokens sign exactly \"host\"",
        ),
        (
            "over the token length limit (8 KiB)",
            APP_USER,
            format!("{good}&X-Pad={}", "a".repeat(10_000)),
            "28P01",
            "too_long",
            "over the limit of 8192",
        ),
        (
            "longer than any login message (16 KiB)",
            APP_USER,
            format!("{good}&X-Pad={}", "a".repeat(20_000)),
            "28P01",
            "too_long",
            "longer than any RDS IAM auth token",
        ),
        (
            "tampered signature",
            APP_USER,
            flip_last(&good),
            "28P01",
            "signature_mismatch",
            "signature does not match",
        ),
        (
            "tampered DBUser",
            MD5_USER,
            good.replace("DBUser=app&", "DBUser=md5_user&"),
            "28P01",
            "signature_mismatch",
            "signature does not match",
        ),
        (
            "tampered X-Amz-Date",
            APP_USER,
            shift_date(&good),
            "28P01",
            "signature_mismatch",
            "signature does not match",
        ),
        (
            "tampered X-Amz-Expires",
            APP_USER,
            good.replace("X-Amz-Expires=900", "X-Amz-Expires=899"),
            "28P01",
            "signature_mismatch",
            "signature does not match",
        ),
        (
            "tampered host (case)",
            APP_USER,
            good.replacen(ENDPOINT_HOST, "TOLLGATE.iam.test", 1),
            "28P01",
            "signature_mismatch",
            "signature does not match",
        ),
        (
            "tampered session token",
            APP_USER,
            temp.replace("session%2Ftoken", "session%2Ftokem"),
            "28P01",
            "signature_mismatch",
            "signature does not match",
        ),
        (
            "unknown key",
            APP_USER,
            token(UNKNOWN_KEY, APP_USER),
            "28P01",
            "unknown_access_key",
            "unknown access key id \"AKIAUNKNOWNEXAMPLE01\"",
        ),
        (
            "key not allowed for the user by the keys file",
            APP_USER,
            token(LIMITED_KEY, APP_USER),
            "28000",
            "not_allowed",
            "may not log in as \"app\"",
        ),
        (
            "key not allowed for the user by the policy",
            APP_USER,
            token(REPORT_KEY, APP_USER),
            "28000",
            "policy_denied",
            "explicitly denies rds-db:connect on arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0tollgate/app",
        ),
        (
            "truncated in the signature",
            APP_USER,
            good[..good.len() - 20].to_string(),
            "28P01",
            "bad_parameter",
            "X-Amz-Signature parameter is malformed",
        ),
        (
            "truncated before the signature",
            APP_USER,
            before_signature,
            "28P01",
            "missing_parameter",
            "no X-Amz-Signature parameter",
        ),
        (
            "garbage",
            APP_USER,
            "hunter2".into(),
            "28000",
            "not_a_token",
            "requires IAM authentication",
        ),
        (
            "garbage with SigV4 words",
            APP_USER,
            "X-Amz-Signature=%zz".into(),
            "28P01",
            "malformed",
            "malformed IAM auth token",
        ),
    ];
    for (what, user, bad, code, _, words) in &cases {
        let (got_code, message) = refusal(current_user(&env, user, bad).await.unwrap_err());
        assert_eq!(&got_code, code, "{what}: {message}");
        assert!(message.contains(words), "{what}: {message}");
        assert!(
            !message.contains(&signature) && !message.contains("session%2Ftoken"),
            "{what} echoes a secret: {message}"
        );
    }

    // A good token over plain TCP: refused before anything is asked.
    let plain = env
        .pg_config(APP_USER, &good)
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a token over plain TCP is refused");
    let db = plain.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28000");
    assert_eq!(
        db.message(),
        "IAM authentication requires TLS; connect with sslmode=require"
    );

    // Not one backend connection, not even a pool, for any of them.
    assert!(env.shared.pools.all().is_empty());
    for user in [APP_USER, MD5_USER] {
        assert_eq!(env.backend_count(user).unwrap(), 0, "{user}");
    }
    let page = metrics(&env).await;
    let mut want = std::collections::BTreeMap::new();
    for (_, _, _, _, reason, _) in &cases {
        *want.entry(*reason).or_insert(0.0) += 1.0;
    }
    *want.entry("tls_required").or_insert(0.0) += 1.0;
    for (reason, n) in want {
        assert_eq!(iam_count(&page, "failure", reason), n, "{reason}\n{page}");
    }
    assert_eq!(
        sample(
            &page,
            "tollgate_client_connections_setup_failed_total{reason=\"auth_failed\"}"
        )
        .unwrap(),
        cases.len() as f64 + 1.0
    );

    // And the good token still works, as does one dated ahead within the clock skew.
    assert_eq!(current_user(&env, APP_USER, &good).await.unwrap(), APP_USER);
    let ahead = token_at(APP_KEY, &endpoint(), REGION, APP_USER, now() + 240);
    assert_eq!(
        current_user(&env, APP_USER, &ahead).await.unwrap(),
        APP_USER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabled_mode_takes_tokens_or_auth_file_passwords() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let env = start_local(dir.path(), "enabled").await;
    let tok = token(APP_KEY, APP_USER);
    assert_eq!(current_user(&env, APP_USER, &tok).await.unwrap(), APP_USER);
    // Passwords over TLS, as cleartext, checked against each form the auth file holds.
    assert_eq!(
        current_user(&env, APP_USER, APP_PASSWORD).await.unwrap(),
        APP_USER
    );
    assert_eq!(
        current_user(&env, SCRAM_USER, SCRAM_PASSWORD)
            .await
            .unwrap(),
        SCRAM_USER
    );
    assert_eq!(
        current_user(&env, MD5_USER, MD5_PASSWORD).await.unwrap(),
        MD5_USER
    );
    let (code, message) = refusal(current_user(&env, APP_USER, "wrong").await.unwrap_err());
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28P01", "password authentication failed for user \"app\"")
    );
    // A bad token is still refused by the check that failed.
    let (code, message) = refusal(
        current_user(
            &env,
            APP_USER,
            &tok.replace("DBUser=app", "DBUser=md5_user"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, "28P01");
    assert!(
        message.contains("for database user \"md5_user\""),
        "{message}"
    );
    // Plain TCP: passwords go through SCRAM as without IAM.
    let c = env.connect().await.unwrap();
    assert_eq!(scalar(&c, "SELECT current_user").await.unwrap(), APP_USER);
    // A token over plain TCP fails as a password, and the hint says why.
    let plain = env
        .pg_config(APP_USER, &tok)
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a token is not a SCRAM password");
    let db = plain.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.hint().is_some_and(|h| h.contains("sslmode=require")),
        "{db:?}"
    );
    let page = metrics(&env).await;
    assert_eq!(iam_count(&page, "success", "local"), 1.0, "{page}");
    assert_eq!(iam_count(&page, "failure", "wrong_user"), 1.0, "{page}");
}

/// `delegate` against a PostgreSQL that checks the token as Aurora would is not to be had
/// here; a role whose password *is* the token stands in for it: the database accepts exactly
/// that token and refuses any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_mode_asks_the_database_once_per_token_and_passes_its_refusal_on() {
    init();
    // delegate sends clients' tokens upstream: only over TLS (verify-full to "localhost").
    let env = Env::start(EnvOptions {
        client_tls: true,
        backend_tls: true,
        extra: RawConfig {
            iam_auth: Some("required".into()),
            iam_verifier: Some("delegate".into()),
            iam_region: Some(REGION.into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    // Tokens are signed for the database's endpoint, which Tollgate's upstream names.
    let db_endpoint = format!("localhost:{}", env.pg.port());
    let user = "iam_user";
    let t = now();
    let tok = token_at(APP_KEY, &db_endpoint, REGION, user, t);
    env.pg.create_user(user, &tok, false).unwrap();
    // Tollgate logs in with what its auth file holds for the user, not the client's token.
    let auth_file = env.dir.path().join("userlist.txt");
    let mut users = std::fs::read_to_string(&auth_file).unwrap();
    users.push_str(&format!("\"{user}\" \"{tok}\"\n"));
    std::fs::write(&auth_file, users).unwrap();
    tollgate::admin::reload::reload(&env.shared, "test").unwrap();

    // First use: the database checks the token; the session then gets a pooled backend.
    let first = env.connect_with(env.pg_config(user, &tok)).await.unwrap();
    assert_eq!(
        scalar(&first.client, "SELECT current_user").await.unwrap(),
        user
    );
    drop(first);
    until_idle_backends(&env, 1).await.unwrap();

    // The database would now refuse the token, so a second check would fail: a login that
    // still succeeds was answered from the cache, and lands on the pooled connection.
    env.pg
        .psql("postgres", &format!("ALTER ROLE {user} PASSWORD 'rotated'"))
        .unwrap();
    let second = env.connect_with(env.pg_config(user, &tok)).await.unwrap();
    assert_eq!(
        scalar(&second.client, "SELECT current_user").await.unwrap(),
        user
    );

    // Another token (issued a second earlier) is not in the cache: the database refuses it,
    // and the client hears 28P01 with the database's reason.
    let other = token_at(APP_KEY, &db_endpoint, REGION, user, t - 1);
    let (code, message) = refusal(
        env.connect_with(env.pg_config(user, &other))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(code, "28P01");
    assert!(
        message.contains("refused the IAM auth token")
            && message.contains("password authentication failed"),
        "{message}"
    );
    assert!(
        !message.contains(&env.pg.port().to_string()),
        "the database's address is for the log, not for clients: {message}"
    );
    // Checks that need no secret still come first: no database login for these.
    let wrong_endpoint = token_at(APP_KEY, &endpoint(), REGION, user, t);
    let (code, message) = refusal(
        env.connect_with(env.pg_config(user, &wrong_endpoint))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(code, "28P01");
    assert!(
        message.contains("not one of this proxy's endpoints"),
        "{message}"
    );

    let page = metrics(&env).await;
    assert_eq!(iam_count(&page, "success", "delegate"), 1.0, "{page}");
    assert_eq!(iam_count(&page, "success", "delegate_cache"), 1.0, "{page}");
    assert_eq!(
        iam_count(&page, "failure", "database_refused"),
        1.0,
        "{page}"
    );
    assert_eq!(iam_count(&page, "failure", "wrong_endpoint"), 1.0, "{page}");
}

/// A Tollgate with `backend_iam` logs in to "Aurora" with IAM auth tokens it makes for its own
/// AWS identity (static credentials from the environment, through the AWS credential chain).
/// The Aurora here is a second Tollgate that requires IAM and verifies locally, trusting that
/// identity's key, in front of PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_iam_logs_in_with_tokens_for_tollgates_own_identity() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let aurora = Env::start(EnvOptions {
        client_tls: true,
        config_file: true,
        extra: local_settings(dir.path(), "required").unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The name the front Tollgate connects to and signs for: known once it is listening.
    let aurora_endpoint = format!("localhost:{}", aurora.addr.port());
    aurora
        .edit_config(|c| c.iam_endpoint = Some(vec![aurora_endpoint.clone()]))
        .unwrap();
    tollgate::admin::reload::reload(&aurora.shared, "test").unwrap();

    let users = dir.path().join("front-userlist.txt");
    std::fs::write(
        &users,
        format!("\"{APP_USER}\" \"{APP_PASSWORD}\"\n\"{MD5_USER}\" \"{MD5_PASSWORD}\"\n"),
    )
    .unwrap();
    let ca = aurora.client_ca.clone().unwrap();
    let config = Config::validate(RawConfig {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(format!(
            "postgres://localhost:{}/?sslmode=verify-full&sslrootcert={}",
            aurora.addr.port(),
            ca.display()
        )),
        auth_file: Some(users),
        admin_listen: Some("off".into()),
        backend_iam: Some(true),
        backend_iam_region: Some(REGION.into()),
        ..Default::default()
    })
    .unwrap();
    let front = tollgate::Server::bind(config).await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let front_shared = front.shared();
    let stop = front.shutdown_handle();
    let serving = tokio::spawn(front.run());

    // The token shape, and that it verifies for the identity in the environment.
    let source = front_shared.backend_iam.clone().unwrap();
    let tok = source
        .token("localhost", aurora.addr.port(), APP_USER)
        .await
        .unwrap();
    assert!(
        tok.starts_with(&format!(
            "{aurora_endpoint}/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential={}%2F",
            TOLLGATE_KEY.id
        )),
        "{tok}"
    );
    assert!(
        tok.contains(&format!("%2F{REGION}%2Frds-db%2Faws4_request&")),
        "{tok}"
    );
    assert!(tok.contains("&X-Amz-Expires=900&"), "{tok}");
    assert!(tok.contains("&X-Amz-Security-Token="), "{tok}");
    let verifier = LocalVerifier {
        keys: tollgate_auth::iam::KeyStore::load(&dir.path().join("iam-keys.toml")).unwrap(),
        policy: None,
        expect: Expectations::new(
            REGION,
            vec![Endpoint::parse(&aurora_endpoint).unwrap()],
            DbResource::new(ACCOUNT_ID, PROXY_ID),
        ),
    };
    assert_eq!(
        verifier
            .verify(&tok, APP_USER, now())
            .unwrap()
            .access_key_id,
        TOLLGATE_KEY.id
    );

    // End to end: a password client of the front Tollgate, whose database login is IAM.
    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(front_addr.port())
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname("app");
    let (client, conn) = pg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(
        scalar(&client, "SELECT current_user").await.unwrap(),
        APP_USER
    );
    let page = metrics(&aurora).await;
    assert!(iam_count(&page, "success", "local") >= 1.0, "{page}");

    // "Aurora" stops trusting Tollgate's identity: the next database login (a new pool) is
    // refused, and the client is told whose token was refused and what to check.
    std::fs::write(
        dir.path().join("iam-keys.toml"),
        format!(
            "[[key]]\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow = [\"*\"]\n",
            APP_KEY.id, APP_KEY.secret
        ),
    )
    .unwrap();
    tollgate::admin::reload::reload(&aurora.shared, "test").unwrap();
    let err = pg
        .user(MD5_USER)
        .password(MD5_PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("the database refuses Tollgate's token");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.message().contains(&format!(
            "the database refused Tollgate's IAM auth token for user \"md5_user\" (access key {})",
            TOLLGATE_KEY.id
        )) && db.message().contains("rds_iam"),
        "{}",
        db.message()
    );
    drop(client);
    stop.shutdown();
    serving.await.unwrap();
}

/// pgbench `-C` (a new TLS connection and token check per transaction) against Tollgate while a
/// connected client keeps querying: the storm is verified and the connected client is not
/// stalled. Rates and latencies are printed, not asserted (benches/ measures them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_with_tokens_does_not_stall_connected_clients() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let env = start_local(dir.path(), "required").await;
    let tok = token(APP_KEY, APP_USER);
    let script = dir.path().join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    let url = format!(
        "postgresql://{APP_USER}@127.0.0.1:{}/app?sslmode=require",
        env.addr.port()
    );
    let steady = env
        .connect_with(env.pg_config(APP_USER, &tok))
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let querying = {
        let stop = stop.clone();
        let client = steady.client;
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"))
                    .await
                    .context("a connected client's query stalled for 5 s")??;
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        })
    };
    let started = Instant::now();
    let out = run_tool_env(
        "pgbench",
        &[
            "-n",
            "-C",
            "-T",
            "3",
            "-c",
            "8",
            "-j",
            "2",
            "-f",
            script.to_str().unwrap(),
            &url,
        ],
        None,
        &[("PGPASSWORD", &tok)],
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = PgbenchSummary::parse(&success(&out).unwrap()).unwrap();
    let mut latencies = querying.await.unwrap().unwrap();
    latencies.sort();
    assert!(summary.processed > 0 && summary.failed == 0, "{summary:?}");
    assert!(!latencies.is_empty());
    let page = metrics(&env).await;
    assert!(
        iam_count(&page, "success", "local") >= summary.processed as f64,
        "{page}"
    );
    assert_eq!(iam_count(&page, "failure", "signature_mismatch"), 0.0);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "IAM connect storm: {} connections in {:.1} s ({:.0}/s, each a TLS handshake and a token \
         check); connected client: {} queries, p50 {:?}, p99 {:?}, max {:?}",
        summary.processed,
        elapsed.as_secs_f64(),
        summary.processed as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

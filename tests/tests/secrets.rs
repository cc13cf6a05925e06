//! Database credentials from AWS Secrets Manager (`auth_secret`), against moto's server (the
//! real API, reached through the SDK's endpoint override): clients log in with the secret's
//! password by SCRAM or md5, a rotation during a pgbench run costs no transaction, each bad
//! secret stops Tollgate at start with its own message, and IAM-authenticated clients log in
//! while Tollgate logs in to the database with the secret. One moto serves this file's tests
//! (the SDK's endpoint is a process-wide setting); each test uses its own secrets and users.

use anyhow::{ensure, Context, Result};
use std::sync::OnceLock;
use std::time::Duration;
use tollgate::config::RawConfig;
use tollgate_e2e::iam::{
    boto3_token, local_settings, psycopg_current_user, require_tools, TEMP_KEY,
};
use tollgate_e2e::moto::{rds_secret, Moto};
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::{start_postgres, Env, EnvOptions};

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let m = Moto::start().expect("moto's server");
        m.use_for_this_process();
        // Tollgate's SDK must find credentials in the environment only.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        m
    })
}

/// A database with `user`/`password`, a secret `name` holding them, and Tollgate in front
/// reading it.
async fn env_with_secret(name: &str, user: &str, password: &str, extra: RawConfig) -> Result<Env> {
    let m = moto();
    m.create(name, &rds_secret(user, password)).await?;
    let pg = start_postgres(false, 100).await?;
    pg.create_user(user, password, false)?;
    pg.psql("app", &format!("GRANT ALL ON SCHEMA public TO {user}"))?;
    Env::in_front_of(
        pg,
        EnvOptions {
            extra: RawConfig {
                auth_secret: Some(vec![name.to_string()]),
                ..extra
            },
            ..Default::default()
        },
    )
    .await
}

async fn current_user(env: &Env, user: &str, password: &str) -> Result<String> {
    let c = env.connect_as(user, password).await?;
    let row = c.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

fn sqlstate(e: &anyhow::Error) -> Option<String> {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string())
}

/// SCRAM (the default) and md5 (client_password_auth_type = md5) both admit the secret's
/// password and refuse others with 28P01; the password shows nowhere Tollgate reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_with_the_secrets_password_by_scram_and_md5() -> Result<()> {
    let password = "s3cret-from-secrets-manager";
    for (auth, name, user) in [
        ("scram-sha-256", "it/scram", "sm_scram"),
        ("POSTGRES_MD5", "it/md5", "sm_md5"),
    ] {
        let env = env_with_secret(
            name,
            user,
            password,
            RawConfig {
                client_password_auth_type: Some(auth.into()),
                admin_users: Some(vec![user.into()]),
                ..Default::default()
            },
        )
        .await?;
        ensure!(current_user(&env, user, password).await? == user, "{auth}");
        let wrong = current_user(&env, user, "not-it")
            .await
            .err()
            .context("a wrong password got in")?;
        ensure!(
            sqlstate(&wrong).as_deref() == Some("28P01"),
            "{auth}: {wrong:?}"
        );
        // Nothing Tollgate shows carries the password.
        let (_, metrics) = env.admin_get("/metrics").await?;
        ensure!(
            metrics.contains(&format!(
                "tollgate_secret_refresh_total{{secret=\"{name}\",outcome=\"success\"}}"
            )),
            "{metrics}"
        );
        let console = env.url(user, password, "tollgate");
        let shown = env
            .psql(&console, &["-c", "SHOW SECRETS", "-c", "SHOW CONFIG"])
            .await?;
        let shown = String::from_utf8_lossy(&shown.stdout).to_string();
        ensure!(shown.contains(name) && shown.contains(user), "{shown}");
        for text in [&metrics, &shown] {
            ensure!(
                !text.contains(password),
                "the password appears in Tollgate's output"
            );
        }
    }
    Ok(())
}

/// A rotation as Secrets Manager does it (a new AWSCURRENT value, `ALTER ROLE ... PASSWORD`,
/// the idle backends terminated) during a pgbench run: no transaction fails, new backend
/// connections use the new password, clients with the new password log in, and during the
/// rotation window the previous password still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_during_pgbench_costs_no_transaction() -> Result<()> {
    let (name, user, old, new) = ("it/rotate", "sm_rotate", "old-password-1", "new-password-2");
    let env = env_with_secret(name, user, old, RawConfig::default()).await?;
    let url = env.url(user, old, "app");
    let init = env.pgbench(&url, &["-i", "-q", "-s", "1"]).await?;
    ensure!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Rotate once pgbench is running through Tollgate.
    let rotate = async {
        poll_until("pgbench running", Duration::from_secs(30), || {
            env.shared
                .pools
                .all()
                .iter()
                .map(|p| p.stats.queries.get())
                .sum::<u64>()
                > 200
        })
        .await?;
        moto().put(name, &rds_secret(user, new)).await?;
        env.pg
            .psql("postgres", &format!("ALTER ROLE {user} PASSWORD '{new}'"))?;
        env.pg.psql(
            "postgres",
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}' AND state = 'idle'"),
        )?;
        // Clients with the new password log in (the secret is re-read on the mismatch), and
        // the previous one is still accepted in the rotation window.
        ensure!(current_user(&env, user, new).await? == user);
        ensure!(current_user(&env, user, old).await? == user);
        anyhow::Ok(())
    };
    let (bench, rotated) = tokio::join!(
        env.pgbench(&url, &["-c", "4", "-j", "2", "-T", "8", "-n", "-S"]),
        rotate
    );
    rotated?;
    let bench = bench?;
    let out = bench;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains("number of failed transactions: 0"),
        "pgbench reported failures: {text}"
    );
    // New backends log in with the new password: the old one no longer works on the server.
    let views = env.shared.auth.secrets().context("secrets")?.views();
    ensure!(views.iter().any(|v| v.has_previous), "{views:?}");
    env.shared.pools.close_idle();
    ensure!(current_user(&env, user, new).await? == user);
    Ok(())
}

/// Each bad secret stops Tollgate at start with a message naming the secret and what is
/// wrong with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_secret_stops_the_start_with_its_own_message() -> Result<()> {
    let m = moto();
    m.create("bad/json", "this is not json").await?;
    m.create("bad/field", r#"{"username":"x"}"#).await?;
    m.create(
        "bad/engine",
        r#"{"username":"x","password":"y","engine":"mysql"}"#,
    )
    .await?;
    m.create("bad/twice", &rds_secret("app", "p")).await?;
    for (name, expect) in [
        ("bad/missing", "no such secret"),
        ("bad/json", "not a JSON object"),
        ("bad/field", "no string field \"password\""),
        ("bad/engine", "engine is \"mysql\""),
        ("bad/twice", "also in the auth file"),
    ] {
        let pg = start_postgres(false, 100).await?;
        let started = Env::in_front_of(
            pg,
            EnvOptions {
                extra: RawConfig {
                    auth_secret: Some(vec![name.into()]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
        let err = started
            .err()
            .with_context(|| format!("{name} started"))?
            .to_string();
        ensure!(err.contains(name) && err.contains(expect), "{name}: {err}");
    }
    Ok(())
}

/// RDS Proxy's classic setup: IAM required for clients, the database login from the secret.
/// A boto3 token logs in as the secret's user, and Tollgate's own login uses the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_clients_with_a_secret_backend_login() -> Result<()> {
    require_tools().await?;
    let dir = tempfile::tempdir()?;
    let extra = local_settings(dir.path(), "required")?;
    let (name, user) = ("it/iam", "app_user");
    let m = moto();
    m.create(name, &rds_secret(user, "workshop-password"))
        .await?;
    let pg = start_postgres(false, 100).await?;
    pg.create_user(user, "workshop-password", false)?;
    let env = Env::in_front_of(
        pg,
        EnvOptions {
            extra: RawConfig {
                auth_secret: Some(vec![name.into()]),
                ..extra
            },
            client_tls: true,
            ..Default::default()
        },
    )
    .await?;
    let token = boto3_token(
        TEMP_KEY,
        tollgate_e2e::iam::ENDPOINT_HOST,
        tollgate_e2e::iam::ENDPOINT_PORT,
        user,
    )
    .await?;
    let who = psycopg_current_user(env.addr.port(), user, &token, "require").await?;
    ensure!(who.as_deref() == Ok(user), "{who:?}");
    Ok(())
}

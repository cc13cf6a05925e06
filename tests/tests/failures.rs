//! Failures a client can meet: each is answered with the right SQLSTATE and a message that
//! says what happened, and Tollgate keeps serving everyone else.

use std::time::{Duration, Instant};
use tollgate::config::RawConfig;
use tollgate_e2e::{sqlstate, success, Env, EnvOptions, APP_PASSWORD, APP_USER};

/// Proves the proxy is up and answering: a fresh client logs in and runs a query.
async fn assert_serves(env: &Env) {
    let client = env.connect().await.expect("a fresh client can log in");
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

/// The database error a connect attempt failed with.
async fn connect_error(env: &Env, user: &str, password: &str) -> tokio_postgres::Error {
    match env
        .pg_config(user, password)
        .connect(tokio_postgres::NoTls)
        .await
    {
        Ok(_) => panic!("{user} should not have been let in"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_28p01() {
    let env = Env::start(EnvOptions::default()).await.unwrap();

    let wrong = connect_error(&env, APP_USER, "not-the-password").await;
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong:?}");
    let wrong = wrong.as_db_error().unwrap();
    assert_eq!(
        wrong.message(),
        format!("password authentication failed for user \"{APP_USER}\"")
    );

    // An unknown user cannot tell from the answer that the name does not exist.
    let unknown = connect_error(&env, "nobody", "whatever").await;
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"), "{unknown:?}");
    let unknown = unknown.as_db_error().unwrap();
    assert_eq!(
        unknown.message(),
        wrong.message().replace(APP_USER, "nobody")
    );
    assert_eq!(unknown.hint(), wrong.hint());
    assert_eq!(env.shared.stats.auth_failures.get(), 2);

    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrow_past_connection_borrow_timeout_fails_with_53300_naming_pool_and_limit() {
    let env = Env::start(EnvOptions {
        pool_size: 1,
        extra: RawConfig {
            connection_borrow_timeout: Some(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let holder = env.connect().await.unwrap();
    let waiter = env.connect().await.unwrap();
    // The only backend is now held for the length of this transaction.
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let asked = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("no backend can be had");
    let waited = asked.elapsed();
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err:?}");
    let msg = err.as_db_error().unwrap().message();
    assert!(msg.contains("pool app/app"), "{msg}");
    assert!(msg.contains("1 of 1 in use"), "{msg}");
    assert!(msg.contains("connection_borrow_timeout"), "{msg}");
    assert!(
        waited >= Duration::from_millis(900),
        "gave up after {waited:?}, before the borrow timeout"
    );

    // The holder is unaffected, and once it commits the backend serves others again.
    let rows = holder.simple_query("SELECT 5; COMMIT").await.unwrap();
    assert!(!rows.is_empty());
    assert_serves(&env).await;
}

/// A database that stays down is waited for (a restart usually ends within the borrow
/// timeout), then the login is refused with 08001 naming the address and the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_at_login_gives_08001_after_the_borrow_timeout_then_recovers() {
    let mut env = Env::start(EnvOptions {
        extra: tollgate::config::RawConfig {
            connection_borrow_timeout: Some(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    env.pg.stop().unwrap();

    let err = connect_error(&env, APP_USER, APP_PASSWORD).await;
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err:?}");
    let msg = err.as_db_error().unwrap().message();
    assert!(msg.contains("could not connect"), "{msg}");
    assert!(msg.contains("waited 2 s"), "{msg}");
    assert!(msg.contains(&env.pg.port().to_string()), "{msg}");

    env.pg.restart().unwrap();
    assert_serves(&env).await;
}

/// The pid of the backend running `sql` for the app user. A bounded poll of pg_stat_activity
/// with short sleeps: nothing signals "the backend has started the query".
async fn wait_for_active(direct: &tokio_postgres::Client, sql: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = direct
            .query(
                "SELECT pid FROM pg_stat_activity \
                 WHERE usename = $1 AND state = 'active' AND query = $2",
                &[&APP_USER, &sql],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "{sql} never became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_query_fails_that_client_only() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let direct = env.connect_direct_superuser().await.unwrap();
    let bystander = env.connect().await.unwrap();
    let victim = env.connect().await.unwrap();

    let sql = "SELECT pg_sleep(30)";
    let running = tokio::spawn(async move { victim.simple_query(sql).await });
    let pid = wait_for_active(&direct, sql).await;
    let killed: bool = direct
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the victim hears about it promptly")
        .unwrap()
        .expect_err("the query cannot succeed");
    let code = sqlstate(&err);
    assert!(
        matches!(code.as_deref(), Some("57P01") | Some("08006")),
        "unexpected error {err:?}"
    );

    let row = bystander.query_one("SELECT 3", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_is_closed_with_57p05_after_idle_client_timeout() {
    let env = Env::start(EnvOptions {
        extra: RawConfig {
            idle_client_timeout: Some(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let (client, conn) = env
        .pg_config(APP_USER, APP_PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    // The connection future ends when Tollgate closes the session; its error is what was sent.
    let conn = tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();
    let idle_from = Instant::now();

    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the idle client was never closed")
        .unwrap();
    let idle_for = idle_from.elapsed();
    let err = ended.expect_err("closed with an error, not cleanly");
    assert_eq!(sqlstate(&err).as_deref(), Some("57P05"), "{err:?}");
    let msg = err.as_db_error().unwrap().message();
    assert!(msg.contains("idle_client_timeout"), "{msg}");
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed after only {idle_for:?}"
    );
    assert!(client.is_closed());

    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_plain_clients_with_28000_and_admits_tls_clients() {
    let env = Env::start(EnvOptions {
        client_tls: true,
        extra: RawConfig {
            require_tls: Some(true),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();

    let err = connect_error(&env, APP_USER, APP_PASSWORD).await;
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err:?}");
    let msg = err.as_db_error().unwrap().message();
    assert!(msg.contains("requires TLS"), "{msg}");

    // psql with sslmode=require (env.app_url() asks for it when Tollgate offers TLS).
    let out = env
        .psql(&env.app_url(), &["-c", "SELECT 'over tls'"])
        .await
        .unwrap();
    assert_eq!(success(&out).unwrap().trim(), "over tls");
    // And sslmode=disable through psql is refused too, with the reason on stderr.
    let plain = env.app_url().replace("sslmode=require", "sslmode=disable");
    let out = env.psql(&plain, &["-c", "SELECT 1"]).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires TLS"), "{stderr}");
}

//! Backends the server ends while they sit idle in the pool (`pg_terminate_backend`, a
//! restart, a failover) are noticed and closed when they die, not handed to the next client:
//! nobody gets 57P01 for a connection they never used.

use anyhow::{ensure, Result};
use std::time::Duration;
use tokio_postgres::Client;
use tollgate_e2e::connected::scalar;
use tollgate_e2e::http::sample;
use tollgate_e2e::poll::{poll_until, until_idle_backends};
use tollgate_e2e::{Env, EnvOptions, APP_USER};

/// Two clients each hold a backend in a transaction at once, then end it: the pool then holds
/// two idle backends. Returns their pids.
async fn two_idle_backends(env: &Env, a: &Client, b: &Client) -> Result<Vec<String>> {
    a.batch_execute("BEGIN").await?;
    b.batch_execute("BEGIN").await?;
    let pids = vec![
        scalar(a, "SELECT pg_backend_pid()::text").await?,
        scalar(b, "SELECT pg_backend_pid()::text").await?,
    ];
    ensure!(
        pids[0] != pids[1],
        "two transactions at once share a backend"
    );
    a.batch_execute("COMMIT").await?;
    b.batch_execute("COMMIT").await?;
    until_idle_backends(env, 2).await?;
    Ok(pids)
}

/// Ends every backend of the app user from a direct superuser connection and waits until
/// they have exited (`pg_terminate_backend`'s timeout form waits for the process to go).
async fn terminate_app_backends(env: &Env) -> Result<()> {
    let su = env.connect_direct_superuser().await?;
    let killed = scalar(
        &su,
        &format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::text \
             FROM pg_stat_activity WHERE usename = '{APP_USER}' AND pid <> pg_backend_pid()"
        ),
    )
    .await?;
    ensure!(killed == "2", "terminated {killed} backends, expected 2");
    Ok(())
}

/// Every statement of a short mixed workload on both clients succeeds, including two
/// transactions at once (so both pool places are used again).
async fn both_clients_work(a: &Client, b: &Client) -> Result<()> {
    ensure!(scalar(a, "SELECT 1::text").await? == "1");
    ensure!(scalar(b, "SELECT 2::text").await? == "2");
    a.batch_execute("BEGIN").await?;
    b.batch_execute("BEGIN").await?;
    ensure!(scalar(a, "SELECT 3::text").await? == "3");
    ensure!(scalar(b, "SELECT 4::text").await? == "4");
    a.batch_execute("COMMIT").await?;
    b.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backends_the_server_terminates_are_closed_before_anyone_borrows_them() -> Result<()> {
    terminated_idle_backends_are_closed(false).await
}

/// The same over TLS to the database: the goodbye arrives as TLS records (and a close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_backends_the_server_terminates_are_closed_before_anyone_borrows_them(
) -> Result<()> {
    terminated_idle_backends_are_closed(true).await
}

async fn terminated_idle_backends_are_closed(backend_tls: bool) -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_size: 2,
        backend_tls,
        ..Default::default()
    })
    .await?;
    let (a, b) = (env.connect().await?, env.connect().await?);
    let before = two_idle_backends(&env, &a, &b).await?;
    terminate_app_backends(&env).await?;

    // The pool notices on its own, with no client asking for a backend.
    let global = env.shared.pools.global().clone();
    poll_until(
        "the pool to close both dead idle backends",
        Duration::from_secs(5),
        || global.closed_dead_idle() == 2 && global.idle() == 0 && global.open() == 0,
    )
    .await?;
    let (_, page) = env.admin_get("/metrics").await?;
    let closed = sample(
        &page,
        "tollgate_database_connections_closed_total{reason=\"dead_idle\"}",
    )?;
    ensure!(closed == 2.0, "{page}");

    both_clients_work(&a, &b).await?;
    let after = scalar(&a, "SELECT pg_backend_pid()::text").await?;
    ensure!(!before.contains(&after), "a terminated backend was lent");
    Ok(())
}

/// Straight after the terminate, before the pool can have noticed: the client's next query
/// still succeeds. What the idle watch has not seen yet, the relay retries on a fresh backend
/// (the backend died before any byte of its answer reached the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_query_right_after_the_server_terminates_idle_backends_succeeds() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let (a, b) = (env.connect().await?, env.connect().await?);
    two_idle_backends(&env, &a, &b).await?;
    terminate_app_backends(&env).await?;
    both_clients_work(&a, &b).await
}

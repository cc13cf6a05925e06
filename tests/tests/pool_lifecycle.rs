//! Pools come and go with the (database, user) pairs clients use: one nobody uses is freed,
//! and `max_pools` bounds how many exist, so a client naming endless databases cannot grow
//! Tollgate's memory or its `/metrics` page without bound.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use tollgate::config::RawConfig;
use tollgate_e2e::connected::scalar;
use tollgate_e2e::http::sample;
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::{
    sqlstate, Env, EnvOptions, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD,
    SCRAM_USER,
};

/// Logs in as the app user to `database` and expects a refusal; returns its SQLSTATE.
async fn refused_login(env: &Env, database: &str) -> Result<String> {
    let mut config = env.pg_config(APP_USER, APP_PASSWORD);
    config.dbname(database);
    match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => anyhow::bail!("a login to {database} was let in"),
        Err(e) => sqlstate(&e).with_context(|| format!("no SQLSTATE in {e:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_pools_are_freed_and_max_pools_refuses_one_more_with_53300() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_size: 1,
        extra: RawConfig {
            max_pools: Some(3),
            // Idle backends close after 1 s, and an unused pool goes 1 s after that.
            server_idle_timeout: Some(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;

    // Made-up database names: each login authenticates, gets a pool, and fails to connect.
    for i in 0..10 {
        let code = refused_login(&env, &format!("no_such_db_{i}")).await?;
        ensure!(code == "3D000", "login to a missing database got {code}");
    }
    let pools = env.shared.pools.count();
    ensure!(pools <= 3, "{pools} pools exist, max_pools is 3");

    // Three pools in use by connected clients: a fourth is refused, with the limit named.
    let app = env.connect().await?;
    let scram = env.connect_as(SCRAM_USER, SCRAM_PASSWORD).await?;
    let md5 = env.connect_as(MD5_USER, MD5_PASSWORD).await?;
    ensure!(scalar(&app, "SELECT 1::text").await? == "1");
    let mut config = env.pg_config(APP_USER, APP_PASSWORD);
    config.dbname("postgres");
    let err = match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => anyhow::bail!("a fourth pool was created past max_pools = 3"),
        Err(e) => e,
    };
    ensure!(sqlstate(&err).as_deref() == Some("53300"), "{err:?}");
    let message = err.as_db_error().map(|d| d.message().to_string());
    ensure!(
        message.as_deref().is_some_and(|m| m.contains("max_pools")),
        "{message:?}"
    );

    let (_, page) = env.admin_get("/metrics").await?;
    let queries = sample(&page, "tollgate_queries_total")?;
    drop((app, scram, md5));

    // Nobody uses any pool now: all of them go, and SHOW POOLS / metrics follow.
    let registry = &env.shared.pools;
    poll_until(
        "every unused pool to be freed",
        Duration::from_secs(15),
        || registry.count() == 0,
    )
    .await?;
    ensure!(registry.snapshots().is_empty());
    let (_, page) = env.admin_get("/metrics").await?;
    ensure!(sample(&page, "tollgate_pools")? == 0.0, "{page}");
    ensure!(
        sample(&page, "tollgate_pools_freed_total")? >= 3.0,
        "{page}"
    );
    // A freed pool's counts stay in the process-wide totals.
    ensure!(
        sample(&page, "tollgate_queries_total")? >= queries,
        "{page}"
    );
    ensure!(!page.contains("tollgate_pool_size{"), "{page}");

    // And a client comes back to a fresh pool.
    let app = env.connect().await?;
    ensure!(scalar(&app, "SELECT 2::text").await? == "2");
    ensure!(registry.count() == 1);
    Ok(())
}

//! Many clients, few backends: in transaction mode hundreds of clients share a small pool and
//! every answer still goes to the client that asked; the backend never sees more connections
//! than the pool size. In session mode a pool of N serves N clients and the next one waits
//! until one leaves.

use anyhow::{ensure, Context, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio_postgres::types::Type;
use tollgate_e2e::connected::scalar;
use tollgate_e2e::pgbench::PgbenchSummary;
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::{success, Env, EnvOptions, APP_USER};

/// Samples how many backends the app user has open, from a direct superuser connection,
/// until `stop` is set; returns (max seen, number of samples).
async fn sample_backends(
    env: &Env,
    stop: Arc<AtomicBool>,
) -> Result<impl std::future::Future<Output = Result<(u64, u64)>> + Send + 'static> {
    let su = env.connect_direct_superuser().await?;
    Ok(async move {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{APP_USER}'");
        let (mut max, mut samples) = (0u64, 0u64);
        // A sampling period, not synchronisation: the loop ends on `stop`.
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        loop {
            tick.tick().await;
            let n: u64 = scalar(&su, &sql).await?.parse()?;
            max = max.max(n);
            samples += 1;
            if stop.load(Ordering::Relaxed) {
                return Ok((max, samples));
            }
        }
    })
}

/// 500 clients connect, all stay connected at once, and each asks for its own numbers three
/// times in turn and three times pipelined (unnamed statements, so nobody pins): every answer
/// is right, and the server never sees more than the pool's 10 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_share_ten_backends_and_each_gets_its_own_answers() -> Result<()> {
    const CLIENTS: usize = 500;
    const POOL: u64 = 10;
    let env = Env::start(EnvOptions {
        pool_size: POOL as u32,
        ..Default::default()
    })
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_backends(&env, stop.clone()).await?);

    let all_connected = Arc::new(Barrier::new(CLIENTS));
    let mut clients = JoinSet::new();
    for n in 0..CLIENTS as i32 {
        let (dialer, shared) = (env.app_dialer(), env.shared.clone());
        let all_connected = all_connected.clone();
        clients.spawn(async move {
            let connected = dialer.connect().await;
            // Wait even on failure so the others are not stranded at the barrier.
            if all_connected.wait().await.is_leader() {
                // Every client has its ReadyForQuery; the proxy's count is read with a short
                // bounded poll because its gauge and the client's socket are not one event.
                let counted = tollgate_e2e::poll::poll_until(
                    "the proxy to count every client",
                    Duration::from_secs(5),
                    || shared.stats.clients_current.get() == CLIENTS as u64,
                )
                .await;
                ensure!(
                    counted.is_ok(),
                    "{} clients connected at once, expected {CLIENTS} (registry {}, closed {})",
                    shared.stats.clients_current.get(),
                    shared.clients.list().len(),
                    shared.stats.clients_closed.get()
                );
            }
            let c = connected.with_context(|| format!("client {n} connect"))?;
            for round in 0..3 {
                let want = n * 10 + round;
                let got: i32 = c
                    .client
                    .query_typed_one("SELECT $1::int", &[(&want, Type::INT4)])
                    .await?
                    .get(0);
                ensure!(got == want, "client {n} asked for {want} and got {got}");
                let text = scalar(&c.client, &format!("SELECT 'client-{n}-{round}'")).await?;
                ensure!(text == format!("client-{n}-{round}"), "client {n}: {text}");
            }
            // Three statements pipelined on the one connection (tokio-postgres sends them
            // without waiting): the backend must stay with the client until all are answered.
            let ask = |v: i32| {
                let client = &c.client;
                async move {
                    let got: i32 = client
                        .query_typed_one("SELECT $1::int", &[(&v, Type::INT4)])
                        .await?
                        .get(0);
                    anyhow::Ok(got)
                }
            };
            let base = -(n * 10);
            let (x, y, z) = tokio::join!(ask(base - 1), ask(base - 2), ask(base - 3));
            ensure!(
                (x?, y?, z?) == (base - 1, base - 2, base - 3),
                "client {n}: pipelined answers crossed"
            );
            Ok(())
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(45), clients.join_next())
        .await
        .context("clients stalled")?
    {
        if let Err(e) = r? {
            failures.push(format!("{e:#}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (max, samples) = sampler.await??;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(samples >= 2, "only {samples} samples of pg_stat_activity");
    assert!(
        max <= POOL,
        "backend saw {max} connections from Tollgate, pool is {POOL}"
    );
    assert!(max >= 1);
    for snap in env.shared.pools.snapshots() {
        assert!(snap.open <= POOL as usize, "{snap:?}");
    }
    assert_eq!(
        env.shared.stats.pins.iter().map(|c| c.get()).sum::<u64>(),
        0
    );
    Ok(())
}

/// pgbench with 100 clients over a pool of 10 in transaction mode: every transaction
/// completes, none fails, TPC-B's balances add up, and the server never sees more than 10
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_100_clients_over_10_backends_has_no_failed_transactions() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_size: 10,
        ..Default::default()
    })
    .await?;
    let url = env.app_url();
    success(&env.pgbench(&url, &["-i", "-s", "1", "-q"]).await?).context("pgbench -i")?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_backends(&env, stop.clone()).await?);
    let out = env
        .pgbench(
            &url,
            &["-M", "extended", "-c", "100", "-j", "2", "-t", "20"],
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let (max, _) = sampler.await??;
    let out = success(&out?)?;
    let summary = PgbenchSummary::parse(&out)?;
    assert_eq!(summary.failed, 0, "{out}");
    assert_eq!(summary.planned, Some(2000), "{out}");
    assert_eq!(summary.processed, 2000, "{out}");
    assert!(max <= 10, "backend saw {max} connections, pool is 10");

    let c = env.connect_app().await?;
    assert_eq!(
        scalar(&c.client, "SELECT count(*) FROM pgbench_history").await?,
        "2000"
    );
    let sums = scalar(
        &c.client,
        "SELECT (SELECT sum(delta) FROM pgbench_history) = (SELECT sum(abalance) FROM pgbench_accounts) \
            AND (SELECT sum(delta) FROM pgbench_history) = (SELECT sum(bbalance) FROM pgbench_branches)",
    )
    .await?;
    assert_eq!(sums, "t", "balances do not add up");
    Ok(())
}

/// Session mode, pool of 3: three clients each get their own backend and keep it while idle;
/// a fourth waits in the pool's queue; when one of the three leaves, the fourth is served on
/// the backend it freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pool_of_n_serves_n_clients_and_the_next_waits_until_one_leaves() -> Result<()> {
    const N: usize = 3;
    let env = Env::start(EnvOptions {
        pool_mode: "session",
        pool_size: N as u32,
        ..Default::default()
    })
    .await?;
    let mut held = Vec::new();
    for _ in 0..N {
        let c = env.connect_app().await?;
        let pid = scalar(&c.client, "SELECT pg_backend_pid()").await?;
        held.push((c, pid));
    }
    let pids: HashSet<&String> = held.iter().map(|(_, p)| p).collect();
    assert_eq!(
        pids.len(),
        N,
        "each session-mode client has its own backend"
    );

    let fourth = tokio::spawn({
        let dialer = env.app_dialer();
        async move { dialer.connect().await }
    });
    // Nothing to await from outside while a login is queued: poll the pool's waiter count
    // (bounded, 10 ms period).
    let queued = || {
        env.shared
            .pools
            .snapshots()
            .iter()
            .map(|s| s.waiting)
            .sum::<usize>()
            == 1
    };
    poll_until(
        "the fourth client to queue for a backend",
        Duration::from_secs(5),
        queued,
    )
    .await?;
    // The three keep working (and keep their backends) while the fourth waits.
    for (c, pid) in &held {
        assert_eq!(&scalar(&c.client, "SELECT pg_backend_pid()").await?, pid);
    }
    ensure!(queued(), "the fourth client should still be waiting");
    ensure!(
        !fourth.is_finished(),
        "the fourth client must not be served yet"
    );

    let (leaver, freed_pid) = held.remove(0);
    drop(leaver);
    let fourth = tokio::time::timeout(Duration::from_secs(10), fourth)
        .await
        .context("the fourth client was not served after one left")???;
    assert_eq!(
        scalar(&fourth.client, "SELECT pg_backend_pid()").await?,
        freed_pid,
        "the fourth client gets the freed backend"
    );
    for (c, pid) in &held {
        assert_eq!(&scalar(&c.client, "SELECT pg_backend_pid()").await?, pid);
    }
    let su = env.connect_direct_superuser().await?;
    let open = scalar(
        &su,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{APP_USER}'"),
    )
    .await?;
    assert_eq!(open, N.to_string());
    Ok(())
}

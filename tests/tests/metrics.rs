//! The admin HTTP listener under a scripted workload: every counter and gauge on `/metrics`
//! moves by exactly what the clients did, latency summaries agree with what the client
//! measured, and `/healthz` / `/readyz` follow the process and the database.

use std::time::{Duration, Instant};
use tollgate_e2e::http::{app_pool, exchange, sample, split};
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::{sqlstate, Env, EnvOptions, APP_USER, MD5_PASSWORD, MD5_USER};

/// Bytes of one simple-protocol `SELECT 1` from the client: Query = tag + length + "SELECT 1\0".
const SELECT_1_IN: f64 = (1 + 4 + 9) as f64;
/// Bytes of its answer: RowDescription (1+4+2 + "?column?\0" + 18) + DataRow (1+4+2+4+1)
/// + CommandComplete (1+4+"SELECT 1\0") + ReadyForQuery (1+4+1).
const SELECT_1_OUT: f64 = (34 + 12 + 14 + 6) as f64;

async fn metrics(env: &Env) -> String {
    let (status, body) = env.admin_get("/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Reads one value; panics with the page when it is missing.
fn get(page: &str, series: &str) -> f64 {
    sample(page, series).unwrap()
}

/// The app pool's numbers as the proxy holds them (for bounded polls of gauges that change
/// just after a reply is relayed; there is no event to await).
fn app_stat(env: &Env, read: impl Fn(&tollgate::metrics::PoolStats) -> u64) -> u64 {
    env.shared
        .pools
        .all()
        .iter()
        .find(|p| p.key.user == APP_USER)
        .map_or(0, |p| read(&p.stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_gauges_move_by_exactly_what_clients_did() {
    const N: usize = 4;
    const M: usize = 5;
    let env = Env::start(EnvOptions::default()).await.unwrap();

    // One failed login, then N clients.
    let refused = env
        .pg_config(APP_USER, "not-the-password")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"));
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(env.connect().await.unwrap());
    }
    poll_until(
        "every login's backend back in the pool",
        Duration::from_secs(5),
        || app_stat(&env, |s| s.borrowed.get()) == 0,
    )
    .await
    .unwrap();

    let before = metrics(&env).await;
    let n = N as f64;
    assert_eq!(get(&before, "tollgate_client_connections"), n);
    assert_eq!(
        get(&before, &app_pool("tollgate_pool_client_connections")),
        n
    );
    assert_eq!(
        get(&before, "tollgate_client_connections_setup_succeeded_total"),
        n
    );
    assert_eq!(
        get(
            &before,
            "tollgate_client_connections_setup_failed_total{reason=\"auth_failed\"}"
        ),
        1.0
    );
    assert_eq!(
        get(&before, "tollgate_client_connections_closed_total"),
        0.0
    );
    // max_connections 100 at max_connections_percent 100.
    assert_eq!(get(&before, "tollgate_database_connections_max"), 100.0);
    let target = format!(
        "tollgate_target_available{{target=\"127.0.0.1:{}\"}}",
        env.pg.port()
    );
    assert_eq!(get(&before, &target), 1.0);
    assert_eq!(get(&before, "tollgate_pools"), 1.0);

    // M single-statement transactions per client, one at a time.
    for c in &clients {
        for _ in 0..M {
            c.simple_query("SELECT 1").await.unwrap();
        }
    }
    poll_until(
        "the last backend back in the pool",
        Duration::from_secs(5),
        || app_stat(&env, |s| s.borrowed.get()) == 0,
    )
    .await
    .unwrap();
    let after = metrics(&env).await;
    let delta = |series: &str| get(&after, series) - get(&before, series);
    let runs = (N * M) as f64;
    for name in [
        "tollgate_pool_queries_total",
        "tollgate_pool_transactions_total",
        "tollgate_pool_database_connection_requests_total",
    ] {
        assert_eq!(delta(&app_pool(name)), runs, "{name}");
    }
    assert_eq!(delta("tollgate_queries_total"), runs);
    assert_eq!(delta("tollgate_transactions_total"), runs);
    assert_eq!(
        delta(&app_pool("tollgate_pool_bytes_from_clients_total")),
        runs * SELECT_1_IN
    );
    assert_eq!(
        delta(&app_pool("tollgate_pool_bytes_to_clients_total")),
        runs * SELECT_1_OUT
    );
    assert_eq!(
        delta("tollgate_bytes_from_clients_total"),
        runs * SELECT_1_IN
    );
    assert_eq!(
        delta("tollgate_bytes_to_clients_total"),
        runs * SELECT_1_OUT
    );
    assert_eq!(
        get(
            &after,
            &app_pool("tollgate_pool_query_response_latency_seconds_count")
        ),
        runs
    );
    assert_eq!(
        get(
            &after,
            &app_pool("tollgate_pool_database_connections_borrowed")
        ),
        0.0
    );
    // Every backend the pool opened is open on the server, and idle now.
    let open = env.backend_count(APP_USER).unwrap() as f64;
    assert!(open >= 1.0);
    assert_eq!(get(&after, "tollgate_database_connections"), open);
    assert_eq!(
        get(&after, &app_pool("tollgate_pool_database_connections")),
        open
    );
    assert_eq!(
        get(&after, &app_pool("tollgate_pool_database_connections_idle")),
        open
    );
    assert_eq!(
        get(
            &after,
            &app_pool("tollgate_pool_database_connections_setup_succeeded_total")
        ),
        open
    );
    assert_eq!(
        get(
            &after,
            &app_pool("tollgate_pool_database_connections_setup_failed_total")
        ),
        0.0
    );

    // One client inside a transaction, one pinned by a session SET.
    clients[0].batch_execute("BEGIN").await.unwrap();
    clients[1]
        .batch_execute("SET search_path = x")
        .await
        .unwrap();
    let busy = metrics(&env).await;
    for (name, want) in [
        ("database_connections_borrowed", 2.0),
        ("database_connections_in_transaction", 1.0),
        ("database_connections_session_pinned", 1.0),
    ] {
        assert_eq!(get(&busy, &format!("tollgate_{name}")), want, "{name}");
        assert_eq!(
            get(&busy, &app_pool(&format!("tollgate_pool_{name}"))),
            want,
            "{name}"
        );
    }
    assert_eq!(
        get(&busy, "tollgate_session_pins_total{reason=\"session_set\"}"),
        1.0
    );
    assert_eq!(
        get(&busy, "tollgate_session_pins_total{reason=\"prepare\"}"),
        0.0
    );

    // The transaction ends: its backend goes back; the pinned one stays lent.
    clients[0].batch_execute("COMMIT").await.unwrap();
    poll_until(
        "the committed backend back in the pool",
        Duration::from_secs(5),
        || app_stat(&env, |s| s.borrowed.get()) == 1,
    )
    .await
    .unwrap();
    let committed = metrics(&env).await;
    assert_eq!(
        get(&committed, "tollgate_database_connections_borrowed"),
        1.0
    );
    assert_eq!(
        get(&committed, "tollgate_database_connections_in_transaction"),
        0.0
    );

    // The pinned client leaves: the gauges drop and its close is counted.
    drop(clients.remove(1));
    poll_until(
        "the pinned client's session ended",
        Duration::from_secs(5),
        || env.shared.stats.clients_closed.get() == 1,
    )
    .await
    .unwrap();
    let left = metrics(&env).await;
    assert_eq!(get(&left, "tollgate_client_connections"), n - 1.0);
    assert_eq!(
        get(&left, &app_pool("tollgate_pool_client_connections")),
        n - 1.0
    );
    assert_eq!(get(&left, "tollgate_client_connections_closed_total"), 1.0);
    assert_eq!(
        get(&left, "tollgate_database_connections_session_pinned"),
        0.0
    );
    assert_eq!(
        get(&left, "tollgate_session_pins_total{reason=\"session_set\"}"),
        1.0
    );
}

/// HdrHistogram's `value_at_quantile(q)` reports the sample of rank ceil(q * n).
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.max(1) - 1].as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_summaries_agree_with_what_the_client_measured() {
    const RUNS: usize = 200;
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let client = env.connect().await.unwrap();
    let mut rtt = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let sent = Instant::now();
        client.simple_query("SELECT pg_sleep(0.005)").await.unwrap();
        rtt.push(sent.elapsed());
    }
    rtt.sort();
    let (client_p50, client_p99) = (quantile(&rtt, 0.5), quantile(&rtt, 0.99));
    let client_max = rtt[RUNS - 1].as_secs_f64();
    let page = metrics(&env).await;
    let q = |name: &str, quantile: &str| {
        get(
            &page,
            &format!("{name}{{user=\"{APP_USER}\",database=\"app\",quantile=\"{quantile}\"}}"),
        )
    };
    let query = "tollgate_pool_query_response_latency_seconds";
    let db = "tollgate_pool_query_database_response_latency_seconds";
    assert_eq!(
        get(&page, &app_pool(&format!("{query}_count"))),
        RUNS as f64
    );
    assert_eq!(get(&page, &app_pool(&format!("{db}_count"))), RUNS as f64);
    let (p50, p99) = (q(query, "0.5"), q(query, "0.99"));

    // Medians agree within 1 ms (the client's own overhead) plus 1 % (histogram precision).
    assert!(
        (p50 - client_p50).abs() <= 0.001 + 0.01 * client_p50,
        "server p50 {p50} vs client p50 {client_p50}"
    );
    // The proxy times a part of each round trip the client times, so its percentiles cannot
    // exceed the client's (beyond histogram rounding); the tail also carries client-side
    // scheduling noise, so it is bounded on that side only, and from below by the sleep.
    assert!(
        p99 <= client_p99 * 1.01 + 1e-6,
        "server p99 {p99} vs client p99 {client_p99}"
    );
    assert!(p99 >= 0.005 && p99 >= p50, "server p99 {p99}, p50 {p50}");
    let max = get(
        &page,
        &app_pool("tollgate_pool_query_response_latency_max_seconds"),
    );
    assert!(
        max >= p99 && max <= client_max * 1.01 + 1e-6,
        "max {max}, client max {client_max}"
    );
    let sum = get(&page, &app_pool(&format!("{query}_sum")));
    assert!(sum >= RUNS as f64 * 0.005, "sum {sum}");
    // The database part of each request is inside the whole of it.
    let (db50, db99) = (q(db, "0.5"), q(db, "0.99"));
    assert!(
        db50 >= 0.005 && db50 <= p50 * 1.01 + 1e-6,
        "db p50 {db50}, query p50 {p50}"
    );
    assert!(db99 <= client_p99 * 1.01 + 1e-6, "db p99 {db99}");
    // Borrow waits were recorded (one per request) and an idle pool lends at once.
    assert!(
        get(
            &page,
            &app_pool("tollgate_pool_borrow_latency_seconds_count")
        ) >= RUNS as f64
    );
    assert!(q("tollgate_pool_borrow_latency_seconds", "0.5") < client_p50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_paths() {
    // A short borrow timeout: a login with the database down waits that long, retrying.
    let mut env = Env::start(EnvOptions {
        extra: tollgate::config::RawConfig {
            connection_borrow_timeout: Some(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = env
        .admin_addr()
        .expect("the harness turns the admin listener on");
    assert!(admin.ip().is_loopback());
    assert_eq!(
        env.admin_get("/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        env.admin_get("/readyz").await.unwrap(),
        (200, "ready\n".into())
    );
    for path in ["/", "/nope", "/metrics/x", "/healthz/"] {
        assert_eq!(env.admin_get(path).await.unwrap().0, 404, "{path}");
    }

    let whole = exchange(admin, b"GET /metrics?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = split(&whole).unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    let posted = exchange(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(split(&posted.unwrap()).unwrap().0, 405);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(9 * 1024, b'a');
    assert_eq!(
        split(&exchange(admin, &huge).await.unwrap()).unwrap().0,
        431
    );
    assert_eq!(
        split(&exchange(admin, b"hello\r\n\r\n").await.unwrap())
            .unwrap()
            .0,
        400
    );

    // The database goes away. Readiness reflects what the proxy has seen, so it changes once
    // a connection attempt fails: a new user's login opens that user's first backend.
    env.pg.stop().unwrap();
    assert_eq!(env.admin_get("/readyz").await.unwrap().0, 200);
    let err = env
        .pg_config(MD5_USER, MD5_PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("no database to log in to");
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err:?}");
    let (status, body) = env.admin_get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{}", env.pg.port())),
        "{body}"
    );
    assert!(body.contains("did not answer"), "{body}");
    assert_eq!(env.admin_get("/healthz").await.unwrap().0, 200);
    let page = metrics(&env).await;
    let target = format!(
        "tollgate_target_available{{target=\"127.0.0.1:{}\"}}",
        env.pg.port()
    );
    assert_eq!(get(&page, &target), 0.0);
    let failed = format!(
        "tollgate_pool_database_connections_setup_failed_total{{user=\"{MD5_USER}\",database=\"app\"}}"
    );
    // Every attempt of the wait is counted (RDS Proxy counts failed setups, not clients).
    assert!(get(&page, &failed) >= 1.0, "{failed}");
}

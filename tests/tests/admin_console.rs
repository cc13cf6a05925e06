//! The admin console (virtual database `tollgate`, for users in `admin_users`): every command's
//! columns and values against a scripted state, PAUSE / RESUME / KILL, and live reload by
//! RELOAD and SIGHUP — including during a pgbench run, with no client errors.

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tollgate::config::RawConfig;
use tollgate_e2e::connected::scalar;
use tollgate_e2e::pgbench::PgbenchSummary;
use tollgate_e2e::{
    sqlstate, success, Env, EnvOptions, APP_PASSWORD, APP_USER, SCRAM_PASSWORD, SCRAM_USER,
};

/// One console row: column name → value (None for NULL).
type Row = BTreeMap<String, Option<String>>;

/// An Env whose `app` user may open the console.
async fn start(opts: EnvOptions) -> Result<Env> {
    Env::start(EnvOptions {
        extra: RawConfig {
            admin_users: Some(vec![APP_USER.into()]),
            ..opts.extra.clone()
        },
        ..opts
    })
    .await
}

/// A console session as `user` (tokio-postgres over the simple query protocol).
async fn console_as(
    env: &Env,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = env.pg_config(user, password);
    config.dbname("tollgate");
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn console(env: &Env) -> Result<Client> {
    Ok(console_as(env, APP_USER, APP_PASSWORD).await?)
}

/// Runs a console command and returns its rows.
async fn show(console: &Client, command: &str) -> Result<Vec<Row>> {
    let messages = console
        .simple_query(command)
        .await
        .with_context(|| command.to_string())?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The value of `column` in `row` ("" for NULL or a missing column, which then fails the
/// comparison that uses it).
fn col<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_deref()).unwrap_or("")
}

fn num(row: &Row, column: &str) -> Result<u64> {
    col(row, column)
        .parse()
        .with_context(|| format!("{column} in {row:?}"))
}

/// The single pool's SHOW POOLS row.
async fn pool_row(console: &Client) -> Result<Row> {
    let rows = show(console, "SHOW POOLS").await?;
    match <[Row; 1]>::try_from(rows) {
        Ok([row]) => Ok(row),
        Err(rows) => bail!("expected one pool, got {rows:?}"),
    }
}

/// Runs `command` every 10 ms until `cond` holds for its rows (at most `limit`). A bounded
/// poll of observable state — the console has no event to await — not synchronisation.
async fn poll_show(
    console: &Client,
    command: &str,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut(&[Row]) -> bool,
) -> Result<Vec<Row>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let rows = show(console, command).await?;
        if cond(&rows) {
            return Ok(rows);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}; last {command}: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// psql's unaligned, tuples-only output of a console command, split on `,`.
async fn psql_rows(env: &Env, command: &str) -> Result<Vec<Vec<String>>> {
    let url = env.url(APP_USER, APP_PASSWORD, "tollgate");
    let out = success(&env.psql(&url, &["-F", ",", "-c", command]).await?)
        .with_context(|| format!("psql -c {command:?}"))?;
    Ok(out
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect())
}

/// Three clients — one idle, one pinned by a session advisory lock, one inside a transaction —
/// and every SHOW command describes exactly that: SHOW CLIENTS their states, pin reason and
/// backends; SHOW POOLS the counts; SHOW SERVERS the same pids as pg_stat_activity; SHOW STATS
/// counts five more queries as five queries, transactions, borrows and 70 bytes; SHOW CONFIG
/// and SHOW TARGETS the settings and the one writer. psql prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_describe_clients_pools_servers_stats_config_and_targets() -> Result<()> {
    let env = start(EnvOptions::default()).await?;
    let idle = env.connect().await?;
    idle.batch_execute("SELECT 1").await?;
    let pinned = env.connect().await?;
    pinned.batch_execute("SELECT pg_advisory_lock(42)").await?;
    let pinned_pid = scalar(&pinned, "SELECT pg_backend_pid()").await?;
    let in_tx = env.connect().await?;
    in_tx.batch_execute("BEGIN; SELECT 1").await?;
    let tx_pid = scalar(&in_tx, "SELECT pg_backend_pid()").await?;
    let admin = console(&env).await?;

    // The idle client's backend goes back to the pool just after its answer is relayed.
    let clients = poll_show(
        &admin,
        "SHOW CLIENTS",
        Duration::from_secs(5),
        "the idle client to be idle",
        |rows| rows.first().is_some_and(|r| col(r, "state") == "idle"),
    )
    .await?;
    ensure!(clients.len() == 3, "{clients:?}");
    let expect = [
        ("idle", None, None),
        ("active", Some(pinned_pid.as_str()), Some("advisory_lock")),
        ("in_transaction", Some(tx_pid.as_str()), None),
    ];
    let mut ids = Vec::new();
    for (row, (state, pid, pin)) in clients.iter().zip(expect) {
        assert_eq!(col(row, "state"), state, "{row:?}");
        assert_eq!(row["backend_pid"].as_deref(), pid, "{row:?}");
        assert_eq!(row["pinned"].as_deref(), pin, "{row:?}");
        assert_eq!(
            (col(row, "user"), col(row, "database"), col(row, "tls")),
            ("app", "app", "no")
        );
        assert!(col(row, "addr").starts_with("127.0.0.1:"), "{row:?}");
        assert!(col(row, "connected_at").ends_with("+00"), "{row:?}");
        ids.push(col(row, "id").to_string());
    }

    // SHOW POOLS through psql, as an operator would run it.
    let pools = psql_rows(&env, "SHOW POOLS").await?;
    let [pool] = pools.as_slice() else {
        bail!("expected one pool: {pools:?}")
    };
    let open: u64 = pool[8].parse()?;
    let idle_backends = (open - 2).to_string();
    assert_eq!(
        &pool[..8],
        [
            "app",
            "app",
            "transaction",
            "3",
            "0",
            "2",
            "1",
            idle_backends.as_str()
        ]
    );
    assert_eq!(&pool[9..12], ["10", "1", "no"]);

    // SHOW SERVERS: the two lent backends name their clients; all pids are the server's.
    let servers = show(&admin, "SHOW SERVERS").await?;
    assert_eq!(servers.len() as u64, open, "{servers:?}");
    let active: BTreeMap<&str, &str> = servers
        .iter()
        .filter(|r| col(r, "state") == "active")
        .map(|r| (col(r, "backend_pid"), col(r, "client_id")))
        .collect();
    let want: BTreeMap<&str, &str> = [
        (pinned_pid.as_str(), ids[1].as_str()),
        (tx_pid.as_str(), ids[2].as_str()),
    ]
    .into();
    assert_eq!(active, want);
    for r in servers.iter().filter(|r| col(r, "state") == "idle") {
        assert_eq!(r["client_id"], None, "{r:?}");
        num(r, "idle_s")?;
    }
    let su = env.connect_direct_superuser().await?;
    let on_server: BTreeSet<String> = su
        .simple_query("SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app'")
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let listed: BTreeSet<String> = servers
        .iter()
        .map(|r| col(r, "backend_pid").to_string())
        .collect();
    assert_eq!(listed, on_server);

    // SHOW STATS: five one-statement queries are five of everything and 5 × 14 bytes sent.
    let before = show(&admin, "SHOW STATS").await?.remove(0);
    for _ in 0..5 {
        idle.batch_execute("SELECT 1").await?;
    }
    let after = show(&admin, "SHOW STATS").await?.remove(0);
    let delta = |c: &str| -> Result<u64> { Ok(num(&after, c)? - num(&before, c)?) };
    assert_eq!(delta("queries")?, 5);
    assert_eq!(delta("transactions")?, 5);
    assert_eq!(delta("connection_requests")?, 5);
    assert_eq!(
        delta("bytes_from_clients")?,
        5 * 14,
        "Query 'SELECT 1' is 14 bytes"
    );
    assert!(delta("bytes_to_clients")? > 0);
    // Every backend opened is still open (the idle client's queries opened one more).
    let open_now = num(&pool_row(&admin).await?, "sv_open")?;
    assert_eq!(num(&after, "setup_succeeded")?, open_now);
    assert_eq!(
        (
            num(&after, "setup_failed")?,
            num(&after, "borrow_timeouts")?
        ),
        (0, 0)
    );
    for c in [
        "query_p50_ms",
        "query_p99_ms",
        "db_p99_ms",
        "borrow_wait_p99_ms",
    ] {
        let ms: f64 = col(&after, c).parse().with_context(|| c.to_string())?;
        assert!(ms >= 0.0, "{c}");
    }
    assert!(
        col(&after, "query_p99_ms").parse::<f64>()? > 0.0,
        "{after:?}"
    );

    // SHOW CONFIG: every setting, the value in force, whether a reload can change it.
    let config = show(&admin, "SHOW CONFIG").await?;
    let setting = |k: &str| config.iter().find(|r| col(r, "key") == k).cloned();
    let pool_size = setting("pool_size").context("pool_size in SHOW CONFIG")?;
    assert_eq!(
        (col(&pool_size, "value"), col(&pool_size, "reloadable")),
        ("10", "yes")
    );
    let listen = setting("listen").context("listen in SHOW CONFIG")?;
    assert_eq!(
        (col(&listen, "value"), col(&listen, "reloadable")),
        ("127.0.0.1:0", "no")
    );
    assert_eq!(
        setting("admin_users").as_ref().map(|r| col(r, "value")),
        Some("app")
    );

    // SHOW TARGETS: one writer, the upstream, up (by the connections made so far: this test
    // runs no health checks), with the connections open to it.
    let targets = psql_rows(&env, "SHOW TARGETS").await?;
    let port = env.pg.port().to_string();
    assert_eq!(targets.len(), 1, "{targets:?}");
    let t = &targets[0];
    assert_eq!(
        (
            &t[0][..],
            &t[1][..],
            &t[2][..],
            &t[3][..],
            &t[10][..],
            &t[11][..]
        ),
        (
            "127.0.0.1",
            port.as_str(),
            "writer",
            "up",
            "upstream",
            "disable"
        ),
        "{t:?}"
    );
    assert!(t[6].parse::<u64>()? >= 1, "connections: {t:?}");

    in_tx.batch_execute("COMMIT").await?;
    Ok(())
}

/// Users not in admin_users cannot open the console (28000, naming admin_users); an unknown
/// command is an error that lists every command, and the session goes on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_are_refused_and_unknown_commands_list_the_commands() -> Result<()> {
    let env = start(EnvOptions::default()).await?;
    let refused = console_as(&env, SCRAM_USER, SCRAM_PASSWORD)
        .await
        .err()
        .context("a non-admin user opened the console")?;
    assert_eq!(sqlstate(&refused).as_deref(), Some("28000"), "{refused}");
    let message = refused.as_db_error().map(|e| e.message().to_string());
    assert!(
        message.unwrap_or_default().contains("admin_users"),
        "{refused:?}"
    );

    let admin = console(&env).await?;
    let err = admin
        .simple_query("SHOW EVERYTHING")
        .await
        .err()
        .context("unknown command ran")?;
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    for command in [
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW STATS",
        "SHOW CONFIG",
        "SHOW TARGETS",
        "RELOAD",
        "PAUSE",
        "RESUME",
        "KILL",
    ] {
        assert!(
            message.contains(command),
            "{command} missing from: {message}"
        );
    }
    // Not a pooled database: plain SQL is not run anywhere.
    let err = admin
        .simple_query("SELECT 1")
        .await
        .err()
        .context("SELECT ran in the console")?;
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    // The session survives its errors.
    assert_eq!(show(&admin, "SHOW POOLS").await?.len(), 0);
    Ok(())
}

/// On a pool of one: PAUSE app waits for the transaction in progress to finish before it
/// answers; the backend it frees then stays idle although a client queued before the PAUSE
/// wants it, and a new client's query waits too (both counted in cl_waiting); RESUME app
/// serves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_running_transactions_and_holds_queries_until_resume() -> Result<()> {
    let env = start(EnvOptions {
        pool_size: 1,
        ..Default::default()
    })
    .await?;
    let busy = env.connect().await?;
    busy.batch_execute("BEGIN; SELECT 1").await?;
    let watcher = console(&env).await?;
    let waiting = |n: &'static str| {
        move |rows: &[Row]| rows.first().is_some_and(|r| col(r, "cl_waiting") == n)
    };
    let ask = |sql: &'static str| {
        let dialer = env.app_dialer();
        tokio::spawn(async move {
            let c = dialer.connect().await?;
            scalar(&c.client, sql).await
        })
    };
    let limit = Duration::from_secs(5);
    let queued = ask("SELECT 'queued'");
    poll_show(
        &watcher,
        "SHOW POOLS",
        limit,
        "a client queued for the only backend",
        waiting("1"),
    )
    .await?;

    let pauser = console(&env).await?;
    let pause = tokio::spawn(async move { pauser.simple_query("PAUSE app").await.map(|_| ()) });
    let row = poll_show(
        &watcher,
        "SHOW POOLS",
        limit,
        "the pool to be paused",
        |rows| rows.first().is_some_and(|r| col(r, "paused") == "yes"),
    )
    .await?
    .remove(0);
    // PAUSE answers only once nothing is lent; the transaction still holds the backend.
    assert_eq!(col(&row, "sv_borrowed"), "1");
    assert!(
        !pause.is_finished(),
        "PAUSE answered while a transaction was open"
    );
    busy.batch_execute("COMMIT").await?;
    tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .context("PAUSE did not answer after the transaction ended")???;

    // Paused: the freed backend stays idle; the queued client and a new one both wait.
    let fresh = ask("SELECT 41 + 1");
    let row = poll_show(
        &watcher,
        "SHOW POOLS",
        limit,
        "the new client to wait",
        waiting("2"),
    )
    .await?
    .remove(0);
    assert_eq!((col(&row, "sv_idle"), col(&row, "sv_borrowed")), ("1", "0"));
    assert!(
        !queued.is_finished() && !fresh.is_finished(),
        "a query ran while the pool was paused"
    );

    show(&watcher, "RESUME app").await?;
    for (task, want) in [(queued, "queued"), (fresh, "42")] {
        let answer = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .context("a query did not complete after RESUME")???;
        assert_eq!(answer, want);
    }
    let row = pool_row(&watcher).await?;
    assert_eq!((col(&row, "paused"), col(&row, "cl_waiting")), ("no", "0"));
    Ok(())
}

/// KILL ends the target client's session with 57P01 and rolls back its open transaction; the
/// other client carries on; an unknown or malformed id is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_the_target_client_with_57p01_and_leaves_others_alone() -> Result<()> {
    let env = start(EnvOptions::default()).await?;
    let (target, conn) = env.pg_config(APP_USER, APP_PASSWORD).connect(NoTls).await?;
    let target_driver = tokio::spawn(conn);
    let other = env.connect().await?;
    other.batch_execute("CREATE TABLE kill_t (x int)").await?;
    target
        .batch_execute("BEGIN; INSERT INTO kill_t VALUES (1)")
        .await?;
    let admin = console(&env).await?;

    let clients = show(&admin, "SHOW CLIENTS").await?;
    ensure!(clients.len() == 2, "{clients:?}");
    let (target_id, other_id) = (
        col(&clients[0], "id").to_string(),
        col(&clients[1], "id").to_string(),
    );
    assert_eq!(col(&clients[0], "state"), "in_transaction");

    show(&admin, &format!("KILL {target_id}")).await?;
    let ended = tokio::time::timeout(Duration::from_secs(10), target_driver)
        .await
        .context("the killed client's connection did not end")??;
    let err = ended
        .err()
        .context("the killed client's connection ended without an error")?;
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    assert!(target.is_closed());

    assert_eq!(
        scalar(&other, "SELECT count(*) FROM kill_t").await?,
        "0",
        "the killed client's transaction was rolled back"
    );
    let left = poll_show(
        &admin,
        "SHOW CLIENTS",
        Duration::from_secs(5),
        "the killed client to leave",
        |rows| rows.len() == 1,
    )
    .await?;
    assert_eq!(col(&left[0], "id"), other_id);

    for (command, code) in [
        (format!("KILL {target_id}"), "42704"),
        ("KILL nobody".to_string(), "22023"),
        ("KILL".to_string(), "42601"),
    ] {
        let err = admin
            .simple_query(&command)
            .await
            .err()
            .with_context(|| format!("{command} succeeded"))?;
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{command}: {err}");
    }
    Ok(())
}

/// RELOAD re-reads the config file and the auth file: a new pool_size and idle_client_timeout
/// apply (SHOW POOLS, SHOW CONFIG) with clients staying connected; listen and pool_mode are
/// reported as needing a restart and keep their values; a user removed from the auth file can
/// no longer log in; an invalid file changes nothing; SIGHUP reloads the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_live_settings_and_reports_those_that_need_a_restart() -> Result<()> {
    let env = start(EnvOptions {
        config_file: true,
        ..Default::default()
    })
    .await?;
    let client = env.connect().await?;
    client.batch_execute("SELECT 1").await?;
    let admin = console(&env).await?;
    assert_eq!(col(&pool_row(&admin).await?, "pool_size"), "10");

    env.edit_config(|c| {
        c.pool_size = Some(4);
        c.idle_client_timeout = Some(900);
        c.listen = Some("127.0.0.1:1".into());
        c.pool_mode = Some("session".into());
    })?;
    let auth_file = env.dir.path().join("userlist.txt");
    let users = std::fs::read_to_string(&auth_file)?;
    let fewer: String = users
        .lines()
        .filter(|l| !l.contains("md5_user"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&auth_file, fewer)?;

    let report = show(&admin, "RELOAD").await?;
    let result = |setting: &str| -> String {
        report
            .iter()
            .find(|r| col(r, "setting") == setting)
            .map(|r| {
                format!(
                    "{} -> {}: {}",
                    col(r, "old_value"),
                    col(r, "new_value"),
                    col(r, "result")
                )
            })
            .unwrap_or_default()
    };
    assert_eq!(result("pool_size"), "10 -> 4: applied", "{report:?}");
    assert_eq!(result("idle_client_timeout"), "1800 -> 900: applied");
    assert!(
        result("listen").starts_with("127.0.0.1:0 -> 127.0.0.1:1: needs a restart"),
        "{report:?}"
    );
    assert!(
        result("pool_mode").starts_with("transaction -> session: needs a restart"),
        "{report:?}"
    );
    assert_eq!(result("auth_file (contents)"), " -> 2 users: re-read");
    assert_eq!(report.len(), 5, "{report:?}");

    assert_eq!(col(&pool_row(&admin).await?, "pool_size"), "4");
    let config = show(&admin, "SHOW CONFIG").await?;
    let value = |k: &str| {
        config
            .iter()
            .find(|r| col(r, "key") == k)
            .map(|r| col(r, "value").to_string())
    };
    assert_eq!(value("idle_client_timeout").as_deref(), Some("900"));
    assert_eq!(value("pool_mode").as_deref(), Some("transaction"));
    assert_eq!(value("listen").as_deref(), Some("127.0.0.1:0"));
    assert_eq!(scalar(&client, "SELECT 'still here'").await?, "still here");
    let err = env
        .connect_as("md5_user", "md5-secret")
        .await
        .err()
        .context("a removed user logged in")?;
    let err = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(sqlstate);
    assert_eq!(err.as_deref(), Some("28P01"));

    // An invalid file: an error naming the key, and nothing changes.
    env.edit_config(|c| c.pool_size = Some(0))?;
    let err = admin
        .simple_query("RELOAD")
        .await
        .err()
        .context("an invalid config reloaded")?;
    assert_eq!(sqlstate(&err).as_deref(), Some("F0000"));
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("`pool_size`"), "{message}");
    assert_eq!(col(&pool_row(&admin).await?, "pool_size"), "4");

    // SIGHUP: the handler is installed before the signal is sent, so the process survives it.
    env.edit_config(|c| c.pool_size = Some(6))?;
    let _hup = tollgate::admin::reload::spawn_on_sighup(env.shared.clone())?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -HUP failed");
    poll_show(
        &admin,
        "SHOW POOLS",
        Duration::from_secs(5),
        "SIGHUP to apply pool_size 6",
        |rows| rows.first().is_some_and(|r| col(r, "pool_size") == "6"),
    )
    .await?;
    Ok(())
}

/// pgbench with 20 clients on a pool of 4; mid-run RELOAD grows the pool to 12 (SHOW POOLS
/// sv_open reaches 12) and then shrinks it to 3 (sv_open falls to 3 or fewer as backends come
/// back) — and pgbench finishes with no failed transaction and no client error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_during_pgbench_resizes_the_pool_without_client_errors() -> Result<()> {
    let env = start(EnvOptions {
        pool_size: 4,
        config_file: true,
        ..Default::default()
    })
    .await?;
    let url = env.app_url();
    success(&env.pgbench(&url, &["-i", "-s", "1", "-q"]).await?).context("pgbench -i")?;
    let admin = console(&env).await?;

    let bench = {
        let url = url.clone();
        tokio::spawn(async move {
            tollgate_e2e::run_tool(
                "pgbench",
                &["-n", "-c", "20", "-j", "2", "-T", "4", url.as_str()],
                None,
            )
            .await
        })
    };
    let limit = Duration::from_secs(3);
    poll_show(
        &admin,
        "SHOW POOLS",
        limit,
        "pgbench to fill the pool of 4",
        |rows| {
            rows.first()
                .is_some_and(|r| col(r, "sv_open") == "4" && col(r, "cl_waiting") != "0")
        },
    )
    .await?;

    env.edit_config(|c| c.pool_size = Some(12))?;
    show(&admin, "RELOAD").await?;
    poll_show(
        &admin,
        "SHOW POOLS",
        limit,
        "the pool to grow to 12",
        |rows| {
            rows.first()
                .is_some_and(|r| col(r, "pool_size") == "12" && col(r, "sv_open") == "12")
        },
    )
    .await?;
    assert!(
        !bench.is_finished(),
        "pgbench ended before the pool grew: the resize was not seen under load"
    );

    env.edit_config(|c| c.pool_size = Some(3))?;
    show(&admin, "RELOAD").await?;
    poll_show(
        &admin,
        "SHOW POOLS",
        limit,
        "the pool to shrink to 3",
        |rows| {
            rows.first().is_some_and(|r| {
                col(r, "pool_size") == "3" && num(r, "sv_open").is_ok_and(|n| n <= 3)
            })
        },
    )
    .await?;

    let out = success(&bench.await??)?;
    let summary = PgbenchSummary::parse(&out)?;
    assert_eq!(summary.failed, 0, "{out}");
    assert!(summary.processed > 0, "{out}");
    let stats = show(&admin, "SHOW STATS").await?.remove(0);
    assert_eq!(
        (
            num(&stats, "borrow_timeouts")?,
            num(&stats, "setup_failed")?
        ),
        (0, 0)
    );
    Ok(())
}

/// Renewing the client certificate is a reload: the same files rewritten with a certificate
/// from another CA, then RELOAD. New TLS clients get the new certificate (it verifies against
/// the new CA and no longer against the old), a client connected before keeps its session, and
/// a key file that does not load fails the reload with the certificate in force unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_puts_a_renewed_client_certificate_in_force() -> Result<()> {
    let env = start(EnvOptions {
        client_tls: true,
        ..Default::default()
    })
    .await?;
    let old_ca = env.client_ca.clone().context("the Env offers TLS")?;
    let dial = |ca: &std::path::Path| tollgate_e2e::connected::Dialer {
        config: env.pg_config(APP_USER, APP_PASSWORD),
        ca: Some(ca.to_path_buf()),
    };
    let before = dial(&old_ca).connect().await?;
    let admin = console(&env).await?;

    // The renewal: a new CA and leaf, written over the files Tollgate was started with.
    let renewed = tollgate_localpg::certs::generate(&["localhost", "127.0.0.1"])?;
    let new_ca = env.dir.path().join("renewed-ca.crt");
    std::fs::write(&new_ca, &renewed.ca_pem)?;
    let (cert, key) = (
        env.dir.path().join("server.crt"),
        env.dir.path().join("server.key"),
    );
    std::fs::write(&cert, &renewed.cert_pem)?;
    std::fs::write(&key, &renewed.key_pem)?;
    show(&admin, "RELOAD").await?;

    let after = dial(&new_ca).connect().await?;
    assert_eq!(scalar(&after.client, "SELECT 'renewed'").await?, "renewed");
    let stale = dial(&old_ca).connect().await;
    assert!(stale.is_err(), "the old certificate is still served");
    assert_eq!(scalar(&before.client, "SELECT 'kept'").await?, "kept");

    // A broken key: the reload fails and says so; the renewed certificate stays in force.
    std::fs::write(&key, "not a key")?;
    let err = admin
        .simple_query("RELOAD")
        .await
        .err()
        .context("a broken key file reloaded")?;
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("client TLS") && message.contains("server.key"),
        "{message}"
    );
    let still = dial(&new_ca).connect().await?;
    assert_eq!(scalar(&still.client, "SELECT 1").await?, "1");
    Ok(())
}

/// Reloading max_prepared_statements to 0 leaves the named statements sessions already hold
/// working (they keep following their clients across backends); only new ones pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_max_prepared_statements_to_zero_keeps_live_statements_working() -> Result<()> {
    let env = start(EnvOptions {
        config_file: true,
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let a = env.connect().await?;
    let b = env.connect().await?;
    let held = a.prepare("SELECT $1::int * 2").await?;
    assert_eq!(a.query_one(&held, &[&21i32]).await?.get::<_, i32>(0), 42);

    env.edit_config(|c| c.max_prepared_statements = Some(0))?;
    let admin = console(&env).await?;
    show(&admin, "RELOAD").await?;

    // b keeps the other backend busy in a transaction now and then, so a lands on both.
    for i in 0..6 {
        let tx = b.batch_execute("BEGIN; SELECT 1");
        tx.await?;
        assert_eq!(a.query_one(&held, &[&i]).await?.get::<_, i32>(0), i * 2);
        b.batch_execute("COMMIT").await?;
        assert_eq!(a.query_one(&held, &[&i]).await?.get::<_, i32>(0), i * 2);
    }
    // A new named statement now pins instead, and works.
    let fresh = a.prepare("SELECT $1::int + 1").await?;
    assert_eq!(a.query_one(&fresh, &[&1i32]).await?.get::<_, i32>(0), 2);
    assert_eq!(
        env.shared
            .stats
            .pins_for(tollgate::pin::PinReason::NamedStatement),
        1
    );
    Ok(())
}

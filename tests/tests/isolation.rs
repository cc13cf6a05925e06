//! Clients sharing backends never see each other's state. In transaction mode: open and
//! failed transactions stay with their client, tracked settings are re-applied per client,
//! untracked session state pins the client to its backend (and stays invisible to others).
//! In session mode and for pinned clients the backend is reset (DISCARD ALL) before the next
//! client gets it. A client that vanishes mid-transaction leaves its backend rolled back.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::Statement;
use tollgate::pin::PinReason;
use tollgate_e2e::connected::{scalar, scalar_opt, Connected};
use tollgate_e2e::poll::{poll_until, until_idle_backends};
use tollgate_e2e::{sqlstate, Env, EnvOptions, APP_PASSWORD, APP_USER};

async fn transaction_env(pool_size: u32) -> Result<Env> {
    Env::start(EnvOptions {
        pool_mode: "transaction",
        pool_size,
        ..Default::default()
    })
    .await
}

async fn pid(c: &Connected) -> Result<String> {
    scalar(&c.client, "SELECT pg_backend_pid()").await
}

fn total_pins(env: &Env) -> u64 {
    env.shared.stats.pins.iter().map(|c| c.get()).sum()
}

fn waiting(env: &Env) -> usize {
    env.shared.pools.snapshots().iter().map(|s| s.waiting).sum()
}

/// Waits (bounded poll, 10 ms period: a queued borrow has no outside event) until `n`
/// clients are queued for a backend.
async fn until_waiting(env: &Env, n: usize) -> Result<()> {
    poll_until(
        &format!("{n} client(s) queued for a backend"),
        Duration::from_secs(5),
        || waiting(env) == n,
    )
    .await
}

/// Waits (bounded poll) until Tollgate has finished with every disconnected client: the
/// connected-clients gauge drops after the session's backend has been cleaned and returned.
async fn until_clients(env: &Env, n: u64) -> Result<()> {
    poll_until(
        &format!("{n} connected client(s)"),
        Duration::from_secs(5),
        || env.shared.stats.clients_current.get() == n,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transaction_is_invisible_to_other_clients() -> Result<()> {
    let env = transaction_env(2).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client.batch_execute("CREATE TABLE iso(id int)").await?;
    a.client
        .batch_execute("BEGIN; INSERT INTO iso VALUES (1)")
        .await?;
    assert_eq!(scalar(&a.client, "SELECT count(*) FROM iso").await?, "1");
    assert_eq!(scalar(&b.client, "SELECT count(*) FROM iso").await?, "0");
    assert_ne!(
        pid(&a).await?,
        pid(&b).await?,
        "B must not share A's open transaction"
    );
    assert_eq!(
        scalar_opt(&b.client, "SELECT txid_current_if_assigned()").await?,
        None,
        "B is in no one's transaction"
    );
    a.client.batch_execute("COMMIT").await?;
    assert_eq!(scalar(&b.client, "SELECT count(*) FROM iso").await?, "1");
    Ok(())
}

/// With one backend, a second client's statement waits while the first holds a transaction,
/// then runs on the same backend after COMMIT and sees the committed row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_waits_for_the_only_backend_while_another_holds_a_transaction() -> Result<()> {
    let env = transaction_env(1).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client.batch_execute("CREATE TABLE iso(id int)").await?;
    a.client
        .batch_execute("BEGIN; INSERT INTO iso VALUES (1)")
        .await?;
    let a_pid = pid(&a).await?;
    let b_query = tokio::spawn(async move {
        let r = scalar(
            &b.client,
            "SELECT count(*) || ' ' || pg_backend_pid() FROM iso",
        )
        .await;
        (b, r)
    });
    until_waiting(&env, 1).await?;
    ensure!(
        !b_query.is_finished(),
        "B ran while A held the only backend"
    );
    a.client.batch_execute("COMMIT").await?;
    let (_b, r) = tokio::time::timeout(Duration::from_secs(10), b_query)
        .await
        .context("B was not served after A committed")??;
    assert_eq!(r?, format!("1 {a_pid}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_aborted_transaction_does_not_affect_other_clients() -> Result<()> {
    let env = transaction_env(2).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client.batch_execute("BEGIN").await?;
    let e = a.client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
    let e = a.client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&e).as_deref(),
        Some("25P02"),
        "A stays in its failed transaction"
    );
    for i in 0..5 {
        assert_eq!(
            scalar(&b.client, &format!("SELECT {i}")).await?,
            i.to_string()
        );
    }
    a.client.batch_execute("ROLLBACK").await?;
    assert_eq!(scalar(&a.client, "SELECT 'a ok'").await?, "a ok");
    Ok(())
}

/// With one backend: the client waiting behind a failed transaction gets the backend only
/// after the ROLLBACK, and it is usable (not in the failed state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_of_a_rolled_back_failed_transaction_serves_the_next_client() -> Result<()> {
    let env = transaction_env(1).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client.batch_execute("BEGIN").await?;
    let a_pid = pid(&a).await?;
    assert!(a.client.batch_execute("SELECT 1/0").await.is_err());
    let b_query = tokio::spawn(async move {
        let r = scalar(&b.client, "SELECT 'b ok ' || pg_backend_pid()").await;
        (b, r)
    });
    until_waiting(&env, 1).await?;
    a.client.batch_execute("ROLLBACK").await?;
    let (_b, r) = tokio::time::timeout(Duration::from_secs(10), b_query)
        .await
        .context("B was not served after A rolled back")??;
    assert_eq!(r?, format!("b ok {a_pid}"));
    Ok(())
}

/// One backend, two clients: A's SETs of tracked settings are undone for B and re-applied for
/// A on the same backend; nobody is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_settings_follow_their_client_on_a_shared_backend() -> Result<()> {
    let env = transaction_env(1).await?;
    let a = env.connect_app().await?;
    let mut b_config = env.pg_config(APP_USER, APP_PASSWORD);
    b_config.application_name("client-b");
    let b = env.connect_with(b_config).await?;
    let b_tz = b.param("TimeZone").context("TimeZone")?.to_string();
    let b_datestyle = b.param("DateStyle").context("DateStyle")?.to_string();
    assert_ne!(b_tz, "America/New_York");

    a.client
        .batch_execute(
            "SET TimeZone = 'America/New_York'; SET application_name = 'client-a'; \
             SET DateStyle = 'SQL, DMY'",
        )
        .await?;
    let show = "SELECT current_setting('TimeZone') || '|' || current_setting('application_name') \
                || '|' || current_setting('DateStyle') || '|' || pg_backend_pid()";
    let a_view = scalar(&a.client, show).await?;
    let b_view = scalar(&b.client, show).await?;
    let a_pid = a_view.rsplit('|').next().unwrap_or_default().to_string();
    assert_eq!(
        a_view,
        format!("America/New_York|client-a|SQL, DMY|{a_pid}")
    );
    assert_eq!(b_view, format!("{b_tz}|client-b|{b_datestyle}|{a_pid}"));
    // Back and forth a few times on the one backend.
    for _ in 0..3 {
        assert_eq!(scalar(&a.client, show).await?, a_view);
        assert_eq!(scalar(&b.client, show).await?, b_view);
    }
    // A timestamp renders in each client's own zone and style.
    let ts = "SELECT '2024-01-02 12:00:00+00'::timestamptz::text";
    assert_eq!(scalar(&a.client, ts).await?, "02/01/2024 07:00:00 EST");
    let b_ts = scalar(&b.client, ts).await?;
    assert_ne!(b_ts, "02/01/2024 07:00:00 EST");
    // RESET brings A back to the server default.
    a.client.batch_execute("RESET TimeZone").await?;
    assert_eq!(scalar(&a.client, "SHOW TimeZone").await?, b_tz);
    assert_eq!(total_pins(&env), 0, "tracked settings must not pin");
    Ok(())
}

/// A's settings are re-applied when A lands on a backend it has never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_settings_are_reapplied_when_a_client_hops_backends() -> Result<()> {
    let env = transaction_env(2).await?;
    let a = env.connect_app().await?;
    a.client
        .batch_execute("SET TimeZone = 'America/New_York'; SET application_name = 'hopper'")
        .await?;
    let first_pid = pid(&a).await?;
    // C takes the only open backend (the one A configured, once it is back in the pool) and
    // holds it in a transaction, so A's next statement must run on a second, fresh backend.
    let c = env.connect_app().await?;
    until_idle_backends(&env, 1).await?;
    c.client.batch_execute("BEGIN").await?;
    assert_eq!(pid(&c).await?, first_pid);
    assert_eq!(
        scalar(&c.client, "SHOW application_name").await?,
        "",
        "C must not inherit A's settings"
    );
    assert_ne!(
        scalar(&c.client, "SHOW TimeZone").await?,
        "America/New_York"
    );
    let view = scalar(
        &a.client,
        "SELECT current_setting('TimeZone') || '|' || current_setting('application_name') \
         || '|' || pg_backend_pid()",
    )
    .await?;
    c.client.batch_execute("COMMIT").await?;
    let parts: Vec<&str> = view.split('|').collect();
    assert_eq!(parts.get(..2), Some(&["America/New_York", "hopper"][..]));
    assert_ne!(
        parts.get(2),
        Some(&first_pid.as_str()),
        "A should have hopped"
    );
    assert_eq!(total_pins(&env), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_set_of_search_path_pins_the_client_and_stays_private() -> Result<()> {
    let env = transaction_env(2).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client
        .batch_execute("CREATE SCHEMA a_private; CREATE TABLE a_private.marker AS SELECT 'a' AS v")
        .await?;
    assert_eq!(env.shared.stats.pins_for(PinReason::SessionSet), 0);
    a.client
        .batch_execute("SET search_path = a_private, public")
        .await?;
    assert_eq!(env.shared.stats.pins_for(PinReason::SessionSet), 1);
    let a_pid = pid(&a).await?;
    for _ in 0..3 {
        assert_eq!(scalar(&a.client, "SELECT v FROM marker").await?, "a");
        assert_eq!(
            scalar(&b.client, "SHOW search_path").await?,
            "\"$user\", public"
        );
        let e = b
            .client
            .batch_execute("SELECT v FROM marker")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
        assert_eq!(pid(&a).await?, a_pid, "a pinned client keeps its backend");
    }
    assert_ne!(pid(&b).await?, a_pid);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_pins_the_client_and_stays_private() -> Result<()> {
    let env = transaction_env(2).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client
        .batch_execute("CREATE TEMP TABLE t_a AS SELECT 42 AS x")
        .await?;
    assert_eq!(env.shared.stats.pins_for(PinReason::TempTable), 1);
    let a_pid = pid(&a).await?;
    for _ in 0..3 {
        assert_eq!(scalar(&a.client, "SELECT x FROM t_a").await?, "42");
        let e = b
            .client
            .batch_execute("SELECT x FROM t_a")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
        assert_eq!(pid(&a).await?, a_pid);
    }
    Ok(())
}

/// SQL PREPARE pins the client; its statement exists only on that client's backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_pins_the_client_and_stays_private() -> Result<()> {
    let env = transaction_env(3).await?;
    let b = env.connect_app().await?;
    let c = env.connect_app().await?;
    c.client.batch_execute("PREPARE seven AS SELECT 7").await?;
    assert_eq!(env.shared.stats.pins_for(PinReason::Prepare), 1);
    let c_pid = pid(&c).await?;
    for _ in 0..3 {
        assert_eq!(scalar(&c.client, "EXECUTE seven").await?, "7");
        let e = b.client.batch_execute("EXECUTE seven").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("26000"));
    }
    assert_eq!(pid(&c).await?, c_pid);
    Ok(())
}

/// Protocol-level named statements (tokio-postgres `prepare`) do not pin: the client's
/// statement follows it to whichever backend it lands on, and no other client can use it
/// by the client's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_follow_their_client_across_backends_without_pinning() -> Result<()> {
    let env = transaction_env(3).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    let c = env.connect_app().await?;
    let stmt = a
        .client
        .prepare("SELECT $1::int + 100, pg_backend_pid()")
        .await?;
    let mut pids = std::collections::BTreeSet::new();
    let mut held: Option<&tollgate_e2e::connected::Connected> = None;
    for i in 0..6i32 {
        let row = a.client.query_one(&stmt, &[&i]).await?;
        assert_eq!(row.get::<_, i32>(0), i + 100);
        pids.insert(row.get::<_, i32>(1));
        // Take the backend A just returned (the pool lends the most recently returned one
        // first), then free the one held before: A's next run lands on another backend,
        // which may never have seen the statement.
        let holder = if i % 2 == 0 { &b } else { &c };
        holder.client.batch_execute("BEGIN; SELECT 1").await?;
        if let Some(h) = held.replace(holder) {
            h.client.batch_execute("COMMIT").await?;
        }
    }
    if let Some(h) = held {
        h.client.batch_execute("COMMIT").await?;
    }
    assert!(
        pids.len() >= 2,
        "A should have run on several backends, saw {pids:?}"
    );
    assert_eq!(env.shared.stats.pins_for(PinReason::NamedStatement), 0);
    // B cannot reach A's statement by A's name (tokio-postgres names them s0, s1, ...).
    let e = b.client.batch_execute("EXECUTE s0").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"));
    // Dropping the statement closes it; a new one with the same text still works.
    drop(stmt);
    let again = a
        .client
        .prepare("SELECT $1::int + 100, pg_backend_pid()")
        .await?;
    assert_eq!(
        a.client.query_one(&again, &[&1i32]).await?.get::<_, i32>(0),
        101
    );
    // A statement that fails to parse fails for its client only; the session goes on.
    let e = a.client.prepare("SELEC broken").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42601"));
    assert_eq!(
        a.client.query_one(&again, &[&2i32]).await?.get::<_, i32>(0),
        102
    );
    Ok(())
}

/// LISTEN pins, so notifications sent later by another client reach the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_the_client_and_notifications_reach_it() -> Result<()> {
    let env = transaction_env(2).await?;
    let mut a = env.connect_app().await?;
    let b = env.connect_app().await?;
    a.client.batch_execute("LISTEN e2e_chan").await?;
    assert_eq!(env.shared.stats.pins_for(PinReason::Listen), 1);
    assert_eq!(
        scalar(&b.client, "SELECT count(*) FROM pg_listening_channels()").await?,
        "0"
    );
    for i in 0..3 {
        b.client
            .batch_execute(&format!("NOTIFY e2e_chan, 'hello {i}'"))
            .await?;
        let n = tokio::time::timeout(Duration::from_secs(5), a.notifications.recv())
            .await
            .context("notification not delivered")?
            .context("driver ended")?;
        assert_eq!(
            (n.channel(), n.payload()),
            ("e2e_chan", format!("hello {i}").as_str())
        );
    }
    assert_eq!(
        scalar(
            &a.client,
            "SELECT string_agg(c, ',') FROM pg_listening_channels() c"
        )
        .await?,
        "e2e_chan"
    );
    Ok(())
}

/// A session advisory lock pins: A unlocks it later on the same backend, and B (on the other
/// backend) sees it held until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_pins_the_client_to_the_backend_holding_it() -> Result<()> {
    let env = transaction_env(2).await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    scalar(&a.client, "SELECT pg_advisory_lock(4242)").await?;
    assert_eq!(env.shared.stats.pins_for(PinReason::AdvisoryLock), 1);
    // The xact-scoped variant does not pin B.
    let try_lock = "SELECT pg_try_advisory_xact_lock(4242)";
    assert_eq!(scalar(&b.client, try_lock).await?, "f");
    assert_eq!(
        scalar(&a.client, "SELECT pg_advisory_unlock(4242)").await?,
        "t"
    );
    assert_eq!(scalar(&b.client, try_lock).await?, "t");
    assert_eq!(env.shared.stats.pins_for(PinReason::AdvisoryLock), 1);
    Ok(())
}

/// Leaves every kind of session state on `c`'s backend; returns the backend's pid and a named
/// prepared statement to keep alive until the client is gone (dropping it would Close it).
async fn leave_session_state(c: &Connected) -> Result<(String, Statement)> {
    c.client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS a_private; \
             SET search_path = a_private, public; \
             SET statement_timeout = '5s'; \
             SET application_name = 'leaver'; \
             CREATE TEMP TABLE leftover AS SELECT 1 AS x; \
             PREPARE leftover_q AS SELECT 1; \
             LISTEN leftover_chan; \
             SELECT pg_advisory_lock(77)",
        )
        .await?;
    let stmt = c.client.prepare("SELECT $1::int").await?;
    c.client.query_one(&stmt, &[&1i32]).await?;
    Ok((pid(c).await?, stmt))
}

/// None of [`leave_session_state`]'s state is visible on `c`'s backend.
async fn assert_clean_session(c: &Connected) -> Result<()> {
    let row = c
        .client
        .query_typed_one(
            "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
                    current_setting('application_name'), \
                    to_regclass('leftover') IS NULL, \
                    (SELECT count(*) FROM pg_prepared_statements), \
                    (SELECT count(*) FROM pg_listening_channels()), \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                        AND pid = pg_backend_pid())",
            &[] as &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
        )
        .await?;
    assert_eq!(row.get::<_, &str>(0), "\"$user\", public");
    assert_eq!(row.get::<_, &str>(1), "0");
    assert_eq!(row.get::<_, &str>(2), "");
    assert!(row.get::<_, bool>(3), "temp table survived");
    assert_eq!(row.get::<_, i64>(4), 0, "prepared statements survived");
    assert_eq!(row.get::<_, i64>(5), 0, "LISTEN survived");
    assert_eq!(row.get::<_, i64>(6), 0, "advisory lock survived");
    Ok(())
}

/// Session mode, one backend: the next client gets the same backend with nothing left of
/// the previous client's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_discarded_before_the_next_client_gets_the_backend() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_mode: "session",
        pool_size: 1,
        ..Default::default()
    })
    .await?;
    let a = env.connect_app().await?;
    let (a_pid, stmt) = leave_session_state(&a).await?;
    drop(a);
    drop(stmt);
    // B's login waits for the only backend; being served is the event.
    let b = tokio::time::timeout(Duration::from_secs(10), env.connect_app())
        .await
        .context("B never got the backend")??;
    assert_eq!(pid(&b).await?, a_pid, "B should reuse A's backend");
    assert_clean_session(&b).await
}

/// Transaction mode: a pinned client's backend is reset the same way when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_clients_backend_is_reset_before_the_next_client_gets_it() -> Result<()> {
    let env = transaction_env(1).await?;
    let a = env.connect_app().await?;
    let (a_pid, stmt) = leave_session_state(&a).await?;
    assert!(total_pins(&env) >= 1);
    drop(a);
    drop(stmt);
    let b = env.connect_app().await?;
    assert_eq!(pid(&b).await?, a_pid, "B should reuse A's backend");
    assert_clean_session(&b).await
}

/// pool_size 1: a client that vanishes inside a transaction with a row inserted — by closing
/// its socket with no Terminate, or by a polite Terminate — leaves the backend rolled back:
/// the next client on that same backend is in no transaction and does not see the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_leaves_its_backend_clean() -> Result<()> {
    let env = transaction_env(1).await?;
    // The superuser, straight to the server, in the app database.
    let (su, su_conn) = tokio_postgres::connect(
        &env.direct_url("postgres", "postgres", "app"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(su_conn);
    {
        let setup = env.connect_app().await?;
        setup
            .client
            .batch_execute("CREATE TABLE vanish(id int)")
            .await?;
    }
    until_clients(&env, 0).await?;
    for abrupt in [true, false] {
        let a = env.connect_app().await?;
        a.client
            .batch_execute("BEGIN; INSERT INTO vanish VALUES (1)")
            .await?;
        let a_pid = pid(&a).await?;
        assert_eq!(
            scalar(
                &su,
                &format!("SELECT state FROM pg_stat_activity WHERE pid = {a_pid}")
            )
            .await?,
            "idle in transaction"
        );
        if abrupt {
            // Dropping the driver closes the socket with no Terminate.
            a.driver.abort();
            let _ = a.driver.await;
            drop(a.client);
        } else {
            drop(a);
        }
        until_clients(&env, 0).await?;
        assert_eq!(
            scalar(
                &su,
                &format!("SELECT state FROM pg_stat_activity WHERE pid = {a_pid}")
            )
            .await?,
            "idle",
            "abrupt={abrupt}: backend still in the vanished client's transaction"
        );
        assert_eq!(scalar(&su, "SELECT count(*) FROM vanish").await?, "0");

        let b = env.connect_app().await?;
        let row = b
            .client
            .query_typed_one(
                "SELECT pg_backend_pid()::text, (SELECT count(*) FROM vanish), \
                        txid_current_if_assigned() IS NULL",
                &[] as &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
            )
            .await?;
        assert_eq!(
            row.get::<_, String>(0),
            a_pid,
            "abrupt={abrupt}: same backend"
        );
        assert_eq!(row.get::<_, i64>(1), 0, "abrupt={abrupt}: row visible");
        assert!(row.get::<_, bool>(2), "abrupt={abrupt}: B inherited an xid");
        // Over the simple protocol a lone statement's transaction starts with it; inside
        // an older transaction now() would be that transaction's start.
        assert_eq!(
            scalar(&b.client, "SELECT now() = statement_timestamp()").await?,
            "t",
            "abrupt={abrupt}: B is inside an older transaction"
        );
        drop(b);
        until_clients(&env, 0).await?;
    }
    Ok(())
}

/// RESET / RESET ALL / DISCARD ALL by one client put a setting that came from clients'
/// startup `options` back to the server default on that backend; the next client that asked
/// for the setting at startup must still get it there. (Such statements pin the client, like
/// RDS Proxy, so its backend is reset and forgotten before anyone else gets it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_a_startup_setting_does_not_strip_it_from_the_next_client() -> Result<()> {
    let env = transaction_env(1).await?;
    let mut config = env.pg_config(APP_USER, APP_PASSWORD);
    config.options("-c statement_timeout=12345");
    let c = env.connect_with(config.clone()).await?;
    for reset in ["RESET statement_timeout", "RESET ALL", "DISCARD ALL"] {
        let a = env.connect_with(config.clone()).await?;
        assert_eq!(
            scalar(&a.client, "SHOW statement_timeout").await?,
            "12345ms"
        );
        let a_pid = pid(&a).await?;
        a.client.batch_execute(reset).await?;
        drop(a);
        let row = scalar(
            &c.client,
            "SELECT current_setting('statement_timeout') || ' ' || pg_backend_pid()",
        )
        .await?;
        assert_eq!(
            row,
            format!("12345ms {a_pid}"),
            "after another client's {reset}"
        );
    }
    Ok(())
}

/// How many statements shared by Tollgate (`tg_<hash>`) `c`'s current backend holds.
async fn shared_on_backend(c: &Connected) -> Result<String> {
    scalar(
        &c.client,
        "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'tg\\_%'",
    )
    .await
}

/// Transaction mode shares named statements across clients as `tg_<hash>` on each backend; a
/// backend holds at most max_prepared_statements of them. Two clients with three distinct
/// statements each on one backend capped at four: the backend never holds more than four,
/// and the first client's evicted statements are re-prepared transparently on next use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_shared_statements_are_capped_and_evicted_ones_come_back() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_mode: "transaction",
        pool_size: 1,
        extra: tollgate::config::RawConfig {
            max_prepared_statements: Some(4),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    let a = env.connect_app().await?;
    let b = env.connect_app().await?;
    let mut a_stmts = Vec::new();
    for k in 1..=3i32 {
        let stmt = a.client.prepare(&format!("SELECT $1::int * {k}")).await?;
        let row = a.client.query_one(&stmt, &[&10i32]).await?;
        assert_eq!(row.get::<_, i32>(0), 10 * k);
        a_stmts.push(stmt);
    }
    // Kept alive: tokio-postgres closes a statement when it is dropped.
    let mut b_stmts = Vec::new();
    for k in 1..=3i32 {
        let stmt = b.client.prepare(&format!("SELECT $1::int + {k}")).await?;
        let row = b.client.query_one(&stmt, &[&10i32]).await?;
        assert_eq!(row.get::<_, i32>(0), 10 + k);
        b_stmts.push(stmt);
        let held: i64 = shared_on_backend(&b).await?.parse()?;
        assert!(
            held <= 4,
            "the backend holds {held} shared statements, over the cap of 4"
        );
    }
    // Six distinct statements went to a backend capped at four: two of A's were evicted.
    assert_eq!(shared_on_backend(&b).await?, "4");
    // A's oldest statements were closed on the backend to make room; using them again works.
    for (k, stmt) in (1..=3i32).zip(&a_stmts) {
        let row = a.client.query_one(stmt, &[&7i32]).await?;
        assert_eq!(row.get::<_, i32>(0), 7 * k);
    }
    let held: i64 = shared_on_backend(&a).await?.parse()?;
    assert!(
        held <= 4,
        "the backend holds {held} shared statements, over the cap of 4"
    );
    for (k, stmt) in (1..=3i32).zip(&b_stmts) {
        let row = b.client.query_one(stmt, &[&7i32]).await?;
        assert_eq!(row.get::<_, i32>(0), 7 + k);
    }
    assert_eq!(total_pins(&env), 0, "sharing must not fall back to pinning");
    Ok(())
}

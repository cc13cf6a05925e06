//! The relay's bookkeeping under the protocol's exceptions, with two clients sharing one
//! backend (transaction mode, pool_size 1): nothing of one client's reaches the other, and the
//! backend goes back to the pool exactly when PostgreSQL is idle.
//!
//! - Settings Tollgate re-applies are quoted so no value can change their meaning, whatever
//!   `standard_conforming_strings` the previous client left behind.
//! - The unnamed statement follows its client across backends (libpq's PQprepare then
//!   PQexecPrepared are two round trips); a client that has none gets PostgreSQL's 26000.
//! - COPY FROM STDIN through the extended protocol (two Syncs, one ReadyForQuery) and an
//!   extended-query error followed by a Query before Sync release the backend.
//! - A large result and a large Bind in flight at once (pipeline mode) do not deadlock.
//! - A DISCARD ALL the server refuses changes nothing in the prepared-statement record.

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::config::RawConfig;
use tollgate_e2e::raw::{error_fields, first_column, RawConn};
use tollgate_e2e::{sqlstate, Env, EnvOptions, APP_PASSWORD, APP_USER};
use tollgate_wire::backend::tag;
use tollgate_wire::frame::Message;
use tollgate_wire::{build, TxStatus};

/// Transaction mode, one backend, and a short borrow timeout so a backend that is never
/// released fails a test in seconds rather than hanging it.
async fn one_backend() -> Result<Env> {
    Env::start(EnvOptions {
        pool_mode: "transaction",
        pool_size: 1,
        extra: RawConfig {
            connection_borrow_timeout: Some(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

fn parse(out: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(name, sql, std::iter::empty(), out).unwrap();
}

fn bind_text(out: &mut BytesMut, stmt: &str, params: &[&[u8]]) {
    frontend::bind(
        "",
        stmt,
        std::iter::empty::<i16>(),
        params.iter(),
        |p, buf| {
            buf.put_slice(p);
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        out,
    )
    .map_err(|_| ())
    .unwrap();
}

fn execute(out: &mut BytesMut) {
    frontend::execute("", 0, out).unwrap();
}

fn sync(out: &mut BytesMut) {
    frontend::sync(out);
}

/// Reads messages up to and including the next ReadyForQuery.
async fn until_ready(c: &mut RawConn) -> Result<(Vec<Message>, TxStatus)> {
    let mut msgs = Vec::new();
    loop {
        let m = c.expect().await?;
        if m.tag == tag::READY_FOR_QUERY {
            let status = tollgate_wire::backend::parse_ready_for_query(&m.body)?;
            return Ok((msgs, status));
        }
        msgs.push(m);
    }
}

fn error_code(msgs: &[Message]) -> Option<String> {
    msgs.iter()
        .find(|m| m.tag == tag::ERROR_RESPONSE)
        .and_then(|m| error_fields(m).ok())
        .map(|f| f.code.to_string())
}

/// A second client gets the one backend and answers, proving the first released it.
async fn another_client_is_served(env: &Env) -> Result<()> {
    let (mut other, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    let (msgs, status) = other.query("SELECT 'served'").await?;
    ensure!(error_code(&msgs).is_none(), "other client got {msgs:?}");
    ensure!(first_column(&msgs) == [Some("served".to_string())]);
    ensure!(status == TxStatus::Idle);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplied_setting_cannot_inject_sql_when_the_last_client_turned_off_standard_conforming_strings(
) -> Result<()> {
    let env = one_backend().await?;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    a.query("CREATE TABLE victim (x int)").await?;
    let (msgs, _) = a.query("SET standard_conforming_strings = off").await?;
    ensure!(error_code(&msgs).is_none(), "{msgs:?}");

    // B lands on A's backend with a name that would break out of a '' literal there.
    let evil = r"x\';DROP TABLE victim;--";
    let mut b = RawConn::connect(env.addr).await?;
    let mut out = BytesMut::new();
    build::startup_message(
        &mut out,
        &[
            ("user", APP_USER),
            ("database", "app"),
            ("application_name", evil),
        ],
    );
    b.send(&out).await?;
    b.authenticate(APP_USER, APP_PASSWORD).await?;
    b.until_ready().await?;
    let (msgs, _) = b.query("SHOW application_name").await?;
    ensure!(error_code(&msgs).is_none(), "{msgs:?}");
    ensure!(
        first_column(&msgs) == [Some(evil.to_string())],
        "B's application_name arrived as {:?}",
        first_column(&msgs)
    );
    let (msgs, _) = a.query("SELECT count(*) FROM victim").await?;
    ensure!(
        error_code(&msgs).is_none(),
        "the table was dropped: {msgs:?}"
    );
    a.query("DROP TABLE victim").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statement_prepared_in_one_round_trip_runs_only_its_own_text_in_the_next(
) -> Result<()> {
    let env = one_backend().await?;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    let (mut b, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;

    // A: PQprepare(conn, "", ...): Parse + Sync, one round trip; the backend goes back.
    let mut out = BytesMut::new();
    parse(&mut out, "", "SELECT 'mine:' || $1::text");
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).is_none(), "{msgs:?}");

    // B prepares and runs its own unnamed statement on that same backend.
    out.clear();
    parse(&mut out, "", "SELECT 'other client:' || $1::text");
    bind_text(&mut out, "", &[b"y"]);
    execute(&mut out);
    sync(&mut out);
    b.send(&out).await?;
    let (msgs, _) = until_ready(&mut b).await?;
    ensure!(first_column(&msgs) == [Some("other client:y".to_string())]);

    // A: PQexecPrepared(conn, "", ...): its own text, not B's.
    out.clear();
    bind_text(&mut out, "", &[b"x"]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).is_none(), "{msgs:?}");
    ensure!(
        first_column(&msgs) == [Some("mine:x".to_string())],
        "A ran {:?}",
        first_column(&msgs)
    );

    // A client that never prepared one gets what PostgreSQL says: 26000.
    let (mut c, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    out.clear();
    bind_text(&mut out, "", &[b"z"]);
    execute(&mut out);
    sync(&mut out);
    c.send(&out).await?;
    let (msgs, _) = until_ready(&mut c).await?;
    ensure!(
        error_code(&msgs).as_deref() == Some("26000"),
        "C got {msgs:?}"
    );
    // And a simple Query destroys A's, as on the server.
    a.query("SELECT 1").await?;
    out.clear();
    bind_text(&mut out, "", &[b"x"]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).as_deref() == Some("26000"), "{msgs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_through_the_extended_protocol_releases_the_backend() -> Result<()> {
    let env = one_backend().await?;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    a.query("CREATE TABLE copied (x int)").await?;

    // libpq's PQexecParams("COPY ... FROM STDIN"): Parse/Bind/Execute/Sync, then the data,
    // CopyDone and another Sync. The server ignores the first Sync: one ReadyForQuery.
    let mut out = BytesMut::new();
    parse(&mut out, "", "COPY copied FROM STDIN");
    bind_text(&mut out, "", &[]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let m = a.expect().await?;
    ensure!(m.tag == b'1', "{m:?}");
    let m = a.expect().await?;
    ensure!(m.tag == b'2', "{m:?}");
    let m = a.expect().await?;
    ensure!(m.tag == tag::COPY_IN_RESPONSE, "{m:?}");
    out.clear();
    frontend::CopyData::new(&b"1\n2\n3\n"[..])?.write(&mut out);
    frontend::copy_done(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, status) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).is_none(), "{msgs:?}");
    ensure!(status == TxStatus::Idle);

    another_client_is_served(&env).await?;

    // tokio-postgres' copy_in does the same.
    let tp = env.connect().await?;
    let sink = tp.copy_in("COPY copied FROM STDIN").await?;
    let mut sink = std::pin::pin!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"4\n")).await?;
    let rows = sink.finish().await?;
    ensure!(rows == 1);
    another_client_is_served(&env).await?;
    let (msgs, _) = a.query("SELECT count(*) FROM copied").await?;
    ensure!(first_column(&msgs) == [Some("4".to_string())]);

    // A COPY that fails on bad data: the error ends it, the backend still comes back.
    out.clear();
    parse(&mut out, "", "COPY copied FROM STDIN");
    bind_text(&mut out, "", &[]);
    execute(&mut out);
    sync(&mut out);
    frontend::CopyData::new(&b"not a number\n"[..])?.write(&mut out);
    frontend::copy_done(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, status) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).as_deref() == Some("22P02"), "{msgs:?}");
    ensure!(status == TxStatus::Idle);
    another_client_is_served(&env).await?;
    a.query("DROP TABLE copied").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sent_after_an_extended_error_before_sync_is_skipped_and_the_backend_released(
) -> Result<()> {
    let env = one_backend().await?;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    // The server discards everything up to Sync after the Parse error, the Query included:
    // one ErrorResponse, one ReadyForQuery.
    let mut out = BytesMut::new();
    parse(&mut out, "", "SELEC nonsense");
    frontend::query("SELECT 'skipped'", &mut out)?;
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, status) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).as_deref() == Some("42601"), "{msgs:?}");
    ensure!(first_column(&msgs).is_empty(), "{msgs:?}");
    ensure!(status == TxStatus::Idle);
    another_client_is_served(&env).await?;
    // A is still usable.
    let (msgs, _) = a.query("SELECT 'after'").await?;
    ensure!(first_column(&msgs) == [Some("after".to_string())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_and_large_bind_in_flight_together_do_not_deadlock() -> Result<()> {
    let env = one_backend().await?;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    a.query("CREATE TABLE big (v text)").await?;

    // Pipeline mode: 100 MB of rows requested, then a 20 MB parameter sent while they stream.
    let mut out = BytesMut::new();
    parse(
        &mut out,
        "",
        "SELECT repeat('x', 1000) FROM generate_series(1, 100000)",
    );
    bind_text(&mut out, "", &[]);
    execute(&mut out);
    sync(&mut out);
    let param = vec![b'y'; 20 << 20];
    parse(&mut out, "", "INSERT INTO big VALUES ($1)");
    bind_text(&mut out, "", &[&param]);
    execute(&mut out);
    sync(&mut out);

    let RawConn { stream, mut buf } = a;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&out).await?;
        Ok::<_, std::io::Error>(wr)
    });
    let reader = async {
        // Count ReadyForQuery messages while discarding rows, without holding 100 MB.
        let mut ready = 0;
        let mut rows = 0u64;
        loop {
            while let Some(m) = tollgate_wire::frame::read_message(&mut buf, 64 << 20)? {
                match m.tag {
                    tag::DATA_ROW => rows += 1,
                    tag::ERROR_RESPONSE => bail!("error: {:?}", error_fields(&m)?),
                    tag::READY_FOR_QUERY => ready += 1,
                    _ => {}
                }
            }
            if ready == 2 {
                return Ok(rows);
            }
            if rd.read_buf(&mut buf).await? == 0 {
                bail!("connection closed after {rows} rows");
            }
        }
    };
    let rows = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .context("the pipeline deadlocked: no progress within 60 s")??;
    ensure!(rows == 100_000, "{rows} rows");
    let wr = writer.await??;
    let mut a = RawConn {
        stream: rd.reunite(wr)?,
        buf,
    };
    let (msgs, _) = a.query("SELECT length(v) FROM big").await?;
    ensure!(first_column(&msgs) == [Some((20 << 20).to_string())]);
    a.query("DROP TABLE big").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_refused_inside_a_transaction_leaves_prepared_statements_as_they_were(
) -> Result<()> {
    let env = one_backend().await?;
    let a = env.connect().await?;
    let b = env.connect().await?;
    let stmt = a.prepare("SELECT 41 + $1::int").await?;
    let row = a.query_one(&stmt, &[&1i32]).await?;
    ensure!(row.get::<_, i32>(0) == 42);

    // Refused with 25001: nothing changed on the server, so nothing may change in the record.
    let err = a
        .batch_execute("BEGIN; DISCARD ALL;")
        .await
        .err()
        .context("DISCARD ALL in a transaction block succeeded")?;
    ensure!(sqlstate(&err).as_deref() == Some("25001"), "{err}");
    a.batch_execute("ROLLBACK").await?;

    // The same text prepared by another client on the same backend, then used by both.
    let stmt_b = b.prepare("SELECT 41 + $1::int").await?;
    let row = b.query_one(&stmt_b, &[&2i32]).await?;
    ensure!(row.get::<_, i32>(0) == 43);
    let row = a.query_one(&stmt, &[&3i32]).await?;
    ensure!(row.get::<_, i32>(0) == 44);

    // A DISCARD ALL the server runs does clear it, and statements come back on use.
    a.batch_execute("DISCARD ALL").await?;
    let row = b.query_one(&stmt_b, &[&4i32]).await?;
    ensure!(row.get::<_, i32>(0) == 45);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_keep_postgresql_rules_parse_twice_gets_42p05_failed_parse_leaves_none(
) -> Result<()> {
    let env = one_backend().await?;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    let mut out = BytesMut::new();
    parse(&mut out, "s1", "SELECT 'first'");
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).is_none(), "{msgs:?}");

    // The same name again, other text: 42P05, and s1 still runs its own text.
    out.clear();
    parse(&mut out, "s1", "SELECT 'second'");
    bind_text(&mut out, "s1", &[]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).as_deref() == Some("42P05"), "{msgs:?}");
    out.clear();
    bind_text(&mut out, "s1", &[]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(
        first_column(&msgs) == [Some("first".to_string())],
        "{msgs:?}"
    );

    // A Parse the server refuses leaves no statement: Bind gets 26000, and the name is free.
    out.clear();
    parse(&mut out, "s2", "SELEC broken");
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).as_deref() == Some("42601"), "{msgs:?}");
    out.clear();
    bind_text(&mut out, "s2", &[]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(error_code(&msgs).as_deref() == Some("26000"), "{msgs:?}");
    out.clear();
    parse(&mut out, "s2", "SELECT 'fixed'");
    bind_text(&mut out, "s2", &[]);
    execute(&mut out);
    sync(&mut out);
    a.send(&out).await?;
    let (msgs, _) = until_ready(&mut a).await?;
    ensure!(
        first_column(&msgs) == [Some("fixed".to_string())],
        "{msgs:?}"
    );
    Ok(())
}

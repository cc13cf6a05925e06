//! tokio-postgres in process: copy_in / copy_out (always the extended protocol) followed by a
//! second client on the one backend, many pipelined queries in flight at once, and a large
//! result in flight with a large parameter (the two-way relay).

use crate::runner::{Case, Endpoint, Log};
use crate::{all, targets};
use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};

fn outcome<T: std::fmt::Debug>(
    log: &Log,
    who: &str,
    step: &str,
    r: Result<T, tokio_postgres::Error>,
) {
    match r {
        Ok(v) => log.emit(&[
            ("ev", "result".into()),
            ("who", who.into()),
            ("step", step.into()),
            ("value", format!("{v:?}")),
        ]),
        Err(e) => log.emit(&[
            ("ev", "error".into()),
            ("who", who.into()),
            ("step", step.into()),
            ("sqlstate", tollgate_e2e::sqlstate(&e).unwrap_or_default()),
            (
                "message",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            ),
        ]),
    }
}

async fn copy_in(
    c: &tokio_postgres::Client,
    sql: &str,
    lines: std::ops::Range<u32>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in::<_, Bytes>(sql).await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in lines.collect::<Vec<_>>().chunks(500) {
        let data: String = chunk.iter().map(|i| format!("{i}\trow {i}\n")).collect();
        sink.send(Bytes::from(data)).await?;
    }
    sink.finish().await
}

async fn copy_out(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let stream = c.copy_out(sql).await?;
    let mut stream = std::pin::pin!(stream);
    let (mut bytes, mut h) = (0usize, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        h.update(&chunk);
    }
    Ok(format!("{bytes} bytes, sha256 {:x}", h.finalize()))
}

async fn copy_then_second_client(ep: Endpoint, log: Log) -> Result<()> {
    let a = ep.connect(&log, "a").await?;
    outcome(
        &log,
        "a",
        "create",
        a.batch_execute("CREATE TABLE t (i int, s text)").await,
    );
    outcome(
        &log,
        "a",
        "copy_in",
        copy_in(&a, "COPY t FROM STDIN", 0..5000).await,
    );
    outcome(
        &log,
        "a",
        "copy_out",
        copy_out(&a, "COPY t TO STDOUT").await,
    );
    outcome(
        &log,
        "a",
        "copy_out query",
        copy_out(&a, "COPY (SELECT i FROM t WHERE i % 7 = 0) TO STDOUT").await,
    );
    outcome(
        &log,
        "a",
        "copy_in bad row",
        async {
            let sink = a.copy_in::<_, Bytes>("COPY t FROM STDIN").await?;
            let mut sink = std::pin::pin!(sink);
            sink.send(Bytes::from_static(b"1\tok\nnot a number\tbad\n"))
                .await?;
            sink.finish().await
        }
        .await,
    );
    outcome(
        &log,
        "a",
        "copy_out error",
        copy_out(&a, "COPY no_such_table TO STDOUT").await,
    );
    outcome(
        &log,
        "a",
        "count",
        a.query_one("SELECT count(*) FROM t", &[])
            .await
            .map(|r| r.get::<_, i64>(0)),
    );
    let a = if ep.together {
        Some(a)
    } else {
        drop(a);
        None
    };
    // pool_size 1: a COPY that kept the backend makes this wait for the borrow timeout.
    let b = ep.connect(&log, "b").await?;
    outcome(
        &log,
        "b",
        "second client right after",
        b.query_one("SELECT count(*) FROM t", &[])
            .await
            .map(|r| r.get::<_, i64>(0)),
    );
    outcome(
        &log,
        "b",
        "second client copies",
        copy_in(&b, "COPY t FROM STDIN", 9000..9010).await,
    );
    drop(b);
    if let Some(a) = a {
        outcome(
            &log,
            "a",
            "first client again",
            a.query_one("SELECT count(*) FROM t", &[])
                .await
                .map(|r| r.get::<_, i64>(0)),
        );
    }
    Ok(())
}

async fn pipelined(ep: Endpoint, log: Log) -> Result<()> {
    let c = ep.connect(&log, "a").await?;
    let plus = c.prepare("SELECT $1::int + 1").await?;
    let div = c.prepare("SELECT 100 / $1::int").await?;
    let queries = (0..300i32).map(|i| {
        let (c, plus, div) = (&c, &plus, &div);
        async move {
            let r = match i % 5 {
                0 => c.query(div, &[&(i % 3)]).await,
                1 => {
                    c.query("SELECT $1::int * 2, repeat('p', $1::int)", &[&i])
                        .await
                }
                2 => c.query(plus, &[&i]).await,
                3 => {
                    c.query("SELECT generate_series(1, $1::int)", &[&(i % 50)])
                        .await
                }
                _ => c.query(&format!("SELECT {i}::text"), &[]).await,
            };
            (i, r.map(|rows| rows.len()))
        }
    });
    for (i, r) in futures_util::future::join_all(queries).await {
        outcome(&log, "a", &format!("query {i}"), r);
    }
    let in_tx = futures_util::future::join_all((0..50i32).map(|i| {
        let c = &c;
        async move {
            c.query_one("SELECT $1::int", &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    }))
    .await;
    outcome(
        &log,
        "a",
        "fifty more",
        Ok::<_, tokio_postgres::Error>(in_tx.into_iter().map(|r| r.ok()).collect::<Vec<_>>()),
    );
    Ok(())
}

/// A 100 MB result and a 20 MB parameter in flight at once: tokio-postgres writes the INSERT's
/// Bind while the server is still sending the SELECT's rows, and reads the rows while it
/// writes, so a relay that stops reading the server while it writes deadlocks with the server.
/// (The psycopg form of this case stalls inside psycopg itself, against PostgreSQL directly:
/// see `psycopg_cases.rs`.)
async fn large_result_with_large_parameter(ep: Endpoint, log: Log) -> Result<()> {
    let c = ep.connect(&log, "a").await?;
    outcome(
        &log,
        "a",
        "create",
        c.batch_execute("CREATE TABLE t (v text)").await,
    );
    // Prepared first, so the two Bind/Execute/Sync batches go out back to back.
    let rows_sql = c
        .prepare("SELECT repeat('x', 1000) FROM generate_series(1, 100000)")
        .await?;
    let insert_sql = c
        .prepare("INSERT INTO t VALUES ($1) RETURNING length(v)")
        .await?;
    let big = "y".repeat(20_000_000);
    // Rows hashed as they arrive: 100 MB of them need not be held at once.
    let select = async {
        let rows = c.query_raw(&rows_sql, std::iter::empty::<i32>()).await?;
        let mut rows = std::pin::pin!(rows);
        let (mut n, mut h) = (0usize, Sha256::new());
        while let Some(r) = rows.next().await {
            h.update(r?.get::<_, &str>(0));
            n += 1;
        }
        Ok::<_, tokio_postgres::Error>((n, format!("{:x}", h.finalize())))
    };
    let insert = async {
        c.query_one(&insert_sql, &[&big])
            .await
            .map(|r| r.get::<_, i32>(0))
    };
    let (rows, inserted) = tokio::join!(select, insert);
    outcome(&log, "a", "select", rows);
    outcome(&log, "a", "insert", inserted);
    outcome(
        &log,
        "a",
        "after",
        c.query_one("SELECT count(*), sum(length(v)) FROM t", &[])
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_large_result_and_large_parameter_at_once_match_postgres() {
    let t = targets().await;
    all(vec![
        t.check_in_process(
            Case::new(
                "tokio-postgres: 100,000 rows of 1,000 bytes in flight with a 20 MB parameter",
            ),
            large_result_with_large_parameter,
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_copy_in_and_out_match_postgres_and_release_the_backend() {
    let t = targets().await;
    all(vec![
        t.check_in_process(
            Case::new("tokio-postgres copy_in / copy_out, then a second client").two_clients(),
            copy_then_second_client,
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelined_futures_match_postgres() {
    let t = targets().await;
    all(vec![
        t.check_in_process(
            Case::new("tokio-postgres: 300 queries in flight (join_all)"),
            pipelined,
        )
        .await,
    ])
    .await;
}

//! max_message_memory: one budget for every client's large messages read whole.
//!
//! One client holding a large Query half-sent uses most of the budget; another whose large
//! query would pass it gets 53200 (out of memory), and the first loses nothing: its query
//! completes once the rest arrives, and the budget is whole again for the next client.

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tollgate::config::RawConfig;
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::raw::{first_column, RawConn};
use tollgate_e2e::{Env, EnvOptions, APP_PASSWORD, APP_USER};
use tollgate_wire::backend::tag;

const MIB: usize = 1 << 20;

/// A Query message selecting the length of a `pad`-byte literal.
fn query_of(pad: usize) -> (Vec<u8>, String) {
    let sql = format!("SELECT length('{}')", "a".repeat(pad));
    let mut out = BytesMut::new();
    out.put_u8(b'Q');
    out.put_i32((4 + sql.len() + 1) as i32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    (out.to_vec(), pad.to_string())
}

fn charged(env: &Env) -> usize {
    env.shared.stats.message_memory.used()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_max_message_memory_gets_53200_and_the_client_holding_it_loses_nothing(
) -> Result<()> {
    let env = Env::start(EnvOptions {
        extra: RawConfig {
            max_message_size: Some(MIB),
            max_message_memory: Some(MIB + MIB / 2),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;

    // A sends all but the last kilobyte of a ~1 MB query and waits: its read buffer (1 MiB)
    // is charged.
    let (big, big_len) = query_of(1_000_000);
    let (head, tail) = big.split_at(big.len() - 1024);
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    a.send(head).await?;
    poll_until(
        "A's partial message charged",
        Duration::from_secs(10),
        || charged(&env) >= MIB,
    )
    .await?;

    // B's 600 kB query would need another 1 MiB buffer: refused with 53200.
    let b = env.connect().await?;
    let sql = format!("SELECT length('{}')", "b".repeat(600_000));
    let e = b
        .simple_query(&sql)
        .await
        .err()
        .context("B's query passed max_message_memory and was still read")?;
    ensure!(
        e.code() == Some(&SqlState::OUT_OF_MEMORY),
        "B got {e:?}, not 53200"
    );
    let db = e.as_db_error().context("not a server error")?;
    ensure!(
        db.message().contains("max_message_memory"),
        "the message does not name the setting: {}",
        db.message()
    );

    // A loses nothing: the rest arrives and its query answers.
    a.send(tail).await?;
    let mut msgs = Vec::new();
    loop {
        let m = a.expect().await?;
        ensure!(m.tag != tag::ERROR_RESPONSE, "A's query failed: {m:?}");
        let done = m.tag == tag::READY_FOR_QUERY;
        msgs.push(m);
        if done {
            break;
        }
    }
    ensure!(
        first_column(&msgs) == vec![Some(big_len)],
        "A's answer: {msgs:?}"
    );

    // The budget is given back once A's message is handled, and B's query now fits.
    poll_until("A's charge given back", Duration::from_secs(10), || {
        charged(&env) == 0
    })
    .await?;
    let b2 = env.connect().await?;
    let rows = b2.simple_query(&sql).await?;
    ensure!(
        rows.iter().any(|m| matches!(m,
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("600000"))),
        "B's retry did not answer 600000"
    );
    drop(a);
    Ok(())
}

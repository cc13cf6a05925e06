//! Bulk data through the relay: COPY in both directions, a huge single row, and NOTICEs all
//! reach the other side byte for byte.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use std::time::Instant;
use tokio_postgres::AsyncMessage;
use tollgate_e2e::{Env, EnvOptions, APP_PASSWORD, APP_USER};

/// Total COPY payload.
const COPY_BYTES: usize = 100 * 1024 * 1024;
/// Bytes per generated line, newline included.
const LINE_BYTES: usize = 1024;
/// Lines per CopyData message sent.
const LINES_PER_CHUNK: usize = 64;

/// Line `i` of the data set: its number, then filler that depends on it, no tabs or
/// backslashes (so COPY text format sends it back unchanged).
fn write_line(i: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(format!("{i:010} ").as_bytes());
    let mut x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    while out.len() - start < LINE_BYTES - 1 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(b'a' + (x % 26) as u8);
    }
    out.push(b'\n');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_of_100_mb_round_trips_byte_for_byte() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let client = env.connect().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE big (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text)",
        )
        .await
        .unwrap();

    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>("COPY big (line) FROM STDIN")
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    let mut sent = Sha256::new();
    let lines = COPY_BYTES / LINE_BYTES;
    let mut chunk = Vec::with_capacity(LINE_BYTES * LINES_PER_CHUNK);
    for i in 0..lines {
        write_line(i, &mut chunk);
        if chunk.len() >= LINE_BYTES * LINES_PER_CHUNK || i + 1 == lines {
            sent.update(&chunk);
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
            chunk.reserve(LINE_BYTES * LINES_PER_CHUNK);
        }
    }
    let copied = sink.as_mut().finish().await.unwrap();
    assert_eq!(copied, lines as u64);
    let copy_in_took = started.elapsed();

    let started = Instant::now();
    let stream = client
        .copy_out("COPY (SELECT line FROM big ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut received = Sha256::new();
    let mut received_bytes = 0usize;
    while let Some(data) = stream.next().await {
        let data = data.unwrap();
        received_bytes += data.len();
        received.update(&data);
    }
    let copy_out_took = started.elapsed();
    eprintln!("COPY in {copy_in_took:?}, COPY out {copy_out_took:?} for {COPY_BYTES} bytes");

    assert_eq!(received_bytes, lines * LINE_BYTES);
    assert_eq!(
        received.finalize(),
        sent.finalize(),
        "COPY TO STDOUT returned different bytes than COPY FROM STDIN was given"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_50_mb_row_arrives_whole() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let client = env.connect().await.unwrap();
    let row = client
        .query_one("SELECT repeat('x', 50 * 1024 * 1024), 'after'", &[])
        .await
        .unwrap();
    let big: &str = row.get(0);
    assert_eq!(big.len(), 50 * 1024 * 1024);
    assert!(big.bytes().all(|b| b == b'x'));
    assert_eq!(row.get::<_, &str>(1), "after");
    // The stream is still in step after it.
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_from_the_server_reach_the_client_in_order() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let (client, mut conn) = env
        .pg_config(APP_USER, APP_PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notice(n) = m {
                let _ = tx.send(n);
            }
        }
    });

    client
        .batch_execute(
            "DO $$ BEGIN
                 FOR i IN 1..500 LOOP RAISE NOTICE 'notice %', i; END LOOP;
                 RAISE WARNING 'big %', repeat('n', 100000);
             END $$",
        )
        .await
        .unwrap();
    // Notices precede the command's completion on the wire, so all are queued by now.
    for i in 1..=500 {
        let n = rx.try_recv().expect("a notice per RAISE");
        assert_eq!(n.message(), format!("notice {i}"));
        assert_eq!(n.severity(), "NOTICE");
        assert_eq!(n.code().code(), "00000");
    }
    let big = rx.try_recv().expect("the large warning");
    assert_eq!(big.severity(), "WARNING");
    assert_eq!(big.message().len(), "big ".len() + 100_000);
    assert!(rx.try_recv().is_err(), "no extra notices");
}

//! An idle client holds no read buffer: between requests its session gives the buffer back and
//! waits for the socket (over TLS: for the socket, unless TLS already holds decrypted bytes)
//! before taking one again. These tests make sure that wait never swallows a request: bursts
//! much larger than one read buffer, sent after the session went idle, are answered in full,
//! over plain TCP and TLS.

use anyhow::{ensure, Result};
use futures_util::future::try_join_all;
use tokio_postgres::types::Type;
use tollgate_e2e::{Env, EnvOptions};

/// Statements pipelined per burst, each with a parameter of [`PARAM_LEN`] bytes: ~120 KB per
/// burst, many times the 8 KiB read buffer and several TLS records.
const PIPELINED: usize = 400;
const PARAM_LEN: usize = 300;

async fn bursts_after_idling_are_answered_in_full(client_tls: bool) -> Result<()> {
    let env = Env::start(EnvOptions {
        client_tls,
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let c = env.connect_app().await?;
    for round in 0..3 {
        let asks = (0..PIPELINED).map(|i| {
            let client = &c.client;
            async move {
                let sent = format!("{round}:{i}:{}", "x".repeat(PARAM_LEN));
                let got: String = client
                    .query_typed_one("SELECT $1::text", &[(&sent, Type::TEXT)])
                    .await?
                    .get(0);
                anyhow::Ok((sent, got))
            }
        });
        let answers = try_join_all(asks).await?;
        ensure!(answers.len() == PIPELINED);
        for (sent, got) in answers {
            ensure!(
                sent == got,
                "round {round}: asked for {sent:.20}… and got {got:.20}…"
            );
        }
        // Between bursts the session is idle (its answers are all in), so the next burst starts
        // from a session with no buffer.
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bursts_after_idling_are_answered_in_full() -> Result<()> {
    bursts_after_idling_are_answered_in_full(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_bursts_after_idling_are_answered_in_full() -> Result<()> {
    bursts_after_idling_are_answered_in_full(true).await
}

//! Bounded polling for conditions that have no event to await (the proxy finishing with a
//! disconnected client, a waiter joining a pool queue).

use anyhow::{bail, Result};
use std::time::Duration;

/// Checks `cond` every 10 ms until it holds, failing after `limit` with `what` in the message.
/// Only for state with no event to await; the interval is a poll period, not synchronisation.
pub async fn poll_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded poll) until the pools hold `n` idle backends in total. A backend goes back
/// to the pool just after its last reply is forwarded, so a client can have its answer a moment
/// before the backend is free for the next borrower; tests that need "the backend A just
/// used" to be the one handed out next wait for this first.
pub async fn until_idle_backends(env: &crate::Env, n: usize) -> Result<()> {
    poll_until(
        &format!("{n} idle backend(s) in the pool"),
        Duration::from_secs(5),
        || {
            env.shared
                .pools
                .snapshots()
                .iter()
                .map(|s| s.idle)
                .sum::<usize>()
                == n
        },
    )
    .await
}

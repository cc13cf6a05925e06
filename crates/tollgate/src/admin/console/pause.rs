//! `PAUSE [db]` and `RESUME [db]`: stop lending backend connections for one database's pools
//! (or all), for maintenance such as a failover or a restart of the database. Clients stay
//! connected; their next request waits (up to connection_borrow_timeout) until `RESUME`.
//! `PAUSE` answers once no backend of those pools is lent any more, so running transactions
//! have finished; while paused, returned backends stay idle (see `Pool::set_paused`).

use super::result::Reply;
use super::CommandError;
use crate::shared::Shared;
use std::time::Duration;

/// How often PAUSE looks at the pools' counts (they have no event to await).
const POLL: Duration = Duration::from_millis(10);

/// `PAUSE [db]`: pauses, then waits (up to connection_borrow_timeout) until every backend of
/// the paused pools is idle in its pool: none lent, none being opened or handed over.
pub async fn pause(shared: &Shared, database: Option<&str>) -> Result<Reply, CommandError> {
    let database = database.map(unquote);
    let pools = shared.pools.set_paused(database.as_deref(), true);
    let what = describe(database.as_deref());
    tracing::info!(target = %what, pools, "pools paused by an operator");
    let limit = shared.live().connection_borrow_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Open minus idle rather than the borrowed gauge alone: it also covers a connection
        // between pool and client (being opened, or handed to a client queued before PAUSE).
        let borrowed: usize = shared
            .pools
            .all()
            .iter()
            .filter(|p| database.as_deref().is_none_or(|d| p.key.database == d))
            .map(|p| {
                let snap = p.snapshot();
                snap.open.saturating_sub(snap.idle)
            })
            .sum();
        if borrowed == 0 {
            return Ok(Reply::Done("PAUSE".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CommandError::new(
                "55000",
                format!(
                    "{what}: {borrowed} backend connection(s) still lent to clients after {} s \
                     (connection_borrow_timeout; pinned and session-mode clients keep theirs \
                     until they disconnect); the pools stay paused and new requests wait. \
                     Run PAUSE again to keep waiting, or RESUME",
                    limit.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `RESUME [db]`: lends connections again; waiting clients are served at once.
pub fn resume(shared: &Shared, database: Option<&str>) -> Reply {
    let database = database.map(unquote);
    let pools = shared.pools.set_paused(database.as_deref(), false);
    tracing::info!(target = %describe(database.as_deref()), pools, "pools resumed by an operator");
    Reply::Done("RESUME".into())
}

fn describe(database: Option<&str>) -> String {
    match database {
        Some(d) => format!("the pools of database {d:?}"),
        None => "all pools".into(),
    }
}

/// A database name as typed: `"Name"` keeps its case and loses the quotes; unquoted names
/// are taken as they are (pool keys are the names clients sent, not folded).
fn unquote(word: &str) -> String {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
        .to_string()
}

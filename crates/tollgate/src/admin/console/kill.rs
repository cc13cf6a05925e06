//! `KILL client_id`: ends one client's session (the id from `SHOW CLIENTS`). The client gets
//! 57P01 ("terminating connection due to administrator command"); a transaction it had open
//! is rolled back; other clients are not touched.

use super::result::Reply;
use super::CommandError;
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared, id: &str) -> Result<Reply, CommandError> {
    let Ok(n) = id.parse::<u64>() else {
        return Err(CommandError::new(
            "22023",
            format!("KILL takes a client id (a number from SHOW CLIENTS), not {id:?}"),
        ));
    };
    if !shared.clients.kill(n) {
        return Err(CommandError::new(
            "42704",
            format!("no client with id {n} is connected; SHOW CLIENTS lists them"),
        ));
    }
    tracing::info!(client_id = n, "client killed by an operator");
    Ok(Reply::Done("KILL".into()))
}

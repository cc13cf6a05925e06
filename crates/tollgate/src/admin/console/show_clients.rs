//! `SHOW CLIENTS`: one row per logged-in client (admin console sessions are not listed):
//! where it is from, what it is doing, which backend it holds and whether it is pinned to it.
//! The `id` is what `KILL` takes.

use super::format::{timestamp, yes_no};
use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&[
        "id",
        "user",
        "database",
        "addr",
        "tls",
        "state",
        "connected_at",
        "backend_pid",
        "pinned",
    ]);
    for c in shared.clients.list() {
        let pid = c.backend_pid();
        rs.push_nullable(vec![
            Some(c.id.to_string()),
            Some(c.user.clone()),
            Some(c.database.clone()),
            Some(c.peer.to_string()),
            Some(yes_no(c.tls)),
            Some(c.state().as_str().to_string()),
            Some(timestamp(c.connected_at)),
            (pid != 0).then(|| pid.to_string()),
            c.pin().map(|r| r.as_str().to_string()),
        ]);
    }
    Reply::Rows(rs)
}

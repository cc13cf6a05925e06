//! `SHOW POOLS`: one row per (database, user) pool: who is connected, waiting, and how the
//! backend connections are used — the question "is the pool saturated, who is waiting".

use super::format::yes_no;
use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&[
        "database",
        "user",
        "pool_mode",
        "cl_active",
        "cl_waiting",
        "sv_borrowed",
        "sv_in_transaction",
        "sv_idle",
        "sv_open",
        "pool_size",
        "pinned",
        "paused",
        "maxwait_ms",
    ]);
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| (&a.key.database, &a.key.user).cmp(&(&b.key.database, &b.key.user)));
    for pool in pools {
        let snap = pool.snapshot();
        let st = &pool.stats;
        let clients = st.clients.get();
        rs.push(vec![
            snap.key.database.clone(),
            snap.key.user.clone(),
            shared.config.pool_mode.as_str().to_string(),
            // Logged in and not waiting for a backend (PgBouncer's cl_active).
            clients.saturating_sub(snap.waiting as u64).to_string(),
            snap.waiting.to_string(),
            st.borrowed.get().to_string(),
            st.in_transaction.get().to_string(),
            snap.idle.to_string(),
            snap.open.to_string(),
            pool.settings().pool_size.to_string(),
            st.pinned.get().to_string(),
            yes_no(pool.is_paused()),
            (st.borrow_latency.snapshot().max / 1000).to_string(),
        ]);
    }
    Reply::Rows(rs)
}

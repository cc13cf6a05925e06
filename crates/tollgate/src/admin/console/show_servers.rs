//! `SHOW SERVERS`: one row per logged-in backend connection, per pool: its PostgreSQL pid
//! (as in `pg_stat_activity`), whether it is lent to a client (and which: the `id` of
//! `SHOW CLIENTS`) or idle in the pool, and how old it is. Connections still logging in are
//! not listed.

use super::format::since;
use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&[
        "database",
        "user",
        "backend_pid",
        "state",
        "client_id",
        "connected_at",
        "age_s",
        "idle_s",
    ]);
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| (&a.key.database, &a.key.user).cmp(&(&b.key.database, &b.key.user)));
    let clients = shared.clients.list();
    let connector = shared.pools.connector();
    for pool in pools {
        let key = &pool.key;
        // Lent connections are known by the clients holding them.
        let mut active: Vec<_> = clients
            .iter()
            .filter(|c| c.user == key.user && connector.database_for(&c.database) == key.database)
            .filter_map(|c| Some((c.backend_pid(), c.id, c.backend_age()?)))
            .collect();
        active.sort_unstable();
        for (pid, client, age) in active {
            rs.push_nullable(vec![
                Some(key.database.clone()),
                Some(key.user.clone()),
                Some(pid.to_string()),
                Some("active".into()),
                Some(client.to_string()),
                Some(since(age)),
                Some(age.as_secs().to_string()),
                None,
            ]);
        }
        for idle in pool.idle_servers() {
            rs.push_nullable(vec![
                Some(key.database.clone()),
                Some(key.user.clone()),
                Some(idle.pid.to_string()),
                Some("idle".into()),
                None,
                Some(since(idle.age)),
                Some(idle.age.as_secs().to_string()),
                Some(idle.idle_for.as_secs().to_string()),
            ]);
        }
    }
    Reply::Rows(rs)
}

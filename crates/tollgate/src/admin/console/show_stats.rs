//! `SHOW STATS`: per pool, the counters since start and the latency percentiles over the last
//! minute (RDS Proxy's CloudWatch set): requests answered, transactions, bytes each way, backend borrows and
//! connection setups, and how long queries, the database and the wait for a backend took.

use super::format::ms;
use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&[
        "database",
        "user",
        "queries",
        "transactions",
        "bytes_from_clients",
        "bytes_to_clients",
        "connection_requests",
        "setup_succeeded",
        "setup_failed",
        "borrow_timeouts",
        "query_p50_ms",
        "query_p99_ms",
        "db_p99_ms",
        "borrow_wait_p99_ms",
    ]);
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| (&a.key.database, &a.key.user).cmp(&(&b.key.database, &b.key.user)));
    for pool in pools {
        let st = &pool.stats;
        let query = st.query_latency.snapshot();
        rs.push(vec![
            pool.key.database.clone(),
            pool.key.user.clone(),
            st.queries.get().to_string(),
            st.transactions.get().to_string(),
            st.bytes_from_clients.get().to_string(),
            st.bytes_to_clients.get().to_string(),
            st.connection_requests.get().to_string(),
            st.setup_succeeded.get().to_string(),
            st.setup_failed.get().to_string(),
            st.borrow_timeouts.get().to_string(),
            ms(query.p50),
            ms(query.p99),
            ms(st.db_latency.snapshot().p99),
            ms(st.borrow_latency.snapshot().p99),
        ]);
    }
    Reply::Rows(rs)
}

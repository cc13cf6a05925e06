//! node-postgres: basic, parameterised and named queries; connect() then end().

use crate::runner::{Case, Script};
use crate::{all, targets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_queries_match_postgres() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("node-postgres simple, parameterised and named queries"),
            Script::node("node_cases.js").args(&["queries"]),
        )
        .await,
        t.check_script(
            Case::new("node-postgres connect() then end(), and end() before the connection is up"),
            Script::node("node_cases.js").args(&["connect_then_end"]),
        )
        .await,
    ])
    .await;
}

//! asyncpg: large Binds and rows in both directions at once, named statements of two clients
//! sharing one backend.

use crate::runner::{Case, Script};
use crate::{all, targets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_large_binds_in_both_directions_match_postgres() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("asyncpg executemany of 1 MB Binds returning 1 MB rows, 100 MB result, 20 MB parameter"),
            Script::python("asyncpg_cases.py").args(&["large_binds_both_ways"]),
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_named_statements_of_two_clients_on_one_backend_stay_apart() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("asyncpg named statements, two clients, pool_size 1").two_clients(),
            Script::python("asyncpg_cases.py").args(&["named_statements_two_clients"]),
        )
        .await,
    ])
    .await;
}

//! psycopg 3 (libpq underneath): pipeline mode, COPY, libpq's unnamed statements, client
//! encodings, startup options with RESET / DISCARD, LISTEN / NOTIFY.

use crate::runner::{Case, Script};
use crate::{all, targets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pipeline_large_result_and_large_binds_at_once_match_postgres() {
    let t = targets().await;
    let pipeline = |case| Script::python("pipeline.py").args(&[case]);
    all(vec![
        t.check_script(
            Case::new("psycopg pipeline: 100,000 rows of 1,000 bytes, then a 20 MB parameter"),
            pipeline("large_result_then_large_parameter"),
        )
        .await,
        t.check_script(
            Case::new("psycopg executemany returning 40 rows of 1 MB for 40 Binds of 1 MB"),
            pipeline("executemany_returning_large_rows"),
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pipeline_errors_abort_the_same_statements_as_postgres() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("psycopg pipeline with a failing statement in the middle"),
            Script::python("pipeline.py").args(&["errors_mid_pipeline"]),
        )
        .await,
    ])
    .await;
}

//! psycopg 3 (libpq underneath): pipeline mode, COPY, libpq's unnamed statements, client
//! encodings, startup options with RESET / DISCARD, LISTEN / NOTIFY.

use crate::runner::{Case, Script, Target};
use crate::{all, targets};

/// Large Binds going out while large rows come back, in psycopg's pipeline mode. (The
/// harsher form, a 100 MB result with a 20 MB parameter in one pipeline, is in
/// `tokio_cases.rs`: psycopg 3.3 itself stalls on it against PostgreSQL directly (every run
/// tried, on libpq 15 and with the binary wheel alike), the server waiting in ClientRead for the
/// rest of a Bind psycopg never sends, so it cannot be a reference.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pipeline_large_binds_with_large_rows_match_postgres() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("psycopg executemany returning 40 rows of 1 MB for 40 Binds of 1 MB"),
            Script::python("pipeline.py").args(&["executemany_returning_large_rows"]),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_copy_simple_and_extended_match_postgres_and_release_the_backend() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("psycopg COPY (simple and extended), then a second client").two_clients(),
            Script::python("copying.py").args(&["simple_and_extended_then_second_client"]),
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_unnamed_statement_across_round_trips_never_runs_another_clients_sql() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("libpq unnamed statement, prepared and executed in two round trips")
                .two_clients(),
            Script::python("unnamed.py").args(&["interleaved"]),
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_non_utf8_client_encodings_give_the_same_bytes_as_postgres() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("client encodings LATIN1 .. UHC: literals, parameters, errors"),
            Script::python("encodings.py").args(&["all_encodings"]),
        )
        .await,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_startup_settings_are_what_reset_and_discard_restore() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("startup options -c ..., then RESET / RESET ALL / DISCARD ALL")
                .first_client_pins(),
            Script::python("options.py").args(&["startup_options_then_reset"]),
        )
        .await,
        t.check_script(
            Case::new("PGDATESTYLE / PGTZ startup parameters, then RESET").first_client_pins(),
            Script::python("options.py").args(&["libpq_environment_then_reset"]),
        )
        .await,
    ])
    .await;
}

/// Transaction mode hands out its own process ids (a client's backend changes between
/// transactions, so no one pid could be right; the README says so): there the `pid` line
/// is not compared. Session mode must give the real one.
fn transaction_mode_pids(mode: Target, line: &str) -> String {
    if mode == Target::Transaction && line.contains(r#""ev": "pid""#) {
        "(pid check: transaction mode issues its own process ids)".into()
    } else {
        line.into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_listen_notify_match_postgres() {
    let t = targets().await;
    all(vec![
        t.check_script(
            Case::new("LISTEN / NOTIFY")
                .first_client_pins()
                .normalise(transaction_mode_pids),
            Script::python("notify.py").args(&["listen_notify"]),
        )
        .await,
    ])
    .await;
}

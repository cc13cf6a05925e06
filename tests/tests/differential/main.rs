//! Differential tests: the same client program runs directly against PostgreSQL and through
//! Tollgate in transaction and in session mode (`pool_size = 1`, so clients share a backend),
//! and everything it observes (rows, errors with SQLSTATE, notices, ParameterStatus values,
//! notifications) must be the same, except for documented pooling limits, which each case
//! normalises explicitly. The clients are real drivers (psycopg 3, asyncpg, node-postgres,
//! tokio-postgres) and, where no driver can express a case, raw protocol messages.
//!
//! The scripts live in `tests/differential/`; `.ci/run` installs their drivers. A missing
//! driver fails the test (saying to run `.ci/run`); nothing is skipped.

mod runner;

mod asyncpg_cases;
mod node_cases;
mod psycopg_cases;
mod raw_cases;
mod tokio_cases;

use runner::Targets;

/// Runs every check, then fails with all their reports together (one case's failure must not
/// hide another's).
pub async fn all(checks: Vec<anyhow::Result<()>>) {
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One PostgreSQL and both Tollgates for a test function.
pub async fn targets() -> Targets {
    match Targets::start().await {
        Ok(t) => t,
        Err(e) => panic!("cannot start PostgreSQL and Tollgate: {e:#}"),
    }
}

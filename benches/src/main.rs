//! Benchmark harness: Tollgate against direct PostgreSQL and PgBouncer, reported as ratios.
//!
//! The scenarios, the report and the performance work are their own issue; until it lands this
//! binary only says so, so nobody mistakes it for a result.

fn main() {
    eprintln!(
        "tollgate-bench: the benchmark harness is not written yet (see the issue \"Benchmark harness\"); \
         for a quick load test run `cargo run --release -- quickstart`"
    );
    std::process::exit(2);
}

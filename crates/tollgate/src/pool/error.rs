//! Why a client could not get a backend connection.

use crate::backend::BackendError;

/// A failed borrow.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Nothing freed up within connection_borrow_timeout.
    #[error("pool {pool} is full ({in_use} of {limit} in use{global}) and nothing freed up within {waited_secs} s; raise pool_size (or max_connections_percent) or connection_borrow_timeout, or make transactions shorter", global = if *.global_cap { " across all pools, the max_connections_percent cap" } else { "" })]
    Exhausted {
        /// `user/database`.
        pool: String,
        /// The limit that was hit.
        limit: usize,
        /// Connections open at the time.
        in_use: usize,
        /// How long the client waited.
        waited_secs: u64,
        /// Whether the global cap (not the pool's own limit) was the bound.
        global_cap: bool,
    },
    /// An operator paused the pool and did not resume it within the borrow timeout.
    #[error("pool {pool} is paused by an operator (PAUSE) and was not resumed within {waited_secs} s; retry later")]
    Paused {
        /// `user/database`.
        pool: String,
        /// How long the client waited.
        waited_secs: u64,
    },
    /// A login needs a new (database, user) pool and `max_pools` are all in use.
    #[error("too many pools: {limit} (database, user) pools are in use, the max_pools limit; connect with a database and user that already have clients, or raise max_pools")]
    TooManyPools {
        /// The max_pools setting.
        limit: usize,
    },
    /// No instance could serve the pool within the borrow timeout (the database restarting,
    /// a failover with no new writer yet, no reader up) or at once (reader_fallback = error).
    #[error("pool {pool}: {why}{}; the request was not run. Retry; if this lasts, check the database instances (SHOW TARGETS) or raise connection_borrow_timeout", if *.waited_secs > 0 { format!(" (waited {} s)", .waited_secs) } else { String::new() })]
    NoTarget {
        /// `user/database`.
        pool: String,
        /// The last reason.
        why: String,
        /// How long the client waited.
        waited_secs: u64,
    },
    /// Opening a new connection failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The pool is shutting down.
    #[error("Tollgate is shutting down")]
    ShuttingDown,
}

impl PoolError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::Exhausted { .. } => "53300",
            PoolError::Paused { .. } => "57P03",
            PoolError::TooManyPools { .. } => "53300",
            PoolError::NoTarget { .. } => "08001",
            PoolError::Backend(e) => e.sqlstate(),
            PoolError::ShuttingDown => "57P01",
        }
    }
}

//! What Tollgate measures: process-wide counters ([`Stats`]), per-pool counters and latency
//! histograms ([`PoolStats`]), shaped after RDS Proxy's CloudWatch metrics. Rendering for
//! Prometheus lives in `admin/prometheus.rs`; the data path only increments.

pub mod counters;
pub mod latency;
pub mod snapshot;

pub use counters::{Counter, Gauge, Stats};
pub use latency::{Latency, LatencySnapshot};
pub use snapshot::{MetricsSnapshot, PoolMetrics};

/// Per-(database, user) pool measurements.
#[derive(Default)]
pub struct PoolStats {
    /// Clients logged in to this pool now.
    pub clients: Gauge,
    /// Requests for a backend connection (RDS: DatabaseConnectionRequests).
    pub connection_requests: Counter,
    /// Backend connections opened (RDS: DatabaseConnectionsSetupSucceeded).
    pub setup_succeeded: Counter,
    /// Backend connections that failed to open (RDS: DatabaseConnectionsSetupFailed).
    pub setup_failed: Counter,
    /// Borrows that gave up after connection_borrow_timeout.
    pub borrow_timeouts: Counter,
    /// Backends lent to a client now (RDS: DatabaseConnectionsCurrentlyBorrowed).
    pub borrowed: Gauge,
    /// Lent backends inside a transaction now (RDS: DatabaseConnectionsCurrentlyInTransaction).
    pub in_transaction: Gauge,
    /// Clients pinned now (RDS: DatabaseConnectionsCurrentlySessionPinned).
    pub pinned: Gauge,
    /// Requests answered: each ReadyForQuery relayed (RDS: QueryRequests).
    pub queries: Counter,
    /// Transactions completed: ReadyForQuery `I` relayed.
    pub transactions: Counter,
    /// Bytes clients sent through this pool.
    pub bytes_from_clients: Counter,
    /// Bytes relayed to clients of this pool.
    pub bytes_to_clients: Counter,
    /// Time waiting for a backend (RDS: DatabaseConnectionsBorrowLatency).
    pub borrow_latency: Latency,
    /// Client request to the last byte of the answer relayed (RDS: QueryResponseLatency).
    pub query_latency: Latency,
    /// Request forwarded to the answer's ReadyForQuery arriving (RDS: QueryDatabaseResponseLatency).
    pub db_latency: Latency,
}

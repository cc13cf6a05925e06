//! A copy of everything measured at one moment, for exporters (`admin/prometheus.rs`). Taking
//! it reads atomics and briefly locks each pool and histogram; the data path is not slowed
//! beyond that.

use super::{LatencySnapshot, Stats};
use crate::pin::PinReason;
use crate::pool::{Pool, Pools};
use crate::sync::lock;

/// Most pools exported one by one. Each pool adds about 30 series labelled by (user,
/// database); past this many, a scrape would grow without bound with the number of users and
/// databases clients name. Pools beyond the cap (by database, then user) still count in every
/// process-wide total; `tollgate_pools` says how many there are.
pub const MAX_POOLS_EXPORTED: usize = 500;

/// One database instance's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetMetrics {
    /// `host:port`.
    pub target: String,
    /// writer | reader | unknown.
    pub role: &'static str,
    /// Whether it takes sessions now.
    pub up: bool,
    /// Share of the last minute's checks that found it up (RDS Proxy: AvailabilityPercentage).
    pub availability: Option<f64>,
    /// Data-path connections open to it.
    pub connections: u64,
    /// Replica lag behind the writer, seconds (readers).
    pub lag_secs: Option<f64>,
}

/// Process-wide counts and the per-pool rows (at most [`MAX_POOLS_EXPORTED`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Clients logged in to a pool now.
    pub clients_current: u64,
    /// Clients that logged in (admin console sessions included).
    pub clients_setup_succeeded: u64,
    /// Clients refused during startup or login, by reason.
    pub setup_failures: Vec<(&'static str, u64)>,
    /// Client connections closed after login.
    pub clients_closed: u64,
    /// Requests sent again on another backend because the first died before answering.
    pub backend_retries: u64,
    /// Backends lost under a request that could not be sent again.
    pub backends_lost: u64,
    /// Every database instance behind Tollgate.
    pub targets: Vec<TargetMetrics>,
    /// Writer failovers since start.
    pub failovers: u64,
    /// The last failover's duration, seconds.
    pub last_failover_secs: Option<f64>,
    /// Every auth_secret: (name, reads ok, reads failed, age of the value in force in s).
    pub secrets: Vec<(String, u64, u64, f64)>,
    /// Pins by reason, every reason listed (zeros included).
    pub pins: Vec<(&'static str, u64)>,
    /// Cancels forwarded to a backend.
    pub cancels_forwarded: u64,
    /// Cancels ignored (forged key or nothing running).
    pub cancels_ignored: u64,
    /// IAM auth tokens accepted, by how.
    pub iam_successes: Vec<(&'static str, u64)>,
    /// IAM logins refused, by reason.
    pub iam_failures: Vec<(&'static str, u64)>,
    /// Backend connections open or opening across all pools.
    pub db_open: u64,
    /// Of those, idle.
    pub db_idle: u64,
    /// The global cap on backend connections, once the server's max_connections is known.
    pub db_max: Option<u64>,
    /// The database server, `host:port`.
    pub target: String,
    /// Whether it answered the last connection attempt.
    pub available: bool,
    /// Sums over every pool, including any beyond the export cap.
    pub totals: Totals,
    /// Pools that exist (exported or not).
    pub pool_count: usize,
    /// Unused pools freed since start.
    pub pools_freed: u64,
    /// Idle backend connections found ended by the server and closed.
    pub db_closed_dead_idle: u64,
    /// Bytes of max_message_memory charged now.
    pub message_memory: u64,
    /// One row per exported pool, ordered by (database, user).
    pub pools: Vec<PoolMetrics>,
}

/// Per-pool counters summed over all pools (RDS Proxy reports these per proxy).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Backends lent to clients now.
    pub borrowed: u64,
    /// Lent backends inside a transaction now.
    pub in_transaction: u64,
    /// Clients pinned now.
    pub pinned: u64,
    /// ReadyForQuery messages relayed.
    pub queries: u64,
    /// Transactions completed.
    pub transactions: u64,
    /// Bytes clients sent.
    pub bytes_from_clients: u64,
    /// Bytes relayed to clients.
    pub bytes_to_clients: u64,
}

impl Totals {
    /// Adds one pool's counters.
    pub(crate) fn add(&mut self, st: &crate::metrics::PoolStats) {
        self.borrowed = self.borrowed.saturating_add(st.borrowed.get());
        self.in_transaction = self.in_transaction.saturating_add(st.in_transaction.get());
        self.pinned = self.pinned.saturating_add(st.pinned.get());
        self.queries = self.queries.saturating_add(st.queries.get());
        self.transactions = self.transactions.saturating_add(st.transactions.get());
        self.bytes_from_clients = self
            .bytes_from_clients
            .saturating_add(st.bytes_from_clients.get());
        self.bytes_to_clients = self
            .bytes_to_clients
            .saturating_add(st.bytes_to_clients.get());
    }
}

/// One pool's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolMetrics {
    /// Label `user`.
    pub user: String,
    /// Label `database`.
    pub database: String,
    /// A pool of the read-only endpoint (label `endpoint="read_only"`).
    pub read_only: bool,
    /// Clients logged in to this pool now.
    pub clients: u64,
    /// Clients waiting for a backend now.
    pub waiting: u64,
    /// Backend connections open or opening.
    pub open: u64,
    /// Of those, idle in the pool.
    pub idle: u64,
    /// The pool's own cap (pool_size).
    pub pool_size: u64,
    /// Paused by an operator.
    pub paused: bool,
    /// Backend borrow requests.
    pub connection_requests: u64,
    /// Backend connections opened.
    pub setup_succeeded: u64,
    /// Backend connections that failed to open.
    pub setup_failed: u64,
    /// Borrows that gave up after connection_borrow_timeout.
    pub borrow_timeouts: u64,
    /// Backends lent to clients now.
    pub borrowed: u64,
    /// Lent backends inside a transaction now.
    pub in_transaction: u64,
    /// Clients pinned to their backend now.
    pub pinned: u64,
    /// ReadyForQuery messages relayed.
    pub queries: u64,
    /// Transactions completed.
    pub transactions: u64,
    /// Bytes clients sent.
    pub bytes_from_clients: u64,
    /// Bytes relayed to clients.
    pub bytes_to_clients: u64,
    /// Request to the last byte of the answer relayed.
    pub query_latency: LatencySnapshot,
    /// Request forwarded to the database's ReadyForQuery.
    pub db_latency: LatencySnapshot,
    /// Waiting for a backend.
    pub borrow_latency: LatencySnapshot,
}

impl MetricsSnapshot {
    /// Reads `stats` and `pools` now.
    pub fn collect(stats: &Stats, pools: &Pools) -> MetricsSnapshot {
        let global = pools.global();
        let mut all = pools.all();
        all.sort_by(|a, b| (&a.key.database, &a.key.user).cmp(&(&b.key.database, &b.key.user)));
        let pool_count = all.len();
        // Freed pools' counters stay in the process-wide totals.
        let mut totals = pools.retired_totals();
        for p in &all {
            totals.add(&p.stats);
        }
        all.truncate(MAX_POOLS_EXPORTED);
        let setup_failures = lock(&stats.setup_failures)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        MetricsSnapshot {
            clients_current: stats.clients_current.get(),
            clients_setup_succeeded: stats.clients_setup_succeeded.get(),
            setup_failures,
            clients_closed: stats.clients_closed.get(),
            backend_retries: stats.backend_retries.get(),
            backends_lost: stats.backends_lost.get(),
            targets: pools
                .connector()
                .topology()
                .views()
                .into_iter()
                .map(|v| TargetMetrics {
                    target: v.addr.to_string(),
                    role: v.role.as_str(),
                    up: v.health == crate::topology::Health::Up,
                    availability: v.availability,
                    connections: v.connections,
                    lag_secs: v.lag.map(|d| d.as_secs_f64()),
                })
                .collect(),
            secrets: Vec::new(),
            failovers: pools.connector().topology().failovers.get(),
            last_failover_secs: pools
                .connector()
                .topology()
                .last_failover()
                .map(|d| d.as_secs_f64()),
            pins: PinReason::ALL
                .iter()
                .map(|r| (r.as_str(), stats.pins_for(*r)))
                .collect(),
            cancels_forwarded: stats.cancels_forwarded.get(),
            cancels_ignored: stats.cancels_ignored.get(),
            iam_successes: lock(&stats.iam_successes)
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect(),
            iam_failures: lock(&stats.iam_failures)
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect(),
            db_open: global.open() as u64,
            db_idle: global.idle() as u64,
            db_max: match global.max_open() {
                usize::MAX => None,
                n => Some(n as u64),
            },
            target: pools.connector().addr(),
            available: global.available(),
            totals,
            pool_count,
            pools_freed: pools.freed(),
            db_closed_dead_idle: global.closed_dead_idle(),
            message_memory: stats.message_memory.used() as u64,
            pools: all.iter().map(|p| PoolMetrics::collect(p)).collect(),
        }
    }
}

impl PoolMetrics {
    fn collect(pool: &Pool) -> PoolMetrics {
        let snap = pool.snapshot();
        let st = &pool.stats;
        PoolMetrics {
            user: pool.key.user.clone(),
            database: pool.key.database.clone(),
            read_only: pool.key.endpoint == crate::topology::Endpoint::Reader,
            clients: st.clients.get(),
            waiting: snap.waiting as u64,
            open: snap.open as u64,
            idle: snap.idle as u64,
            pool_size: pool.settings().pool_size as u64,
            paused: pool.is_paused(),
            connection_requests: st.connection_requests.get(),
            setup_succeeded: st.setup_succeeded.get(),
            setup_failed: st.setup_failed.get(),
            borrow_timeouts: st.borrow_timeouts.get(),
            borrowed: st.borrowed.get(),
            in_transaction: st.in_transaction.get(),
            pinned: st.pinned.get(),
            queries: st.queries.get(),
            transactions: st.transactions.get(),
            bytes_from_clients: st.bytes_from_clients.get(),
            bytes_to_clients: st.bytes_to_clients.get(),
            query_latency: st.query_latency.snapshot(),
            db_latency: st.db_latency.snapshot(),
            borrow_latency: st.borrow_latency.snapshot(),
        }
    }
}

//! Backend connection pools: one per (database, user), each bounded by `pool_size`, all
//! together bounded by the global cap. A client that finds no free connection waits in a FIFO
//! queue up to `connection_borrow_timeout`.
//!
//! Every open (or opening) connection holds a [`Slot`]; dropping the slot — however the
//! connection ends — gives the place back and hands it to the next waiter, so counts cannot
//! leak when a session dies mid-borrow.
//!
//! The parts: [`Pool`] and its types here; `borrow.rs` (get, open), `queue.rs` (the FIFO of
//! waiters and what they are granted, put), `idle.rs` (the idle list and its housekeeping),
//! `registry.rs` ([`Pools`]: every pool by key), `global.rs` (the cap across pools),
//! `slot.rs` (one place in a pool).

mod borrow;
pub mod error;
pub mod global;
mod idle;
mod queue;
mod registry;
pub mod slot;

pub use error::PoolError;
pub use global::Global;
pub(crate) use queue::GrantOutcome;
pub use registry::Pools;
pub use slot::Slot;

use crate::backend::{Connector, Credential, ServerConn};
use crate::metrics::{Gauge, PoolStats};
use crate::params::ParamSet;
use crate::sync::lock;
use crate::topology::Endpoint;
use queue::Grant;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Limits every pool shares.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Per-pool cap.
    pub pool_size: usize,
    /// Most pools at once (each (database, user) pair clients name makes one).
    pub max_pools: usize,
    /// RDS Proxy's ConnectionBorrowTimeout.
    pub borrow_timeout: Duration,
    /// Replace connections older than this between transactions.
    pub server_lifetime: Duration,
    /// Close idle connections unused this long.
    pub server_idle_timeout: Duration,
    /// Global cap, percent of max_connections.
    pub max_connections_percent: u32,
    /// Idle kept, percent of max_connections.
    pub max_idle_connections_percent: u32,
}

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Database name as the backend sees it.
    pub database: String,
    /// User name.
    pub user: String,
    /// The endpoint its clients came in on: the writer's pools and the readers' are apart.
    pub endpoint: Endpoint,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.endpoint {
            Endpoint::Writer => write!(f, "{}/{}", self.user, self.database),
            Endpoint::Reader => write!(f, "{}/{} (read-only)", self.user, self.database),
        }
    }
}

struct State {
    idle: VecDeque<ServerConn>,
    /// Open plus opening connections (each holds a Slot).
    open: usize,
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

/// A point-in-time view of a pool, for logs and the admin console.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    /// Which pool.
    pub key: PoolKey,
    /// Connections open or opening.
    pub open: usize,
    /// Of those, idle in the pool.
    pub idle: usize,
    /// Clients waiting.
    pub waiting: usize,
}

/// An idle backend connection, for `SHOW SERVERS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleServer {
    /// The PostgreSQL backend process id.
    pub pid: i32,
    /// Since it logged in.
    pub age: Duration,
    /// Since it was last returned to the pool.
    pub idle_for: Duration,
}

/// One (database, user) pool.
pub struct Pool {
    /// Which pool.
    pub key: PoolKey,
    /// Measurements (RDS Proxy's per-proxy CloudWatch set, per pool here).
    pub stats: PoolStats,
    settings: Mutex<PoolSettings>,
    /// True while an operator has paused this pool (PAUSE in the console).
    paused: tokio::sync::watch::Sender<bool>,
    /// Clients held back by the pause (they have not joined `waiters` yet).
    paused_waiting: Gauge,
    connector: Arc<Connector>,
    global: Arc<Global>,
    state: Mutex<State>,
    credential: Mutex<Option<Credential>>,
    baseline: Mutex<Option<ParamSet>>,
    /// Notices idle connections the server ended.
    watch: idle::IdleWatch,
    /// How many times this pool saw a backend die. A connection that was already open at
    /// the latest death (its `loss_epoch` is older) proves it is alive with one round trip
    /// before it is lent: a restart or failover kills every backend at once, and the next
    /// borrows would otherwise race their goodbyes (see `borrow.rs`, `proven`).
    loss_epoch: std::sync::atomic::AtomicU64,
    weak_self: Weak<Pool>,
}

impl Pool {
    fn new(
        key: PoolKey,
        settings: PoolSettings,
        connector: Arc<Connector>,
        global: Arc<Global>,
    ) -> Arc<Pool> {
        let pool = Arc::new_cyclic(|weak| Pool {
            key,
            stats: PoolStats::default(),
            settings: Mutex::new(settings),
            paused: tokio::sync::watch::channel(false).0,
            paused_waiting: Gauge::default(),
            connector,
            global: global.clone(),
            state: Mutex::new(State {
                idle: VecDeque::new(),
                open: 0,
                waiters: VecDeque::new(),
            }),
            credential: Mutex::new(None),
            baseline: Mutex::new(None),
            watch: idle::IdleWatch::new(),
            loss_epoch: std::sync::atomic::AtomicU64::new(0),
            weak_self: weak.clone(),
        });
        global.register(Arc::downgrade(&pool));
        pool.watch.start(Arc::downgrade(&pool));
        pool
    }

    /// The limits in force (they change on reload).
    pub fn settings(&self) -> PoolSettings {
        *lock(&self.settings)
    }

    /// Applies reloaded limits; a larger pool serves its waiters at once, a smaller one closes
    /// idle connections over the new size now and borrowed ones as they come back.
    pub fn update_settings(&self, settings: PoolSettings) {
        *lock(&self.settings) = settings;
        let surplus: Vec<_> = {
            let mut st = lock(&self.state);
            let excess = st.open.saturating_sub(settings.pool_size);
            let n = excess.min(st.idle.len());
            st.idle.drain(..n).collect()
        };
        for _ in &surplus {
            self.global.remove_idle();
        }
        close_all(surplus);
        let _ = self.grant_waiters();
    }

    /// Stops lending connections (running transactions finish) or starts again. While paused,
    /// returned connections stay idle instead of going to queued clients, so once nothing is
    /// lent nothing will be until resume.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
        if paused {
            return;
        }
        // Clients queued before the pause were held back: idle connections first, then room.
        loop {
            let conn = {
                let mut st = lock(&self.state);
                if st.waiters.is_empty() {
                    break;
                }
                let Some(conn) = st.idle.pop_back() else {
                    break;
                };
                self.global.remove_idle();
                conn
            };
            self.put(conn);
        }
        let _ = self.grant_waiters();
    }

    /// Records that a backend of this pool died (lost under a request, found dead idle, or a
    /// connection attempt failed the way a down server fails).
    pub fn note_loss(&self) {
        self.loss_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The number of backend deaths seen so far (see `loss_epoch`).
    pub(super) fn loss_epoch(&self) -> u64 {
        self.loss_epoch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Records how to log in as this pool's user (the latest client's proof).
    pub fn set_credential(&self, cred: Credential) {
        *lock(&self.credential) = Some(cred);
    }

    /// The settings a fresh backend of this pool starts with, once one has connected.
    pub fn baseline(&self) -> Option<ParamSet> {
        lock(&self.baseline).clone()
    }

    /// Whether a first connection has told the pool the server's defaults yet.
    pub fn has_baseline(&self) -> bool {
        lock(&self.baseline).is_some()
    }

    /// No connections open or opening, nobody waiting, no clients: nothing lost by freeing it.
    pub(super) fn is_empty(&self) -> bool {
        let st = lock(&self.state);
        st.open == 0
            && st.idle.is_empty()
            && st.waiters.is_empty()
            && self.paused_waiting.get() == 0
            && self.stats.clients.get() == 0
    }

    /// Counts for display.
    pub fn snapshot(&self) -> PoolSnapshot {
        let st = lock(&self.state);
        PoolSnapshot {
            key: self.key.clone(),
            open: st.open,
            idle: st.idle.len(),
            waiting: st.waiters.len() + self.paused_waiting.get() as usize,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.watch.stop();
    }
}

/// Ends a connection politely (Terminate) in the background; its slot frees when it drops.
pub fn close(conn: ServerConn) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(conn.terminate());
        }
        Err(_) => drop(conn),
    }
}

/// Takes one off a gauge when dropped.
pub(super) struct DecOnDrop<'a>(&'a Gauge);

impl Drop for DecOnDrop<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(super) fn close_all(conns: Vec<ServerConn>) {
    for c in conns {
        close(c);
    }
}

//! Backend connection pools: one per (database, user), each bounded by `pool_size`, all
//! together bounded by the global cap. A client that finds no free connection waits in a FIFO
//! queue up to `connection_borrow_timeout`.
//!
//! Every open (or opening) connection holds a [`Slot`]; dropping the slot — however the
//! connection ends — gives the place back and hands it to the next waiter, so counts cannot
//! leak when a session dies mid-borrow.

pub mod error;
pub mod global;
pub mod slot;

pub use error::PoolError;
pub use global::Global;
pub use slot::Slot;

use crate::backend::{Connector, Credential, ServerConn};
use crate::metrics::{Gauge, PoolStats};
use crate::params::ParamSet;
use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tollgate_wire::TxStatus;

/// A connection returned to the pool less than this long ago is lent without the liveness
/// probe (a non-blocking read, one syscall): at high rates most borrows take a connection
/// returned microseconds earlier (PgBouncer's server_check_delay plays the same role).
const SERVER_CHECK_DELAY: Duration = Duration::from_secs(1);

/// Limits every pool shares.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Per-pool cap.
    pub pool_size: usize,
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
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.database)
    }
}

/// What a waiting client is handed. (Moved once per hand-off; boxing would cost an allocation.)
#[allow(clippy::large_enum_variant)]
enum Grant {
    /// A ready connection.
    Conn(ServerConn),
    /// Room to open a new one.
    Permit(Slot),
}

/// Result of trying to serve waiters.
pub(crate) enum GrantOutcome {
    /// Waiters remain that only the global cap holds back.
    StillBlocked,
    /// Nothing more to do.
    Done,
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
            weak_self: weak.clone(),
        });
        global.register(Arc::downgrade(&pool));
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

    /// The idle connections, oldest first, for `SHOW SERVERS` (borrowed ones are found through
    /// the clients holding them).
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        let st = lock(&self.state);
        st.idle
            .iter()
            .map(|c| IdleServer {
                pid: c.cancel.process_id,
                age: c.created.elapsed(),
                idle_for: c.idle_since.elapsed(),
            })
            .collect()
    }

    /// A slot if this pool and the global cap both have room.
    fn try_slot(&self, st: &mut State) -> Option<Slot> {
        if st.open < self.settings().pool_size && self.global.try_acquire() {
            st.open += 1;
            Some(Slot::new(self.weak_self.clone(), self.global.clone()))
        } else {
            None
        }
    }

    /// Borrows a connection: an idle one, a new one, or the next one freed within the borrow
    /// timeout, in arrival order.
    pub async fn get(&self) -> Result<ServerConn, PoolError> {
        let started = Instant::now();
        self.stats.connection_requests.inc();
        let result = self.get_inner(started).await;
        match &result {
            Ok(_) => self.stats.borrow_latency.record_since(started),
            Err(PoolError::Exhausted { .. }) => self.stats.borrow_timeouts.inc(),
            Err(_) => {}
        }
        result
    }

    async fn get_inner(&self, started: Instant) -> Result<ServerConn, PoolError> {
        let deadline = tokio::time::Instant::now() + self.settings().borrow_timeout;
        if self.is_paused() {
            let mut paused = self.paused.subscribe();
            self.paused_waiting.inc();
            // Counted as waiting however the wait ends (the future may be dropped).
            let _waiting = DecOnDrop(&self.paused_waiting);
            if tokio::time::timeout_at(deadline, paused.wait_for(|p| !*p))
                .await
                .is_err()
            {
                return Err(PoolError::Paused {
                    pool: self.key.to_string(),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
        }
        let mut stale = Vec::new();
        #[allow(clippy::large_enum_variant)]
        enum Next {
            Ready(ServerConn),
            Open(Slot),
            Wait(oneshot::Receiver<Grant>, bool),
        }
        let next = {
            let mut st = lock(&self.state);
            loop {
                match st.idle.pop_back() {
                    Some(mut conn) => {
                        self.global.remove_idle();
                        if conn.created.elapsed() >= self.settings().server_lifetime
                            || (conn.idle_since.elapsed() >= SERVER_CHECK_DELAY
                                && !conn.looks_alive())
                        {
                            stale.push(conn);
                            continue;
                        }
                        break Next::Ready(conn);
                    }
                    None => match self.try_slot(&mut st) {
                        Some(slot) => break Next::Open(slot),
                        None => {
                            let (tx, rx) = oneshot::channel();
                            st.waiters.push_back(tx);
                            let global_bound = st.open < self.settings().pool_size;
                            break Next::Wait(rx, global_bound);
                        }
                    },
                }
            }
        };
        close_all(stale);
        match next {
            Next::Ready(conn) => Ok(conn),
            Next::Open(slot) => Box::pin(self.open(slot)).await,
            Next::Wait(mut rx, global_bound) => {
                if global_bound {
                    self.global.mark_blocked(self.weak_self.clone());
                    if self.global.evict_idle_elsewhere(self) {
                        self.global.wake_blocked();
                    }
                }
                let grant = match tokio::time::timeout_at(deadline, &mut rx).await {
                    Ok(Ok(grant)) => grant,
                    Ok(Err(_)) => return Err(PoolError::ShuttingDown),
                    Err(_) => {
                        // A grant may have raced the timer: take it rather than lose it.
                        rx.close();
                        match rx.try_recv() {
                            Ok(grant) => grant,
                            Err(_) => return Err(self.exhausted(started.elapsed(), global_bound)),
                        }
                    }
                };
                match grant {
                    Grant::Conn(conn) => Ok(conn),
                    Grant::Permit(slot) => Box::pin(self.open(slot)).await,
                }
            }
        }
    }

    fn exhausted(&self, waited: Duration, global_cap: bool) -> PoolError {
        let st = lock(&self.state);
        let limit = if global_cap {
            self.global.max_open()
        } else {
            self.settings().pool_size
        };
        let in_use = if global_cap {
            self.global.open()
        } else {
            st.open
        };
        PoolError::Exhausted {
            pool: self.key.to_string(),
            limit,
            in_use,
            waited_secs: waited.as_secs().max(1),
            global_cap,
        }
    }

    async fn open(&self, slot: Slot) -> Result<ServerConn, PoolError> {
        let cred = lock(&self.credential)
            .clone()
            .ok_or(PoolError::ShuttingDown)?;
        let mut conn = match self
            .connector
            .connect(&self.key.user, &self.key.database, &cred)
            .await
        {
            Ok(c) => {
                self.stats.setup_succeeded.inc();
                self.global.set_available(true);
                c
            }
            Err(e) => {
                self.stats.setup_failed.inc();
                if !e.is_server_error() {
                    self.global.set_available(false);
                }
                return Err(e.into());
            }
        };
        conn.slot = Some(slot);
        {
            let mut baseline = lock(&self.baseline);
            if baseline.is_none() {
                *baseline = Some(conn.params.clone());
            }
        }
        if self.global.max_open() == usize::MAX {
            match conn.simple_query("SHOW max_connections").await {
                Ok(Some(v)) => match v.parse::<usize>() {
                    Ok(n) => self.global.set_limits(
                        n,
                        self.settings().max_connections_percent,
                        self.settings().max_idle_connections_percent,
                    ),
                    Err(_) => {
                        tracing::warn!(value = %v, "could not read max_connections; no global cap")
                    }
                },
                Ok(None) => tracing::warn!("SHOW max_connections returned nothing; no global cap"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(conn)
    }

    /// Gives a connection back after use. Broken, mid-transaction or over-age connections are
    /// closed instead of lent again.
    pub fn put(&self, conn: ServerConn) {
        if conn.broken
            || conn.tx_status != TxStatus::Idle
            || conn.created.elapsed() >= self.settings().server_lifetime
        {
            close(conn);
            return;
        }
        if lock(&self.state).open > self.settings().pool_size {
            // The pool shrank on reload: close what is over the new size, even with clients
            // waiting (they are served as the closed connections' slots free up).
            close(conn);
            return;
        }
        let paused = self.is_paused();
        let surplus = {
            let mut st = lock(&self.state);
            let mut item = Grant::Conn(conn);
            // While paused, queued clients stay queued until resume.
            if !paused {
                while let Some(tx) = st.waiters.pop_front() {
                    match tx.send(item) {
                        Ok(()) => return,
                        Err(back) => item = back,
                    }
                }
            }
            match item {
                Grant::Conn(mut c) if self.global.try_add_idle() => {
                    c.idle_since = Instant::now();
                    st.idle.push_back(c);
                    None
                }
                Grant::Conn(c) => Some(c),
                Grant::Permit(_) => None,
            }
        };
        if let Some(c) = surplus {
            close(c);
        }
    }

    /// Called by a dropped slot: one fewer open connection here; serve waiters.
    pub(crate) fn slot_freed(&self) {
        {
            let mut st = lock(&self.state);
            st.open = st.open.saturating_sub(1);
        }
        let _ = self.grant_waiters();
    }

    /// Hands permits to waiters while there is room.
    pub(crate) fn grant_waiters(&self) -> GrantOutcome {
        if self.is_paused() {
            // Resume serves them.
            return GrantOutcome::Done;
        }
        let mut undelivered = Vec::new();
        let outcome = {
            let mut st = lock(&self.state);
            loop {
                if st.waiters.is_empty() {
                    break GrantOutcome::Done;
                }
                let Some(slot) = self.try_slot(&mut st) else {
                    break if st.open < self.settings().pool_size {
                        GrantOutcome::StillBlocked
                    } else {
                        GrantOutcome::Done
                    };
                };
                let mut item = Grant::Permit(slot);
                while let Some(tx) = st.waiters.pop_front() {
                    match tx.send(item) {
                        Ok(()) => {
                            item = Grant::Permit(Slot::placeholder());
                            break;
                        }
                        Err(back) => item = back,
                    }
                }
                if let Grant::Permit(slot) = item {
                    if !slot.is_placeholder() {
                        // Nobody took it: give the room back once the lock is released.
                        undelivered.push(slot);
                        break GrantOutcome::Done;
                    }
                }
            }
        };
        if matches!(outcome, GrantOutcome::StillBlocked) {
            self.global.mark_blocked(self.weak_self.clone());
        }
        drop(undelivered);
        outcome
    }

    /// Closes one idle connection (for another pool that needs the global room).
    pub(crate) fn evict_one_idle(&self) -> bool {
        let conn = {
            let mut st = lock(&self.state);
            st.idle.pop_front()
        };
        match conn {
            Some(c) => {
                self.global.remove_idle();
                close(c);
                true
            }
            None => false,
        }
    }

    /// Closes idle connections past server_idle_timeout or server_lifetime.
    pub fn maintain(&self) {
        let mut expired = Vec::new();
        {
            let mut st = lock(&self.state);
            let (idle_to, life) = (
                self.settings().server_idle_timeout,
                self.settings().server_lifetime,
            );
            let mut keep = VecDeque::with_capacity(st.idle.len());
            while let Some(mut c) = st.idle.pop_front() {
                if c.idle_since.elapsed() >= idle_to
                    || c.created.elapsed() >= life
                    || !c.looks_alive()
                {
                    self.global.remove_idle();
                    expired.push(c);
                } else {
                    keep.push_back(c);
                }
            }
            st.idle = keep;
        }
        if !expired.is_empty() {
            tracing::debug!(pool = %self.key, closed = expired.len(), "closed idle backend connections");
        }
        close_all(expired);
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        let idle: Vec<_> = {
            let mut st = lock(&self.state);
            st.idle.drain(..).collect()
        };
        for _ in &idle {
            self.global.remove_idle();
        }
        close_all(idle);
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
struct DecOnDrop<'a>(&'a Gauge);

impl Drop for DecOnDrop<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn close_all(conns: Vec<ServerConn>) {
    for c in conns {
        close(c);
    }
}

/// All pools, created on first use.
pub struct Pools {
    settings: Mutex<PoolSettings>,
    /// Databases paused by an operator (`*` for all).
    paused: Mutex<std::collections::BTreeSet<String>>,
    connector: Arc<Connector>,
    global: Arc<Global>,
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// An empty set of pools.
    pub fn new(settings: PoolSettings, connector: Arc<Connector>) -> Self {
        Pools {
            settings: Mutex::new(settings),
            paused: Mutex::new(Default::default()),
            connector,
            global: Arc::new(Global::default()),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for (database, user), created if new.
    pub fn get_or_create(&self, key: PoolKey) -> Arc<Pool> {
        let settings = *lock(&self.settings);
        let paused = {
            let set = lock(&self.paused);
            set.contains("*") || set.contains(&key.database)
        };
        let mut map = lock(&self.map);
        map.entry(key.clone())
            .or_insert_with(|| {
                let pool = Pool::new(key, settings, self.connector.clone(), self.global.clone());
                pool.set_paused(paused);
                pool
            })
            .clone()
    }

    /// The connector (for cancels).
    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    /// The global counters.
    pub fn global(&self) -> &Arc<Global> {
        &self.global
    }

    /// Every pool.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        lock(&self.map).values().cloned().collect()
    }

    /// Applies reloaded limits to every pool and to pools created from now on.
    pub fn update_settings(&self, settings: PoolSettings) {
        *lock(&self.settings) = settings;
        self.global.update_percents(
            settings.max_connections_percent,
            settings.max_idle_connections_percent,
        );
        for p in self.all() {
            p.update_settings(settings);
        }
        // A higher global cap lets pools that were blocked on it open connections now.
        self.global.wake_blocked();
    }

    /// Pauses (or resumes) the pools of `database`, or all pools for `None`; returns how many.
    pub fn set_paused(&self, database: Option<&str>, paused: bool) -> usize {
        {
            let mut set = lock(&self.paused);
            let key = database.unwrap_or("*").to_string();
            if paused {
                set.insert(key);
            } else if database.is_none() {
                set.clear();
            } else {
                set.remove(&key);
            }
        }
        let pools: Vec<_> = self
            .all()
            .into_iter()
            .filter(|p| database.is_none_or(|d| p.key.database == d))
            .collect();
        for p in &pools {
            p.set_paused(paused);
        }
        pools.len()
    }

    /// Snapshots of every pool.
    pub fn snapshots(&self) -> Vec<PoolSnapshot> {
        let pools: Vec<_> = lock(&self.map).values().cloned().collect();
        pools.iter().map(|p| p.snapshot()).collect()
    }

    /// Runs idle/lifetime housekeeping on every pool.
    pub fn maintain(&self) {
        let pools: Vec<_> = lock(&self.map).values().cloned().collect();
        for p in pools {
            p.maintain();
        }
    }

    /// Closes all idle connections (shutdown).
    pub fn close_idle(&self) {
        let pools: Vec<_> = lock(&self.map).values().cloned().collect();
        for p in pools {
            p.close_idle();
        }
    }
}

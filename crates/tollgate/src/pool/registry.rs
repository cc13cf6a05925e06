//! The set of pools, one per (database, user), created on first use and freed when nobody has
//! used them for a while.
//!
//! Clients choose the (database, user) pair, so without freeing, a client looping over made-up
//! database names would grow the map (and every scrape of `/metrics`) without bound. A pool is
//! freed once nothing refers to it but this map (no client session holds it, so no clients
//! and no waiters) and it has no connections open, after [`linger`] of being so; and at once
//! when a new pool needs the room under `max_pools`. Beyond that, a login that needs one more
//! pool is refused ([`PoolError::TooManyPools`]).

use super::{Global, Pool, PoolError, PoolKey, PoolSettings, PoolSnapshot};
use crate::backend::Connector;
use crate::metrics::snapshot::Totals;
use crate::metrics::Counter;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest an unused pool is kept (shorter with a smaller server_idle_timeout).
const MAX_LINGER: Duration = Duration::from_secs(60);

/// How long a pool stays after it became unused: min(server_idle_timeout, 60 s). Keeping it
/// a while saves nothing but its counters; the next login recreates it cheaply.
fn linger(settings: &PoolSettings) -> Duration {
    settings.server_idle_timeout.min(MAX_LINGER)
}

struct Entry {
    pool: Arc<Pool>,
    /// Since when `maintain` has seen it unused (`None`: in use at the last look).
    unused_since: Option<Instant>,
}

impl Entry {
    /// Nobody can start using it without going through the map (whose lock the caller holds):
    /// sessions hold an `Arc`, connections and the global cap only a `Weak`.
    fn unused(&self) -> bool {
        Arc::strong_count(&self.pool) == 1 && self.pool.is_empty()
    }
}

/// All pools, created on first use.
pub struct Pools {
    settings: Mutex<PoolSettings>,
    /// Databases paused by an operator (`*` for all).
    paused: Mutex<std::collections::BTreeSet<String>>,
    connector: Arc<Connector>,
    global: Arc<Global>,
    map: Mutex<HashMap<PoolKey, Entry>>,
    /// The counters of freed pools, so process-wide totals never go backwards.
    retired: Mutex<Totals>,
    /// Pools freed since start.
    freed: Counter,
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
            retired: Mutex::new(Totals::default()),
            freed: Counter::default(),
        }
    }

    /// The pool for (database, user), created if new; refused when `max_pools` pools are in
    /// use (unused ones are freed first to make room).
    pub fn get_or_create(&self, key: PoolKey) -> Result<Arc<Pool>, PoolError> {
        let settings = *lock(&self.settings);
        let paused = {
            let set = lock(&self.paused);
            set.contains("*") || set.contains(&key.database)
        };
        let mut freed = Vec::new();
        let result = {
            let mut map = lock(&self.map);
            if let Some(e) = map.get(&key) {
                return Ok(e.pool.clone());
            }
            if map.len() >= settings.max_pools {
                freed = self.free_unused(&mut map, None);
            }
            if map.len() >= settings.max_pools {
                Err(PoolError::TooManyPools {
                    limit: settings.max_pools,
                })
            } else {
                let pool = Pool::new(
                    key.clone(),
                    settings,
                    self.connector.clone(),
                    self.global.clone(),
                );
                pool.set_paused(paused);
                map.insert(
                    key,
                    Entry {
                        pool: pool.clone(),
                        unused_since: None,
                    },
                );
                Ok(pool)
            }
        };
        self.after_free(freed);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "refusing a login that needs a new pool");
        }
        result
    }

    /// Removes the unused pools (those unused for at least `linger`, or all unused ones for
    /// `None`) and folds their counters into the retired totals. The caller drops them
    /// outside the map's lock ([`Pools::after_free`]).
    fn free_unused(
        &self,
        map: &mut HashMap<PoolKey, Entry>,
        linger: Option<Duration>,
    ) -> Vec<Arc<Pool>> {
        let now = Instant::now();
        let keys: Vec<PoolKey> = map
            .iter()
            .filter(|(_, e)| {
                e.unused()
                    && linger.is_none_or(|l| {
                        e.unused_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= l)
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut freed = Vec::with_capacity(keys.len());
        let mut retired = lock(&self.retired);
        for k in keys {
            if let Some(e) = map.remove(&k) {
                retired.add(&e.pool.stats);
                freed.push(e.pool);
            }
        }
        freed
    }

    fn after_free(&self, freed: Vec<Arc<Pool>>) {
        if freed.is_empty() {
            return;
        }
        self.freed.add(freed.len() as u64);
        for p in &freed {
            tracing::debug!(pool = %p.key, "freed an unused pool");
        }
        drop(freed);
        self.global.prune();
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
        lock(&self.map).values().map(|e| e.pool.clone()).collect()
    }

    /// Pools that exist now.
    pub fn count(&self) -> usize {
        lock(&self.map).len()
    }

    /// Pools freed since start.
    pub fn freed(&self) -> u64 {
        self.freed.get()
    }

    /// The summed counters of every freed pool (added to the live pools' for process totals).
    pub fn retired_totals(&self) -> Totals {
        *lock(&self.retired)
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
        self.all().iter().map(|p| p.snapshot()).collect()
    }

    /// Runs idle/lifetime housekeeping on every pool, then frees pools unused for their
    /// linger time.
    pub fn maintain(&self) {
        for p in self.all() {
            p.maintain();
        }
        let linger = linger(&lock(&self.settings));
        let freed = {
            let mut map = lock(&self.map);
            let now = Instant::now();
            for e in map.values_mut() {
                if e.unused() {
                    e.unused_since.get_or_insert(now);
                } else {
                    e.unused_since = None;
                }
            }
            self.free_unused(&mut map, Some(linger))
        };
        self.after_free(freed);
    }

    /// Closes idle connections to instances that no longer serve their pool's endpoint (the
    /// writer moved, an instance went down or left the reader set).
    pub fn close_unservable(&self) {
        for p in self.all() {
            p.close_idle_unservable();
        }
    }

    /// Closes all idle connections (shutdown).
    pub fn close_idle(&self) {
        for p in self.all() {
            p.close_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_pools: usize, server_idle_timeout: Duration) -> PoolSettings {
        PoolSettings {
            pool_size: 2,
            max_pools,
            borrow_timeout: Duration::from_secs(1),
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout,
            max_connections_percent: 100,
            max_idle_connections_percent: 50,
        }
    }

    fn pools(max_pools: usize, server_idle_timeout: Duration) -> Pools {
        let upstream = crate::config::upstream::parse_upstream("postgres://127.0.0.1:1/x").unwrap();
        let topology = crate::topology::Topology::single(&upstream);
        let connector = Connector::new(upstream, Duration::from_secs(1), None, topology).unwrap();
        Pools::new(
            settings(max_pools, server_idle_timeout),
            Arc::new(connector),
        )
    }

    fn key(db: &str) -> PoolKey {
        PoolKey {
            database: db.into(),
            user: "app".into(),
            endpoint: crate::topology::Endpoint::Writer,
        }
    }

    #[test]
    fn a_pool_nobody_uses_is_freed_after_its_linger_and_its_counts_stay_in_the_totals() {
        let pools = pools(10, Duration::ZERO);
        let held = pools.get_or_create(key("a")).unwrap();
        held.stats.queries.add(5);
        pools.maintain();
        assert_eq!(pools.count(), 1, "a pool a session holds is kept");
        drop(held);
        pools.maintain();
        assert_eq!((pools.count(), pools.freed()), (0, 1));
        assert_eq!(pools.retired_totals().queries, 5);
        assert!(pools.snapshots().is_empty());
        // Asking again makes a fresh pool.
        let again = pools.get_or_create(key("a")).unwrap();
        assert_eq!(again.stats.queries.get(), 0);
    }

    #[test]
    fn an_unused_pool_is_kept_for_its_linger_time() {
        let pools = pools(10, Duration::from_secs(600));
        drop(pools.get_or_create(key("a")).unwrap());
        pools.maintain();
        pools.maintain();
        assert_eq!(pools.count(), 1, "60 s have not passed");
    }

    #[test]
    fn past_max_pools_unused_pools_make_room_and_busy_ones_refuse_with_53300() {
        let pools = pools(2, Duration::from_secs(600));
        let a = pools.get_or_create(key("a")).unwrap();
        drop(pools.get_or_create(key("b")).unwrap());
        // b is unused: it makes room for c at once, linger or not.
        let c = pools.get_or_create(key("c")).unwrap();
        assert_eq!((pools.count(), pools.freed()), (2, 1));
        // a and c are held: d is refused.
        let Err(err) = pools.get_or_create(key("d")) else {
            panic!("a pool beyond max_pools was created");
        };
        assert_eq!(err.sqlstate(), "53300");
        assert!(err.to_string().contains("max_pools"), "{err}");
        // An existing pool is still handed out at the cap.
        assert!(Arc::ptr_eq(&pools.get_or_create(key("a")).unwrap(), &a));
        drop((a, c));
    }
}

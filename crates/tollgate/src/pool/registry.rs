//! The set of pools, one per (database, user), created on first use.

use super::{Global, Pool, PoolKey, PoolSettings, PoolSnapshot};
use crate::backend::Connector;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

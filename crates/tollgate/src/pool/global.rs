//! The cap on backend connections across all pools (RDS Proxy's MaxConnectionsPercent and
//! MaxIdleConnectionsPercent, as a share of the server's max_connections).

use super::Pool;
use crate::metrics::Counter;
use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};

/// Counters shared by every pool.
pub struct Global {
    /// The server's max_connections once read (0 until then), so a reload can recompute caps.
    server_max_connections: AtomicUsize,
    max_open: AtomicUsize,
    max_idle: AtomicUsize,
    open: AtomicUsize,
    idle: AtomicUsize,
    /// Pools with clients waiting because the global cap (not their own) is reached.
    blocked: Mutex<VecDeque<Weak<Pool>>>,
    /// Every pool, for evicting idle connections when another pool needs the room.
    all: Mutex<Vec<Weak<Pool>>>,
    /// Whether the database answered the last connection attempt or probe.
    available: std::sync::atomic::AtomicBool,
    /// Idle connections found dead (the server ended them) and closed, all pools ever.
    closed_dead_idle: Counter,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            server_max_connections: AtomicUsize::new(0),
            max_open: AtomicUsize::new(usize::MAX),
            max_idle: AtomicUsize::new(usize::MAX),
            open: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            blocked: Mutex::new(VecDeque::new()),
            all: Mutex::new(Vec::new()),
            available: std::sync::atomic::AtomicBool::new(true),
            closed_dead_idle: Counter::default(),
        }
    }
}

impl Global {
    /// Sets the caps once the server's max_connections is known.
    pub fn set_limits(&self, max_connections: usize, open_pct: u32, idle_pct: u32) {
        let open = (max_connections * open_pct as usize / 100).max(1);
        let idle = max_connections * idle_pct as usize / 100;
        self.server_max_connections
            .store(max_connections, Ordering::Relaxed);
        self.max_open.store(open, Ordering::Relaxed);
        self.max_idle.store(idle, Ordering::Relaxed);
        tracing::info!(
            max_connections,
            max_open = open,
            max_idle = idle,
            "backend connection caps set"
        );
    }

    /// Recomputes the caps from reloaded percentages (once max_connections is known).
    pub fn update_percents(&self, open_pct: u32, idle_pct: u32) {
        let n = self.server_max_connections.load(Ordering::Relaxed);
        if n > 0 {
            self.set_limits(n, open_pct, idle_pct);
        }
    }

    /// Records whether the database is reachable.
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::Relaxed);
    }

    /// Whether the database was reachable at the last attempt.
    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// The cap on idle connections (usize::MAX until known).
    pub fn max_idle(&self) -> usize {
        self.max_idle.load(Ordering::Relaxed)
    }

    /// The cap on open connections (usize::MAX until known).
    pub fn max_open(&self) -> usize {
        self.max_open.load(Ordering::Relaxed)
    }

    /// Connections open across all pools.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Idle connections across all pools.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// Idle connections the server ended that were closed before anyone borrowed them
    /// (counted here, not per pool, so the total survives pools being freed).
    pub fn closed_dead_idle(&self) -> u64 {
        self.closed_dead_idle.get()
    }

    pub(super) fn count_dead_idle(&self, n: usize) {
        self.closed_dead_idle.add(n as u64);
    }

    /// Forgets pools that were freed (their weak references no longer upgrade).
    pub(super) fn prune(&self) {
        lock(&self.all).retain(|p| p.strong_count() > 0);
        lock(&self.blocked).retain(|p| p.strong_count() > 0);
    }

    pub(super) fn try_acquire(&self) -> bool {
        let max = self.max_open();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn release(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether one more idle connection may be kept.
    pub(super) fn try_add_idle(&self) -> bool {
        let max = self.max_idle.load(Ordering::Relaxed);
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn remove_idle(&self) {
        let _ = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub(super) fn register(&self, pool: Weak<Pool>) {
        lock(&self.all).push(pool);
    }

    pub(super) fn mark_blocked(&self, pool: Weak<Pool>) {
        let mut blocked = lock(&self.blocked);
        if !blocked.iter().any(|p| p.ptr_eq(&pool)) {
            blocked.push_back(pool);
        }
    }

    /// A global slot freed: let pools blocked on the cap use it, oldest first.
    pub(super) fn wake_blocked(&self) {
        loop {
            let next = lock(&self.blocked).pop_front();
            let Some(weak) = next else { return };
            let Some(pool) = weak.upgrade() else { continue };
            match pool.grant_waiters() {
                // Still waiting on the global cap: keep its place at the front.
                super::GrantOutcome::StillBlocked => {
                    lock(&self.blocked).push_front(weak);
                    return;
                }
                super::GrantOutcome::Done => {}
            }
        }
    }

    /// Closes one idle connection in a pool other than `except`, freeing a global slot.
    pub(super) fn evict_idle_elsewhere(&self, except: &Pool) -> bool {
        let pools: Vec<_> = lock(&self.all).iter().filter_map(Weak::upgrade).collect();
        pools
            .iter()
            .filter(|p| !std::ptr::eq(p.as_ref(), except))
            .any(|p| p.evict_one_idle())
    }
}

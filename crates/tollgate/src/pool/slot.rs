//! A place in a pool, held by each open or opening backend connection.

use super::{Global, Pool};
use std::sync::{Arc, Weak};

/// Dropping it frees the place in its pool and in the global cap, and serves waiters.
pub struct Slot {
    pool: Weak<Pool>,
    global: Option<Arc<Global>>,
}

impl Slot {
    pub(super) fn new(pool: Weak<Pool>, global: Arc<Global>) -> Slot {
        Slot {
            pool,
            global: Some(global),
        }
    }

    /// A slot that holds nothing (marks a grant as delivered).
    pub(super) fn placeholder() -> Slot {
        Slot {
            pool: Weak::new(),
            global: None,
        }
    }

    pub(super) fn is_placeholder(&self) -> bool {
        self.global.is_none()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(global) = self.global.take() else {
            return;
        };
        global.release();
        if let Some(pool) = self.pool.upgrade() {
            pool.slot_freed();
        }
        global.wake_blocked();
    }
}

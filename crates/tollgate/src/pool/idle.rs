//! The idle list: connections waiting in the pool, their housekeeping (idle timeout, lifetime,
//! liveness) and eviction.

use super::{close, close_all, IdleServer, Pool};
use crate::sync::lock;
use std::collections::VecDeque;
use std::time::Duration;

/// A connection returned to the pool less than this long ago is lent without the liveness
/// probe (a non-blocking read, one syscall): at high rates most borrows take a connection
/// returned microseconds earlier (PgBouncer's server_check_delay plays the same role).
pub(super) const SERVER_CHECK_DELAY: Duration = Duration::from_secs(1);

impl Pool {
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

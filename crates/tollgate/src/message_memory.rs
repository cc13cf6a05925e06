//! One budget for the memory all sessions spend on large client messages read whole.
//!
//! `max_message_size` bounds one message; without a total, `max_client_conn` clients each
//! sending a message just under it (64 MiB × 20000) could make the process allocate far more
//! than the machine has, and the kernel's OOM killer would end every session at once. Each
//! session charges the capacity of its client read buffer beyond the usual size here before a
//! read may grow it, and a session that would pass `max_message_memory` is refused (53200)
//! instead: the one client with the message is told, the rest lose nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes currently charged by all sessions.
#[derive(Debug, Default)]
pub struct MessageMemory {
    used: AtomicUsize,
}

impl MessageMemory {
    /// An empty budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A session's charge, empty to start with.
    pub fn charge(&self) -> Charge<'_> {
        Charge {
            memory: self,
            held: 0,
        }
    }
}

/// What one session has charged; given back when it is dropped.
#[derive(Debug)]
pub struct Charge<'a> {
    memory: &'a MessageMemory,
    held: usize,
}

impl Charge<'_> {
    /// Bytes this charge holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Makes the charge `bytes`; growing fails (leaving it as it was) when the total would pass
    /// `limit`. Shrinking always succeeds.
    pub fn set(&mut self, bytes: usize, limit: usize) -> bool {
        // The relay calls this every I/O step; the usual answer (no change) touches no
        // shared cache line.
        if bytes == self.held {
            return true;
        }
        if bytes < self.held {
            self.memory
                .used
                .fetch_sub(self.held - bytes, Ordering::Relaxed);
            self.held = bytes;
            return true;
        }
        let more = bytes - self.held;
        let grown = self
            .memory
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(more).filter(|total| *total <= limit)
            });
        if grown.is_ok() {
            self.held = bytes;
        }
        grown.is_ok()
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_to_the_limit_and_are_given_back() {
        let m = MessageMemory::new();
        let mut a = m.charge();
        let mut b = m.charge();
        assert!(a.set(600, 1000));
        assert!(!b.set(500, 1000), "600 + 500 passes 1000");
        assert_eq!((b.held(), m.used()), (0, 600));
        assert!(b.set(400, 1000));
        assert!(a.set(100, 1000), "shrinking always works");
        assert!(b.set(900, 1000));
        assert_eq!(m.used(), 1000);
        drop(b);
        assert_eq!(m.used(), 100);
        drop(a);
        assert_eq!(m.used(), 0);
    }
}

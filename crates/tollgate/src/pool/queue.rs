//! The per-pool FIFO of waiting clients and what they are granted: a returned connection or
//! room to open one.

use super::idle::Noticed;
use super::{close, Pool, Slot, State};
use crate::backend::ServerConn;
use crate::sync::lock;
use std::time::Instant;
use tollgate_wire::TxStatus;

/// What a waiting client is handed. (Moved once per hand-off; boxing would cost an allocation.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Grant {
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

impl Pool {
    /// A slot if this pool and the global cap both have room.
    pub(super) fn try_slot(&self, st: &mut State) -> Option<Slot> {
        if st.open < self.settings().pool_size && self.global.try_acquire() {
            st.open += 1;
            Some(Slot::new(self.weak_self.clone(), self.global.clone()))
        } else {
            None
        }
    }

    /// Borrows a connection: an idle one, a new one, or the next one freed within the borrow
    /// Gives a connection back after use. Broken, mid-transaction or over-age connections are
    /// closed instead of lent again.
    pub fn put(&self, conn: ServerConn) {
        let now = Instant::now();
        let serves = conn.lease.as_ref().is_none_or(|l| {
            self.connector
                .topology()
                .still_serves(self.key.endpoint, l.target())
        });
        if conn.broken
            || !serves
            || conn.tx_status != TxStatus::Idle
            || now.saturating_duration_since(conn.created) >= self.settings().server_lifetime
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
        let mut dead = None;
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
                Grant::Conn(mut c) => {
                    // Registers it with the idle watch (idle.rs); readable already means dead.
                    if !c.watch_idle(self.watch.waker()) {
                        dead = Some(c);
                        None
                    } else if self.global.try_add_idle() {
                        c.idle_since = now;
                        st.idle.push_back(c);
                        None
                    } else {
                        Some(c)
                    }
                }
                Grant::Permit(_) => None,
            }
        };
        if let Some(c) = surplus {
            close(c);
        }
        if let Some(c) = dead {
            self.closed_dead(vec![c], Noticed::Return);
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
}

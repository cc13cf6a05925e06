//! Borrowing: an idle connection, a new one, or a place in the FIFO queue until one frees up
//! within `connection_borrow_timeout`; and opening a new backend connection.

use super::idle::{Noticed, SERVER_CHECK_DELAY};
use super::queue::Grant;
use super::{close_all, DecOnDrop, Pool, PoolError, Slot};
use crate::backend::ServerConn;
use crate::sync::lock;
use crate::topology::Pick;
use std::time::{Duration, Instant};

/// First pause before retrying a connection that failed as a down server does.
const RETRY_FIRST: Duration = Duration::from_millis(25);
/// Longest pause between such retries (the health checks usually end the wait sooner).
const RETRY_MAX: Duration = Duration::from_millis(500);
use tokio::sync::oneshot;

impl Pool {
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
        loop {
            let candidate = self.next_conn(deadline, started).await?;
            if let Some(conn) = self.proven(candidate).await {
                return Ok(conn);
            }
        }
    }

    /// An idle connection that can be lent at once, with no wait and no round trip: the
    /// transaction-pooling fast path, which needs no future and allocates nothing. `None`
    /// (nothing idle, the pool paused, or the next idle one must first prove itself after a
    /// backend death) sends the caller to [`Pool::get`]. An idle connection means nobody is
    /// queued (a freed one goes to the first waiter), so taking it keeps arrival order.
    pub fn try_take_idle(&self) -> Option<ServerConn> {
        if self.is_paused() {
            return None;
        }
        // One clock read serves the age checks and the latency sample: taking an idle
        // connection is well under the histogram's 1 µs resolution, so it records as 1 µs.
        let now = Instant::now();
        let epoch = self.loss_epoch();
        let mut stale = Vec::new();
        let mut dead = Vec::new();
        let conn = {
            let mut st = lock(&self.state);
            self.pop_idle(&mut st, &mut stale, &mut dead, Some(epoch), now)
        };
        close_all(stale);
        self.closed_dead(dead, Noticed::Borrow);
        if conn.is_some() {
            self.stats.connection_requests.inc();
            self.stats
                .borrow_latency
                .record_at(std::time::Duration::ZERO, now);
        }
        conn
    }

    /// Takes the most recently returned idle connection that is still usable, setting aside
    /// the expired (`stale`) and the dead. With `epoch` (the fast path), stops at one that has
    /// not proved itself since the last backend death (leaving it idle) or at the first dead
    /// one (closing that starts a new epoch, which the next one must prove itself in).
    fn pop_idle(
        &self,
        st: &mut super::State,
        stale: &mut Vec<ServerConn>,
        dead: &mut Vec<ServerConn>,
        epoch: Option<u64>,
        now: Instant,
    ) -> Option<ServerConn> {
        loop {
            if let (Some(epoch), Some(next)) = (epoch, st.idle.back()) {
                if next.loss_epoch != epoch {
                    return None;
                }
            }
            let mut conn = st.idle.pop_back()?;
            self.global.remove_idle();
            if now.saturating_duration_since(conn.created) >= self.settings().server_lifetime {
                stale.push(conn);
                continue;
            }
            // See idle.rs: the readiness check is free, the peek only for connections idle
            // long enough not to be the hot path.
            if !conn.looks_alive()
                || (now.saturating_duration_since(conn.idle_since) >= SERVER_CHECK_DELAY
                    && !conn.peek_alive())
            {
                dead.push(conn);
                // A dead one means its neighbours may be dying too: closing it bumps the loss
                // epoch, so on the fast path stop here and let get() prove the next one.
                if epoch.is_some() {
                    return None;
                }
                continue;
            }
            return Some(conn);
        }
    }

    /// One try at a connection: an idle one, a new one, or one handed over in the queue.
    async fn next_conn(
        &self,
        deadline: tokio::time::Instant,
        started: Instant,
    ) -> Result<ServerConn, PoolError> {
        let mut stale = Vec::new();
        let mut dead = Vec::new();
        #[allow(clippy::large_enum_variant)]
        enum Next {
            Ready(ServerConn),
            Open(Slot),
            Wait(oneshot::Receiver<Grant>, bool),
        }
        let next = {
            let mut st = lock(&self.state);
            match self.pop_idle(&mut st, &mut stale, &mut dead, None, Instant::now()) {
                Some(conn) => Next::Ready(conn),
                None => match self.try_slot(&mut st) {
                    Some(slot) => Next::Open(slot),
                    None => {
                        let (tx, rx) = oneshot::channel();
                        st.waiters.push_back(tx);
                        let global_bound = st.open < self.settings().pool_size;
                        Next::Wait(rx, global_bound)
                    }
                },
            }
        };
        close_all(stale);
        self.closed_dead(dead, Noticed::Borrow);
        match next {
            Next::Ready(conn) => Ok(conn),
            Next::Open(slot) => Box::pin(self.open(slot, deadline, started)).await,
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
                    Grant::Permit(slot) => Box::pin(self.open(slot, deadline, started)).await,
                }
            }
        }
    }

    /// Lends `conn` if no backend of this pool died since it was opened or last proved alive;
    /// otherwise it first answers a Sync (one round trip, bounded by the connect timeout). A restart or failover kills every backend at once, but the first
    /// death is often seen before the others' goodbyes arrive: without this the next borrows
    /// would send requests to backends already dying, and a request that was written cannot
    /// be resent safely. `None`: it failed and was closed; the caller tries again.
    async fn proven(&self, mut conn: ServerConn) -> Option<ServerConn> {
        let epoch = self.loss_epoch();
        if conn.loss_epoch == epoch {
            return Some(conn);
        }
        match tokio::time::timeout(self.connector.timeout(), conn.sync_round_trip()).await {
            Ok(Ok(())) => {
                conn.loss_epoch = epoch;
                Some(conn)
            }
            Ok(Err(_)) | Err(_) => {
                conn.broken = true;
                self.closed_dead(vec![conn], Noticed::Proof);
                None
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

    /// Opens a connection on the instance the topology picks. A failure of the kind a
    /// restart or failover causes (refused, unanswered, 57P03 at login: see
    /// `BackendError::is_transient`) is waited out: the health checks are woken, and the
    /// attempt repeats on the next topology change or after a short backoff, until the
    /// borrow deadline. So clients meet a restart or a failover as latency, not as an error.
    async fn open(
        &self,
        slot: Slot,
        deadline: tokio::time::Instant,
        started: Instant,
    ) -> Result<ServerConn, PoolError> {
        let cred = lock(&self.credential)
            .clone()
            .ok_or(PoolError::ShuttingDown)?;
        let topology = self.connector.topology().clone();
        let mut changes = topology.subscribe();
        let mut backoff = RETRY_FIRST;
        // Read before connecting: a death seen while this one logs in makes it prove itself.
        let epoch = self.loss_epoch();
        let mut conn = loop {
            changes.borrow_and_update();
            let why = match topology.pick(self.key.endpoint) {
                Pick::Target(target) => match self
                    .connector
                    .connect(
                        &target,
                        self.key.endpoint,
                        &self.key.user,
                        &self.key.database,
                        &cred,
                    )
                    .await
                {
                    Ok(c) => {
                        self.stats.setup_succeeded.inc();
                        self.global.set_available(true);
                        topology.connect_succeeded(&target);
                        break c;
                    }
                    Err(e) if e.is_transient() => {
                        self.stats.setup_failed.inc();
                        self.global.set_available(false);
                        topology.connect_failed(&target, &e.to_string());
                        self.note_loss();
                        // Debug: the instance's state change is logged once by the topology;
                        // this repeats at every attempt of every waiting borrow.
                        tracing::debug!(pool = %self.key, target = %target.addr, error = %e,
                            "backend connection failed the way a restart or failover does; waiting and retrying");
                        e.to_string()
                    }
                    Err(e) => {
                        self.stats.setup_failed.inc();
                        return Err(e.into());
                    }
                },
                Pick::Wait(why) => why.to_string(),
                Pick::Refuse(why) => {
                    return Err(PoolError::NoTarget {
                        pool: self.key.to_string(),
                        why: why.to_string(),
                        waited_secs: 0,
                    })
                }
            };
            let wake = tokio::time::Instant::now() + backoff;
            tokio::select! {
                _ = tokio::time::sleep_until(wake.min(deadline)) => {}
                _ = changes.changed() => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
            if tokio::time::Instant::now() >= deadline {
                return Err(PoolError::NoTarget {
                    pool: self.key.to_string(),
                    why,
                    waited_secs: started.elapsed().as_secs(),
                });
            }
        };
        conn.slot = Some(slot);
        conn.loss_epoch = epoch;
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
}

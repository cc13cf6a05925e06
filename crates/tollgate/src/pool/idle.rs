//! The idle list: connections waiting in the pool, their housekeeping (idle timeout, lifetime,
//! liveness) and eviction.
//!
//! # Noticing dead idle connections
//!
//! The server ends idle sessions on its own: `pg_terminate_backend`, `idle_session_timeout`, a
//! restart or failover. It then sends an ErrorResponse (57P01 and friends) and closes, so an
//! idle connection whose socket turns readable is dead: an idle session is sent nothing else.
//! Finding that out only when the connection is lent hands the next client an error for a
//! connection it never used, so each pool *watches* its idle list:
//!
//! - [`IdleWatch`]: one task per pool (not per connection). Every idle connection's socket
//!   holds the same waker; when any of them turns readable the reactor wakes the task, which
//!   checks the idle list (a readiness check per connection, no syscall for the live ones) and
//!   closes the dead ones at once. Their slots free up, so waiters can open fresh ones.
//! - Registering costs no syscall: `put` polls the returned socket once with that waker, and
//!   tokio answers from its readiness bits (the relay's last read left them clear). A socket
//!   readable at that point is treated as dead too.
//! - At borrow: the same readiness check (free: it reads a bit the reactor set) catches a
//!   death the reactor reported but the watch task has not handled yet. A connection idle for
//!   at least [`SERVER_CHECK_DELAY`] also gets one `recv(MSG_PEEK)`, which sees what the reactor
//!   has not reported yet; one returned less than that ago skips it, so the hot path (a
//!   connection returned microseconds earlier and borrowed again) makes no extra syscall.
//! - After any backend of the pool died (`Pool::note_loss`), each connection that was open at
//!   that moment answers one Sync before it is lent (`Pool::proven` in borrow.rs). A restart
//!   or failover kills all backends at once and the first death is often seen before the
//!   others' goodbyes arrive; the checks above see only what has arrived, and a request
//!   written to a backend that then dies cannot be resent (it may have run).
//! - `maintain` (once a second) checks again with the watch's waker, as a backstop.

use super::{close, close_all, IdleServer, Pool};
use crate::backend::ServerConn;
use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;
use tokio::sync::Notify;

/// A connection idle at least this long also gets a kernel-level probe at borrow (one
/// `recv(MSG_PEEK)`); one returned more recently is lent on the watch and the readiness check
/// alone (PgBouncer's server_check_delay plays the same role).
pub(super) const SERVER_CHECK_DELAY: Duration = Duration::from_secs(1);

/// What noticed a dead idle connection (for the log line).
#[derive(Debug, Clone, Copy)]
pub(super) enum Noticed {
    /// The watch task, woken by the socket.
    Watch,
    /// `put`, registering it.
    Return,
    /// The check at borrow.
    Borrow,
    /// The once-a-second housekeeping.
    Maintain,
    /// Its round trip at borrow after a neighbour died (`Pool::proven`).
    Proof,
}

impl Noticed {
    fn as_str(self) -> &'static str {
        match self {
            Noticed::Watch => "watch",
            Noticed::Return => "return",
            Noticed::Borrow => "borrow",
            Noticed::Maintain => "maintain",
            Noticed::Proof => "proof",
        }
    }
}

/// Turns a socket's wake-up into a notification for the pool's watch task.
struct WatchWake(Notify);

impl Wake for WatchWake {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

/// One pool's watch over its idle connections (see the module docs).
pub(super) struct IdleWatch {
    wake: Arc<WatchWake>,
    waker: Waker,
}

impl IdleWatch {
    pub(super) fn new() -> IdleWatch {
        let wake = Arc::new(WatchWake(Notify::new()));
        IdleWatch {
            waker: Waker::from(wake.clone()),
            wake,
        }
    }

    /// The waker idle sockets hold.
    pub(super) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Starts the watch task (none outside a runtime: `maintain` and the borrow check remain).
    /// It holds the pool weakly and ends once the pool is gone ([`IdleWatch::stop`]).
    pub(super) fn start(&self, pool: Weak<Pool>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wake = self.wake.clone();
        handle.spawn(async move {
            loop {
                wake.0.notified().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.close_dead_idle();
            }
        });
    }

    /// Lets the task see that the pool is gone.
    pub(super) fn stop(&self) {
        self.wake.0.notify_one();
    }
}

impl Pool {
    /// Closes the idle connections whose sockets turned readable (the watch task's sweep);
    /// the live ones stay registered with the watch.
    fn close_dead_idle(&self) {
        let dead = {
            let mut st = lock(&self.state);
            let all = std::mem::take(&mut st.idle);
            let mut dead = Vec::new();
            for mut c in all {
                if c.watch_idle(self.watch.waker()) {
                    st.idle.push_back(c);
                } else {
                    dead.push(c);
                }
            }
            dead
        };
        for _ in &dead {
            self.global.remove_idle();
        }
        self.closed_dead(dead, Noticed::Watch);
    }

    /// Counts and logs idle connections found dead (already off the idle list and its count),
    /// and drops them: nothing is sent to a dead server, and their slots free up.
    pub(super) fn closed_dead(&self, dead: Vec<ServerConn>, noticed: Noticed) {
        if dead.is_empty() {
            return;
        }
        self.note_loss();
        self.global.count_dead_idle(dead.len());
        for c in dead {
            tracing::info!(pool = %self.key, pid = c.cancel.process_id,
                idle_ms = c.idle_since.elapsed().as_millis() as u64, noticed_by = noticed.as_str(),
                "idle backend connection was ended by the server; closed it");
            drop(c);
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

    /// Closes idle connections past server_idle_timeout or server_lifetime, or dead.
    pub fn maintain(&self) {
        let mut expired = Vec::new();
        let mut dead = Vec::new();
        {
            let mut st = lock(&self.state);
            let (idle_to, life) = (
                self.settings().server_idle_timeout,
                self.settings().server_lifetime,
            );
            let mut keep = VecDeque::with_capacity(st.idle.len());
            while let Some(mut c) = st.idle.pop_front() {
                if c.idle_since.elapsed() >= idle_to || c.created.elapsed() >= life {
                    self.global.remove_idle();
                    expired.push(c);
                } else if !c.watch_idle(self.watch.waker()) {
                    self.global.remove_idle();
                    dead.push(c);
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
        self.closed_dead(dead, Noticed::Maintain);
    }

    /// Closes idle connections whose instance no longer serves this pool's endpoint.
    pub fn close_idle_unservable(&self) {
        let topology = self.connector.topology();
        let gone: Vec<_> = {
            let mut st = lock(&self.state);
            let mut keep = VecDeque::with_capacity(st.idle.len());
            let mut gone = Vec::new();
            for c in st.idle.drain(..) {
                let serves = c
                    .lease
                    .as_ref()
                    .is_none_or(|l| topology.still_serves(self.key.endpoint, l.target()));
                if serves {
                    keep.push_back(c);
                } else {
                    gone.push(c);
                }
            }
            st.idle = keep;
            gone
        };
        if !gone.is_empty() {
            tracing::info!(pool = %self.key, closed = gone.len(),
                "closed idle backend connections to an instance that no longer serves this pool");
        }
        for _ in &gone {
            self.global.remove_idle();
        }
        close_all(gone);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CancelTarget, Connector, ServerConnData};
    use crate::pool::{Global, PoolKey, PoolSettings};
    use crate::stream::Stream;
    use bytes::{Bytes, BytesMut};
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connection as the pool holds it, and the "server" end of its socket.
    async fn conn_and_server(id: u64) -> (ServerConn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        let now = Instant::now();
        let conn = ServerConn::new(ServerConnData {
            stream: Stream::Plain(ours),
            rbuf: BytesMut::new(),
            params: Default::default(),
            extras: Vec::new(),
            cancel: CancelTarget {
                process_id: id as i32,
                secret: Bytes::new(),
                target: None,
            },
            id,
            created: now,
            idle_since: now,
            tx_status: tollgate_wire::TxStatus::Idle,
            broken: false,
            slot: None,
            lease: None,
            loss_epoch: 0,
            statements: Default::default(),
        });
        (conn, theirs)
    }

    fn pool() -> Arc<Pool> {
        let upstream = crate::config::upstream::parse_upstream("postgres://127.0.0.1:1/x").unwrap();
        let topology = crate::topology::Topology::single(&upstream);
        let connector = Connector::new(upstream, Duration::from_secs(1), None, topology).unwrap();
        let settings = PoolSettings {
            pool_size: 4,
            max_pools: 10,
            borrow_timeout: Duration::from_secs(1),
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            max_connections_percent: 100,
            max_idle_connections_percent: 50,
        };
        let key = PoolKey {
            database: "db".into(),
            user: "app".into(),
            endpoint: crate::topology::Endpoint::Writer,
        };
        Pool::new(
            key,
            settings,
            Arc::new(connector),
            Arc::new(Global::default()),
        )
    }

    /// Plays a live backend's part in one proof: reads the Sync, answers ReadyForQuery (idle).
    fn answer_sync(mut server: TcpStream) -> tokio::task::JoinHandle<TcpStream> {
        use tokio::io::AsyncReadExt;
        tokio::spawn(async move {
            let mut sync = [0u8; 5];
            server.read_exact(&mut sync).await.unwrap();
            assert_eq!(&sync, b"S\0\0\0\x04");
            server.write_all(b"Z\0\0\0\x05I").await.unwrap();
            server
        })
    }

    /// Waits (bounded) for the watch task to act; 10 ms is a poll period, not a guess at timing.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_ends_is_closed_without_a_borrow_or_housekeeping() {
        let pool = pool();
        let (doomed, mut server) = conn_and_server(1).await;
        let (live, live_server) = conn_and_server(2).await;
        pool.put(doomed);
        pool.put(live);
        assert_eq!(pool.snapshot().idle, 2);

        // What pg_terminate_backend sends an idle session: a FATAL ErrorResponse, then EOF.
        server.write_all(b"E\0\0\0\x04").await.unwrap();
        drop(server);
        until("the dead connection to leave the idle list", || {
            pool.snapshot().idle == 1
        })
        .await;
        assert_eq!(pool.global.closed_dead_idle(), 1);
        assert_eq!(
            pool.idle_servers()
                .iter()
                .map(|s| s.pid)
                .collect::<Vec<_>>(),
            [2]
        );
        // The live one is still lent, after proving itself (a neighbour died while it was
        // open: see `Pool::proven`).
        let answered = answer_sync(live_server);
        assert_eq!(pool.get().await.unwrap().id, 2);
        answered.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_borrowed_and_returned_stays_watched() {
        let pool = pool();
        let (conn, mut server) = conn_and_server(1).await;
        pool.put(conn);
        // A borrower's reads replace the watch's waker; putting it back registers it again.
        let conn = pool.get().await.unwrap();
        pool.put(conn);
        server.shutdown().await.unwrap();
        until("the closed connection to leave the idle list", || {
            pool.snapshot().idle == 0
        })
        .await;
        assert_eq!(pool.global.closed_dead_idle(), 1);
    }

    /// Puts `conn` on top of the idle list, idle for longer than SERVER_CHECK_DELAY (so a
    /// borrow peeks at its socket), then has its server end it and waits until the kernel has
    /// the FIN. It skips `put`, so the pool's watch never saw it: only the checks at borrow can
    /// catch it.
    async fn idle_and_ended_unwatched(pool: &Pool, mut conn: ServerConn, mut server: TcpStream) {
        conn.idle_since = Instant::now() - SERVER_CHECK_DELAY;
        lock(&pool.state).idle.push_back(conn);
        pool.global.try_add_idle();
        server.shutdown().await.unwrap();
        until("the FIN to arrive", || {
            lock(&pool.state)
                .idle
                .back()
                .is_some_and(|c| !c.peek_alive())
        })
        .await;
    }

    #[tokio::test]
    async fn an_idle_connection_is_probed_at_borrow_before_the_watch_runs() {
        let pool = pool();
        let (conn, server) = conn_and_server(1).await;
        idle_and_ended_unwatched(&pool, conn, server).await;
        // Nothing idle left alive: the borrow needs a new connection, which cannot be opened
        // here (no credential), so the error proves the dead one was not lent.
        assert!(pool.get().await.is_err());
        assert_eq!(pool.global.closed_dead_idle(), 1);
    }

    #[tokio::test]
    async fn after_a_death_a_connection_open_at_that_moment_answers_sync_before_it_is_lent() {
        use tokio::io::AsyncReadExt;
        let pool = pool();
        let (dying, dying_server) = conn_and_server(1).await;
        let (live, live_server) = conn_and_server(2).await;
        pool.put(live);
        pool.put(dying);
        // A neighbour died: both were open then. The dying one's backend has been signalled
        // but its goodbye has not arrived, so no readiness check or peek can see it yet.
        pool.note_loss();
        let answer = answer_sync(live_server);
        // The dying one (lent first: most recently returned) reads the Sync and exits with
        // quickdie's warning instead of an answer.
        let quit = tokio::spawn(async move {
            let mut server = dying_server;
            let mut sync = [0u8; 5];
            server.read_exact(&mut sync).await.unwrap();
            server.write_all(b"N\0\0\0\x04").await.unwrap();
        });
        let lent = pool.get().await.unwrap();
        assert_eq!(lent.id, 2, "the dying connection was lent");
        assert_eq!(pool.global.closed_dead_idle(), 1);
        quit.await.unwrap();
        let _server = answer.await.unwrap();
        // Proved once: lent again without another round trip (the server would not answer).
        pool.put(lent);
        assert_eq!(pool.get().await.unwrap().id, 2);
    }

    #[tokio::test]
    async fn the_fast_path_lends_a_proved_idle_connection_and_leaves_an_unproved_one() {
        let pool = pool();
        assert!(
            pool.try_take_idle().is_none(),
            "nothing idle: the caller waits in get()"
        );
        let (conn, server) = conn_and_server(1).await;
        pool.put(conn);
        let lent = pool
            .try_take_idle()
            .expect("an idle, proved connection is lent at once");
        assert_eq!(lent.id, 1);
        pool.put(lent);
        // After a death it must answer a Sync first, which only get() can wait for.
        pool.note_loss();
        assert!(pool.try_take_idle().is_none());
        let answer = answer_sync(server);
        assert_eq!(
            pool.get().await.unwrap().id,
            1,
            "still idle, proved by get()"
        );
        let _server = answer.await.unwrap();
    }

    #[tokio::test]
    async fn the_fast_path_stops_at_a_dead_connection_and_the_next_one_proves_itself() {
        let pool = pool();
        let (live, live_server) = conn_and_server(1).await;
        let (dying, dying_server) = conn_and_server(2).await;
        pool.put(live);
        // On top (lent first), idle long enough for the borrow to peek at it, and ended.
        idle_and_ended_unwatched(&pool, dying, dying_server).await;
        // Its neighbour may be dying too: not lent unproved.
        assert!(pool.try_take_idle().is_none());
        assert_eq!(pool.global.closed_dead_idle(), 1);
        let answer = answer_sync(live_server);
        assert_eq!(
            pool.get().await.unwrap().id,
            1,
            "lent after answering a Sync"
        );
        let _server = answer.await.unwrap();
    }
}

//! The relay: moves protocol messages between a logged-in client and the backend it holds,
//! reading only what routing needs (ReadyForQuery, ParameterStatus, FATAL errors from the
//! server; Query, Parse, Sync, Terminate from the client), and decides when the backend goes
//! back to the pool.
//!
//! Transaction boundaries come from "Message Flow": each Query, Sync or FunctionCall is answered
//! by exactly one ReadyForQuery, so a backend is free when every such request has its answer,
//! no extended-protocol batch is open, and the last status was `I` (idle).

use super::client::ClientConn;
use super::error::SessionError;
use super::lost::{self, Failure, Owed};
use super::prepared::ClientStatements;
use crate::backend::ServerConn;
use crate::cancel::CancelKey;
use crate::clients::{ClientInfo, ClientState};
use crate::config::{Config, PoolMode};
use crate::params::ParamSet;
use crate::pin::PinReason;
use crate::pool::Pool;
use crate::pool::PoolError;
use crate::shared::Shared;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tollgate_wire::flow::Flow;
use tollgate_wire::scanner::Scanner;
use tollgate_wire::{frontend, TxStatus};

/// How a session ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent Terminate.
    Terminated,
    /// The client closed the socket.
    Disconnected,
}

/// One client's relay state.
pub struct Relay<'a> {
    pub(super) shared: &'a Shared,
    pub(super) client: &'a mut ClientConn,
    pub(super) pool: Arc<Pool>,
    pub(super) key: CancelKey<'a>,
    /// The client's settings as it believes them to be.
    pub(super) want: ParamSet,
    /// Untracked settings the client's startup packet carried (re-applied on each backend).
    pub(super) extras: Vec<String>,
    pub(super) server: Option<ServerConn>,
    c_scan: Scanner,
    s_scan: Scanner,
    /// What the backend still owes (see `tollgate_wire::flow`): decides when it is free.
    flow: Flow,
    pub(super) pinned: Option<PinReason>,
    draining: bool,
    /// Bytes for the backend not yet written (at most about [`HIGH_WATER`] before the relay
    /// stops taking more from the client).
    to_server: BytesMut,
    /// Bytes for the client not yet written (likewise bounded before the relay stops reading
    /// the backend). The two directions move independently, so a client that writes a large
    /// message while the server streams rows never deadlocks with it.
    to_client: BytesMut,
    /// Bytes were written towards each peer and may sit in a TLS buffer until flushed.
    server_unflushed: bool,
    client_unflushed: bool,
    /// The backend ended its session with FATAL/PANIC (not forwarded): the loss to report.
    server_fatal: Option<Failure>,
    /// What the client is owed after its backend was lost (see `lost.rs`).
    owed: Owed,
    /// The client's raw bytes consumed since this backend was attached, kept while nothing of
    /// the backend's answer has reached the client, so a backend that turns out dead can be
    /// replaced and the request sent again (None once that is no longer possible).
    replay: Option<BytesMut>,
    /// Backends replaced for the current request.
    retries: u32,
    /// Bytes of the client's request were written to the held backend: from then on a
    /// failure is not retried (the server may have run it; resending a write could apply it
    /// twice, which PostgreSQL itself would never do).
    sent_to_server: bool,
    /// The backend failed before answering and the request is to be sent again (why).
    retry_due: Option<String>,
    /// The client's own startup settings (packet parameters and `options`): what RESET puts
    /// back on PostgreSQL.
    pub(super) startup: Vec<(String, String)>,
    /// Startup settings (lower-case names) a confirmed RESET returned to the server default,
    /// to be set again before the batch's ReadyForQuery reaches the client.
    restore_due: Vec<String>,
    /// The proxy's restore query is running: its answers are not the client's.
    restoring: bool,
    /// RESET / DISCARD ALL / DEALLOCATE ALL sent and not yet confirmed by the server.
    pending_resets: Vec<crate::pin::Reset>,
    /// This client's entry in the registry (SHOW CLIENTS, KILL).
    info: Arc<ClientInfo>,
    /// Whether the held backend is inside a transaction (for the in-transaction gauge).
    in_transaction: bool,
    /// When the current request's first bytes were handled (QueryResponseLatency).
    request_started: Option<Instant>,
    /// When the current request was written to the backend (QueryDatabaseResponseLatency).
    sent_at: Option<Instant>,
    /// Named statements this client prepared (transaction mode).
    statements: ClientStatements,
    /// The reloadable settings read on the data path (idle_client_timeout, max_message_size),
    /// refreshed at each borrow so a reload reaches running sessions without a per-message read.
    live: Arc<Config>,
    /// This session's share of max_message_memory: its client read buffer's capacity beyond
    /// the usual, charged before a read may grow it.
    large: crate::message_memory::Charge<'a>,
}

mod pump;

/// Pending output per direction before the relay stops reading the peer that feeds it.
const HIGH_WATER: usize = 64 * 1024;
/// Client read buffer capacity every session may have without charging max_message_memory
/// (a few buffers' worth: ordinary traffic never touches the shared budget).
const FREE_CAPACITY: usize = 4 * super::buffers::BUFFER_SIZE;
/// Backends replaced for one request before its client is told the backend was lost.
const MAX_RETRIES: u32 = 2;

/// Keeps a free backend out of the pool until the cancels looked up for it have been
/// delivered (bounded by `wait`; past it the backend is closed), then returns it.
fn park_until_cancel_delivered(
    pool: Arc<Pool>,
    conn: ServerConn,
    delivered: crate::cancel::Delivered,
    wait: std::time::Duration,
) {
    tokio::spawn(async move {
        if tokio::time::timeout(wait, delivered.wait()).await.is_ok() {
            pool.put(conn);
        } else {
            let mut conn = conn;
            conn.broken = true;
            crate::pool::close(conn);
        }
    });
}

/// What the client's buffered bytes amount to while it holds no backend.
enum FirstRequest {
    /// Nothing worth a backend yet.
    None,
    /// Terminate: leave without a backend.
    Terminate,
    /// A request: take a backend.
    Ready,
}

/// Why the I/O step stopped.
enum IoError {
    /// The client's socket failed.
    Client(std::io::Error),
    /// The client closed its socket.
    ClientClosed,
    /// The backend's socket failed or closed.
    Server(String),
}

impl<'a> Relay<'a> {
    /// A relay for a freshly logged-in client.
    pub fn new(
        shared: &'a Shared,
        client: &'a mut ClientConn,
        pool: Arc<Pool>,
        key: CancelKey<'a>,
        want: ParamSet,
        extras: Vec<String>,
        info: Arc<ClientInfo>,
    ) -> Self {
        Relay {
            shared,
            client,
            pool,
            key,
            want,
            extras,
            server: None,
            c_scan: Scanner::new(),
            s_scan: Scanner::new(),
            flow: Flow::new(),
            pinned: None,
            draining: false,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            server_unflushed: false,
            client_unflushed: false,
            server_fatal: None,
            owed: Owed::default(),
            replay: None,
            retries: 0,
            retry_due: None,
            sent_to_server: false,
            pending_resets: Vec::new(),
            startup: Vec::new(),
            restore_due: Vec::new(),
            restoring: false,
            info,
            in_transaction: false,
            request_started: None,
            sent_at: None,
            statements: ClientStatements::default(),
            live: shared.live(),
            large: shared.stats.message_memory.charge(),
        }
    }

    fn mode(&self) -> PoolMode {
        self.shared.config.pool_mode
    }

    /// Takes a backend from the pool, waiting if need be (up to the borrow timeout).
    pub async fn take_from_pool(&self) -> Result<ServerConn, SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        self.info.set_state(ClientState::Waiting);
        let conn = tokio::select! {
            r = self.pool.get() => r.map_err(SessionError::from),
            _ = crate::shared::shutdown_started(&mut shutdown) => Err(PoolError::ShuttingDown.into()),
            _ = self.info.killed() => Err(SessionError::Killed),
        };
        self.info.set_state(ClientState::Idle);
        conn
    }

    /// Takes a backend and makes it match the client. A backend that dies while its
    /// settings are applied (nothing of the client's was sent yet) is replaced.
    pub async fn borrow(&mut self) -> Result<(), SessionError> {
        self.borrow_from(None).await
    }

    /// [`borrow`](Self::borrow), trying `first` (already taken from the pool) before the pool.
    async fn borrow_from(&mut self, mut first: Option<ServerConn>) -> Result<(), SessionError> {
        let mut attempts = 0;
        loop {
            let conn = match first.take() {
                Some(conn) => conn,
                None => self.take_from_pool().await?,
            };
            match self.attach(conn).await {
                Err(SessionError::ServerLost(why)) if attempts < MAX_RETRIES => {
                    attempts += 1;
                    self.shared.stats.backend_retries.inc();
                    tracing::info!(peer = %self.client.peer, pool = %self.pool.key, error = %why,
                        "backend failed while taking the client's settings; taking another");
                }
                r => return r,
            }
        }
    }

    /// Applies the client's settings to `conn` and makes it this session's backend.
    pub async fn attach(&mut self, mut conn: ServerConn) -> Result<(), SessionError> {
        // Usually both are empty: then this allocates nothing.
        let mut keys = Vec::new();
        if !self.extras.is_empty() || !conn.extras.is_empty() {
            keys.extend(self.extras.iter().cloned());
            keys.extend(
                conn.extras
                    .iter()
                    .filter(|k| !self.extras.contains(k))
                    .cloned(),
            );
        }
        if let Some(sql) = self.want.diff_sql(&conn.params, &keys) {
            if let Err(e) = conn.simple_query(&sql).await {
                let broken = conn.broken;
                self.pool.put(conn);
                return Err(if broken {
                    SessionError::ServerLost(e.to_string())
                } else {
                    SessionError::Backend(e)
                });
            }
            // Untracked settings are not reported back: record what we set.
            for k in &keys {
                match self.want.get(k) {
                    Some(v) => {
                        let v = v.to_string();
                        conn.params.set(k, &v);
                        if !conn.extras.contains(k) {
                            conn.extras.push(k.clone());
                        }
                    }
                    None => {
                        conn.params.remove(k);
                        conn.extras.retain(|e| e != k);
                    }
                }
            }
            // Take the server's spelling of tracked values so the next diff is empty.
            self.want.take_tracked_from(&conn.params);
        }
        self.install(conn);
        Ok(())
    }

    /// Whether `conn` already has the client's settings, so [`install`](Self::install) can
    /// attach it without [`attach`](Self::attach)'s future: the transaction-pooling fast
    /// path, where no future is allocated or polled per transaction.
    fn settings_match(&self, conn: &ServerConn) -> bool {
        self.extras.is_empty() && conn.extras.is_empty() && self.want.matches(&conn.params, &[])
    }

    /// Attaches an idle backend that already has the client's settings, with no future (the
    /// transaction-pooling fast path: nothing allocated or polled per transaction); otherwise
    /// the borrow to await, boxed (a borrow's future is large, and an idle session should not
    /// carry its space while it waits for the client). The connection goes straight into
    /// the boxed borrow: held by the caller across its await, it would be part of every
    /// session's future.
    fn attach_idle(
        &mut self,
    ) -> Option<Pin<Box<impl Future<Output = Result<(), SessionError>> + use<'_, 'a>>>> {
        let mut taken = self.pool.try_take_idle();
        match taken.take_if(|conn| self.settings_match(conn)) {
            Some(conn) => {
                self.install(conn);
                None
            }
            None => Some(Box::pin(self.borrow_from(taken))),
        }
    }

    /// Makes `conn`, whose settings match the client's, this session's backend.
    fn install(&mut self, mut conn: ServerConn) {
        // From now on the backend's equal values are the client's own copies: the next
        // client of the same settings compares pointers, not strings.
        conn.params.share_equal_from(&self.want);
        self.key.set_target(Some(conn.cancel.clone()));
        self.info.set_backend(conn.cancel.process_id, conn.created);
        self.pool.stats.borrowed.inc();
        self.in_transaction = conn.tx_status != TxStatus::Idle;
        if self.in_transaction {
            self.pool.stats.in_transaction.inc();
            self.info.set_state(ClientState::InTransaction);
        } else {
            self.info.set_state(ClientState::Active);
        }
        self.live = self.shared.live();
        self.server = Some(conn);
        self.sent_to_server = false;
        self.flow.reset();
        if self.to_server.capacity() == 0 {
            self.to_server = super::buffers::take();
        }
        if self.to_client.capacity() == 0 {
            self.to_client = super::buffers::take();
        }
        // A request on a backend just taken from the pool can be sent again elsewhere if this
        // one turns out dead (transaction mode, between transactions only).
        self.replay =
            (self.mode() == PoolMode::Transaction && self.pinned.is_none() && !self.in_transaction)
                .then(super::buffers::take);
    }

    /// Stops keeping the client's request for a resend; its buffer goes back to the
    /// per-thread cache, so keeping a request costs no allocation per transaction.
    pub(super) fn forget_replay(&mut self) {
        if let Some(mut buf) = self.replay.take() {
            super::buffers::give(&mut buf);
        }
    }

    /// Takes the backend off this session, keeping the gauges and the cancel key right.
    fn detach(&mut self) -> Option<ServerConn> {
        let conn = self.server.take()?;
        self.key.set_target(None);
        self.info.set_backend_pid(0);
        self.info.set_state(ClientState::Idle);
        self.pool.stats.borrowed.dec();
        if std::mem::take(&mut self.in_transaction) {
            self.pool.stats.in_transaction.dec();
        }
        Some(conn)
    }

    /// Returns the backend to the pool if the session is at a transaction boundary and the
    /// pool mode allows it.
    pub fn maybe_release(&mut self) {
        if self.mode() != PoolMode::Transaction || self.pinned.is_some() {
            return;
        }
        let Some(server) = &self.server else { return };
        let boundary = self.flow.idle()
            && server.tx_status == TxStatus::Idle
            && !self.c_scan.mid_message()
            && !self.s_scan.mid_message()
            && !server.statements.has_pending()
            && server.rbuf.is_empty()
            && self.to_server.is_empty()
            && !self.server_unflushed;
        if boundary {
            let cancel_in_flight = self.key.release();
            if let Some(conn) = self.detach() {
                self.forget_replay();
                self.retries = 0;
                match cancel_in_flight {
                    None => self.pool.put(conn),
                    Some(delivered) => park_until_cancel_delivered(
                        self.pool.clone(),
                        conn,
                        delivered,
                        self.shared.pools.connector().timeout(),
                    ),
                }
            }
        }
    }

    /// Runs until the client leaves or an error ends the session.
    pub async fn run(&mut self) -> Result<End, SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        let info = self.info.clone();
        // These futures live across loop turns: each registers its waker once, not per message.
        let shutdown_started = crate::shared::shutdown_started(&mut shutdown);
        let killed = info.killed();
        let idle = tokio::time::sleep(self.live.idle_client_timeout);
        tokio::pin!(shutdown_started, killed, idle);
        // The idle timer is not reset per message (that costs a timer-wheel update each time):
        // when it fires, the last activity decides whether the client really was idle.
        let mut last_activity = tokio::time::Instant::now();
        loop {
            // Re-read each turn: a reload reaches this session at its next borrow.
            let idle_timeout = self.live.idle_client_timeout;
            if self.server.is_none() && self.owed.active() && self.answer_owed()? {
                return Ok(End::Terminated);
            }
            if self.server.is_none() && !self.owed.active() && self.to_client.is_empty() {
                // Bound first: a `match` on the `?` expression would keep its temporary (an
                // error's size) in every session's future across the borrow's await.
                let first = self.first_request()?;
                match first {
                    FirstRequest::None => {}
                    FirstRequest::Terminate => return Ok(End::Terminated),
                    FirstRequest::Ready if self.draining => return Err(SessionError::ShuttingDown),
                    FirstRequest::Ready => {
                        let attached = match self.attach_idle() {
                            None => Ok(()),
                            Some(borrow) => borrow.await,
                        };
                        if let Err(e) = attached {
                            self.refuse(e)?;
                            continue;
                        }
                    }
                }
            }
            if self.server.is_some() {
                if self.process_client()? {
                    return Ok(End::Terminated);
                }
                self.process_server()?;
                if let Some(why) = self.retry_due.take() {
                    if let Err(e) = self.retry(&why).await {
                        self.refuse(e)?;
                    }
                    continue;
                }
                if let Some(cause) = self.server_fatal.take() {
                    self.lose_backend(cause)?;
                    continue;
                }
            }
            self.maybe_release();
            if self.draining && self.server.is_none() && self.to_client.is_empty() {
                return Err(SessionError::ShuttingDown);
            }
            let waiting_on_client = self.c_scan.mid_message()
                || (!self.flow.server_turn() && !self.s_scan.mid_message());
            if self.server.is_none() && self.client.rbuf.is_empty() && self.to_client.is_empty() {
                // An idle client holds no buffers: thousands of idle clients cost little memory
                // (the next read waits for something to read before it takes a buffer).
                if self.client.rbuf.capacity() > 0 {
                    super::buffers::give(&mut self.client.rbuf);
                }
                if self.to_server.capacity() > 0 {
                    super::buffers::give(&mut self.to_server);
                }
                if self.to_client.capacity() > 0 {
                    super::buffers::give(&mut self.to_client);
                }
            }
            self.charge_client_buffer()?;
            let draining = self.draining;
            tokio::select! {
                _ = &mut killed => return Err(SessionError::Killed),
                r = self.io() => {
                    let moved = match r {
                        Ok(moved) => moved,
                        Err(IoError::Client(e)) => return Err(SessionError::ClientIo(e)),
                        Err(IoError::ClientClosed) => return Ok(End::Disconnected),
                        Err(IoError::Server(why)) => {
                            if self.retry_possible() {
                                if let Err(e) = self.retry(&why).await {
                                    self.refuse(e)?;
                                }
                                continue;
                            }
                            self.lose_backend(Failure { code: "08006".into(), message: why })?;
                            continue;
                        }
                    };
                    // Traffic either way counts as activity: a long query is not idleness.
                    if moved {
                        last_activity = tokio::time::Instant::now();
                    }
                }
                _ = &mut idle, if waiting_on_client => {
                    let deadline = last_activity + idle_timeout;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(SessionError::IdleTimeout(idle_timeout));
                    }
                    idle.as_mut().reset(deadline);
                }
                _ = &mut shutdown_started, if !draining => {
                    self.draining = true;
                }
            }
        }
    }

    /// Whether the client's buffered bytes hold a request worth a backend: a whole first
    /// message, or a buffer's worth of a large one. (A backend is not taken on a bare header
    /// while the body trickles in.)
    fn first_request(&self) -> Result<FirstRequest, SessionError> {
        let buf = &self.client.rbuf;
        let Some(header) = tollgate_wire::frame::peek_header(buf)? else {
            return Ok(FirstRequest::None);
        };
        if header.tag == frontend::tag::TERMINATE {
            return Ok(FirstRequest::Terminate);
        }
        if !frontend::is_message_tag(header.tag) {
            return Err(SessionError::Protocol(format!(
                "unexpected message type 0x{:02x}",
                header.tag
            )));
        }
        // A message the relay reads whole is taken whole before a backend is (bounded by
        // max_message_size); one it streams, once a buffer's worth is here.
        let read_whole = matches!(
            header.tag,
            frontend::tag::QUERY
                | frontend::tag::PARSE
                | frontend::tag::BIND
                | frontend::tag::DESCRIBE
                | frontend::tag::CLOSE
        );
        let max = self.live.max_message_size;
        if read_whole && header.frame_len() > max {
            return Err(tollgate_wire::WireError::TooLarge {
                len: header.frame_len(),
                limit: max,
            }
            .into());
        }
        let whole = buf.len() >= header.frame_len();
        Ok(
            if whole || (!read_whole && buf.len() >= super::buffers::BUFFER_SIZE) {
                FirstRequest::Ready
            } else {
                FirstRequest::None
            },
        )
    }

    /// Whether the next I/O step reads from the client.
    fn may_read_client(&self) -> bool {
        self.to_server.len() < HIGH_WATER && !self.flow.backlogged() && !self.draining_idle()
    }

    /// Charges the client read buffer to max_message_memory before the next I/O step: its
    /// capacity beyond [`FREE_CAPACITY`], counting the growth a read may make (the buffer
    /// doubles, or gains a buffer's worth, when less than 1 KiB is free). A large message that
    /// has been handled leaves an empty buffer behind: that allocation is dropped here rather
    /// than kept charged.
    fn charge_client_buffer(&mut self) -> Result<(), SessionError> {
        use super::buffers::BUFFER_SIZE;
        let reads = self.may_read_client();
        let buf = &mut self.client.rbuf;
        if buf.is_empty() && buf.capacity() > FREE_CAPACITY {
            *buf = super::buffers::take();
        }
        let cap = buf.capacity();
        let next = if reads && cap.saturating_sub(buf.len()) < 1024 {
            cap.saturating_mul(2)
                .max(buf.len().saturating_add(BUFFER_SIZE))
        } else {
            cap
        };
        let charge = if next > FREE_CAPACITY { next } else { 0 };
        let limit = self.live.max_message_memory;
        if self.large.set(charge, limit) {
            Ok(())
        } else {
            Err(SessionError::MessageMemory { limit })
        }
    }

    /// One step of I/O in both directions at once: writes what is pending to each peer and
    /// reads from each peer whose pending output has room. Returns whether any byte moved.
    async fn io(&mut self) -> Result<bool, IoError> {
        let may_read_client = self.may_read_client();
        std::future::poll_fn(|cx| {
            let mut moved = false;
            if let Some(server) = self.server.as_deref_mut() {
                let s = &mut server.stream;
                if !self.to_server.is_empty() {
                    match Pin::new(&mut *s).poll_write(cx, &self.to_server) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(IoError::Server(
                                "the database stopped reading".into(),
                            )))
                        }
                        Poll::Ready(Ok(n)) => {
                            self.to_server.advance(n);
                            self.server_unflushed = true;
                            self.sent_to_server = true;
                            moved = true;
                        }
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(IoError::Server(e.to_string())))
                        }
                        Poll::Pending => {}
                    }
                }
                if self.to_server.is_empty() && self.server_unflushed {
                    match Pin::new(&mut *s).poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.server_unflushed = false,
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(IoError::Server(e.to_string())))
                        }
                        Poll::Pending => {}
                    }
                }
                if self.to_client.len() < HIGH_WATER {
                    if server.rbuf.capacity() - server.rbuf.len() < 1024 {
                        server.rbuf.reserve(super::buffers::BUFFER_SIZE);
                    }
                    let read = std::pin::pin!(server.stream.read_buf(&mut server.rbuf));
                    match read.poll(cx) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(IoError::Server(
                                "the database closed the connection".into(),
                            )))
                        }
                        Poll::Ready(Ok(_)) => moved = true,
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(IoError::Server(e.to_string())))
                        }
                        Poll::Pending => {}
                    }
                }
            }
            let c = &mut self.client;
            if !self.to_client.is_empty() {
                match Pin::new(&mut c.stream).poll_write(cx, &self.to_client) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(IoError::ClientClosed)),
                    Poll::Ready(Ok(n)) => {
                        self.pool.stats.bytes_to_clients.add(n as u64);
                        self.to_client.advance(n);
                        self.client_unflushed = true;
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(IoError::Client(e))),
                    Poll::Pending => {}
                }
            }
            if self.to_client.is_empty() && self.client_unflushed {
                match Pin::new(&mut c.stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.client_unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(IoError::Client(e))),
                    Poll::Pending => {}
                }
            }
            if may_read_client {
                match c.poll_read_when_ready(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(IoError::ClientClosed)),
                    Poll::Ready(Ok(_)) => moved = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(IoError::Client(e))),
                    Poll::Pending => {}
                }
            }
            if moved {
                Poll::Ready(Ok(true))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// While shutting down, an idle session reads no new request (it is about to close).
    fn draining_idle(&self) -> bool {
        self.draining && self.server.is_none()
    }

    /// Answers from [`Owed`] what the client sent while it is owed something (no backend is
    /// taken for those bytes). True when the client sent Terminate.
    fn answer_owed(&mut self) -> Result<bool, SessionError> {
        let max = self.live.max_message_size;
        loop {
            match self
                .owed
                .step(&self.client.rbuf, max, &mut self.to_client)?
            {
                lost::Step::Consumed(n) => self.client.rbuf.advance(n),
                lost::Step::NeedMore | lost::Step::Done => return Ok(false),
                lost::Step::Terminate => return Ok(true),
            }
        }
    }

    /// A borrow failed. Where the client can be told and carry on (nothing freed up, no
    /// instance could serve, the backend failed), its request gets the error as an ERROR and
    /// its connection stays open, as with any failed statement; anything else ends the session.
    fn refuse(&mut self, e: SessionError) -> Result<(), SessionError> {
        let keeps_client = match &e {
            SessionError::Pool(p) => {
                !matches!(p, PoolError::ShuttingDown | PoolError::TooManyPools { .. })
            }
            SessionError::ServerLost(_) => true,
            _ => false,
        };
        if !keeps_client || self.draining {
            return Err(e);
        }
        tracing::warn!(peer = %self.client.peer, pool = %self.pool.key, reason = e.reason(), error = %e,
            "request refused; the client keeps its connection");
        self.owed.pending = Some(Failure {
            code: e.sqlstate().unwrap_or("08006").to_string(),
            message: e.message(),
        });
        Ok(())
    }

    /// The backend died under a request (or ended its session with FATAL) and the request
    /// cannot be sent elsewhere: tell the client once, as an ERROR, and keep its connection.
    /// Every batch the backend owed gets the error and a ReadyForQuery; a batch the client is
    /// still sending is skipped to its Sync; a transaction that was open is gone, so the
    /// client's statements fail with 25P02 until it ends it (see `lost.rs`). Only a server
    /// message cut off halfway on its way to the client leaves nothing to say: then the
    /// session ends.
    fn lose_backend(&mut self, cause: Failure) -> Result<(), SessionError> {
        if self.s_scan.mid_message() {
            return Err(self.server_lost(cause.message));
        }
        let in_tx = self.in_transaction
            || self
                .server
                .as_ref()
                .is_some_and(|s| s.tx_status != TxStatus::Idle);
        let session_state = self.mode() == PoolMode::Session || self.pinned.is_some();
        let owed_batches = self.flow.unanswered_batches();
        let mid_batch = self.flow.client_mid_batch();
        if let Some(server) = self.server.as_mut() {
            // Parses the server never answered did not happen.
            for batch in self.flow.current_batch()..=self.flow.next_batch() {
                for name in server.statements.on_error(batch) {
                    self.statements.forget(&name);
                }
            }
        }
        let discard = self.c_scan.remaining();
        if let Some(mut dead) = self.detach() {
            dead.broken = true;
            drop(dead);
        }
        if self.pinned.take().is_some() {
            self.pool.stats.pinned.dec();
        }
        self.shared.stats.backends_lost.inc();
        self.pool.note_loss();
        let mut message = format!(
            "the database connection serving this client was lost ({}: {}); the database may \
             have restarted or failed over. What was running did not complete; a COMMIT in \
             flight may or may not have been applied, so check before retrying it. This \
             connection to Tollgate stays open",
            cause.code, cause.message
        );
        if in_tx {
            message.push_str("; the transaction is gone: send ROLLBACK, then run it again");
        }
        message.push('.');
        if session_state {
            message.push_str(
                " This session's state on the server (temporary tables, PREPAREd statements, \
                 settings changed with SET, advisory locks, LISTEN) is gone too.",
            );
        }
        tracing::warn!(peer = %self.client.peer, pool = %self.pool.key, code = %cause.code, error = %cause.message,
            in_transaction = in_tx, owed_batches, "backend lost under a request; the client keeps its connection");
        let code = if cause.code.is_empty() {
            "08006".to_string()
        } else {
            cause.code
        };
        self.owed.aborted = in_tx;
        let status = self.owed.status();
        for _ in 0..owed_batches {
            lost::error(&mut self.to_client, &code, &message);
            tollgate_wire::build::ready_for_query(&mut self.to_client, status);
        }
        if mid_batch {
            lost::error(&mut self.to_client, &code, &message);
            self.owed.skip_to_sync = true;
        } else if owed_batches == 0 && (in_tx || session_state) {
            self.owed.pending = Some(Failure { code, message });
        }
        self.owed.discard = discard;
        self.flow.reset();
        self.c_scan = Scanner::new();
        self.s_scan = Scanner::new();
        self.to_server.clear();
        self.server_unflushed = false;
        self.forget_replay();
        self.retries = 0;
        self.restore_due.clear();
        self.restoring = false;
        self.pending_resets.clear();
        self.request_started = None;
        self.sent_at = None;
        Ok(())
    }

    /// Whether the backend that just failed can be replaced transparently: none of the
    /// client's request was written to it yet (so it cannot have run), nothing of an answer
    /// reached the client, and the request since the backend was attached is kept.
    pub(super) fn retry_possible(&self) -> bool {
        self.replay.is_some()
            && self.retries < MAX_RETRIES
            && !self.draining
            && !self.sent_to_server
    }

    /// [`retry_possible`](Self::retry_possible) but for a request already written, when
    /// the server's goodbye shows it did not run.
    pub(super) fn retry_possible_after_send(&self) -> bool {
        self.replay.is_some() && self.retries < MAX_RETRIES && !self.draining
    }

    /// Replaces a backend that died before answering: closes it, takes another and puts the
    /// client's request back in front of its unread bytes so it is sent again as it was.
    async fn retry(&mut self, why: &str) -> Result<(), SessionError> {
        let Some(replay) = self.replay.take() else {
            return Err(SessionError::ServerLost(why.to_string()));
        };
        self.retries += 1;
        self.shared.stats.backend_retries.inc();
        // Its neighbours in the pool likely died with it (a restart, a terminate of all idle
        // backends): connections open now prove themselves before they are lent again.
        self.pool.note_loss();
        tracing::info!(peer = %self.client.peer, pool = %self.pool.key, error = why, attempt = self.retries,
            "backend failed before answering; sending the request to another one");
        if let Some(mut dead) = self.detach() {
            dead.broken = true;
            drop(dead);
        }
        let mut rbuf = replay;
        rbuf.extend_from_slice(&self.client.rbuf);
        self.client.rbuf = rbuf;
        self.c_scan = Scanner::new();
        self.s_scan = Scanner::new();
        self.to_server.clear();
        self.server_unflushed = false;
        self.server_fatal = None;
        self.request_started = None;
        self.sent_at = None;
        let retries = self.retries;
        Box::pin(self.borrow()).await?;
        self.retries = retries;
        Ok(())
    }

    fn server_lost(&mut self, why: String) -> SessionError {
        if let Some(mut s) = self.detach() {
            s.broken = true;
            drop(s);
        }
        SessionError::ServerLost(why)
    }

    fn pin(&mut self, reason: PinReason) {
        if self.mode() != PoolMode::Transaction || self.pinned.is_some() {
            return;
        }
        self.pinned = Some(reason);
        self.shared.stats.pin(reason);
        self.pool.stats.pinned.inc();
        self.info.set_pin(reason);
        tracing::info!(peer = %self.client.peer, pool = %self.pool.key, reason = reason.as_str(),
            "client pinned to its backend for the rest of its session");
    }

    /// Cleans up the backend when the session ends: a backend at a clean boundary is rolled
    /// back / reset and returned; one caught mid-response is closed (its state is unknown).
    pub async fn finish(&mut self) {
        if self.pinned.is_some() {
            self.pool.stats.pinned.dec();
        }
        // A cancel still on its way must land before the backend can serve anyone else.
        if let Some(delivered) = self.key.release() {
            let wait = self.shared.pools.connector().timeout();
            if tokio::time::timeout(wait, delivered.wait()).await.is_err() {
                if let Some(mut conn) = self.detach() {
                    conn.broken = true;
                    crate::pool::close(conn);
                }
                return;
            }
        }
        let Some(mut conn) = self.detach() else {
            return;
        };
        let clean = self.flow.idle()
            && self.to_server.is_empty()
            && !self.c_scan.mid_message()
            && !self.s_scan.mid_message()
            && conn.rbuf.is_empty()
            && !conn.broken;
        if !clean {
            tracing::debug!(
                backend = conn.id,
                "closing a backend left mid-request by its client"
            );
            conn.broken = true;
            crate::pool::close(conn);
            return;
        }
        let reset = self.mode() == PoolMode::Session || self.pinned.is_some();
        let reset_query = self.shared.live().server_reset_query.clone();
        let timeout = self.shared.pools.connector().timeout();
        let cleaned = tokio::time::timeout(timeout, async {
            if conn.tx_status != TxStatus::Idle {
                conn.simple_query("ROLLBACK").await?;
            }
            if reset {
                conn.simple_query(&reset_query).await?;
                conn.statements.clear();
                for k in std::mem::take(&mut conn.extras) {
                    conn.params.remove(&k);
                }
            }
            Ok::<_, crate::backend::BackendError>(())
        })
        .await;
        if !matches!(cleaned, Ok(Ok(()))) {
            conn.broken = true;
        }
        self.pool.put(conn);
    }
}

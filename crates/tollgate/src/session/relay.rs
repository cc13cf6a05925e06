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
use super::prepared::ClientStatements;
use crate::backend::ServerConn;
use crate::cancel::CancelKey;
use crate::clients::{ClientInfo, ClientState};
use crate::config::{Config, PoolMode};
use crate::params::ParamSet;
use crate::pin::PinReason;
use crate::pool::Pool;
use crate::pool::PoolError;
use crate::server::Shared;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;
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
    /// Query/Sync/FunctionCall sent whose ReadyForQuery has not come back.
    outstanding: usize,
    /// Extended-protocol messages sent since the last Sync.
    extended_open: bool,
    pub(super) pinned: Option<PinReason>,
    draining: bool,
    out: BytesMut,
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
    /// Query/Sync/FunctionCall messages sent so far (numbers the batches).
    batches_sent: u64,
    /// ReadyForQuery messages received so far (the batch in progress is this number).
    batches_done: u64,
    /// The reloadable settings read on the data path (idle_client_timeout, max_message_size),
    /// refreshed at each borrow so a reload reaches running sessions without a per-message read.
    live: Arc<Config>,
}

mod pump;

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
            outstanding: 0,
            extended_open: false,
            pinned: None,
            draining: false,
            out: BytesMut::new(),
            info,
            in_transaction: false,
            request_started: None,
            sent_at: None,
            statements: ClientStatements::default(),
            batches_sent: 0,
            batches_done: 0,
            live: shared.live(),
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
            _ = crate::server::shutdown_started(&mut shutdown) => Err(PoolError::ShuttingDown.into()),
            _ = self.info.killed() => Err(SessionError::Killed),
        };
        self.info.set_state(ClientState::Idle);
        conn
    }

    /// Takes a backend and makes it match the client.
    pub async fn borrow(&mut self) -> Result<(), SessionError> {
        let conn = self.take_from_pool().await?;
        self.attach(conn).await
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
            for name in crate::params::TRACKED {
                if let Some(v) = conn.params.get(name) {
                    let v = v.to_string();
                    self.want.set(name, &v);
                }
            }
        }
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
        if self.out.capacity() == 0 {
            self.out = super::buffers::take();
        }
        Ok(())
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
        let boundary = self.outstanding == 0
            && !self.extended_open
            && server.tx_status == TxStatus::Idle
            && !self.c_scan.mid_message()
            && !self.s_scan.mid_message()
            && !server.statements.has_pending()
            && server.rbuf.is_empty();
        if boundary {
            if let Some(conn) = self.detach() {
                self.pool.put(conn);
            }
        }
    }

    /// Runs until the client leaves or an error ends the session.
    pub async fn run(&mut self) -> Result<End, SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        let info = self.info.clone();
        // These futures live across loop turns: each registers its waker once, not per message.
        let shutdown_started = crate::server::shutdown_started(&mut shutdown);
        let killed = info.killed();
        let idle = tokio::time::sleep(self.live.idle_client_timeout);
        tokio::pin!(shutdown_started, killed, idle);
        // The idle timer is not reset per message (that costs a timer-wheel update each time):
        // when it fires, the last activity decides whether the client really was idle.
        let mut last_activity = tokio::time::Instant::now();
        loop {
            // Re-read each turn: a reload reaches this session at its next borrow.
            let idle_timeout = self.live.idle_client_timeout;
            // Borrow only once a whole message header is here (a lone byte is not a request).
            let ready =
                self.server.is_some() || self.client.rbuf.len() >= tollgate_wire::frame::HEADER_LEN;
            if ready && !self.client.rbuf.is_empty() {
                if self.server.is_none() {
                    match self.client.rbuf.first() {
                        Some(&frontend::tag::TERMINATE) => return Ok(End::Terminated),
                        Some(_) if self.draining => return Err(SessionError::ShuttingDown),
                        // Boxed: a borrow's future is large and an idle session should not
                        // carry its space while it waits for the client.
                        Some(_) => Box::pin(self.borrow()).await?,
                        None => {}
                    }
                }
                if self.pump_client().await? {
                    return Ok(End::Terminated);
                }
            }
            self.maybe_release();
            if self.draining && self.server.is_none() {
                return Err(SessionError::ShuttingDown);
            }
            let waiting_on_client = self.outstanding == 0 && !self.s_scan.mid_message();
            if self.server.is_none() && self.client.rbuf.is_empty() {
                // An idle client holds no buffers: thousands of idle clients cost little memory.
                // (Over plain TCP the next read waits for readability before allocating; TLS
                // reads need a buffer at once, so only the output buffer goes there.)
                if !self.client.stream.is_tls() && self.client.rbuf.capacity() > 0 {
                    super::buffers::give(&mut self.client.rbuf);
                }
                if self.out.capacity() > 0 {
                    super::buffers::give(&mut self.out);
                }
            }
            let draining = self.draining;
            let server = &mut self.server;
            let client = &mut self.client;
            tokio::select! {
                _ = &mut killed => return Err(SessionError::Killed),
                r = client.read_when_ready() => {
                    if r? == 0 {
                        return Ok(End::Disconnected);
                    }
                    last_activity = tokio::time::Instant::now();
                }
                r = async {
                    match server.as_mut() {
                        Some(s) => {
                            if s.rbuf.capacity() - s.rbuf.len() < 1024 {
                                s.rbuf.reserve(8192);
                            }
                            s.stream.read_buf(&mut s.rbuf).await
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    // Traffic from the server counts as activity: a long query is not idleness.
                    last_activity = tokio::time::Instant::now();
                    match r {
                        Ok(0) => return Err(self.server_lost("the database closed the connection".into())),
                        Ok(_) => self.pump_server().await?,
                        Err(e) => return Err(self.server_lost(e.to_string())),
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
        self.key.set_target(None);
        let Some(mut conn) = self.detach() else {
            return;
        };
        let clean = self.outstanding == 0
            && !self.extended_open
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

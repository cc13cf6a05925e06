//! One logged-in connection to the database, as the pool holds it and a session borrows it.

use super::BackendError;
use crate::params::ParamSet;
use crate::pool::Slot;
use crate::stream::Stream;
use bytes::{Buf, Bytes, BytesMut};
use std::task::Context;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tollgate_wire::{backend, build, frame, TxStatus};

/// Largest message accepted on the control path (login, SET, reset); relayed traffic streams.
pub const CONTROL_MAX_MESSAGE: usize = 1 << 20;

/// The key to cancel whatever this connection runs, as the server issued it (BackendKeyData).
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Server process id.
    pub process_id: i32,
    /// Server's secret key.
    pub secret: Bytes,
    /// The instance the backend runs on (a cancel must reach that server); `None`: the writer.
    pub target: Option<std::sync::Arc<crate::topology::Target>>,
}

/// A logged-in backend connection, boxed: it moves between the pool and sessions on every
/// borrow, and a session holds a slot for one, so it moves as a pointer and an idle session's
/// empty slot is a pointer's size rather than the whole state's.
pub struct ServerConn(Box<ServerConnData>);

impl ServerConn {
    /// Boxes a connection's state.
    pub fn new(data: ServerConnData) -> Self {
        ServerConn(Box::new(data))
    }
}

impl std::ops::Deref for ServerConn {
    type Target = ServerConnData;
    fn deref(&self) -> &ServerConnData {
        &self.0
    }
}

impl std::ops::DerefMut for ServerConn {
    fn deref_mut(&mut self) -> &mut ServerConnData {
        &mut self.0
    }
}

/// What a backend connection is: its socket and what the proxy knows about it.
pub struct ServerConnData {
    /// The socket.
    pub stream: Stream,
    /// Bytes read from the server and not yet handled.
    pub rbuf: BytesMut,
    /// Settings as this backend holds them (from ParameterStatus and our own SETs).
    pub params: ParamSet,
    /// Names of settings we SET that the server does not report (to RESET for the next client).
    pub extras: Vec<String>,
    /// How to cancel its current query.
    pub cancel: CancelTarget,
    /// Process-unique id for logs.
    pub id: u64,
    /// When it logged in (server_lifetime).
    pub created: Instant,
    /// When it was last returned to the pool (server_idle_timeout).
    pub idle_since: Instant,
    /// Transaction status from the last ReadyForQuery.
    pub tx_status: TxStatus,
    /// Set when its state is unknown (I/O error, protocol surprise): never lend it again.
    pub broken: bool,
    /// The pool place it occupies; released when the connection is dropped.
    pub slot: Option<Slot>,
    /// The instance it is connected to, counted there while it lives.
    pub lease: Option<crate::topology::TargetLease>,
    /// Named statements prepared on it by the proxy (transaction mode), and unanswered
    /// Parse/Close messages.
    pub statements: crate::session::prepared::ServerStatements,
    /// Its pool's loss count when it was opened or last proved alive (see `Pool::note_loss`).
    pub loss_epoch: u64,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("id", &self.id)
            .field("pid", &self.cancel.process_id)
            .finish()
    }
}

impl ServerConnData {
    /// Reads one whole message (control path only).
    pub async fn read_message(&mut self) -> Result<frame::Message, BackendError> {
        loop {
            if let Some(m) = frame::read_message(&mut self.rbuf, CONTROL_MAX_MESSAGE)? {
                return Ok(m);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }

    /// Writes raw protocol bytes.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Runs SQL with the simple query protocol, swallowing its output; returns the first column
    /// of the first row (for SHOW). ParameterStatus updates are recorded. Any failure other than
    /// the server's own ErrorResponse marks the connection broken.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Option<String>, BackendError> {
        let result = self.simple_query_inner(sql).await;
        if let Err(e) = &result {
            if !e.is_server_error() {
                self.broken = true;
            }
        }
        result
    }

    async fn simple_query_inner(&mut self, sql: &str) -> Result<Option<String>, BackendError> {
        let mut out = BytesMut::new();
        build::query(&mut out, sql);
        self.write_all(&out).await?;
        // A simple Query destroys the unnamed statement, whoever prepared it.
        self.statements.forget_unnamed();
        let mut first = None;
        let mut error = None;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                backend::tag::READY_FOR_QUERY => {
                    self.tx_status = backend::parse_ready_for_query(&msg.body)?;
                    return match error {
                        Some(e) => Err(BackendError::Server(e)),
                        None => Ok(first),
                    };
                }
                backend::tag::PARAMETER_STATUS => {
                    let (k, v) = backend::parse_parameter_status(&msg.body)?;
                    self.params.set(k, v);
                }
                backend::tag::ERROR_RESPONSE => {
                    error = Some(backend::parse_error_fields(&msg.body)?)
                }
                backend::tag::DATA_ROW if first.is_none() => first = first_column(&msg.body),
                backend::tag::COPY_IN_RESPONSE
                | backend::tag::COPY_OUT_RESPONSE
                | backend::tag::COPY_BOTH_RESPONSE => {
                    return Err(BackendError::Protocol(
                        "a control query started COPY".into(),
                    ))
                }
                _ => {}
            }
        }
    }

    /// Cheap liveness check for an idle connection: the server sends nothing unprompted to an
    /// idle session except a termination notice, so readable bytes or EOF mean it is gone.
    /// Sees only what the runtime's reactor has already reported (no syscall unless the socket
    /// was marked readable); [`ServerConn::peek_alive`] asks the kernel.
    pub fn looks_alive(&mut self) -> bool {
        self.watch_idle(std::task::Waker::noop())
    }

    /// [`ServerConn::looks_alive`] that also leaves `waker` registered on the socket, so it is
    /// woken when the connection turns readable while idle (the pool's idle watch). Replaces
    /// whatever waker a previous reader left; a borrower's first read replaces this one.
    pub fn watch_idle(&mut self, waker: &std::task::Waker) -> bool {
        if self.broken || !self.rbuf.is_empty() {
            return false;
        }
        let mut scratch = [0u8; 64];
        let mut buf = ReadBuf::new(&mut scratch);
        let mut cx = Context::from_waker(waker);
        std::pin::Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Asks the kernel whether anything (bytes, EOF, an error) is waiting on the socket: one
    /// non-blocking `recv(MSG_PEEK)`, which also sees what the reactor has not reported yet.
    /// Under TLS any record is a sign of death too: an idle backend sends nothing.
    pub fn peek_alive(&self) -> bool {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.stream.tcp()).peek(&mut scratch) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Sends Sync and reads its ReadyForQuery: proof that an idle session is alive now, not
    /// only that its goodbye has not arrived yet. A server that is shutting down or crashed
    /// has already signalled its backends by the time any of them is seen dead, and a
    /// signalled backend answers with a notice and EOF instead, so anything but
    /// ReadyForQuery is a failure (and marks the connection broken).
    pub async fn sync_round_trip(&mut self) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        build::sync(&mut out);
        let result = async {
            self.write_all(&out).await?;
            let msg = self.read_message().await?;
            if msg.tag != backend::tag::READY_FOR_QUERY {
                return Err(BackendError::Protocol(format!(
                    "an idle backend answered Sync with message {:?}",
                    msg.tag as char
                )));
            }
            self.tx_status = backend::parse_ready_for_query(&msg.body)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }
}

impl ServerConn {
    /// Sends Terminate so the server ends the session cleanly; errors are irrelevant here.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::new();
        build::terminate(&mut out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.write_all(&out).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// First column of a DataRow as text ("Message Formats": DataRow).
fn first_column(body: &[u8]) -> Option<String> {
    let mut b = body;
    if b.remaining() < 6 || b.get_i16() < 1 {
        return None;
    }
    let len = b.get_i32();
    let len = usize::try_from(len).ok()?;
    b.get(..len)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

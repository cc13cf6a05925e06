//! The client's side of a session: its socket, the bytes read from it, and writing replies.

use super::error::SessionError;
use crate::stream::Stream;
use bytes::BytesMut;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_wire::{build, frame};

/// Largest message accepted before login completes (passwords, SASL, IAM tokens).
pub const LOGIN_MAX_MESSAGE: usize = 16 * 1024;

/// A connected client.
pub struct ClientConn {
    /// The socket, TLS once negotiated.
    pub stream: Stream,
    /// Bytes read and not yet handled.
    pub rbuf: BytesMut,
    /// Where it connected from.
    pub peer: SocketAddr,
}

impl ClientConn {
    /// Reads more bytes; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, SessionError> {
        // Login messages are small: grow in small steps so an idle client's login leaves
        // little behind.
        if self.rbuf.capacity() - self.rbuf.len() < 256 {
            self.rbuf.reserve(1024);
        }
        Ok(self.stream.read_buf(&mut self.rbuf).await?)
    }

    /// Reads more bytes, allocating the read buffer only once there is something to read (so
    /// an idle client parked here holds no buffer, over TLS too). Cancel-safe, for `select!`.
    pub async fn read_when_ready(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() == 0 {
            std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)).await?;
            self.rbuf = super::buffers::take();
        }
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(super::buffers::BUFFER_SIZE);
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Poll form of [`Self::read_when_ready`], for the relay's two-way I/O step.
    pub fn poll_read_when_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::future::Future;
        use std::task::Poll;
        if self.rbuf.capacity() == 0 {
            // The poll form keeps its waker between polls (a dropped `readable()` future would
            // take its registration with it).
            match self.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let read = std::pin::pin!(self.read_when_ready());
        read.poll(cx)
    }

    /// Reads one whole message of at most `max` bytes (login phase).
    pub async fn read_message(&mut self, max: usize) -> Result<frame::Message, SessionError> {
        loop {
            if let Some(m) = frame::read_message(&mut self.rbuf, max)? {
                return Ok(m);
            }
            if self.fill().await? == 0 {
                return Err(SessionError::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Tells the client about `err` (if it can be told) as an ErrorResponse.
    pub async fn send_error(&mut self, severity: &str, err: &SessionError) {
        let Some(code) = err.sqlstate() else { return };
        let mut out = BytesMut::new();
        build::error_response(&mut out, severity, code, &err.message(), None, err.hint());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.stream.write_all(&out).await;
            let _ = self.stream.flush().await;
        })
        .await;
    }

    /// Closes the write side politely.
    pub async fn close(&mut self) {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

//! A bare protocol client over a plain TCP socket, for tests that must send bytes no real
//! client would (forged cancels, malformed startups, half messages) or see exactly what
//! Tollgate answers (ReadyForQuery status, BackendKeyData, NegotiateProtocolVersion).

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_auth::{ScramClient, ScramCredential};
use tollgate_wire::backend::{self, parse_authentication, Authentication, ErrorFields};
use tollgate_wire::frame::{read_message, Message};
use tollgate_wire::{build, TxStatus};

/// How long any single read waits before the test gives up on it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message the raw client accepts from Tollgate.
const MAX_MESSAGE: usize = 64 << 20;

/// A connected socket plus the bytes read from it and not yet consumed.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    /// Read-ahead buffer.
    pub buf: BytesMut,
}

/// The key a logged-in client was given for cancelling its queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyData {
    /// Process id as the client was told it.
    pub process_id: i32,
    /// The secret.
    pub secret: [u8; 4],
}

impl RawConn {
    /// Opens a TCP connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<RawConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads one more chunk into the buffer; false at end of stream (or on a reset, which is
    /// how a peer that closed with unread bytes ends a connection).
    async fn fill(&mut self) -> Result<bool> {
        let r = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
            .await
            .context("timed out waiting for bytes from Tollgate")?;
        match r {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The next whole tagged message, or `None` if the connection ended first.
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        loop {
            if let Some(m) = read_message(&mut self.buf, MAX_MESSAGE)? {
                return Ok(Some(m));
            }
            if !self.fill().await? {
                if !self.buf.is_empty() {
                    bail!(
                        "connection ended inside a message ({} bytes left over)",
                        self.buf.len()
                    );
                }
                return Ok(None);
            }
        }
    }

    /// The next message, failing if the connection ended.
    pub async fn expect(&mut self) -> Result<Message> {
        self.recv().await?.context("Tollgate closed the connection")
    }

    /// Exactly `n` raw bytes (e.g. the one-byte answer to SSLRequest).
    pub async fn recv_bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                bail!("connection ended after {} of {n} bytes", self.buf.len());
            }
        }
        Ok(self.buf.split_to(n).to_vec())
    }

    /// Everything Tollgate sends until it closes the connection (fails if it stays open
    /// longer than [`READ_TIMEOUT`]).
    pub async fn read_to_close(&mut self) -> Result<Vec<u8>> {
        while self.fill().await? {}
        Ok(self.buf.split().to_vec())
    }

    /// Sends a protocol 3.0 StartupMessage for `user` and `database`.
    pub async fn startup(&mut self, user: &str, database: &str) -> Result<()> {
        let mut out = BytesMut::new();
        build::startup_message(&mut out, &[("user", user), ("database", database)]);
        self.send(&out).await
    }

    /// Answers the authentication requests Tollgate makes (SCRAM-SHA-256 or md5) with
    /// `password`, up to AuthenticationOk; fails with the server's error otherwise.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> Result<()> {
        let first = self.expect().await?;
        self.authenticate_from(first, user, password).await
    }

    /// [`RawConn::authenticate`] when the caller has already read the first message.
    pub async fn authenticate_from(
        &mut self,
        first: Message,
        user: &str,
        password: &str,
    ) -> Result<()> {
        let mut scram: Option<ScramClient> = None;
        let mut next = Some(first);
        loop {
            let m = match next.take() {
                Some(m) => m,
                None => self.expect().await?,
            };
            match m.tag {
                backend::tag::AUTHENTICATION => {}
                backend::tag::ERROR_RESPONSE => bail!("login refused: {:?}", error_fields(&m)?),
                backend::tag::NEGOTIATE_PROTOCOL_VERSION => continue,
                other => bail!("unexpected message {:?} during login", other as char),
            }
            let mut out = BytesMut::new();
            match parse_authentication(&m.body)? {
                Authentication::Ok => return Ok(()),
                Authentication::Sasl { mechanisms } => {
                    if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                        bail!("no SCRAM-SHA-256 among {mechanisms:?}");
                    }
                    let mut c = ScramClient::new(ScramCredential::Password(password.into()));
                    build::sasl_initial_response(&mut out, "SCRAM-SHA-256", &c.client_first());
                    scram = Some(c);
                }
                Authentication::SaslContinue(data) => {
                    let c = scram.as_mut().context("SASLContinue before SASL")?;
                    build::sasl_response(&mut out, &c.server_first(&data)?);
                }
                Authentication::SaslFinal(data) => {
                    let c = scram.as_mut().context("SASLFinal before SASL")?;
                    c.server_final(&data)?;
                }
                Authentication::Md5Password { salt } => {
                    let stored = tollgate_auth::md5_stored(password, user);
                    let response = tollgate_auth::md5_response(&stored, salt);
                    build::password_message(&mut out, response.as_bytes());
                }
                other => bail!("unsupported authentication request {other:?}"),
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
        }
    }

    /// Reads ParameterStatus/BackendKeyData up to the first ReadyForQuery; returns the key.
    pub async fn until_ready(&mut self) -> Result<KeyData> {
        let mut key = None;
        loop {
            let m = self.expect().await?;
            match m.tag {
                backend::tag::BACKEND_KEY_DATA => {
                    let (pid, secret) = backend::parse_backend_key_data(&m.body)?;
                    key = Some(KeyData {
                        process_id: pid,
                        secret: secret.try_into().context("secret is not 4 bytes")?,
                    });
                }
                backend::tag::READY_FOR_QUERY => {
                    return key.context("ReadyForQuery without BackendKeyData")
                }
                backend::tag::ERROR_RESPONSE => bail!("login failed: {:?}", error_fields(&m)?),
                _ => {}
            }
        }
    }

    /// Connects, starts up and logs in as `user` on database `app`; returns the cancel key.
    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> Result<(RawConn, KeyData)> {
        let mut c = RawConn::connect(addr).await?;
        c.startup(user, "app").await?;
        c.authenticate(user, password).await?;
        let key = c.until_ready().await?;
        Ok((c, key))
    }

    /// Sends a simple Query and collects every message up to its ReadyForQuery, whose
    /// transaction status it returns alongside.
    pub async fn query(&mut self, sql: &str) -> Result<(Vec<Message>, TxStatus)> {
        let mut out = BytesMut::new();
        build::query(&mut out, sql);
        self.send(&out).await?;
        let mut msgs = Vec::new();
        loop {
            let m = self.expect().await?;
            if m.tag == backend::tag::READY_FOR_QUERY {
                let status = backend::parse_ready_for_query(&m.body)?;
                return Ok((msgs, status));
            }
            msgs.push(m);
        }
    }
}

/// The fields of an ErrorResponse (or NoticeResponse).
pub fn error_fields(m: &Message) -> Result<ErrorFields> {
    Ok(backend::parse_error_fields(&m.body)?)
}

/// The first column of every DataRow in `msgs`, as text (NULL as `None`).
pub fn first_column(msgs: &[Message]) -> Vec<Option<String>> {
    msgs.iter()
        .filter(|m| m.tag == backend::tag::DATA_ROW)
        .map(|m| {
            // DataRow: Int16 column count, then per column Int32 length (-1 = NULL) and bytes.
            let b = &m.body;
            let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
            (len >= 0).then(|| String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned())
        })
        .collect()
}

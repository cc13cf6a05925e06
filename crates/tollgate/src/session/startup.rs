//! The first packets of a connection ("Message Flow: Start-up"): TLS negotiation
//! (SSLRequest / GSSENCRequest), CancelRequest, and the StartupMessage itself.
//!
//! Oddities are answered as PostgreSQL's postmaster answers them (`ProcessStartupPacket`): an
//! impossible length, a packet cut short or a malformed CancelRequest closes the connection
//! without a reply (the server only logs them); a protocol version it does not speak, or a
//! second SSLRequest, gets a FATAL 0A000; bytes sent before the answer to an SSLRequest, a
//! FATAL 08P01.

use super::client::ClientConn;
use super::error::SessionError;
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::BytesMut;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tollgate_wire::build;
use tollgate_wire::startup::{read_startup, StartupPacket, SSL_REQUEST_CODE};
use tollgate_wire::WireError;

/// What the opening packets asked for.
pub enum Opening {
    /// A session: the StartupMessage's parameters.
    Session {
        /// Name/value pairs from the StartupMessage.
        params: Vec<(String, String)>,
    },
    /// A cancel request (already handled; the connection just closes).
    Cancel,
}

/// Reads packets until a StartupMessage or CancelRequest, upgrading to TLS on request. The
/// connection comes back with the error when the client can still be told about it.
pub async fn negotiate(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
) -> (Option<ClientConn>, Result<Opening, SessionError>) {
    let _ = tcp.set_nodelay(true);
    let mut client = ClientConn {
        stream: Stream::Plain(tcp),
        rbuf: BytesMut::with_capacity(512),
        peer,
    };
    // An SSLRequest may come once: a second one is, to the server, an unknown protocol version.
    let mut ssl_done = false;
    loop {
        let packet = match read_packet(&mut client).await {
            Ok(p) => p,
            // The server drops these without a word; so do we (the caller logs them).
            Err(Unreadable::Drop(e)) => return (None, Err(e)),
            Err(Unreadable::Refuse(e)) => return (Some(client), Err(e)),
        };
        let step = match packet {
            StartupPacket::SslRequest if ssl_done => Err(repeated(SSL_REQUEST_CODE)),
            StartupPacket::SslRequest => {
                match ssl_request(shared, client).await {
                    Ok(upgraded) => client = upgraded,
                    Err((c, e)) => return (c, Err(e)),
                }
                ssl_done = true;
                continue;
            }
            StartupPacket::GssEncRequest => client.send(b"N").await.map(|_| None),
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                handle_cancel(shared, process_id, &secret_key, peer).await;
                Ok(Some(Opening::Cancel))
            }
            StartupPacket::Startup {
                major: 3,
                minor,
                params,
            } => startup(shared, &mut client, minor, params).await.map(Some),
            StartupPacket::Startup { major, minor, .. } => {
                Err(SessionError::UnsupportedVersion { major, minor })
            }
        };
        match step {
            Ok(Some(opening)) => return (Some(client), Ok(opening)),
            Ok(None) => {}
            Err(e) => return (Some(client), Err(e)),
        }
    }
}

/// A request code sent a second time, refused as the server refuses it: as a protocol
/// version nobody speaks (1234.5679 for SSLRequest).
fn repeated(code: i32) -> SessionError {
    let [hi1, hi2, lo1, lo2] = code.to_be_bytes();
    SessionError::UnsupportedVersion {
        major: u16::from_be_bytes([hi1, hi2]),
        minor: u16::from_be_bytes([lo1, lo2]),
    }
}

/// Why no start-up packet could be had.
enum Unreadable {
    /// The server closes on these without answering: the error is only logged.
    Drop(SessionError),
    /// The server answers these with an ErrorResponse (or, for a socket error, cannot).
    Refuse(SessionError),
}

/// The next start-up packet. Dropped without a reply, as the server drops them: an impossible
/// length (below 8, or above 10004: PostgreSQL's 10000-byte limit counts what follows the
/// length word; node-postgres sends a Terminate, `X\0\0\0\x04`, when a
/// connection is closed before it started) and a malformed CancelRequest. A malformed
/// StartupMessage is refused with 08P01, as the server does; end of stream, even inside a
/// packet, sends nothing either way.
async fn read_packet(client: &mut ClientConn) -> Result<StartupPacket, Unreadable> {
    loop {
        match read_startup(&mut client.rbuf) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(WireError::BadLength(len)) => return Err(invalid_length(len)),
            Err(WireError::TooLarge { len, .. }) => {
                return Err(invalid_length(i64::try_from(len).unwrap_or(i64::MAX)))
            }
            Err(
                e @ WireError::Malformed {
                    what: "CancelRequest",
                    ..
                },
            ) => return Err(Unreadable::Drop(SessionError::Wire(e))),
            Err(e) => return Err(Unreadable::Refuse(SessionError::Wire(e))),
        }
        match client.fill().await {
            Ok(0) => {
                return Err(Unreadable::Refuse(SessionError::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Unreadable::Refuse(e)),
        }
    }
}

/// PostgreSQL's words for it, which its log greps know; the length is for the operator.
fn invalid_length(len: i64) -> Unreadable {
    Unreadable::Drop(SessionError::Protocol(format!(
        "invalid length of startup packet ({len})"
    )))
}

/// Answers SSLRequest: 'N' without TLS configured, else 'S' and the handshake.
async fn ssl_request(
    shared: &Shared,
    mut client: ClientConn,
) -> Result<ClientConn, (Option<ClientConn>, SessionError)> {
    if client.stream.is_tls() {
        return Err((
            Some(client),
            SessionError::Protocol("SSLRequest received on a connection already using TLS".into()),
        ));
    }
    // Bytes sent before the answer: before a handshake they would be trusted as if encrypted
    // (CVE-2021-23214); the server refuses them after an 'N' too.
    let pipelined = !client.rbuf.is_empty();
    let Some(acceptor) = shared.tls.as_ref().map(|t| t.current()) else {
        return match client.send(b"N").await {
            Ok(()) if pipelined => Err((Some(client), unencrypted_data())),
            Ok(()) => Ok(client),
            Err(e) => Err((Some(client), e)),
        };
    };
    if pipelined {
        return Err((Some(client), unencrypted_data()));
    }
    if let Err(e) = client.send(b"S").await {
        return Err((Some(client), e));
    }
    let ClientConn { stream, rbuf, peer } = client;
    let Stream::Plain(tcp) = stream else {
        return Err((
            None,
            SessionError::Protocol("TLS negotiation in an unexpected state".into()),
        ));
    };
    match acceptor.accept(tcp).await {
        Ok(tls) => Ok(ClientConn {
            stream: Stream::ServerTls(Box::new(tls)),
            rbuf,
            peer,
        }),
        Err(e) => Err((None, SessionError::ClientTls(e))),
    }
}

fn unencrypted_data() -> SessionError {
    SessionError::Protocol("received unencrypted data after SSL request".into())
}

/// Checks a v3 StartupMessage; answers NegotiateProtocolVersion for 3.x (x > 0) or `_pq_.` options.
async fn startup(
    shared: &Shared,
    client: &mut ClientConn,
    minor: u16,
    params: Vec<(String, String)>,
) -> Result<Opening, SessionError> {
    if shared.live().require_tls && !client.stream.is_tls() {
        return Err(SessionError::TlsRequired);
    }
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unrecognized.is_empty() {
        // Protocol 3.x with x > 0: answer as PostgreSQL does, settling on 3.0.
        let mut out = BytesMut::new();
        build::negotiate_protocol_version(&mut out, 0, &unrecognized);
        client.send(&out).await?;
    }
    let params = params
        .into_iter()
        .filter(|(k, _)| !k.starts_with("_pq_."))
        .collect();
    Ok(Opening::Session { params })
}

/// Forwards a genuine cancel to the backend its client holds now; does nothing otherwise.
async fn handle_cancel(shared: &Shared, process_id: i32, secret: &[u8], peer: SocketAddr) {
    match shared.cancels.lookup(process_id, secret) {
        Some((target, _in_flight)) => {
            // `_in_flight` lives until the cancel is delivered (or its forwarding failed).
            shared.stats.cancels_forwarded.inc();
            tracing::info!(%peer, client_pid = process_id, backend_pid = target.process_id, "forwarding cancel request");
            if let Err(e) = shared.pools.connector().cancel(&target).await {
                tracing::warn!(%peer, error = %e, "could not forward cancel request");
            }
        }
        None => {
            shared.stats.cancels_ignored.inc();
            tracing::info!(%peer, "ignored cancel request: unknown key or no query running");
        }
    }
}

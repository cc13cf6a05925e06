//! The first packets of a connection ("Message Flow: Start-up"): TLS negotiation
//! (SSLRequest / GSSENCRequest), CancelRequest, and the StartupMessage itself.

use super::client::ClientConn;
use super::error::SessionError;
use crate::server::Shared;
use crate::stream::Stream;
use bytes::BytesMut;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tollgate_wire::build;
use tollgate_wire::startup::{read_startup, StartupPacket};

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
    loop {
        let packet = match read_packet(&mut client).await {
            Ok(p) => p,
            Err(e) => return (Some(client), Err(e)),
        };
        let step = match packet {
            StartupPacket::SslRequest => {
                match ssl_request(shared, client).await {
                    Ok(upgraded) => client = upgraded,
                    Err((c, e)) => return (c, Err(e)),
                }
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

async fn read_packet(client: &mut ClientConn) -> Result<StartupPacket, SessionError> {
    loop {
        if let Some(p) = read_startup(&mut client.rbuf)? {
            return Ok(p);
        }
        if client.fill().await? == 0 {
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
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
    let Some(acceptor) = shared.tls.as_ref().map(|t| t.current()) else {
        return match client.send(b"N").await {
            Ok(()) => Ok(client),
            Err(e) => Err((Some(client), e)),
        };
    };
    // Bytes sent before the handshake would be trusted as if encrypted (CVE-2021-23214).
    if !client.rbuf.is_empty() {
        return Err((
            Some(client),
            SessionError::Protocol("unencrypted data after SSLRequest".into()),
        ));
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
        Some(target) => {
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

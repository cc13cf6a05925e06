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

/// Reads packets until a StartupMessage or CancelRequest, upgrading to TLS on request.
pub async fn negotiate(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(ClientConn, Opening), SessionError> {
    let _ = tcp.set_nodelay(true);
    let mut client = ClientConn {
        stream: Stream::Plain(tcp),
        rbuf: BytesMut::with_capacity(512),
        peer,
    };
    loop {
        let packet = loop {
            if let Some(p) = read_startup(&mut client.rbuf)? {
                break p;
            }
            if client.fill().await? == 0 {
                return Err(SessionError::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                if client.stream.is_tls() {
                    return Err(SessionError::Protocol(
                        "SSLRequest received on a connection already using TLS".into(),
                    ));
                }
                let Some(acceptor) = &shared.tls else {
                    client.send(b"N").await?;
                    continue;
                };
                // Bytes sent before the handshake would be trusted as if encrypted
                // (CVE-2021-23214): refuse them.
                if !client.rbuf.is_empty() {
                    return Err(SessionError::Protocol(
                        "unencrypted data after SSLRequest".into(),
                    ));
                }
                client.send(b"S").await?;
                let Stream::Plain(tcp) = client.stream else {
                    return Err(SessionError::Protocol(
                        "TLS negotiation in an unexpected state".into(),
                    ));
                };
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(SessionError::ClientTls)?;
                client.stream = Stream::ServerTls(Box::new(tls));
            }
            StartupPacket::GssEncRequest => client.send(b"N").await?,
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                handle_cancel(shared, process_id, &secret_key, peer).await;
                return Ok((client, Opening::Cancel));
            }
            StartupPacket::Startup {
                major: 3,
                minor,
                params,
            } => {
                if shared.config.require_tls && !client.stream.is_tls() {
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
                return Ok((client, Opening::Session { params }));
            }
            StartupPacket::Startup { major, minor, .. } => {
                return Err(SessionError::UnsupportedVersion { major, minor })
            }
        }
    }
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

//! One byte stream type for both sides of the proxy: plain TCP, or TLS as a server (towards
//! clients) or as a client (towards the database). The relay is written once against it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection that may or may not be wrapped in TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS we terminate for a client.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS we originate to the database.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the bytes are protected by TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Ready when a read could return something without waiting for the socket: bytes (or
    /// the end) have arrived, or TLS holds decrypted bytes already. Lets an idle reader wait
    /// with no read buffer. Errors are left for the read to report.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::ServerTls(s) => {
                let (tcp, tls) = s.get_mut();
                tls_read_ready(tcp, tls, cx)
            }
            Stream::ClientTls(s) => {
                let (tcp, tls) = s.get_mut();
                tls_read_ready(tcp, tls, cx)
            }
        }
    }

    /// The TCP socket underneath, for socket options and addresses.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::ClientTls(s) => s.get_ref().0,
        }
    }
}

/// [`Stream::poll_read_ready`] for TLS: tokio-rustls decrypts every whole record it reads at
/// once, and what it has not read yet is in the socket; so with nothing decrypted waiting, the
/// socket decides. (Processing again here finds no new records; it only reports.)
fn tls_read_ready<D>(
    tcp: &TcpStream,
    tls: &mut rustls::ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match tls.process_new_packets() {
        Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {
            tcp.poll_read_ready(cx)
        }
        _ => Poll::Ready(Ok(())),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server stream and the client's end, over loopback, with a self-signed cert.
    async fn tls_pair() -> (Stream, tokio_rustls::client::TlsStream<TcpStream>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = crate::tls::provider();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap()
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(server))
                .accept(tcp)
                .await
                .unwrap()
        };
        let (client, server) = tokio::join!(connect, accept);
        (Stream::ServerTls(Box::new(server)), client)
    }

    /// Polls readiness once.
    async fn ready_now(stream: &mut Stream) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(stream.poll_read_ready(cx).is_ready())).await
    }

    /// Asserts the socket under `stream` has nothing to read, which also clears tokio's cached
    /// readiness, so the next readiness answer is about the socket as it is now.
    fn assert_socket_drained(stream: &Stream) {
        let e = stream.tcp().try_read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn tls_is_ready_while_rustls_holds_decrypted_bytes_the_socket_no_longer_has() {
        let (mut server, mut client) = tls_pair().await;
        client.write_all(b"hello, world").await.unwrap();
        client.flush().await.unwrap();

        // A short read takes part of the record; rustls keeps the rest, decrypted.
        let mut head = [0u8; 5];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"hello");
        assert_socket_drained(&server);
        assert!(
            ready_now(&mut server).await,
            "bytes are waiting in rustls: an idle reader must not wait for the socket"
        );
        let mut rest = [0u8; 7];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b", world");

        // Nothing in rustls, nothing in the socket: the socket decides.
        assert_socket_drained(&server);
        assert!(!ready_now(&mut server).await);
        client.write_all(b"more").await.unwrap();
        client.flush().await.unwrap();
        std::future::poll_fn(|cx| server.poll_read_ready(cx))
            .await
            .unwrap();
        let mut more = [0u8; 4];
        server.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"more");
    }
}

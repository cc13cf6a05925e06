//! The admin HTTP listener (`admin_listen`): `GET /metrics` (Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (able to serve). A deliberately tiny HTTP/1.1 server, so
//! the proxy carries no HTTP stack: one request per connection, its head read whole within
//! [`MAX_HEAD`] bytes and [`HEAD_TIMEOUT`], one answer, `Connection: close`. At most
//! [`MAX_CONNECTIONS`] are served at once; further ones are closed unanswered.

use crate::admin::prometheus;
use crate::metrics::MetricsSnapshot;
use crate::shared::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write an answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// After answering, how long (and how much) unread input is drained so that closing does not
/// reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// The part of a request the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The target without its query string.
    pub path: String,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// No blank line within [`MAX_HEAD`] bytes.
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    /// Not `METHOD /path HTTP/1.x`.
    #[error("malformed request line")]
    Malformed,
}

/// Parses the request head at the start of `buf`; `Ok(None)` until its closing blank line has
/// arrived (RFC 9112 section 2.2 allows a bare LF as the line terminator, so `\n\n` ends it too).
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let end = find(buf, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(buf, b"\n\n").map(|i| (i, i + 2)));
    let Some((end, after)) = end else {
        return if buf.len() >= MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if after > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let head = buf.get(..end).unwrap_or_default();
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| HeadError::Malformed)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None)
            if !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_uppercase())
                && target.starts_with('/')
                && version.starts_with("HTTP/1.") =>
        {
            let path = target.split('?').next().unwrap_or(target);
            Ok(Some(Request {
                method: method.to_string(),
                path: path.to_string(),
            }))
        }
        _ => Err(HeadError::Malformed),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The bytes on the wire; `with_body` is false for HEAD.
    pub fn to_bytes(&self, with_body: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if with_body {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Whether Tollgate can serve clients now; the error is the reason, for `/readyz`'s body.
/// Ready means: not shutting down, the database answered the last connection attempt (the
/// writer is healthy), and some login can succeed: the auth file lists a user, or IAM-verified
/// clients log in to the database with Tollgate's own IAM tokens (`iam_end_to_end`: iam_auth
/// on and backend_iam on), which needs no auth-file entry. IAM auth alone is not enough: a
/// verified client still needs a database credential from the auth file.
pub fn readiness(
    shutting_down: bool,
    db_available: bool,
    target: &str,
    auth_users: usize,
    iam_end_to_end: bool,
) -> Result<(), String> {
    if shutting_down {
        return Err("not ready: shutting down".into());
    }
    if !db_available {
        return Err(format!(
            "not ready: the database at {target} did not answer the last connection attempt"
        ));
    }
    if auth_users == 0 && !iam_end_to_end {
        return Err(
            "not ready: the auth file lists no users (and IAM auth with backend_iam is not on), \
             so every login would fail"
                .into(),
        );
    }
    Ok(())
}

/// Answers one request.
pub fn route(req: &Request, shared: &Shared) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET and HEAD are served here\n");
    }
    match req.path.as_str() {
        "/metrics" => Response {
            status: 200,
            content_type: prometheus::CONTENT_TYPE,
            body: {
                let mut snap = MetricsSnapshot::collect(&shared.stats, &shared.pools);
                if let Some(store) = shared.auth.secrets() {
                    snap.secrets = store
                        .views()
                        .into_iter()
                        .map(|v| (v.name, v.ok, v.failed, v.age.as_secs_f64()))
                        .collect();
                }
                prometheus::render(&snap)
            },
        },
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => {
            let global = shared.pools.global();
            // With health checks the writer's last check decides (a failover in progress is
            // not ready); without, the last connection attempt does.
            let topology = &shared.topology;
            let (available, target) = if topology.checks_enabled() {
                match topology.writer() {
                    Some(w) => (
                        w.health() == crate::topology::Health::Up,
                        w.addr.to_string(),
                    ),
                    None => (false, "any instance (no writer)".to_string()),
                }
            } else {
                (global.available(), shared.pools.connector().addr())
            };
            match readiness(
                *shared.shutdown.borrow(),
                available,
                &target,
                shared.auth.user_count(),
                shared.iam.state().accepts_tokens() && shared.backend_iam.is_some(),
            ) {
                Ok(()) => Response::text(200, "ready\n"),
                Err(why) => Response::text(503, format!("{why}\n")),
            }
        }
        _ => Response::text(404, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    if !addr.ip().is_loopback() {
        tracing::warn!(admin_listen = %addr, "the admin HTTP listener is reachable from the network; /metrics shows user and database names");
    }
    Ok(listener)
}

/// Serves admin requests until the task is dropped (`Server::run` ends it after the drain, so
/// `/readyz` can say "shutting down" meanwhile).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(admin_listen = %addr, "admin HTTP listener serving /metrics, /healthz, /readyz");
    }
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE: back off briefly rather than spin.
                tracing::warn!(error = %e, "admin HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = MAX_CONNECTIONS, "admin HTTP connection refused: too many at once");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(tcp, peer, shared).await;
            drop(permit);
        });
    }
}

async fn handle(mut tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(1024);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tcp, &mut buf)).await {
        Ok(Ok(head)) => head,
        // Too slow, or gone: nothing to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let (response, with_body) = match head {
        Ok(req) => {
            let with_body = req.method != "HEAD";
            tracing::debug!(%peer, method = %req.method, path = %req.path, "admin HTTP request");
            // Rendering /metrics for many pools takes a few milliseconds: keep it off the
            // runtime threads that relay client traffic.
            let answered = tokio::task::spawn_blocking(move || route(&req, &shared)).await;
            let response = answered.unwrap_or_else(|_| Response::text(500, "internal error\n"));
            (response, with_body)
        }
        Err(e @ HeadError::TooLarge) => (Response::text(431, format!("{e}\n")), true),
        Err(e @ HeadError::Malformed) => (Response::text(400, format!("{e}\n")), true),
    };
    let bytes = response.to_bytes(with_body);
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        tcp.write_all(&bytes).await?;
        tcp.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let _ = tokio::time::timeout(LINGER, drain(&mut tcp)).await;
    }
}

/// Reads until a whole head is in `buf` (or it is refused).
async fn read_head(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Result<Request, HeadError>> {
    let mut chunk = [0u8; 1024];
    loop {
        match parse_head(buf) {
            Ok(Some(req)) => return Ok(Ok(req)),
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Discards what the client still sends until it closes (bounded by [`LINGER_BYTES`]).
async fn drain(tcp: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_BYTES {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn a_head_parses_once_its_blank_line_arrives() {
        let full = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() - 1 {
            assert_eq!(parse_head(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_head(full), Ok(Some(req("GET", "/metrics"))));
        assert_eq!(
            parse_head(b"HEAD /readyz HTTP/1.0\n\n"),
            Ok(Some(req("HEAD", "/readyz")))
        );
    }

    #[test]
    fn oversized_and_malformed_heads_are_refused() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"\xff / HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Err(HeadError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn responses_say_length_and_close() {
        let r = Response::text(200, "ok\n");
        let wire = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(wire.contains("\r\nContent-Length: 3\r\n"), "{wire}");
        assert!(wire.contains("\r\nConnection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nok\n"), "{wire}");
        let head_only = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(
            head_only.ends_with(
                "Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            ),
            "{head_only}"
        );
        let wire = String::from_utf8(Response::text(405, "").to_bytes(true)).unwrap();
        assert!(wire.contains("\r\nAllow: GET, HEAD\r\n"), "{wire}");
    }

    #[test]
    fn readiness_names_what_is_missing() {
        assert_eq!(readiness(false, true, "db:5432", 3, false), Ok(()));
        let down = readiness(false, false, "db:5432", 3, false).unwrap_err();
        assert!(down.contains("db:5432"), "{down}");
        assert!(readiness(false, true, "db:5432", 0, false)
            .unwrap_err()
            .contains("auth file"));
        // IAM end to end needs no auth-file entry.
        assert_eq!(readiness(false, true, "db:5432", 0, true), Ok(()));
        assert!(readiness(true, true, "db:5432", 3, false)
            .unwrap_err()
            .contains("shutting down"));
    }
}

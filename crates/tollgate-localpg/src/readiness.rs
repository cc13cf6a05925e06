//! Waiting until a freshly started postmaster accepts connections.
//!
//! There is no event for "ready", so we probe the way `pg_isready` does: connect over TCP and
//! send a startup packet. While the server is starting it answers with an error (SQLSTATE
//! 57P03, "the database system is starting up"); once ready it asks for authentication ('R').
//! Between probes we block on the postmaster's exit channel, so an early crash ends the wait
//! at once instead of after the timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::LocalPgError;
use crate::postmaster::{describe_exit, Postmaster};
use crate::server_log;

/// How long a server gets to accept connections after it was spawned.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// First and largest pause between probes.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// See [`FIRST_PAUSE`].
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Per-probe limit on connecting and reading the first reply byte.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Log lines quoted in start-up errors.
const LOG_LINES: usize = 20;

/// Blocks until the server on `port` answers a startup packet with an auth request.
pub(crate) fn wait_until_ready(
    postmaster: &mut Postmaster,
    port: u16,
    log: &Path,
) -> Result<(), LocalPgError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(status) = postmaster.try_exited() {
            return Err(LocalPgError::ServerExited {
                status: describe_exit(status),
                tail: server_log::tail(log, LOG_LINES),
            });
        }
        if probe(port) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(LocalPgError::StartTimeout {
                port,
                secs: START_TIMEOUT.as_secs(),
                tail: server_log::tail(log, LOG_LINES),
            });
        }
        // Wakes early if the postmaster exits; the loop top then reports it.
        postmaster.wait_exit(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// True if the server on `port` answers a startup packet by asking for authentication.
fn probe(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(PROBE_TIMEOUT)).is_err()
        || stream.write_all(&startup_packet()).is_err()
    {
        return false;
    }
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).is_ok() && first[0] == b'R'
}

/// A protocol 3.0 StartupMessage for user and database `postgres`
/// ("Message Formats: StartupMessage" in the docs).
fn startup_packet() -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for part in ["user", "postgres", "database", "postgres", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut packet = len.to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn startup_packet_is_length_prefixed_protocol_3() {
        let p = startup_packet();
        assert_eq!(
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
            p.len()
        );
        assert_eq!(&p[4..8], &[0, 3, 0, 0]);
        assert!(p.ends_with(b"postgres\0\0"));
    }

    #[test]
    fn probe_fails_when_nothing_listens_or_server_says_starting_up() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"E").unwrap();
        });
        assert!(!probe(port));
        server.join().unwrap();
        assert!(!probe(port));
    }
}

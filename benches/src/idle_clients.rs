//! Thousands of idle client connections, opened by the harness itself with a minimal
//! protocol client: TCP (optionally TLS), StartupMessage, md5 login, ReadyForQuery, then
//! silence until they are dropped.
//!
//! md5 because it costs the harness one hash per login where SCRAM would cost 4096 PBKDF2
//! rounds; the pooler's memory per idle client is the same either way once login is over.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Protocol 3.0 ("StartupMessage" in the docs' Message Formats).
const PROTOCOL_3_0: i32 = 196_608;
/// The SSLRequest code ("SSLRequest" in Message Formats).
const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Larger server messages than this during login mean we are not talking to PostgreSQL.
const MAX_MESSAGE: usize = 1 << 20;
/// For connect, each login read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Threads opening connections in parallel.
const OPENER_THREADS: usize = 8;

/// Who the idle clients log in as, and where.
#[derive(Debug, Clone)]
pub struct IdleLogin {
    /// The pooler's address.
    pub addr: SocketAddr,
    /// Role with an md5 hash in the pooler's auth file.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Database.
    pub database: String,
    /// TLS client configuration when the clients use TLS.
    pub tls: Option<Arc<ClientConfig>>,
}

/// Open, logged-in, silent connections; dropping this closes them all.
#[derive(Debug)]
pub struct HeldClients {
    /// The sockets. For TLS clients the rustls state was dropped after login (the harness never
    /// sends on them again, and keeping it would cost the harness memory, not the pooler).
    sockets: Vec<TcpStream>,
    /// The TLS version and cipher suite negotiated, e.g. "TLSv1_3 TLS13_AES_256_GCM_SHA384".
    pub tls_session: Option<String>,
}

impl HeldClients {
    /// How many are open.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }
}

/// A rustls client configuration trusting only `ca_pem` (ring provider, TLS 1.2 and 1.3).
pub fn tls_config(ca_pem: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("read the CA certificate PEM")?)
            .context("trust the CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens `count` connections that complete login, several at a time; fails if any does not
/// (naming how many did and the first error).
pub fn open(login: &IdleLogin, count: usize) -> Result<HeldClients> {
    let threads = OPENER_THREADS.min(count.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let login = login.clone();
            // Spread the remainder over the first threads.
            let share = count / threads + usize::from(t < count % threads);
            thread::Builder::new()
                .name(format!("idle-open-{t}"))
                .spawn(move || open_sequentially(&login, share))
        })
        .collect::<std::io::Result<_>>()
        .context("start the threads opening idle clients")?;

    let mut sockets = Vec::with_capacity(count);
    let mut tls_session = None;
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok((opened, session, error)) => {
                sockets.extend(opened);
                tls_session = tls_session.or(session);
                if first_error.is_none() {
                    first_error = error;
                }
            }
            Err(_) => {
                first_error.get_or_insert_with(|| anyhow::anyhow!("an opener thread panicked"));
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err.context(format!(
            "opened only {} of {count} idle clients to {}",
            sockets.len(),
            login.addr
        )));
    }
    Ok(HeldClients {
        sockets,
        tls_session,
    })
}

/// Opens up to `count` connections one after another, stopping at the first failure.
fn open_sequentially(
    login: &IdleLogin,
    count: usize,
) -> (Vec<TcpStream>, Option<String>, Option<anyhow::Error>) {
    let mut sockets = Vec::with_capacity(count);
    let mut session = None;
    for _ in 0..count {
        match open_one(login) {
            Ok((socket, tls)) => {
                sockets.push(socket);
                session = session.or(tls);
            }
            Err(err) => return (sockets, session, Some(err)),
        }
    }
    (sockets, session, None)
}

/// One connection: TCP, optional TLS, login; returns the socket and the TLS session summary.
fn open_one(login: &IdleLogin) -> Result<(TcpStream, Option<String>)> {
    let mut tcp = TcpStream::connect_timeout(&login.addr, IO_TIMEOUT)
        .with_context(|| format!("connect to {}", login.addr))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
        .context("set socket timeouts")?;
    let Some(config) = &login.tls else {
        log_in(&mut tcp, login)?;
        return Ok((tcp, None));
    };

    tcp.write_all(&ssl_request()).context("send SSLRequest")?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .context("read the answer to SSLRequest")?;
    if answer != *b"S" {
        bail!(
            "the pooler refused TLS (answered {:?})",
            char::from(answer[0])
        );
    }
    let name = ServerName::try_from("localhost").context("server name")?;
    let conn = ClientConnection::new(Arc::clone(config), name).context("start a TLS session")?;
    let mut tls = StreamOwned::new(conn, tcp);
    log_in(&mut tls, login)?;
    let session = format!(
        "{:?} {:?}",
        tls.conn
            .protocol_version()
            .map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}")),
        tls.conn
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite())),
    )
    .replace('"', "");
    Ok((tls.sock, Some(session)))
}

/// StartupMessage, md5 password exchange, then read up to ReadyForQuery.
fn log_in<S: Read + Write>(stream: &mut S, login: &IdleLogin) -> Result<()> {
    stream
        .write_all(&startup_message(&login.user, &login.database))
        .context("send StartupMessage")?;
    loop {
        let (tag, body) = read_message(stream)?;
        match tag {
            b'R' => {
                let code = body
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_be_bytes)
                    .context("short Authentication message")?;
                match code {
                    0 => {}
                    5 => {
                        let salt: [u8; 4] = body
                            .get(4..8)
                            .and_then(|b| b.try_into().ok())
                            .context("AuthenticationMD5Password without a salt")?;
                        let hashed = md5_password(&login.user, &login.password, salt);
                        stream
                            .write_all(&password_message(&hashed))
                            .context("send PasswordMessage")?;
                    }
                    other => bail!(
                        "the pooler asked for authentication method {other}, not md5 (5); \
                         the idle user needs an md5 hash in the auth file"
                    ),
                }
            }
            b'E' => bail!("login refused: {}", error_fields(&body)),
            b'Z' => return Ok(()),
            // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion.
            _ => {}
        }
    }
}

/// Reads one server message: its type byte and body.
fn read_message<S: Read>(stream: &mut S) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header)
        .context("read a message from the pooler")?;
    let [tag, l0, l1, l2, l3] = header;
    let len = i32::from_be_bytes([l0, l1, l2, l3]);
    let body_len = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_sub(4))
        .filter(|l| *l <= MAX_MESSAGE)
        .with_context(|| format!("message {:?} has a bad length {len}", char::from(tag)))?;
    let mut body = vec![0u8; body_len];
    stream
        .read_exact(&mut body)
        .context("read a message body from the pooler")?;
    Ok((tag, body))
}

/// The SSLRequest packet.
fn ssl_request() -> [u8; 8] {
    let mut packet = [0u8; 8];
    packet[..4].copy_from_slice(&8i32.to_be_bytes());
    packet[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    packet
}

/// A StartupMessage for protocol 3.0 with `user` and `database`.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (key, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = i32::try_from(body.len() + 4).unwrap_or(i32::MAX);
    let mut packet = len.to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A PasswordMessage ('p') carrying `password` as a C string.
fn password_message(password: &str) -> Vec<u8> {
    let len = i32::try_from(4 + password.len() + 1).unwrap_or(i32::MAX);
    let mut packet = vec![b'p'];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(password.as_bytes());
    packet.push(0);
    packet
}

/// `"md5" + md5(md5(password + user) + salt)`, hex ("AuthenticationMD5Password").
fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex(&Md5::digest(format!("{password}{user}").as_bytes()));
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    format!("md5{}", hex(&outer.finalize()))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// "SQLSTATE: message" from an ErrorResponse body.
fn error_fields(body: &[u8]) -> String {
    let mut code = "";
    let mut message = "";
    for field in body.split(|b| *b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = std::str::from_utf8(value).unwrap_or("");
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    format!("{code}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_password_matches_postgresql() {
        // The stored hash of role "postgres" with password "postgres" is
        // md5 || md5("postgrespostgres") = md53175bce1d3201d16594cebf9d7eb3f9d.
        assert_eq!(
            hex(&Md5::digest(b"postgrespostgres")),
            "3175bce1d3201d16594cebf9d7eb3f9d"
        );
        let answer = md5_password("postgres", "postgres", [1, 2, 3, 4]);
        assert!(answer.starts_with("md5"));
        assert_eq!(answer.len(), 35);
        let mut expected = Md5::new();
        expected.update(b"3175bce1d3201d16594cebf9d7eb3f9d");
        expected.update([1, 2, 3, 4]);
        assert_eq!(answer, format!("md5{}", hex(&expected.finalize())));
    }

    #[test]
    fn startup_and_ssl_request_packets() {
        assert_eq!(ssl_request(), [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        let packet = startup_message("u", "d");
        assert_eq!(&packet[..4], &(packet.len() as i32).to_be_bytes());
        assert_eq!(&packet[4..8], &[0, 3, 0, 0]);
        assert_eq!(&packet[8..], b"user\0u\0database\0d\0\0");
    }

    #[test]
    fn login_answers_md5_and_stops_at_ready_for_query() {
        // Server side of the exchange: md5 challenge, AuthenticationOk, ReadyForQuery.
        let mut server = Vec::new();
        server.extend_from_slice(&[b'R', 0, 0, 0, 12, 0, 0, 0, 5, 9, 9, 9, 9]);
        server.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        server.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let mut stream = FakeStream {
            input: std::io::Cursor::new(server),
            output: Vec::new(),
        };
        let login = IdleLogin {
            addr: "127.0.0.1:1".parse().unwrap(),
            user: "idle".into(),
            password: "pw".into(),
            database: "bench".into(),
            tls: None,
        };
        log_in(&mut stream, &login).unwrap();
        let expected_password = password_message(&md5_password("idle", "pw", [9, 9, 9, 9]));
        assert!(stream.output.ends_with(&expected_password));
    }

    #[test]
    fn login_reports_the_servers_error() {
        let mut body = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0".to_vec();
        let mut server = vec![b'E'];
        server.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        server.append(&mut body);
        let mut stream = FakeStream {
            input: std::io::Cursor::new(server),
            output: Vec::new(),
        };
        let login = IdleLogin {
            addr: "127.0.0.1:1".parse().unwrap(),
            user: "idle".into(),
            password: "pw".into(),
            database: "bench".into(),
            tls: None,
        };
        let err = log_in(&mut stream, &login).unwrap_err();
        assert!(err
            .to_string()
            .contains("28P01: password authentication failed"));
    }

    /// Reads from a script, records what is written.
    struct FakeStream {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for FakeStream {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for FakeStream {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

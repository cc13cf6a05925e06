//! A minimal blocking PostgreSQL client for the harness's own connections (idle clients, the
//! fixed-rate IAM storm): TCP, optional TLS (rustls), StartupMessage, cleartext or md5 login,
//! simple queries, Terminate.
//!
//! The harness needs connections that cost it little and that it controls exactly; libpq's
//! per-connection OpenSSL context is what limits pgbench's connection rate on a small machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
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
/// Larger server messages than this mean we are not talking to PostgreSQL.
const MAX_MESSAGE: usize = 1 << 20;
/// For connect, each read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Who to log in as, and where.
#[derive(Debug, Clone)]
pub struct Login {
    /// The pooler's address.
    pub addr: SocketAddr,
    /// Role.
    pub user: String,
    /// Its password (or IAM auth token), answered to a cleartext or md5 request.
    pub password: String,
    /// Database.
    pub database: String,
    /// TLS client configuration when the connection uses TLS.
    pub tls: Option<Arc<ClientConfig>>,
}

/// A logged-in connection, at ReadyForQuery.
pub enum Connected {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Connected {
    /// Sends `sql` as a simple Query and reads up to ReadyForQuery; fails on an ErrorResponse.
    pub fn query(&mut self, sql: &str) -> Result<()> {
        match self {
            Self::Plain(s) => query(s, sql),
            Self::Tls(s) => query(s.as_mut(), sql),
        }
    }

    /// Sends Terminate and closes the connection, as a polite client does.
    pub fn terminate(mut self) -> Result<()> {
        const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
        match &mut self {
            Self::Plain(s) => s.write_all(&TERMINATE),
            Self::Tls(s) => {
                s.write_all(&TERMINATE)?;
                s.conn.send_close_notify();
                s.flush()
            }
        }
        .context("send Terminate")
    }

    /// The socket alone: for connections held idle, where keeping the TLS state would cost the
    /// harness memory, not the pooler.
    pub fn into_socket(self) -> TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.sock,
        }
    }

    /// The TLS version and cipher suite negotiated, e.g. "TLSv1_3 TLS13_AES_256_GCM_SHA384".
    pub fn tls_session(&self) -> Option<String> {
        let Self::Tls(s) = self else { return None };
        let session = format!(
            "{} {}",
            s.conn
                .protocol_version()
                .map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}")),
            s.conn
                .negotiated_cipher_suite()
                .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite())),
        );
        Some(session.replace('"', ""))
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
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection pays a full handshake, as libpq's (which never resumes) would.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One connection: TCP, optional TLS, login up to ReadyForQuery.
pub fn connect(login: &Login) -> Result<Connected> {
    let mut tcp = TcpStream::connect_timeout(&login.addr, IO_TIMEOUT)
        .with_context(|| format!("connect to {}", login.addr))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| tcp.set_nodelay(true))
        .context("set socket options")?;
    let Some(config) = &login.tls else {
        log_in(&mut tcp, login)?;
        return Ok(Connected::Plain(tcp));
    };

    tcp.write_all(&ssl_request()).context("send SSLRequest")?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .context("read the answer to SSLRequest")?;
    if answer != *b"S" {
        bail!(
            "the server refused TLS (answered {:?})",
            char::from(answer[0])
        );
    }
    let name = ServerName::try_from("localhost").context("server name")?;
    let conn = ClientConnection::new(Arc::clone(config), name).context("start a TLS session")?;
    let mut tls = StreamOwned::new(conn, tcp);
    log_in(&mut tls, login)?;
    Ok(Connected::Tls(Box::new(tls)))
}

/// StartupMessage, the password exchange (cleartext or md5), then read up to ReadyForQuery.
fn log_in<S: Read + Write>(stream: &mut S, login: &Login) -> Result<()> {
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
                    3 => stream
                        .write_all(&password_message(&login.password))
                        .context("send PasswordMessage")?,
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
                        "the server asked for authentication method {other}, not cleartext (3) \
                         or md5 (5); the harness's users need an md5 hash in the auth file or \
                         an IAM token"
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

/// A simple Query, then read up to ReadyForQuery.
fn query<S: Read + Write>(stream: &mut S, sql: &str) -> Result<()> {
    let len = i32::try_from(4 + sql.len() + 1).context("query too long")?;
    let mut packet = vec![b'Q'];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(sql.as_bytes());
    packet.push(0);
    stream.write_all(&packet).context("send Query")?;
    let mut error = None;
    loop {
        let (tag, body) = read_message(stream)?;
        match tag {
            b'E' => error = Some(error_fields(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(e) => bail!("query failed: {e}"),
        None => Ok(()),
    }
}

/// Reads one server message: its type byte and body.
fn read_message<S: Read>(stream: &mut S) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header)
        .context("read a message from the server")?;
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
        .context("read a message body from the server")?;
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

    fn login(password: &str) -> Login {
        Login {
            addr: "127.0.0.1:1".parse().unwrap(),
            user: "idle".into(),
            password: password.into(),
            database: "bench".into(),
            tls: None,
        }
    }

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
        let mut stream = FakeStream::new(server);
        log_in(&mut stream, &login("pw")).unwrap();
        let expected_password = password_message(&md5_password("idle", "pw", [9, 9, 9, 9]));
        assert!(stream.output.ends_with(&expected_password));
    }

    #[test]
    fn login_answers_cleartext_with_the_password_itself() {
        let mut server = Vec::new();
        server.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
        server.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        server.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let mut stream = FakeStream::new(server);
        log_in(&mut stream, &login("host:5432/?Action=connect")).unwrap();
        assert!(stream
            .output
            .ends_with(&password_message("host:5432/?Action=connect")));
    }

    #[test]
    fn login_reports_the_servers_error() {
        let mut body = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0".to_vec();
        let mut server = vec![b'E'];
        server.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        server.append(&mut body);
        let mut stream = FakeStream::new(server);
        let err = log_in(&mut stream, &login("pw")).unwrap_err();
        assert!(err
            .to_string()
            .contains("28P01: password authentication failed"));
    }

    #[test]
    fn query_reads_to_ready_for_query_and_reports_errors() {
        let mut server = Vec::new();
        server.extend_from_slice(&[b'C', 0, 0, 0, 13]);
        server.extend_from_slice(b"SELECT 1\0");
        server.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let mut stream = FakeStream::new(server);
        query(&mut stream, "SELECT 1").unwrap();
        assert_eq!(stream.output, b"Q\0\0\0\x0dSELECT 1\0");

        let body = b"SERROR\0C42601\0Msyntax error\0\0";
        let mut server = vec![b'E'];
        server.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        server.extend_from_slice(body);
        server.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let err = query(&mut FakeStream::new(server), "SELEC").unwrap_err();
        assert!(err.to_string().contains("42601: syntax error"), "{err}");
    }

    /// Reads from a script, records what is written.
    struct FakeStream {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl FakeStream {
        fn new(script: Vec<u8>) -> Self {
            Self {
                input: std::io::Cursor::new(script),
                output: Vec::new(),
            }
        }
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

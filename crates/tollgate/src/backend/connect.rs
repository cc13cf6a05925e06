//! Opening a backend connection: TCP, optional TLS by sslmode, StartupMessage, the login the
//! server asks for ("Message Flow: Start-up"), then init_query.

use super::conn::{CancelTarget, ServerConn};
use super::{BackendError, IamTokenSource};
use crate::config::{SslMode, Upstream};
use crate::params::ParamSet;
use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_auth::{md5_response, md5_stored, ScramClient, ScramCredential};
use tollgate_wire::backend::{self, Authentication};
use tollgate_wire::{build, TxStatus};

/// What Tollgate proves to the database when it logs in as a user.
#[derive(Clone)]
pub enum Credential {
    /// The plaintext password (answers any method).
    Password(String),
    /// A stored `md5...` hash (answers md5 only).
    Md5(String),
    /// SCRAM keys recovered from a client's login (answers SCRAM-SHA-256 only).
    Scram(ScramCredential),
    /// IAM auth tokens for Tollgate's own AWS identity, made per login (backend_iam; answers
    /// a cleartext password request, as Aurora with IAM database authentication sends).
    Iam(Arc<IamTokenSource>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(<redacted>)",
            Credential::Md5(_) => "Credential::Md5(<redacted>)",
            Credential::Scram(_) => "Credential::Scram(<redacted>)",
            Credential::Iam(_) => "Credential::Iam(<tokens made per login>)",
        })
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Knows where the database is and how to log in to it.
pub struct Connector {
    upstream: Upstream,
    tls: Option<tokio_rustls::TlsConnector>,
    /// What a reload may change: read once per new connection.
    live: std::sync::RwLock<LiveConnect>,
}

/// The connector's reloadable settings (server_connect_timeout, init_query).
#[derive(Debug, Clone)]
struct LiveConnect {
    timeout: Duration,
    init_query: Option<Arc<str>>,
}

impl Connector {
    /// Builds a connector; fails when the sslmode's CA bundle is unusable.
    pub fn new(
        upstream: Upstream,
        timeout: Duration,
        init_query: Option<String>,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client::connector(upstream.sslmode, upstream.sslrootcert.as_deref())?;
        Ok(Connector {
            upstream,
            tls,
            live: std::sync::RwLock::new(LiveConnect {
                timeout,
                init_query: init_query.map(Arc::from),
            }),
        })
    }

    fn live(&self) -> LiveConnect {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bound on connect + login, and on control queries (server_connect_timeout).
    pub fn timeout(&self) -> Duration {
        self.live().timeout
    }

    /// Applies reloaded server_connect_timeout and init_query to connections opened from now on.
    pub fn update(&self, timeout: Duration, init_query: Option<String>) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = LiveConnect {
            timeout,
            init_query: init_query.map(Arc::from),
        };
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.upstream.host, self.upstream.port)
    }

    /// The database to log in to for a client that asked for `client_db`.
    pub fn database_for<'a>(&'a self, client_db: &'a str) -> &'a str {
        self.upstream.database.as_deref().unwrap_or(client_db)
    }

    /// Opens, logs in and initialises a connection within the connect timeout.
    pub async fn connect(
        &self,
        user: &str,
        database: &str,
        cred: &Credential,
    ) -> Result<ServerConn, BackendError> {
        let live = self.live();
        let secs = live.timeout.as_secs();
        let connecting = self.connect_inner(user, database, cred, live.init_query.as_deref());
        match tokio::time::timeout(live.timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                addr: self.addr(),
                secs,
            }),
        }
    }

    async fn open_stream(&self) -> Result<Stream, BackendError> {
        let addr = self.addr();
        let tcp = TcpStream::connect((self.upstream.host.as_str(), self.upstream.port))
            .await
            .map_err(|source| BackendError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        build::ssl_request(&mut req);
        tcp.write_all(&req).await?;
        let answer = tcp.read_u8().await?;
        match answer {
            b'S' => {
                let name = ServerName::try_from(self.upstream.host.clone()).map_err(|e| {
                    BackendError::Protocol(format!("bad server name {}: {e}", self.upstream.host))
                })?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|source| BackendError::Tls {
                        addr: addr.clone(),
                        source,
                    })?;
                Ok(Stream::ClientTls(Box::new(stream)))
            }
            b'N' if self.upstream.sslmode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
            b'N' => Err(BackendError::TlsRefused {
                addr,
                mode: self.upstream.sslmode.as_str(),
            }),
            other => Err(BackendError::Protocol(format!(
                "unexpected answer {other:#x} to SSLRequest"
            ))),
        }
    }

    /// Logs in as `user` with `cred` and stops at AuthenticationOk, within the connect
    /// timeout, then closes the connection: whether the database accepts the credential,
    /// and nothing else (the delegate IAM verifier's question). What the server says after
    /// AuthenticationOk, such as a missing database or too many connections, is not about
    /// the credential and is not waited for.
    pub async fn check_login(
        &self,
        user: &str,
        database: &str,
        cred: &Credential,
    ) -> Result<(), BackendError> {
        let timeout = self.timeout();
        let checking = async {
            let mut conn = self.open_logged_in(user, database, cred).await?;
            let mut out = BytesMut::new();
            build::terminate(&mut out);
            // Best effort: the server ends the session when the socket closes anyway.
            let _ = conn.write_all(&out).await;
            Ok(())
        };
        match tokio::time::timeout(timeout, checking).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                addr: self.addr(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// TCP, TLS by sslmode, StartupMessage, and the login up to AuthenticationOk.
    async fn open_logged_in(
        &self,
        user: &str,
        database: &str,
        cred: &Credential,
    ) -> Result<ServerConn, BackendError> {
        let stream = self.open_stream().await?;
        let now = Instant::now();
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            params: ParamSet::default(),
            extras: Vec::new(),
            cancel: CancelTarget {
                process_id: 0,
                secret: Bytes::new(),
            },
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            created: now,
            idle_since: now,
            tx_status: TxStatus::Idle,
            statements: Default::default(),
            broken: false,
            slot: None,
        };
        let mut out = BytesMut::new();
        build::startup_message(&mut out, &[("user", user), ("database", database)]);
        conn.write_all(&out).await?;
        login(
            &mut conn,
            (&self.upstream.host, self.upstream.port),
            user,
            cred,
        )
        .await?;
        Ok(conn)
    }

    async fn connect_inner(
        &self,
        user: &str,
        database: &str,
        cred: &Credential,
        init_query: Option<&str>,
    ) -> Result<ServerConn, BackendError> {
        let mut conn = self.open_logged_in(user, database, cred).await?;
        // Parameters, key, then ReadyForQuery.
        loop {
            let msg = conn.read_message().await?;
            match msg.tag {
                backend::tag::PARAMETER_STATUS => {
                    let (k, v) = backend::parse_parameter_status(&msg.body)?;
                    conn.params.set(k, v);
                }
                backend::tag::BACKEND_KEY_DATA => {
                    let (pid, secret) = backend::parse_backend_key_data(&msg.body)?;
                    conn.cancel = CancelTarget {
                        process_id: pid,
                        secret: Bytes::copy_from_slice(secret),
                    };
                }
                backend::tag::ERROR_RESPONSE => {
                    return Err(BackendError::Server(backend::parse_error_fields(
                        &msg.body,
                    )?));
                }
                backend::tag::READY_FOR_QUERY => {
                    conn.tx_status = backend::parse_ready_for_query(&msg.body)?;
                    break;
                }
                _ => {}
            }
        }
        if let Some(q) = init_query {
            conn.simple_query(q).await?;
        }
        tracing::debug!(
            backend = conn.id,
            pid = conn.cancel.process_id,
            user,
            database,
            "backend connection ready"
        );
        Ok(conn)
    }

    /// Sends a CancelRequest for `target` over a fresh connection ("Canceling Requests in
    /// Progress"); the server closes it without answering.
    pub async fn cancel(&self, target: &CancelTarget) -> Result<(), BackendError> {
        let fut = async {
            let mut stream = self.open_stream().await?;
            let mut out = BytesMut::new();
            build::cancel_request(&mut out, target.process_id, &target.secret);
            stream.write_all(&out).await?;
            stream.flush().await?;
            let mut sink = [0u8; 16];
            let _ = stream.read(&mut sink).await;
            Ok(())
        };
        let timeout = self.timeout();
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Timeout {
                    addr: self.addr(),
                    secs: timeout.as_secs(),
                })
            })
    }
}

/// Answers the server's authentication requests until AuthenticationOk. `endpoint` is the
/// host and port an IAM auth token is signed for.
async fn login(
    conn: &mut ServerConn,
    endpoint: (&str, u16),
    user: &str,
    cred: &Credential,
) -> Result<(), BackendError> {
    let mut scram: Option<ScramClient> = None;
    loop {
        let msg = conn.read_message().await?;
        match msg.tag {
            backend::tag::AUTHENTICATION => {}
            backend::tag::ERROR_RESPONSE => {
                let fields = backend::parse_error_fields(&msg.body)?;
                // Bad credentials are the operator's to fix, not the client's: say so.
                let refused = fields.code.starts_with("28");
                return Err(match cred {
                    Credential::Iam(source) if refused => BackendError::IamLoginRefused {
                        user: user.to_string(),
                        access_key_id: source.access_key_id().await.unwrap_or_default(),
                        fields: Box::new(fields),
                    },
                    _ if refused => BackendError::LoginRefused {
                        user: user.to_string(),
                        fields: Box::new(fields),
                    },
                    _ => BackendError::Server(fields),
                });
            }
            backend::tag::NEGOTIATE_PROTOCOL_VERSION => continue,
            other => {
                return Err(BackendError::Protocol(format!(
                    "unexpected message {:?} during login",
                    other as char
                )))
            }
        }
        let mut out = BytesMut::new();
        match backend::parse_authentication(&msg.body)? {
            Authentication::Ok => return Ok(()),
            Authentication::CleartextPassword => match cred {
                Credential::Password(p) => build::password_message(&mut out, p.as_bytes()),
                Credential::Iam(source) => {
                    let token = source.token(endpoint.0, endpoint.1, user).await?;
                    build::password_message(&mut out, token.as_bytes());
                }
                _ => return Err(unsupported(user, "a cleartext password", "the plaintext password")),
            },
            Authentication::Md5Password { salt } => {
                let stored = match cred {
                    Credential::Password(p) => md5_stored(p, user),
                    Credential::Md5(h) => h.clone(),
                    Credential::Scram(_) => return Err(unsupported(user, "md5", "the plaintext password or its md5 hash")),
                    Credential::Iam(_) => return Err(iam_unsupported(user, "md5")),
                };
                build::password_message(&mut out, md5_response(&stored, salt).as_bytes());
            }
            Authentication::Sasl { mechanisms } => {
                if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(BackendError::AuthUnsupported(format!(
                        "the database offers SASL mechanisms {mechanisms:?}; Tollgate speaks SCRAM-SHA-256"
                    )));
                }
                let sc = match cred {
                    Credential::Password(p) => ScramCredential::Password(p.clone()),
                    Credential::Scram(c) => c.clone(),
                    Credential::Md5(_) => {
                        return Err(unsupported(user, "SCRAM-SHA-256", "the plaintext password or the server's SCRAM verifier"))
                    }
                    Credential::Iam(_) => return Err(iam_unsupported(user, "SCRAM-SHA-256")),
                };
                let mut client = ScramClient::new(sc);
                build::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
                scram = Some(client);
            }
            Authentication::SaslContinue(data) => {
                let client = scram.as_mut().ok_or_else(|| BackendError::Protocol("SASLContinue before SASL".into()))?;
                build::sasl_response(&mut out, &client.server_first(&data)?);
            }
            Authentication::SaslFinal(data) => {
                let client = scram.as_mut().ok_or_else(|| BackendError::Protocol("SASLFinal before SASL".into()))?;
                client.server_final(&data)?;
                continue;
            }
            Authentication::Other(code) => {
                return Err(BackendError::AuthUnsupported(format!(
                    "the database asks for authentication method {code}, which Tollgate does not support; use scram-sha-256, md5 or password in pg_hba.conf"
                )))
            }
        }
        conn.write_all(&out).await?;
    }
}

/// backend_iam logs in with tokens, which the database must ask for as a cleartext password.
fn iam_unsupported(user: &str, method: &str) -> BackendError {
    BackendError::AuthUnsupported(format!(
        "the database asks for {method} authentication for user {user:?}, but backend_iam logs in with IAM auth tokens, which the database must ask for as a cleartext password: enable IAM database authentication on the database and GRANT rds_iam TO {user}"
    ))
}

fn unsupported(user: &str, method: &str, needs: &str) -> BackendError {
    BackendError::AuthUnsupported(format!(
        "the database asks for {method} authentication for user {user:?}, which needs {needs} in Tollgate's auth file"
    ))
}

//! Opening a backend connection: TCP, optional TLS by sslmode, StartupMessage, the login the
//! server asks for ("Message Flow: Start-up"), then init_query.

use super::conn::{CancelTarget, ServerConn, ServerConnData};
use super::{BackendError, IamTokenSource};
use crate::config::{InstanceAddr, SslMode, Upstream};
use crate::params::ParamSet;
use crate::stream::Stream;
use crate::topology::{Endpoint, Target, TargetLease, Topology};
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
    /// The user's password from Secrets Manager (auth_secret), read at each login so a
    /// rotation reaches new connections; a 28P01 re-reads the secret and retries once.
    Secret(Arc<crate::secrets::SecretStore>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(<redacted>)",
            Credential::Md5(_) => "Credential::Md5(<redacted>)",
            Credential::Scram(_) => "Credential::Scram(<redacted>)",
            Credential::Iam(_) => "Credential::Iam(<tokens made per login>)",
            Credential::Secret(_) => "Credential::Secret(<read per login>)",
        })
    }
}

/// What the database made Tollgate prove before its AuthenticationOk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginProof {
    /// Nothing: the server let Tollgate in unasked (pg_hba.conf `trust`, `peer`, ...).
    Nothing,
    /// A cleartext password (or an IAM auth token), over verify-full TLS.
    Cleartext,
    /// An md5 response.
    Md5,
    /// A SCRAM-SHA-256 exchange whose server signature checked out.
    Scram,
}

/// SCRAM keys derived from passwords, by (password, salt, iterations). PostgreSQL keeps one
/// salt per role, so a pool opening connections for a role runs PBKDF2 once, not per
/// connection. Bounded: when full it starts afresh (a server inventing salts gains nothing
/// but derivations, which the PBKDF2 slots bound anyway).
#[derive(Default)]
struct ScramKeyCache {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], ScramCredential>>,
}

/// Entries kept in [`ScramKeyCache`]: one per role and password is what a deployment needs.
const SCRAM_KEY_CACHE_SIZE: usize = 1024;

impl ScramKeyCache {
    /// The cache key: a digest, so the map holds no password (its values are as secret).
    fn key(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update((password.len() as u64).to_be_bytes());
        h.update(password.as_bytes());
        h.update((salt.len() as u64).to_be_bytes());
        h.update(salt);
        h.update(iterations.to_be_bytes());
        h.finalize().into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<ScramCredential> {
        crate::sync::lock(&self.map).get(key).cloned()
    }

    fn put(&self, key: [u8; 32], keys: ScramCredential) {
        let mut map = crate::sync::lock(&self.map);
        if map.len() >= SCRAM_KEY_CACHE_SIZE {
            map.clear();
        }
        map.insert(key, keys);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Knows where the database is and how to log in to it.
pub struct Connector {
    upstream: Upstream,
    /// The instances and which is the writer: where each new connection goes.
    topology: Arc<Topology>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// What a reload may change: read once per new connection.
    live: std::sync::RwLock<LiveConnect>,
    /// PBKDF2 results for SCRAM logins with auth-file passwords.
    scram_keys: ScramKeyCache,
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
        topology: Arc<Topology>,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client::connector(upstream.sslmode, upstream.sslrootcert.as_deref())?;
        Ok(Connector {
            upstream,
            topology,
            tls,
            live: std::sync::RwLock::new(LiveConnect {
                timeout,
                init_query: init_query.map(Arc::from),
            }),
            scram_keys: ScramKeyCache::default(),
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

    /// The instances behind the upstream.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The TLS connector by sslmode (None: disable), for the control path too.
    pub fn tls(&self) -> Option<tokio_rustls::TlsConnector> {
        self.tls.clone()
    }

    /// The upstream's sslmode.
    pub fn sslmode(&self) -> SslMode {
        self.upstream.sslmode
    }

    /// The upstream's `host:port`, for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.upstream.host, self.upstream.port)
    }

    /// The database to log in to for a client that asked for `client_db`.
    pub fn database_for<'a>(&'a self, client_db: &'a str) -> &'a str {
        self.upstream.database.as_deref().unwrap_or(client_db)
    }

    /// Opens, logs in and initialises a connection to `target` within the connect timeout.
    /// Sessions of the read-only endpoint get `default_transaction_read_only` at login, so
    /// a write fails with PostgreSQL's own 25006 even on the writer fallback.
    pub async fn connect(
        &self,
        target: &Arc<Target>,
        endpoint: Endpoint,
        user: &str,
        database: &str,
        cred: &Credential,
    ) -> Result<ServerConn, BackendError> {
        let live = self.live();
        let seen = match cred {
            Credential::Secret(store) => store.generation(user),
            _ => 0,
        };
        let first = self
            .bounded_attempt(&live, target, endpoint, user, database, cred)
            .await;
        // The secret was rotated under us: read it again (single-flight, rate-limited) and
        // try the new value once.
        if let (Err(BackendError::LoginRefused { fields, .. }), Credential::Secret(store)) =
            (&first, cred)
        {
            if fields.code == "28P01"
                && store
                    .refresh_now(
                        user,
                        seen,
                        "the database refused the stored password (28P01)",
                    )
                    .await
            {
                return self
                    .bounded_attempt(&live, target, endpoint, user, database, cred)
                    .await;
            }
        }
        first
    }

    /// One connect + login + init_query, bounded by server_connect_timeout.
    async fn bounded_attempt(
        &self,
        live: &LiveConnect,
        target: &Arc<Target>,
        endpoint: Endpoint,
        user: &str,
        database: &str,
        cred: &Credential,
    ) -> Result<ServerConn, BackendError> {
        let connecting = self.connect_inner(
            target,
            endpoint,
            user,
            database,
            cred,
            live.init_query.as_deref(),
        );
        match tokio::time::timeout(live.timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                addr: target.addr.to_string(),
                secs: live.timeout.as_secs(),
            }),
        }
    }

    async fn open_stream(&self, target: &InstanceAddr) -> Result<Stream, BackendError> {
        let addr = target.to_string();
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
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
                let name = ServerName::try_from(target.host.clone()).map_err(|e| {
                    BackendError::Protocol(format!("bad server name {}: {e}", target.host))
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
    /// the credential and is not waited for. The proof says what the server asked for: an
    /// AuthenticationOk that asked for nothing says nothing about the credential.
    pub async fn check_login(
        &self,
        user: &str,
        database: &str,
        cred: &Credential,
    ) -> Result<LoginProof, BackendError> {
        let timeout = self.timeout();
        let addr = self.topology.writer_addr();
        let checking = async {
            let (mut conn, proof) = self
                .open_logged_in(&addr, &[("user", user), ("database", database)], cred)
                .await?;
            let mut out = BytesMut::new();
            build::terminate(&mut out);
            // Best effort: the server ends the session when the socket closes anyway.
            let _ = conn.write_all(&out).await;
            Ok(proof)
        };
        match tokio::time::timeout(timeout, checking).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                addr: addr.to_string(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// TCP, TLS by sslmode, StartupMessage, and the login up to AuthenticationOk.
    async fn open_logged_in(
        &self,
        addr: &InstanceAddr,
        startup: &[(&str, &str)],
        cred: &Credential,
    ) -> Result<(ServerConn, LoginProof), BackendError> {
        let user = startup
            .iter()
            .find(|(k, _)| *k == "user")
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let stream = self.open_stream(addr).await?;
        let now = Instant::now();
        let mut conn = ServerConn::new(ServerConnData {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            params: ParamSet::default(),
            extras: Vec::new(),
            cancel: CancelTarget {
                process_id: 0,
                secret: Bytes::new(),
                target: None,
            },
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            created: now,
            idle_since: now,
            tx_status: TxStatus::Idle,
            statements: Default::default(),
            broken: false,
            slot: None,
            lease: None,
            loss_epoch: 0,
        });
        let mut out = BytesMut::new();
        build::startup_message(&mut out, startup);
        conn.write_all(&out).await?;
        let proof = self.login(&mut conn, addr, user, cred).await?;
        Ok((conn, proof))
    }

    async fn connect_inner(
        &self,
        target: &Arc<Target>,
        endpoint: Endpoint,
        user: &str,
        database: &str,
        cred: &Credential,
        init_query: Option<&str>,
    ) -> Result<ServerConn, BackendError> {
        let mut startup = vec![("user", user), ("database", database)];
        if endpoint == Endpoint::Reader {
            startup.push(("options", "-c default_transaction_read_only=on"));
        }
        let (mut conn, _) = self.open_logged_in(&target.addr, &startup, cred).await?;
        conn.lease = Some(TargetLease::new(target.clone()));
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
                        target: Some(target.clone()),
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
        let addr = match &target.target {
            Some(t) => t.addr.clone(),
            None => self.topology.writer_addr(),
        };
        let fut = async {
            let mut stream = self.open_stream(&addr).await?;
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
                    addr: addr.to_string(),
                    secs: timeout.as_secs(),
                })
            })
    }
}

impl Connector {
    /// Answers the server's authentication requests until AuthenticationOk; says what the
    /// server asked for. Refuses, as libpq's `require_auth` would, what would hand a secret to
    /// a server that has not proved itself: a cleartext password or IAM token over anything
    /// but verify-full TLS, and an AuthenticationOk in the middle of SCRAM (before the server
    /// signature in SASLFinal is checked). md5 is answered over any transport: its response is
    /// a salted hash, which gives an impostor no more than an unbound SCRAM exchange does.
    async fn login(
        &self,
        conn: &mut ServerConn,
        addr: &InstanceAddr,
        user: &str,
        cred: &Credential,
    ) -> Result<LoginProof, BackendError> {
        // A secret's password is read now, so a rotation reaches every new connection.
        let resolved;
        let cred = match cred {
            Credential::Secret(store) => {
                resolved = Credential::Password(
                    store.current(user).map(|p| p.to_string()).ok_or_else(|| {
                        BackendError::AuthUnsupported(format!("no auth_secret holds user {user:?}"))
                    })?,
                );
                &resolved
            }
            other => other,
        };
        let mut scram: Option<ScramClient> = None;
        let mut proof = LoginProof::Nothing;
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
                Authentication::Ok => {
                    if scram.as_ref().is_some_and(|c| !c.is_verified()) {
                        return Err(BackendError::Protocol(
                            "the database sent AuthenticationOk in the middle of SCRAM, before \
                             proving with SASLFinal that it holds the password's verifier: it \
                             may not be the real server, so Tollgate will not use the connection"
                                .into(),
                        ));
                    }
                    return Ok(proof);
                }
                Authentication::CleartextPassword => {
                    if self.upstream.sslmode != SslMode::VerifyFull {
                        return Err(cleartext_refused(user, self.upstream.sslmode));
                    }
                    match cred {
                        Credential::Password(p) => build::password_message(&mut out, p.as_bytes()),
                        Credential::Iam(source) => {
                            let token = source
                                .token(&addr.host, addr.port, user)
                                .await?;
                            build::password_message(&mut out, token.as_bytes());
                        }
                        _ => return Err(unsupported(user, "a cleartext password", "the plaintext password")),
                    }
                    proof = LoginProof::Cleartext;
                }
                Authentication::Md5Password { salt } => {
                    let stored = match cred {
                        Credential::Password(p) => md5_stored(p, user),
                        Credential::Md5(h) => h.clone(),
                        Credential::Scram(_) => return Err(unsupported(user, "md5", "the plaintext password or its md5 hash")),
                        Credential::Iam(_) => return Err(iam_unsupported(user, "md5")),
                        // Resolved to its password above.
                        Credential::Secret(_) => return Err(BackendError::AuthUnsupported("unresolved secret credential".into())),
                    };
                    build::password_message(&mut out, md5_response(&stored, salt).as_bytes());
                    proof = LoginProof::Md5;
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
                        Credential::Secret(_) => return Err(BackendError::AuthUnsupported("unresolved secret credential".into())),
                    };
                    let mut client = ScramClient::new(sc);
                    build::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
                    scram = Some(client);
                }
                Authentication::SaslContinue(data) => {
                    let client = scram.as_mut().ok_or_else(|| BackendError::Protocol("SASLContinue before SASL".into()))?;
                    if let Credential::Password(p) = cred {
                        // PBKDF2 with the server's count: bounded, cached, off the async threads.
                        let (salt, iterations) = ScramClient::salt_and_iterations(&data)?;
                        client.set_credential(self.scram_keys(p, salt, iterations).await?);
                    }
                    build::sasl_response(&mut out, &client.server_first(&data)?);
                }
                Authentication::SaslFinal(data) => {
                    let client = scram.as_mut().ok_or_else(|| BackendError::Protocol("SASLFinal before SASL".into()))?;
                    client.server_final(&data)?;
                    proof = LoginProof::Scram;
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

    /// The SCRAM keys for `password` with the server's salt and count, from the cache or
    /// derived now under a PBKDF2 slot.
    async fn scram_keys(
        &self,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<ScramCredential, BackendError> {
        let key = ScramKeyCache::key(password, &salt, iterations);
        if let Some(keys) = self.scram_keys.get(&key) {
            return Ok(keys);
        }
        let password = password.to_string();
        let keys =
            crate::auth::pbkdf2(move || ScramCredential::derive(&password, &salt, iterations))
                .await
                .ok_or_else(|| {
                    BackendError::Protocol("the SCRAM key derivation did not finish".into())
                })?;
        self.scram_keys.put(key, keys.clone());
        Ok(keys)
    }
}

/// A cleartext password request over a connection that is not verify-full TLS: answering
/// would hand the password or token to whoever sits on the path.
fn cleartext_refused(user: &str, mode: SslMode) -> BackendError {
    BackendError::AuthUnsupported(format!(
        "the database asks for a cleartext password for user {user:?}, but Tollgate's connection \
         to it is not verified TLS (sslmode={}); Tollgate sends passwords and IAM auth tokens in \
         the clear only with sslmode=verify-full (and sslrootcert) in upstream, or change \
         pg_hba.conf to scram-sha-256 for Tollgate's address",
        mode.as_str()
    ))
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

/// A scripted stand-in for a database, for tests of the login: it takes the StartupMessage,
/// then the test drives it message by message.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use tokio::net::TcpListener;

    /// The server's end of one connection.
    pub(crate) struct FakeServer {
        pub(crate) stream: TcpStream,
    }

    impl FakeServer {
        /// Writes `msg` (built with `tollgate_wire::build`).
        pub(crate) async fn send(&mut self, build: impl FnOnce(&mut BytesMut)) {
            let mut out = BytesMut::new();
            build(&mut out);
            self.stream.write_all(&out).await.unwrap();
        }

        /// Reads one tagged message from Tollgate: (tag, body).
        pub(crate) async fn recv(&mut self) -> (u8, Vec<u8>) {
            let tag = self.stream.read_u8().await.unwrap();
            let len = self.stream.read_i32().await.unwrap();
            let mut body = vec![0; usize::try_from(len - 4).unwrap()];
            self.stream.read_exact(&mut body).await.unwrap();
            (tag, body)
        }

        /// Everything Tollgate sends until it closes.
        pub(crate) async fn rest(&mut self) -> Vec<u8> {
            let mut all = Vec::new();
            let _ = self.stream.read_to_end(&mut all).await;
            all
        }
    }

    /// A connector for a fake server on a free port (plain TCP: sslmode=disable), and a task
    /// running `script` on the one connection it accepts.
    pub(crate) async fn serve<F, Fut>(script: F) -> (Connector, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(FakeServer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let len = stream.read_i32().await.unwrap();
            let mut startup = vec![0; usize::try_from(len - 4).unwrap()];
            stream.read_exact(&mut startup).await.unwrap();
            script(FakeServer { stream }).await;
        });
        let upstream = crate::config::upstream::parse_upstream(&format!(
            "postgres://127.0.0.1:{port}/?sslmode=disable"
        ))
        .unwrap();
        let topology = crate::topology::Topology::single(&upstream);
        let connector = Connector::new(upstream, Duration::from_secs(10), None, topology).unwrap();
        (connector, task)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{serve, FakeServer};
    use super::*;
    use tollgate_auth::{ScramServer, ScramVerifier};
    use tollgate_wire::frontend;

    fn password(p: &str) -> Credential {
        Credential::Password(p.into())
    }

    /// Runs SCRAM as the server up to (and not including) SASLFinal; returns the
    /// server-final-message it would send, `None` for a wrong proof.
    async fn scram_until_final(s: &mut FakeServer, verifier: ScramVerifier) -> Option<Vec<u8>> {
        s.send(|o| build::auth_sasl(o, &["SCRAM-SHA-256"])).await;
        let (tag, body) = s.recv().await;
        assert_eq!(tag, b'p');
        let (_, first) = frontend::parse_sasl_initial_response(&body).unwrap();
        let mut server = ScramServer::new(verifier);
        let server_first = server.client_first(first.unwrap()).unwrap();
        s.send(|o| build::auth_sasl_continue(o, &server_first))
            .await;
        let (_, last) = s.recv().await;
        server.client_final(&last).ok().map(|ok| ok.server_final)
    }

    #[tokio::test]
    async fn a_full_scram_login_proves_scram_and_reuses_the_derived_keys() {
        let verifier = ScramVerifier::from_password("pw", b"per-role-salt", 4096);
        let script = |v: ScramVerifier| {
            move |mut s: FakeServer| async move {
                match scram_until_final(&mut s, v).await {
                    Some(fin) => {
                        s.send(|o| build::auth_sasl_final(o, &fin)).await;
                        s.send(build::auth_ok).await;
                    }
                    None => {
                        s.send(|o| build::error_response(o, "FATAL", "28P01", "wrong", None, None))
                            .await
                    }
                }
                s.rest().await;
            }
        };
        let (connector, server) = serve(script(verifier.clone())).await;
        let proof = connector.check_login("app", "app", &password("pw")).await;
        assert_eq!(proof.unwrap(), LoginProof::Scram);
        assert_eq!(crate::sync::lock(&connector.scram_keys.map).len(), 1);
        server.await.unwrap();

        // The cache is what the next login uses: poisoned with another password's keys, the
        // login with "pw" fails, which it would not if it derived afresh.
        let (connector, server) = serve(script(verifier)).await;
        connector.scram_keys.put(
            ScramKeyCache::key("pw", b"per-role-salt", 4096),
            ScramCredential::derive("other", b"per-role-salt", 4096),
        );
        assert!(matches!(
            connector.check_login("app", "app", &password("pw")).await,
            Err(BackendError::LoginRefused { .. })
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn authentication_ok_before_sasl_final_is_refused() {
        let verifier = ScramVerifier::from_password("pw", b"salt", 4096);
        let (connector, server) = serve(move |mut s| async move {
            let _ = scram_until_final(&mut s, verifier).await.unwrap();
            // An impostor that took the proof but cannot sign: straight to AuthenticationOk.
            s.send(build::auth_ok).await;
            s.rest().await;
        })
        .await;
        let err = connector
            .check_login("app", "app", &password("pw"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::Protocol(m) if m.contains("before proving with SASLFinal")),
            "{err}"
        );
        server.await.unwrap();

        // And straight after SASLInitialResponse.
        let (connector, server) = serve(|mut s| async move {
            s.send(|o| build::auth_sasl(o, &["SCRAM-SHA-256"])).await;
            let _ = s.recv().await;
            s.send(build::auth_ok).await;
            s.rest().await;
        })
        .await;
        assert!(matches!(
            connector.check_login("app", "app", &password("pw")).await,
            Err(BackendError::Protocol(_))
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_cleartext_request_below_verify_full_gets_no_password() {
        let (connector, server) = serve(|mut s| async move {
            s.send(build::auth_cleartext_password).await;
            let sent = s.rest().await;
            // Tollgate may say Terminate, never 'p' with the password.
            assert!(!sent.windows(6).any(|w| w == b"secret"), "{sent:?}");
            assert!(!sent.contains(&b'p'), "{sent:?}");
        })
        .await;
        let err = connector
            .check_login("app", "app", &password("secret"))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, BackendError::AuthUnsupported(_))
                && msg.contains("sslmode=disable")
                && msg.contains("sslmode=verify-full"),
            "{msg}"
        );
        assert_eq!(err.sqlstate(), "28000");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn md5_is_answered_over_plain_tcp_and_trust_proves_nothing() {
        let (connector, server) = serve(|mut s| async move {
            s.send(|o| build::auth_md5_password(o, *b"salt")).await;
            let (tag, body) = s.recv().await;
            assert_eq!(tag, b'p');
            let expected = md5_response(&md5_stored("pw", "app"), *b"salt");
            assert_eq!(
                frontend::parse_password(&body).unwrap(),
                expected.as_bytes()
            );
            s.send(build::auth_ok).await;
            s.rest().await;
        })
        .await;
        let proof = connector.check_login("app", "app", &password("pw")).await;
        assert_eq!(proof.unwrap(), LoginProof::Md5);
        server.await.unwrap();

        let (connector, server) = serve(|mut s| async move {
            s.send(build::auth_ok).await;
            s.rest().await;
        })
        .await;
        let proof = connector.check_login("app", "app", &password("pw")).await;
        assert_eq!(proof.unwrap(), LoginProof::Nothing);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_asking_for_a_huge_iteration_count_is_refused_without_deriving() {
        let (connector, server) = serve(|mut s| async move {
            s.send(|o| build::auth_sasl(o, &["SCRAM-SHA-256"])).await;
            let (_, body) = s.recv().await;
            let (_, first) = frontend::parse_sasl_initial_response(&body).unwrap();
            let nonce = std::str::from_utf8(first.unwrap())
                .unwrap()
                .strip_prefix("n,,n=,r=")
                .unwrap()
                .to_string();
            let server_first = format!("r={nonce}x,s=c2FsdA==,i=2000000000");
            s.send(|o| build::auth_sasl_continue(o, server_first.as_bytes()))
                .await;
            s.rest().await;
        })
        .await;
        let err = connector
            .check_login("app", "app", &password("pw"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Scram(tollgate_auth::ScramError::TooManyIterations { .. })
            ),
            "{err}"
        );
        assert!(crate::sync::lock(&connector.scram_keys.map).is_empty());
        server.await.unwrap();
    }
}

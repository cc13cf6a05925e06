//! The one place where anything that ends or refuses a client session becomes an
//! ErrorResponse with a SQLSTATE and a message a person can act on.

use crate::backend::BackendError;
use crate::pool::PoolError;
use std::time::Duration;
use tollgate_wire::WireError;

/// Why a session ended early or a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client's bytes did not parse.
    #[error("invalid message from the client: {0}")]
    Wire(#[from] WireError),
    /// The client broke the protocol's order of messages.
    #[error("{0}")]
    Protocol(String),
    /// Startup asked for a protocol version we do not speak.
    #[error("unsupported frontend protocol {major}.{minor}: Tollgate supports 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
    /// require_tls is on and the client did not start TLS.
    #[error("this Tollgate requires TLS (require_tls); connect with sslmode=require")]
    TlsRequired,
    /// Startup asked for something Tollgate does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The virtual admin database was asked for by a user not in admin_users.
    #[error("user \"{user}\" may not open the Tollgate admin console; add it to admin_users")]
    NotAdmin { user: String },
    /// The startup packet lacked a user.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// Authentication failed; `reason` is for the log only, `hint` for the client.
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed {
        user: String,
        reason: String,
        hint: &'static str,
    },
    /// An IAM login was refused (a bad, stale or forged token, or a login `iam_auth` forbids);
    /// the message says which check failed and never quotes a secret.
    #[error("{refusal}")]
    IamRefused {
        user: String,
        refusal: crate::iam::Refusal,
    },
    /// A user proved itself with an IAM token but Tollgate has nothing to log in to the
    /// database with for it.
    #[error("user \"{user}\" authenticated with IAM but Tollgate holds no database credential for it: {why}")]
    NoBackendCredential { user: String, why: &'static str },
    /// No backend connection could be had.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The database refused or failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The backend connection broke while serving this client.
    #[error("the database connection serving this session was lost ({0}); the transaction in progress, if any, did not complete; reconnect and retry")]
    ServerLost(String),
    /// The client was silent for longer than idle_client_timeout.
    #[error("closing the connection after {} s without activity (idle_client_timeout)", .0.as_secs())]
    IdleTimeout(Duration),
    /// An operator ended this session (KILL in the console).
    #[error("terminating connection due to administrator command (KILL in the Tollgate console)")]
    Killed,
    /// Tollgate is shutting down.
    #[error("Tollgate is shutting down; reconnect to another instance or retry shortly")]
    ShuttingDown,
    /// Reading this client's large message would pass max_message_memory.
    #[error("out of memory: Tollgate's budget for large client messages (max_message_memory = {limit} bytes) is in use by other sessions; retry shortly, or raise max_message_memory")]
    MessageMemory { limit: usize },
    /// A socket error with the client: nothing can be sent.
    #[error("client connection error: {0}")]
    ClientIo(std::io::Error),
    /// The TLS handshake with the client failed: nothing can be sent.
    #[error("TLS handshake with the client failed: {0}")]
    ClientTls(std::io::Error),
}

impl SessionError {
    /// The SQLSTATE sent to the client, or `None` when the client cannot be told anything.
    pub fn sqlstate(&self) -> Option<&str> {
        Some(match self {
            SessionError::Wire(WireError::TooLarge { .. }) => "54000",
            SessionError::Wire(_) | SessionError::Protocol(_) => "08P01",
            SessionError::UnsupportedVersion { .. } | SessionError::Unsupported(_) => "0A000",
            SessionError::TlsRequired | SessionError::NoUser | SessionError::NotAdmin { .. } => {
                "28000"
            }
            SessionError::AuthFailed { .. } => "28P01",
            SessionError::IamRefused { refusal, .. } => refusal.sqlstate(),
            SessionError::NoBackendCredential { .. } => "28000",
            SessionError::Pool(e) => e.sqlstate(),
            SessionError::Backend(e) => e.sqlstate(),
            SessionError::ServerLost(_) => "08006",
            SessionError::IdleTimeout(_) => "57P05",
            SessionError::MessageMemory { .. } => "53200",
            SessionError::ShuttingDown | SessionError::Killed => "57P01",
            SessionError::ClientIo(_) | SessionError::ClientTls(_) => return None,
        })
    }

    /// A hint line, where one helps.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SessionError::Wire(WireError::TooLarge { .. }) => {
                Some("raise max_message_size if such large queries are expected")
            }
            SessionError::AuthFailed { hint, .. } => Some(hint),
            _ => None,
        }
    }

    /// The message text: the server's own for its errors, ours otherwise.
    pub fn message(&self) -> String {
        match self {
            SessionError::Backend(BackendError::Server(f))
            | SessionError::Pool(PoolError::Backend(BackendError::Server(f))) => f.message.clone(),
            other => other.to_string(),
        }
    }

    /// Short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Wire(WireError::TooLarge { .. }) => "message_too_large",
            SessionError::Wire(_) | SessionError::Protocol(_) => "protocol_violation",
            SessionError::UnsupportedVersion { .. } => "unsupported_version",
            SessionError::Unsupported(_) => "unsupported",
            SessionError::TlsRequired => "tls_required",
            SessionError::NoUser => "no_user",
            SessionError::NotAdmin { .. } => "not_admin",
            SessionError::AuthFailed { .. } | SessionError::IamRefused { .. } => "auth_failed",
            SessionError::NoBackendCredential { .. } => "no_backend_credential",
            SessionError::Pool(PoolError::Exhausted { .. }) => "pool_exhausted",
            SessionError::Pool(PoolError::ShuttingDown) | SessionError::ShuttingDown => "shutdown",
            SessionError::Pool(PoolError::Paused { .. }) => "pool_paused",
            SessionError::Pool(PoolError::TooManyPools { .. }) => "too_many_pools",
            SessionError::Killed => "killed",
            SessionError::Pool(PoolError::NoTarget { .. }) => "no_target",
            SessionError::Pool(PoolError::Backend(_)) | SessionError::Backend(_) => "backend_error",
            SessionError::ServerLost(_) => "backend_lost",
            SessionError::IdleTimeout(_) => "idle_timeout",
            SessionError::MessageMemory { .. } => "message_memory",
            SessionError::ClientIo(_) => "client_io",
            SessionError::ClientTls(_) => "client_tls",
        }
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::ClientIo(e)
    }
}

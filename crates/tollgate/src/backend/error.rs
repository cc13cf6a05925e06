//! What can go wrong talking to the database.

use tollgate_wire::backend::ErrorFields;

/// A backend connection failure, worded so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect failed.
    #[error("could not connect to the database at {addr}: {source}; check that it is running and that --upstream names it")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// Connecting and logging in took too long.
    #[error(
        "connecting to the database at {addr} took longer than server_connect_timeout ({secs} s)"
    )]
    Timeout { addr: String, secs: u64 },
    /// sslmode demands TLS and the server does not offer it.
    #[error("the database at {addr} does not offer TLS but sslmode={mode}; enable ssl on the server or lower sslmode")]
    TlsRefused { addr: String, mode: &'static str },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS handshake with the database at {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    /// The server answered with an ErrorResponse.
    #[error("{}", .0.message)]
    Server(ErrorFields),
    /// The server refused the credentials Tollgate holds for a user.
    #[error("the database refused Tollgate's login as user {user:?}: {}; check that user's entry in the auth file", .fields.message)]
    LoginRefused {
        user: String,
        fields: Box<ErrorFields>,
    },
    /// The server refused the IAM auth token Tollgate generated for its own identity (backend_iam).
    #[error("the database refused Tollgate's IAM auth token for user {user:?} (access key {access_key_id}): {}; check that Tollgate's AWS identity may rds-db:connect as this user, that the user has GRANT rds_iam, and that backend_iam_region is the database's region", .fields.message)]
    IamLoginRefused {
        user: String,
        access_key_id: String,
        fields: Box<ErrorFields>,
    },
    /// Tollgate could not make an IAM auth token for its own login (backend_iam).
    #[error("Tollgate cannot make an IAM auth token to log in to the database: {0}; give it AWS credentials (environment, profile, web identity, ECS task role or instance role)")]
    IamCredentials(String),
    /// The server asked for a login method our credentials cannot answer.
    #[error("{0}")]
    AuthUnsupported(String),
    /// SCRAM with the server failed.
    #[error("SCRAM login to the database failed: {0}")]
    Scram(#[from] tollgate_auth::ScramError),
    /// The server broke the protocol.
    #[error("protocol error from the database: {0}")]
    Protocol(String),
    /// The server's bytes did not parse.
    #[error("malformed message from the database: {0}")]
    Wire(#[from] tollgate_wire::WireError),
    /// The server closed the connection.
    #[error("the database closed the connection")]
    Closed,
    /// A socket error on an established connection.
    #[error("lost the database connection: {0}")]
    Io(#[from] std::io::Error),
}

impl BackendError {
    /// SQLSTATE to report to the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::TlsRefused { .. }
            | BackendError::Tls { .. } => "08001",
            BackendError::Server(f) => f.code.as_str(),
            BackendError::LoginRefused { fields, .. }
            | BackendError::IamLoginRefused { fields, .. } => fields.code.as_str(),
            BackendError::IamCredentials(_) => "08001",
            BackendError::AuthUnsupported(_) => "28000",
            BackendError::Scram(_) => "28P01",
            BackendError::Protocol(_) | BackendError::Wire(_) => "08P01",
            BackendError::Closed | BackendError::Io(_) => "08006",
        }
    }

    /// Whether a new connection failed the way a server that is down, restarting or failing
    /// over fails: refused or unanswered, lost during login, or turned away at login with
    /// 57P03 (starting up, shutting down, not accepting connections) or a shutdown's 57P01 /
    /// 57P02. Such a failure is waited out and retried (up to connection_borrow_timeout),
    /// never passed to the client as the end of its connection.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::Closed
            | BackendError::Io(_) => true,
            BackendError::Server(f) => matches!(f.code.as_str(), "57P03" | "57P01" | "57P02"),
            _ => false,
        }
    }

    /// Whether the failure is the server's verdict on the request (the connection may be fine).
    pub fn is_server_error(&self) -> bool {
        matches!(self, BackendError::Server(_))
    }
}

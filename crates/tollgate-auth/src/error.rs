//! Error types of this crate: one for the auth file, one for SCRAM exchanges.
//!
//! Neither ever carries a password, key or proof: messages are fixed strings or line numbers.

/// Why the auth file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path as given to `UserList::load`.
        path: String,
        /// The underlying read error.
        source: std::io::Error,
    },
    /// A line is not of the form `"user" "secret"`.
    #[error("auth file line {line}: {why}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line (never its content, which may hold a password).
        why: String,
    },
}

/// Why a SCRAM-SHA-256 exchange or verifier was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// A message or stored verifier does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (gs2 flag `p`), which we do not offer.
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// A nonce did not continue the exchange's nonce.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The proof did not match the verifier (or the user is unknown), or the server said `e=`.
    #[error("password authentication failed")]
    WrongPassword,
    /// A message arrived in a state that does not expect it.
    #[error("messages out of order")]
    OutOfOrder,
    /// The server could not prove it knows the verifier.
    #[error("server signature does not match")]
    BadServerSignature,
    /// The server asked for more PBKDF2 iterations than the client side will run.
    #[error("the server asks for {iterations} SCRAM iterations, over Tollgate's limit of {limit}; give the role a password hashed with fewer (PostgreSQL's scram_iterations, default 4096)")]
    TooManyIterations {
        /// The server's count.
        iterations: u32,
        /// The limit, `MAX_SERVER_ITERATIONS`.
        limit: u32,
    },
    /// Logging in with recovered keys needs the server to hold the same salt and iterations.
    #[error("the server's SCRAM salt or iteration count differs from the auth file's verifier")]
    VerifierMismatch,
}

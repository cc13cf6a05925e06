//! The one error type for everything the wire layer can reject.

/// Why bytes from a peer could not be framed or parsed; the session maps it to an ErrorResponse.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum WireError {
    /// A length field announced more bytes than the caller's limit allows.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length the peer announced, in bytes.
        len: usize,
        /// Limit it broke, in bytes.
        limit: usize,
    },
    /// A length field below the protocol's minimum (or negative).
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A complete message whose contents do not follow "Message Formats".
    #[error("malformed {what} message: {why}")]
    Malformed {
        /// Which message, e.g. "Parse".
        what: &'static str,
        /// What was wrong with it, e.g. "missing NUL terminator".
        why: &'static str,
    },
}

//! Why an IAM auth token was refused, why the trusted keys file or policy could not be loaded,
//! and why a token could not be generated.
//!
//! Token errors name the check that failed and what to do about it. They quote non-secret parts
//! of the token (user, region, endpoint, access key id), cut short so a hostile token cannot
//! flood the logs, and never the signature, the session token or a secret key.

use std::fmt::Write as _;

/// The most characters of a client-supplied value an error message repeats.
const SHOWN_CHARS: usize = 64;

/// Quotes a client-supplied value for an error message: escaped, and cut at 64 characters.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str("\"…");
            return out;
        }
        let _ = write!(out, "{}", c.escape_debug());
    }
    out.push('"');
    out
}

/// Why an IAM auth token was refused; each variant is one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// The token is longer than the configured bound (checked before anything else is read).
    #[error(
        "IAM auth token is {len} bytes, over the limit of {max} (real tokens, even with a \
         session token, are a few KiB); send the token exactly as the AWS SDK returns it"
    )]
    TooLong {
        /// Length of the token received.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The token is not `HOST:PORT/?QUERY` or its query string cannot be decoded.
    #[error(
        "malformed IAM auth token ({0}); send the token exactly as the AWS SDK's \
         RDS auth token call returns it"
    )]
    Malformed(&'static str),
    /// A parameter every RDS auth token carries is absent.
    #[error(
        "IAM auth token has no {0} parameter; generate it with an AWS SDK's RDS auth token call"
    )]
    MissingParameter(&'static str),
    /// A parameter appears twice, so which one was signed is ambiguous.
    #[error("IAM auth token repeats a query parameter: {0}")]
    DuplicateParameter(&'static str),
    /// A parameter is present but not in the form SigV4 prescribes.
    #[error("IAM auth token's {name} parameter is malformed: {why}")]
    BadParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it (never its value).
        why: &'static str,
    },
    /// `X-Amz-Algorithm` is not `AWS4-HMAC-SHA256`.
    #[error(
        "IAM auth token uses signing algorithm {got}; only AWS4-HMAC-SHA256 (SigV4) is accepted"
    )]
    WrongAlgorithm {
        /// The algorithm named in the token (quoted, shortened).
        got: String,
    },
    /// The credential scope does not end in `aws4_request`.
    #[error("IAM auth token's credential scope ends in {got} instead of aws4_request")]
    WrongScopeTerminator {
        /// The last scope element in the token (quoted, shortened).
        got: String,
    },
    /// The token was signed for another AWS service than `rds-db`.
    #[error(
        "IAM auth token is signed for service {got}, not rds-db; generate it with the RDS \
         auth token call rather than a generic presigner"
    )]
    WrongService {
        /// The service in the credential scope (quoted, shortened).
        got: String,
    },
    /// `Action` is not `connect`.
    #[error("IAM auth token's Action is {got}; RDS auth tokens say Action=connect")]
    WrongAction {
        /// The action in the token (quoted, shortened).
        got: String,
    },
    /// The token was signed for another region than this proxy's.
    #[error(
        "IAM auth token is signed for region {got} but this proxy expects {expected}; \
         generate the token for region {expected}"
    )]
    WrongRegion {
        /// The region in the credential scope (quoted, shortened).
        got: String,
        /// The region this proxy is configured with.
        expected: String,
    },
    /// The credential scope's date is not the date of `X-Amz-Date`.
    #[error(
        "IAM auth token's credential date {credential_date} is not the date of its \
         X-Amz-Date {amz_date}; the token was assembled by hand or altered"
    )]
    DateMismatch {
        /// `YYYYMMDD` from the credential scope (quoted, shortened).
        credential_date: String,
        /// The token's `X-Amz-Date` (quoted, shortened).
        amz_date: String,
    },
    /// `X-Amz-SignedHeaders` is not exactly `host`.
    #[error("IAM auth token signs the headers {got}; RDS auth tokens sign exactly \"host\"")]
    WrongSignedHeaders {
        /// The signed header list in the token (quoted, shortened).
        got: String,
    },
    /// `X-Amz-Expires` is 0 or longer than RDS's 15 minutes.
    #[error(
        "IAM auth token's X-Amz-Expires is {got} s; it must be between 1 and 900 (15 minutes)"
    )]
    ExpiresOutOfRange {
        /// The lifetime the token claims, in seconds.
        got: u64,
    },
    /// `X-Amz-Date` is later than now plus the allowed clock skew.
    #[error(
        "IAM auth token's X-Amz-Date is {ahead} s in the future, more than the allowed clock \
         skew of {skew} s; check the client's clock"
    )]
    FromFuture {
        /// How far ahead of our clock the token's time is, in seconds.
        ahead: i64,
        /// The configured clock skew allowance, in seconds.
        skew: i64,
    },
    /// `X-Amz-Date + X-Amz-Expires` has passed.
    #[error(
        "IAM auth token expired {ago} s ago (it was valid for {expires} s from its X-Amz-Date); \
         generate a fresh token right before connecting"
    )]
    Expired {
        /// Seconds since the token stopped being valid.
        ago: i64,
        /// The token's lifetime in seconds.
        expires: u64,
    },
    /// The signed `host:port` is not one of the endpoints this proxy answers to.
    #[error(
        "IAM auth token was generated for endpoint {got}, which is not one of this proxy's \
         endpoints; generate it with the host name and port you connect to"
    )]
    WrongEndpoint {
        /// `host:port` from the token (quoted, shortened).
        got: String,
    },
    /// The token's `DBUser` is not the user named in the startup message.
    #[error(
        "IAM auth token is for database user {token_user} but the connection logs in as \
         {startup_user}; generate the token for the user you connect as"
    )]
    WrongUser {
        /// `DBUser` from the token (quoted, shortened).
        token_user: String,
        /// The startup message's `user` (quoted, shortened).
        startup_user: String,
    },
    /// The access key id is not in the trusted keys file (the id is not secret).
    #[error(
        "unknown access key id {access_key_id}: it is not in the trusted keys file; add it \
         there or sign with a listed key"
    )]
    UnknownAccessKey {
        /// The access key id from the token (quoted, shortened).
        access_key_id: String,
    },
    /// The key's `allow` patterns in the trusted keys file do not cover the user.
    #[error(
        "access key {access_key_id} may not log in as {user}: the user matches none of the \
         key's allow patterns in the trusted keys file"
    )]
    NotAllowed {
        /// The access key id (quoted, shortened).
        access_key_id: String,
        /// The database user (quoted, shortened).
        user: String,
    },
    /// The IAM policy denies, or does not allow, `rds-db:connect` on the user's resource.
    #[error(
        "the IAM policy {verdict} rds-db:connect on {resource} for access key {access_key_id}",
        verdict = if *explicit { "explicitly denies" } else { "has no Allow statement for" }
    )]
    PolicyDenied {
        /// The access key id (quoted, shortened).
        access_key_id: String,
        /// The `arn:...:dbuser:...` resource that was asked for.
        resource: String,
        /// Whether a Deny statement matched (as opposed to no Allow statement matching).
        explicit: bool,
    },
    /// The recomputed signature differs from the token's.
    #[error("signature does not match: the token was altered or signed with another secret")]
    SignatureMismatch,
}

impl IamError {
    /// The SQLSTATE to send: `28000` for policy denials, `28P01` for bad, expired or forged
    /// tokens (PostgreSQL docs, "Appendix A. PostgreSQL Error Codes").
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. } | Self::PolicyDenied { .. } => "28000",
            _ => "28P01",
        }
    }

    /// A short fixed label for metrics and log fields, one per variant.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "too_long",
            Self::Malformed(_) => "malformed",
            Self::MissingParameter(_) => "missing_parameter",
            Self::DuplicateParameter(_) => "duplicate_parameter",
            Self::BadParameter { .. } => "bad_parameter",
            Self::WrongAlgorithm { .. } => "wrong_algorithm",
            Self::WrongScopeTerminator { .. } => "wrong_scope_terminator",
            Self::WrongService { .. } => "wrong_service",
            Self::WrongAction { .. } => "wrong_action",
            Self::WrongRegion { .. } => "wrong_region",
            Self::DateMismatch { .. } => "date_mismatch",
            Self::WrongSignedHeaders { .. } => "wrong_signed_headers",
            Self::ExpiresOutOfRange { .. } => "expires_out_of_range",
            Self::FromFuture { .. } => "from_future",
            Self::Expired { .. } => "expired",
            Self::WrongEndpoint { .. } => "wrong_endpoint",
            Self::WrongUser { .. } => "wrong_user",
            Self::UnknownAccessKey { .. } => "unknown_access_key",
            Self::NotAllowed { .. } => "not_allowed",
            Self::PolicyDenied { .. } => "policy_denied",
            Self::SignatureMismatch => "signature_mismatch",
        }
    }
}

/// Why the trusted keys file could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path as given to `KeyStore::load`.
        path: String,
        /// The underlying read error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("trusted keys file{}: {why}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Syntax {
        /// 1-based line of the problem, where the parser knows it.
        line: Option<usize>,
        /// The parser's message (never the text of the line, which may hold a secret).
        why: String,
    },
    /// A `[[key]]` entry is well-formed TOML but not a usable key.
    #[error("trusted keys file, [[key]] entry {entry}: {why}")]
    Invalid {
        /// 1-based position of the entry among the `[[key]]` tables.
        entry: usize,
        /// What is wrong with it (never the secret).
        why: String,
    },
}

/// Why an IAM policy document could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path as given to `Policy::load`.
        path: String,
        /// The underlying read error.
        source: std::io::Error,
    },
    /// The document is not JSON of the IAM policy shape.
    #[error("IAM policy: {0}")]
    Syntax(String),
    /// A statement uses something this evaluator cannot honour; refusing beats ignoring it.
    #[error("IAM policy statement {statement}: {why}")]
    Unsupported {
        /// 1-based position of the statement.
        statement: usize,
        /// What is not supported and what to do instead.
        why: String,
    },
}

/// Why an IAM auth token could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// An input is outside what a token can carry.
    #[error("cannot generate an IAM auth token: {0}")]
    InvalidInput(&'static str),
    /// The SigV4 signer refused the request.
    #[error("cannot generate an IAM auth token: SigV4 signing failed: {0}")]
    Signing(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_quotes_escapes_and_cuts_long_values() {
        assert_eq!(shown("app"), "\"app\"");
        assert_eq!(shown("a\"b\n"), "\"a\\\"b\\n\"");
        let long = "x".repeat(1000);
        let s = shown(&long);
        assert_eq!(s, format!("\"{}\"…", "x".repeat(64)));
        assert_eq!(shown(&"ü".repeat(64)), format!("\"{}\"", "ü".repeat(64)));
    }

    #[test]
    fn policy_denials_are_28000_and_the_rest_28p01() {
        let denied = IamError::PolicyDenied {
            access_key_id: shown("AKID"),
            resource: "arn:aws:rds-db:us-east-1:1:dbuser:prx/app".into(),
            explicit: true,
        };
        assert_eq!(denied.sqlstate(), "28000");
        assert!(denied.to_string().contains("explicitly denies"), "{denied}");
        let not_allowed = IamError::NotAllowed {
            access_key_id: shown("AKID"),
            user: shown("app"),
        };
        assert_eq!(not_allowed.sqlstate(), "28000");
        assert_eq!(IamError::SignatureMismatch.sqlstate(), "28P01");
        assert_eq!(
            IamError::Expired {
                ago: 1,
                expires: 900
            }
            .sqlstate(),
            "28P01"
        );
        assert_eq!(IamError::SignatureMismatch.reason(), "signature_mismatch");
    }
}

//! Tollgate's authentication core: the auth file, SCRAM-SHA-256 (both sides), md5, and RDS IAM
//! auth tokens ([`iam`]).
//!
//! Pure code: no sockets and no I/O apart from the `load` functions reading their files. Callers
//! drive the state machines with the bytes of SASL and password messages. Secrets never appear
//! in `Debug` output or error messages, and are compared in constant time.

#![warn(missing_docs)]
// Input comes from the network: no panicking shortcuts outside tests (STYLE.md habit 5).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod ct;
mod error;
pub mod iam;
mod md5;
mod scram_attr;
mod scram_client;
mod scram_server;
mod scram_verifier;
mod userlist;

pub use self::ct::ct_eq;
pub use self::error::{AuthFileError, ScramError};
pub use self::md5::{md5_response, md5_stored, verify_md5_response};
pub use self::scram_client::{ScramClient, ScramCredential, MAX_SERVER_ITERATIONS};
pub use self::scram_server::{ScramServer, ScramSuccess};
pub use self::scram_verifier::ScramVerifier;
pub use self::userlist::{Secret, UserList};

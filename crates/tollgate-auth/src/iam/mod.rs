//! IAM database authentication: verifying and generating RDS IAM auth tokens, with no I/O.
//!
//! A client logs in with an RDS auth token as its password: a SigV4-presigned `rds-db`
//! `connect` request ("IAM database authentication", Amazon RDS User Guide). The walk through
//! the files follows one verification: [`token`] splits the token, [`checks`] refuses wrong
//! region, endpoint, user or time before any cryptography, [`signature`] recomputes the SigV4
//! signature with a trusted key from [`keys`], and [`policy`] optionally decides, as IAM would,
//! whether that key may connect as that user. [`verifier`] runs the whole sequence;
//! [`generate`] makes tokens the way the AWS SDKs do.

mod amz_date;
pub mod checks;
pub mod error;
pub mod generate;
pub mod keys;
mod percent;
pub mod policy;
pub mod signature;
pub mod token;
pub mod verifier;
mod wildcard;

pub use self::checks::{check, DbResource, Endpoint, Expectations};
pub use self::error::{GenerateError, IamError, KeysFileError, PolicyError};
pub use self::generate::{generate_token, TokenRequest};
pub use self::keys::{KeyStore, TrustedKey};
pub use self::policy::{Decision, Policy};
pub use self::signature::{expected_signature, verify_signature};
pub use self::token::{Credential, ParsedToken, MAX_TOKEN_LEN};
pub use self::verifier::{precheck, token_cache_key, LocalVerifier, Verified};

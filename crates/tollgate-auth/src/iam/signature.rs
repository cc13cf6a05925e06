//! Recomputing a token's SigV4 signature and comparing it in constant time.
//!
//! The canonical request is built here from the decoded token ("Create a canonical request for
//! Signature Version 4", AWS IAM User Guide); the key derivation and the HMAC are `aws-sigv4`'s
//! own `generate_signing_key` and `calculate_signature`. For a presigned RDS token that is:
//!
//! ```text
//! GET
//! /
//! <every parameter but X-Amz-Signature, RFC 3986-encoded, sorted by name then value>
//! host:<HOST:PORT exactly as in the token>
//!
//! host
//! <SHA-256 of the empty payload>
//! ```
//!
//! The host is signed as the token spells it: every SDK signs the same text it puts in the
//! token (the Rust SDK lowercases both; botocore and the Java SDK keep the case given).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use sha2::{Digest, Sha256};

use crate::ct::ct_eq;
use crate::iam::error::IamError;
use crate::iam::percent::uri_encode;
use crate::iam::token::ParsedToken;

/// SHA-256 of the empty string: RDS tokens sign an empty `GET` body, not `UNSIGNED-PAYLOAD`.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The SigV4 canonical request the token's signer must have hashed.
pub(crate) fn canonical_request(token: &ParsedToken) -> String {
    let mut params: Vec<(String, String)> = token
        .signed_params()
        .iter()
        .map(|(name, value)| (uri_encode(name), uri_encode(value)))
        .collect();
    params.sort();
    let query: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    format!(
        "GET\n/\n{}\nhost:{}\n\nhost\n{EMPTY_PAYLOAD_SHA256}",
        query.join("&"),
        token.authority()
    )
}

/// The SigV4 string to sign: algorithm, time, credential scope and the canonical request hash.
pub(crate) fn string_to_sign(token: &ParsedToken) -> String {
    let cred = token.credential();
    format!(
        "{}\n{}\n{}/{}/{}/{}\n{}",
        token.algorithm(),
        token.amz_date(),
        cred.date,
        cred.region,
        cred.service,
        cred.terminator,
        hex(&Sha256::digest(canonical_request(token).as_bytes()))
    )
}

/// The lowercase hex signature a holder of `secret_access_key` would have put on this token.
///
/// The signing key is derived for the credential scope's own date, region and service, so the
/// result is right even for tokens `checks.rs` would refuse.
pub fn expected_signature(token: &ParsedToken, secret_access_key: &str) -> String {
    // Parsing guarantees a date in 1970..=9999, which `aws-sigv4` formats without panicking.
    let day = u64::try_from(token.credential_date_unix()).unwrap_or(0);
    let time = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(day))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let cred = token.credential();
    let key = generate_signing_key(secret_access_key, time, &cred.region, &cred.service);
    calculate_signature(key, string_to_sign(token).as_bytes())
}

/// Checks the token's signature against one recomputed with `secret_access_key`.
pub fn verify_signature(token: &ParsedToken, secret_access_key: &str) -> Result<(), IamError> {
    let expected = expected_signature(token, secret_access_key);
    if ct_eq(expected.as_bytes(), token.signature().as_bytes()) {
        Ok(())
    } else {
        Err(IamError::SignatureMismatch)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::token::MAX_TOKEN_LEN;

    const SDK_TOKEN: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect\
        &DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2F\
        us-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900\
        &X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17\
        ce3eb3da098b983ad89";

    /// botocore's `test_generate_db_auth_token` vector, in botocore's parameter order.
    const BOTOCORE_TOKEN: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect\
        &DBUser=someusername&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20161107T173933Z\
        &X-Amz-SignedHeaders=host&X-Amz-Expires=900&X-Amz-Credential=akid%2F20161107%2F\
        us-east-1%2Frds-db%2Faws4_request&X-Amz-Signature=d1138cdbc0ca63eec012ec0fc6c2267e03642\
        168f5884a7795320d4c18374c61";

    fn parse(token: &str) -> ParsedToken {
        ParsedToken::parse(token, MAX_TOKEN_LEN).unwrap()
    }

    #[test]
    fn canonical_request_sorts_and_encodes_the_signed_parameters() {
        assert_eq!(
            canonical_request(&parse(SDK_TOKEN)),
            "GET\n/\nAction=connect&DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\n\
             host:prod-instance.us-east-1.rds.amazonaws.com:3306\n\nhost\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verifies_the_aws_sdk_for_rust_vector() {
        let token = parse(SDK_TOKEN);
        assert_eq!(
            expected_signature(&token, "secret"),
            "dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
        assert_eq!(verify_signature(&token, "secret"), Ok(()));
        assert_eq!(
            verify_signature(&token, "secreT"),
            Err(IamError::SignatureMismatch)
        );
    }

    #[test]
    fn verifies_the_botocore_vector_in_its_own_parameter_order() {
        let token = parse(BOTOCORE_TOKEN);
        assert_eq!(verify_signature(&token, "skid"), Ok(()));
        assert_eq!(
            verify_signature(&token, "secret"),
            Err(IamError::SignatureMismatch)
        );
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&Sha256::digest(b"")), EMPTY_PAYLOAD_SHA256);
    }
}

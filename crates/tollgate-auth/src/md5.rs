//! PostgreSQL's `md5` password method ("Password Authentication" in the PostgreSQL docs).
//!
//! The stored form is `"md5" + hex(md5(password + user))`; on the wire the client answers a
//! 4-byte salt with `"md5" + hex(md5(hex_part_of_stored + salt))`.

use ::md5::{Digest, Md5};

use crate::ct::ct_eq;
use crate::userlist::Secret;

/// Lowercase hex of an md5 digest of the concatenated parts.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(hex_digit(byte >> 4));
        out.push(hex_digit(byte & 0x0f));
    }
    out
}

fn hex_digit(nibble: u8) -> char {
    match nibble {
        0..=9 => char::from(b'0' + nibble),
        _ => char::from(b'a' + (nibble - 10)),
    }
}

/// The md5 secret PostgreSQL stores for `user` with `password` (`"md5"` + 32 hex digits).
pub fn md5_stored(password: &str, user: &str) -> String {
    format!("md5{}", md5_hex(&[password.as_bytes(), user.as_bytes()]))
}

/// The password message a client sends for a stored md5 secret and the server's 4-byte salt.
///
/// `stored` is `"md5..."`; a value without the prefix is hashed as given.
pub fn md5_response(stored: &str, salt: [u8; 4]) -> String {
    let hex = stored.strip_prefix("md5").unwrap_or(stored);
    format!("md5{}", md5_hex(&[hex.as_bytes(), &salt]))
}

/// Checks a client's md5 password message against the auth file's secret, in constant time.
///
/// `response` is the PasswordMessage body; one trailing NUL terminator is tolerated. SCRAM
/// secrets cannot answer md5 (the verifier does not hold the md5 hash), so they return `false`.
pub fn verify_md5_response(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = match secret {
        Secret::Plain(password) => md5_response(&md5_stored(password, user), salt),
        Secret::Md5(stored) => md5_response(stored, salt),
        Secret::Scram(_) => return false,
    };
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    ct_eq(expected.as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_is_md5_of_password_then_user() {
        let stored = md5_stored("secret", "app");
        assert_eq!(stored, format!("md5{}", md5_hex(&[b"secretapp"])));
        assert_eq!(stored.len(), 35);
        // Cross-check with rust-postgres' implementation of the same formula.
        assert_eq!(stored, postgres_protocol::password::md5(b"secret", "app"));
    }

    #[test]
    fn md5_of_empty_input_matches_the_known_digest() {
        assert_eq!(md5_hex(&[b""]), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn response_hashes_hex_part_with_salt() {
        let stored = md5_stored("secret", "app");
        let salt = [1, 2, 3, 4];
        let hex = &stored[3..];
        let expected = format!("md5{}", md5_hex(&[hex.as_bytes(), &salt]));
        assert_eq!(md5_response(&stored, salt), expected);
    }

    #[test]
    fn verify_accepts_right_password_for_plain_and_md5_secrets() {
        let salt = [9, 8, 7, 6];
        let response = md5_response(&md5_stored("secret", "app"), salt);
        let plain = Secret::Plain("secret".into());
        let md5 = Secret::Md5(md5_stored("secret", "app"));
        assert!(verify_md5_response(
            &plain,
            "app",
            salt,
            response.as_bytes()
        ));
        assert!(verify_md5_response(&md5, "app", salt, response.as_bytes()));
        let with_nul = format!("{response}\0");
        assert!(verify_md5_response(&md5, "app", salt, with_nul.as_bytes()));
    }

    #[test]
    fn verify_rejects_wrong_password_user_salt_or_scram_secret() {
        let salt = [9, 8, 7, 6];
        let response = md5_response(&md5_stored("secret", "app"), salt);
        let md5 = Secret::Md5(md5_stored("secret", "app"));
        let wrong = md5_response(&md5_stored("Secret", "app"), salt);
        assert!(!verify_md5_response(&md5, "app", salt, wrong.as_bytes()));
        assert!(!verify_md5_response(
            &md5,
            "app",
            [0; 4],
            response.as_bytes()
        ));
        let plain = Secret::Plain("secret".into());
        assert!(!verify_md5_response(
            &plain,
            "other",
            salt,
            response.as_bytes()
        ));
        assert!(!verify_md5_response(&plain, "app", salt, b""));
        let scram = Secret::Scram(crate::ScramVerifier::from_password("secret", b"salt", 1));
        assert!(!verify_md5_response(
            &scram,
            "app",
            salt,
            response.as_bytes()
        ));
    }
}

//! Pieces of RFC 5802's message grammar shared by the SCRAM server and client.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::error::ScramError;

/// Raw nonce length before base64; PostgreSQL uses 18 bytes, giving 24 printable characters.
const NONCE_BYTES: usize = 18;

/// Returns the value of `part` if it is the attribute `name=value`, else `Malformed(what)`.
pub(crate) fn attr<'a>(
    part: Option<&'a str>,
    name: char,
    what: &'static str,
) -> Result<&'a str, ScramError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(ScramError::Malformed(what))
}

/// Whether `part` is an optional extension attribute (`x=value`, x a letter), which we ignore.
pub(crate) fn is_extension(part: &str) -> bool {
    let mut bytes = part.bytes();
    matches!(
        (bytes.next(), bytes.next()),
        (Some(name), Some(b'=')) if name.is_ascii_alphabetic()
    )
}

/// RFC 5802 "printable": a non-empty run of 0x21..=0x7E except ','.
pub(crate) fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A fresh random nonce, base64 of random bytes as PostgreSQL builds its own.
pub(crate) fn new_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; NONCE_BYTES]>())
}

/// Parses a message as UTF-8, as RFC 5802 requires of every SCRAM message.
pub(crate) fn utf8<'a>(msg: &'a [u8], what: &'static str) -> Result<&'a str, ScramError> {
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_requires_name_and_equals_sign() {
        assert_eq!(attr(Some("r=abc"), 'r', "x"), Ok("abc"));
        assert_eq!(attr(Some("r="), 'r', "x"), Ok(""));
        assert_eq!(
            attr(Some("rabc"), 'r', "x"),
            Err(ScramError::Malformed("x"))
        );
        assert_eq!(
            attr(Some("s=abc"), 'r', "x"),
            Err(ScramError::Malformed("x"))
        );
        assert_eq!(attr(None, 'r', "x"), Err(ScramError::Malformed("x")));
    }

    #[test]
    fn nonces_are_printable_and_fresh() {
        let a = new_nonce();
        assert!(is_printable_nonce(&a));
        assert_ne!(a, new_nonce());
        assert!(!is_printable_nonce(""));
        assert!(!is_printable_nonce("a,b"));
        assert!(!is_printable_nonce("a b"));
        assert!(!is_printable_nonce("é"));
    }

    #[test]
    fn extensions_are_letter_equals_value() {
        assert!(is_extension("x=1"));
        assert!(is_extension("x="));
        assert!(!is_extension("1=1"));
        assert!(!is_extension("x"));
        assert!(!is_extension(""));
    }
}

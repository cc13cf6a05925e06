//! Percent-decoding of token query components and SigV4's RFC 3986 encoding.
//!
//! SigV4 signs the *canonical* query string, not the bytes the client sent: each name and value
//! is decoded, then re-encoded with [`uri_encode`] ("Create a canonical request", AWS SigV4
//! docs). So two spellings of one value (`%20` or `+` for a space, `%61` or `a`, `%2f` or `%2F`)
//! sign the same, and the verifier must decode before it re-encodes.
//!
//! `+` decodes to a space. That is the `application/x-www-form-urlencoded` reading, and the one
//! AWS's own Rust signer uses: `aws-sigv4` builds its canonical query with
//! `form_urlencoded::parse`, so a `DBUser=a+b` it signs is the user `a b`. The other SDKs never
//! send a literal `+` (botocore and the Java SDK encode a space as `%20` and a plus as `%2B`),
//! so for them both readings agree. A plus in a user name must therefore arrive as `%2B`.

use std::fmt::Write as _;

/// Decodes one query-string name or value: `+` is a space and `%XX` is a byte.
///
/// Refuses a `%` not followed by two hex digits and a result that is not UTF-8, rather than
/// guessing: no SDK produces either.
pub(crate) fn decode_query_component(s: &str) -> Result<String, &'static str> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err("'%' is not followed by two hex digits"),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| "percent-escapes do not decode to UTF-8")
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encodes per RFC 3986 as SigV4 requires: `A-Z a-z 0-9 - _ . ~` stay, every other byte
/// becomes `%XX` with uppercase hex (so `/` is `%2F` and a space `%20`, never `+`).
pub(crate) fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_in_either_case_and_plus_as_space() {
        assert_eq!(decode_query_component("a%2Fb%2fc").unwrap(), "a/b/c");
        assert_eq!(decode_query_component("app%20user").unwrap(), "app user");
        assert_eq!(decode_query_component("app+user").unwrap(), "app user");
        assert_eq!(decode_query_component("a%2Bb").unwrap(), "a+b");
        assert_eq!(decode_query_component("%61pp").unwrap(), "app");
        assert_eq!(decode_query_component("%C3%BC").unwrap(), "ü");
        assert_eq!(decode_query_component("").unwrap(), "");
    }

    #[test]
    fn refuses_broken_escapes_and_non_utf8() {
        for bad in ["%", "%2", "a%zz", "%g0", "%0g", "%FF", "%C3"] {
            assert!(decode_query_component(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_everything_but_unreserved_with_uppercase_hex() {
        assert_eq!(uri_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(
            uri_encode("akid/20240826/us-east-1/rds-db/aws4_request"),
            "akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request"
        );
        assert_eq!(uri_encode("a b+c=d&*"), "a%20b%2Bc%3Dd%26%2A");
        assert_eq!(uri_encode("ü"), "%C3%BC");
    }

    #[test]
    fn decoding_inverts_encoding() {
        for s in [
            "",
            "plain",
            "a b",
            "a+b",
            "tok/en+=",
            "ünï cödé",
            "%41",
            "~*'()",
        ] {
            assert_eq!(decode_query_component(&uri_encode(s)).unwrap(), s, "{s}");
        }
    }
}

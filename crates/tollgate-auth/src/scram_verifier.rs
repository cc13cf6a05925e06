//! PostgreSQL's stored SCRAM-SHA-256 secret and the key derivations of RFC 5802 section 3.
//!
//! Stored form (PostgreSQL docs, "pg_authid"):
//! `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::ScramError;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "SCRAM-SHA-256$";

/// A SCRAM-SHA-256 verifier: what the server keeps instead of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count (PostgreSQL's default is 4096).
    pub iterations: u32,
    /// The salt, sent to every client that starts an exchange.
    pub salt: Vec<u8>,
    /// H(ClientKey): checks a client's proof.
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key"): proves the server to the client.
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Parses PostgreSQL's stored form, as found in `pg_authid` and auth files.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let rest = s.strip_prefix(PREFIX).ok_or(ScramError::Malformed(
            "verifier does not start with SCRAM-SHA-256$",
        ))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::Malformed("verifier lacks '$' before its keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::Malformed(
            "verifier lacks ':' between iterations and salt",
        ))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(ScramError::Malformed("verifier lacks ':' between its keys"))?;
        let iterations = parse_iterations(iterations).ok_or(ScramError::Malformed(
            "verifier iteration count is not a positive number",
        ))?;
        let salt = decode_b64(salt)
            .filter(|salt| !salt.is_empty())
            .ok_or(ScramError::Malformed("verifier salt is not base64"))?;
        let stored_key = decode_key(stored_key).ok_or(ScramError::Malformed(
            "verifier StoredKey is not 32 bytes of base64",
        ))?;
        let server_key = decode_key(server_key).ok_or(ScramError::Malformed(
            "verifier ServerKey is not 32 bytes of base64",
        ))?;
        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Computes the verifier PostgreSQL would store for `password` with this salt and count.
    ///
    /// The password is SASLprep'd as PostgreSQL does; if SASLprep rejects it (for example for
    /// prohibited characters) the raw bytes are used, again as PostgreSQL does. An iteration
    /// count of 0 is treated as 1, since PBKDF2 needs at least one round.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = salted_password(password, salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key(&salted)),
            server_key: server_key(&salted),
        }
    }

    /// Formats the verifier in PostgreSQL's stored form; inverse of [`ScramVerifier::parse`].
    pub fn to_stored_string(&self) -> String {
        format!(
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The salt is public (every client is sent it); the keys are not.
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Parses a positive decimal iteration count (digits only, no sign).
pub(crate) fn parse_iterations(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// Decodes standard padded base64.
pub(crate) fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// Decodes base64 that must hold exactly one SHA-256-sized value.
pub(crate) fn decode_key(s: &str) -> Option<[u8; 32]> {
    decode_b64(s)?.try_into().ok()
}

/// SASLprep as PostgreSQL applies it: on failure, the password is used unchanged.
fn normalize(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

/// A keyed HMAC-SHA-256 that can be cloned to MAC many messages under one key.
fn hmac_with_key(key: &[u8]) -> HmacSha256 {
    // RFC 2104: a key longer than the block is hashed, a shorter one zero-padded. Doing that
    // here lets us use the infallible `KeyInit::new` rather than `new_from_slice`, whose
    // `Result` exists only for MACs with fixed key sizes.
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        for (b, k) in block.iter_mut().zip(Sha256::digest(key)) {
            *b = k;
        }
    } else {
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// HMAC-SHA-256 of the concatenated parts.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac_with_key(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 digest.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Bytewise XOR of two 32-byte values.
pub(crate) fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = *a;
    for (o, x) in out.iter_mut().zip(b) {
        *o ^= x;
    }
    out
}

/// SaltedPassword = Hi(Normalize(password), salt, i), i.e. PBKDF2-HMAC-SHA-256 with one block.
pub(crate) fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let password = normalize(password);
    let keyed = hmac_with_key(password.as_bytes());
    let mac = |parts: &[&[u8]]| -> [u8; 32] {
        let mut m = keyed.clone();
        for part in parts {
            m.update(part);
        }
        m.finalize().into_bytes().into()
    };
    let mut u = mac(&[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = mac(&[&u]);
        out = xor32(&out, &u);
    }
    out
}

/// ClientKey = HMAC(SaltedPassword, "Client Key").
pub(crate) fn client_key(salted_password: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted_password, &[b"Client Key"])
}

/// ServerKey = HMAC(SaltedPassword, "Server Key").
pub(crate) fn server_key(salted_password: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted_password, &[b"Server Key"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_library_for_short_and_long_keys() {
        for key in [&b""[..], b"key", &[7u8; 64], &[9u8; 65], &[1u8; 200]] {
            let mut lib = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
            lib.update(b"message");
            let lib: [u8; 32] = lib.finalize().into_bytes().into();
            assert_eq!(
                hmac_sha256(key, &[b"mess", b"age"]),
                lib,
                "key len {}",
                key.len()
            );
        }
    }

    #[test]
    fn stored_string_round_trips() {
        let v = ScramVerifier::from_password("hunter2", b"0123456789abcdef", 4096);
        let s = v.to_stored_string();
        assert!(s.starts_with("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$"));
        assert_eq!(ScramVerifier::parse(&s).unwrap(), v);
    }

    #[test]
    fn parses_postgres_protocol_output_and_matches_recomputation() {
        let stored = postgres_protocol::password::scram_sha_256(b"hunter2");
        let parsed = ScramVerifier::parse(&stored).unwrap();
        assert_eq!(parsed.to_stored_string(), stored);
        let recomputed = ScramVerifier::from_password("hunter2", &parsed.salt, parsed.iterations);
        assert_eq!(recomputed, parsed);
        let other = ScramVerifier::from_password("hunter3", &parsed.salt, parsed.iterations);
        assert_ne!(other, parsed);
    }

    #[test]
    fn saslprep_applies_like_postgres_protocol() {
        // U+00A0 (no-break space) maps to a plain space under SASLprep; U+0007 is prohibited,
        // so that password is used raw. rust-postgres normalizes the same way.
        for password in ["pass\u{a0}word", "bell\u{7}", "ｆｕｌｌ", "plain"] {
            let stored = postgres_protocol::password::scram_sha_256(password.as_bytes());
            let parsed = ScramVerifier::parse(&stored).unwrap();
            let ours = ScramVerifier::from_password(password, &parsed.salt, parsed.iterations);
            assert_eq!(ours, parsed, "{password:?}");
        }
        let mapped = ScramVerifier::from_password("pass\u{a0}word", b"s", 2);
        assert_eq!(mapped, ScramVerifier::from_password("pass word", b"s", 2));
    }

    #[test]
    fn zero_iterations_means_one() {
        let v = ScramVerifier::from_password("pw", b"salt", 0);
        assert_eq!(v, ScramVerifier::from_password("pw", b"salt", 1));
    }

    #[test]
    fn malformed_verifiers_are_rejected() {
        let good = ScramVerifier::from_password("pw", b"salt", 4096).to_stored_string();
        let (head, tail) = good.split_once('$').unwrap();
        let (params, keys) = tail.split_once('$').unwrap();
        let (_, salt) = params.split_once(':').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        let bad = [
            String::new(),
            "SCRAM-SHA-256$".to_string(),
            good.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
            format!("{head}${params}"),
            format!("{head}$4096{salt}${keys}"),
            format!("{head}${params}${stored}{server}"),
            format!("{head}$0:{salt}${keys}"),
            format!("{head}$-1:{salt}${keys}"),
            format!("{head}$+4096:{salt}${keys}"),
            format!("{head}$99999999999:{salt}${keys}"),
            format!("{head}$4096:!!${keys}"),
            format!("{head}$4096:${keys}"),
            format!("{head}${params}${stored}:AAAA"),
            format!("{head}${params}$AAAA:{server}"),
            format!("{head}${params}${stored}:{server}:x"),
        ];
        for s in bad {
            assert!(
                matches!(ScramVerifier::parse(&s), Err(ScramError::Malformed(_))),
                "{s}"
            );
        }
        for end in 0..good.len() {
            assert!(ScramVerifier::parse(&good[..end]).is_err());
        }
    }

    #[test]
    fn debug_output_redacts_keys() {
        let v = ScramVerifier::from_password("pw", b"salt", 4096);
        let debug = format!("{v:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&STANDARD.encode(v.stored_key)));
        assert!(!debug.contains(&STANDARD.encode(v.server_key)));
    }
}

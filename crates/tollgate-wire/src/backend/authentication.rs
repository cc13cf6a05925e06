//! Authentication requests ('R'): which method the server wants, and the SASL exchange
//! ("Message Formats": AuthenticationXxx; order in "SASL Authentication").

use bytes::Bytes;

use crate::reader::Reader;
use crate::WireError;

/// Int32 codes that pick the AuthenticationXxx variant.
pub(crate) mod code {
    pub(crate) const OK: i32 = 0;
    pub(crate) const CLEARTEXT_PASSWORD: i32 = 3;
    pub(crate) const MD5_PASSWORD: i32 = 5;
    pub(crate) const SASL: i32 = 10;
    pub(crate) const SASL_CONTINUE: i32 = 11;
    pub(crate) const SASL_FINAL: i32 = 12;
}

/// One decoded Authentication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// AuthenticationOk: the server accepted the credentials.
    Ok,
    /// AuthenticationCleartextPassword: send the password as is.
    CleartextPassword,
    /// AuthenticationMD5Password: send md5(md5(password + user) + salt).
    Md5Password {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// AuthenticationSASL: the mechanisms the server offers, in its order of preference.
    Sasl {
        /// Mechanism names, e.g. "SCRAM-SHA-256".
        mechanisms: Vec<String>,
    },
    /// AuthenticationSASLContinue: mechanism-specific challenge data.
    SaslContinue(Bytes),
    /// AuthenticationSASLFinal: mechanism-specific outcome data.
    SaslFinal(Bytes),
    /// Any other method (Kerberos, GSSAPI, SSPI, ...), left to the caller to refuse.
    Other(i32),
}

/// Parses an Authentication ('R') body.
pub fn parse_authentication(body: &[u8]) -> Result<Authentication, WireError> {
    let mut r = Reader::new(body, "Authentication");
    let auth = match r.i32()? {
        code::OK => Authentication::Ok,
        code::CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
        code::MD5_PASSWORD => {
            let salt = r.bytes(4)?;
            let salt = <[u8; 4]>::try_from(salt).map_err(|_| r.malformed("truncated"))?;
            Authentication::Md5Password { salt }
        }
        code::SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name.to_owned());
            }
            Authentication::Sasl { mechanisms }
        }
        code::SASL_CONTINUE => Authentication::SaslContinue(Bytes::copy_from_slice(r.rest())),
        code::SASL_FINAL => Authentication::SaslFinal(Bytes::copy_from_slice(r.rest())),
        other => {
            // Methods we don't speak may carry data (GSS continue); the caller only needs the code.
            r.rest();
            Authentication::Other(other)
        }
    };
    r.finish()?;
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tag;
    use crate::build;
    use crate::frame::read_message;
    use bytes::BytesMut;

    fn parse_built(write: impl FnOnce(&mut BytesMut)) -> Result<Authentication, WireError> {
        let mut buf = BytesMut::new();
        write(&mut buf);
        let m = read_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, tag::AUTHENTICATION);
        assert!(buf.is_empty());
        parse_authentication(&m.body)
    }

    #[test]
    fn builders_round_trip() {
        assert_eq!(parse_built(build::auth_ok), Ok(Authentication::Ok));
        assert_eq!(
            parse_built(build::auth_cleartext_password),
            Ok(Authentication::CleartextPassword)
        );
        assert_eq!(
            parse_built(|b| build::auth_md5_password(b, [1, 2, 3, 4])),
            Ok(Authentication::Md5Password { salt: [1, 2, 3, 4] })
        );
        assert_eq!(
            parse_built(|b| build::auth_sasl(b, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])),
            Ok(Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]
            })
        );
        assert_eq!(
            parse_built(|b| build::auth_sasl_continue(b, b"r=abc,s=xyz,i=4096")),
            Ok(Authentication::SaslContinue(Bytes::from_static(
                b"r=abc,s=xyz,i=4096"
            )))
        );
        assert_eq!(
            parse_built(|b| build::auth_sasl_final(b, b"v=sig")),
            Ok(Authentication::SaslFinal(Bytes::from_static(b"v=sig")))
        );
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(
            parse_authentication(&7i32.to_be_bytes()),
            Ok(Authentication::Other(7))
        );
        let mut gss_continue = 8i32.to_be_bytes().to_vec();
        gss_continue.extend_from_slice(b"token");
        assert_eq!(
            parse_authentication(&gss_continue),
            Ok(Authentication::Other(8))
        );
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        let with = |code: i32, rest: &[u8]| {
            let mut v = code.to_be_bytes().to_vec();
            v.extend_from_slice(rest);
            parse_authentication(&v)
        };
        for bad in [
            parse_authentication(&[]),
            parse_authentication(&[0, 0, 0]),
            with(code::OK, b"x"),
            with(code::CLEARTEXT_PASSWORD, b"x"),
            with(code::MD5_PASSWORD, &[1, 2, 3]),
            with(code::MD5_PASSWORD, &[1, 2, 3, 4, 5]),
            with(code::SASL, b"SCRAM-SHA-256\0"),
            with(code::SASL, b"SCRAM-SHA-256\0\0junk"),
            with(code::SASL, b"\xff\0\0"),
        ] {
            assert!(matches!(bad, Err(WireError::Malformed { .. })), "{bad:?}");
        }
        assert_eq!(
            with(code::SASL_CONTINUE, b""),
            Ok(Authentication::SaslContinue(Bytes::new()))
        );
        assert_eq!(
            with(code::SASL_FINAL, b""),
            Ok(Authentication::SaslFinal(Bytes::new()))
        );
    }
}

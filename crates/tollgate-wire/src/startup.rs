//! The untagged packets a client sends first: an Int32 length that counts itself, then an Int32
//! code ("Message Formats": StartupMessage, SSLRequest, GSSENCRequest, CancelRequest; order in
//! "Message Flow: Start-up" and "Canceling Requests in Progress").

use bytes::{Bytes, BytesMut};

use crate::reader::Reader;
use crate::WireError;

/// Largest start-up packet body, not counting the length word: PostgreSQL's
/// `MAX_STARTUP_PACKET_LENGTH` (postmaster's `ProcessStartupPacket` takes 4 off the length
/// word, then refuses a result above this).
pub const MAX_STARTUP_BODY_LEN: usize = 10_000;

/// Largest whole start-up packet accepted, length word included, so that exactly the packets
/// PostgreSQL takes are taken here (10004 bytes is the largest it reads).
pub const MAX_STARTUP_LEN: usize = MAX_STARTUP_BODY_LEN + 4;

/// Smallest valid packet: the length and the code.
const MIN_STARTUP_LEN: usize = 8;

/// The code of an SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The code of a GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The code of a CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// The code of a StartupMessage for protocol 3.0.
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// Shortest secret key in a CancelRequest or BackendKeyData (protocol 3.0 always sends 4).
pub const MIN_SECRET_KEY_LEN: usize = 4;
/// Longest secret key allowed by protocol 3.2 ("Message Formats": BackendKeyData).
pub const MAX_SECRET_KEY_LEN: usize = 256;

/// One decoded start-up packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS before start-up ("SSL Session Encryption").
    SslRequest,
    /// The client asks for GSSAPI encryption ("GSSAPI Session Encryption").
    GssEncRequest,
    /// A cancel request for the backend the key identifies, sent on a fresh connection.
    Cancel {
        /// Process ID from BackendKeyData.
        process_id: i32,
        /// Secret key from BackendKeyData, 4..=256 bytes.
        secret_key: Bytes,
    },
    /// Any protocol version other than the three special codes; the caller decides what to
    /// accept. `params` are the name/value pairs in order, parsed only for major version 3
    /// (other majors have another layout, so theirs is left empty for the caller to reject).
    Startup {
        /// Protocol major version (high 16 bits of the code).
        major: u16,
        /// Protocol minor version (low 16 bits of the code).
        minor: u16,
        /// Name/value pairs, e.g. ("user", "app"), in the order sent.
        params: Vec<(String, String)>,
    },
}

/// Reads one start-up packet off the front of `buf`.
///
/// Ok(None) when incomplete (capacity reserved only up to the checked length); Err(BadLength)
/// on a length below 8, Err(TooLarge) above [`MAX_STARTUP_LEN`], Err(Malformed) on a bad body.
/// The packet is consumed only on success.
pub fn read_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let wire_len = i32::from_be_bytes(*len_bytes);
    let len = usize::try_from(wire_len).map_err(|_| WireError::BadLength(i64::from(wire_len)))?;
    if len < MIN_STARTUP_LEN {
        return Err(WireError::BadLength(i64::from(wire_len)));
    }
    if len > MAX_STARTUP_LEN {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_STARTUP_LEN,
        });
    }
    let Some(packet) = buf.get(4..len) else {
        buf.reserve(len.saturating_sub(buf.len()));
        return Ok(None);
    };
    let parsed = parse_packet(packet)?;
    let _ = buf.split_to(len);
    Ok(Some(parsed))
}

/// Parses what follows the length field.
fn parse_packet(packet: &[u8]) -> Result<StartupPacket, WireError> {
    let mut r = Reader::new(packet, "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST_CODE => {
            let r = Reader::new(r.rest(), "SSLRequest");
            r.finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            let r = Reader::new(r.rest(), "GSSENCRequest");
            r.finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let mut r = Reader::new(r.rest(), "CancelRequest");
            let process_id = r.i32()?;
            let key = r.rest();
            if !(MIN_SECRET_KEY_LEN..=MAX_SECRET_KEY_LEN).contains(&key.len()) {
                return Err(WireError::Malformed {
                    what: "CancelRequest",
                    why: "secret key must be 4 to 256 bytes",
                });
            }
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key: Bytes::copy_from_slice(key),
            })
        }
        _ => {
            let [hi1, hi2, lo1, lo2] = code.to_be_bytes();
            let major = u16::from_be_bytes([hi1, hi2]);
            let minor = u16::from_be_bytes([lo1, lo2]);
            let params = if major == 3 {
                parse_params(r.rest())?
            } else {
                Vec::new()
            };
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

/// Parses StartupMessage parameters: name/value String pairs ended by an empty name.
fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut r = Reader::new(body, "StartupMessage");
    let mut params = Vec::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr()?;
        params.push((name.to_owned(), value.to_owned()));
    }
    r.finish()?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use bytes::BufMut;

    fn packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    fn read_all(bytes: &[u8]) -> Result<Option<StartupPacket>, WireError> {
        read_startup(&mut BytesMut::from(bytes))
    }

    #[test]
    fn builder_startup_message_round_trips() {
        let mut buf = BytesMut::new();
        build::startup_message(&mut buf, &[("user", "app"), ("database", "db")]);
        assert_eq!(
            read_startup(&mut buf),
            Ok(Some(StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ],
            }))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn builder_ssl_and_cancel_round_trip() {
        let mut buf = BytesMut::new();
        build::ssl_request(&mut buf);
        build::cancel_request(&mut buf, 42, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(read_startup(&mut buf), Ok(Some(StartupPacket::SslRequest)));
        assert_eq!(
            read_startup(&mut buf),
            Ok(Some(StartupPacket::Cancel {
                process_id: 42,
                secret_key: Bytes::from_static(&[1, 2, 3, 4, 5, 6]),
            }))
        );
        assert_eq!(read_startup(&mut buf), Ok(None));
    }

    #[test]
    fn gssenc_request_is_recognised() {
        assert_eq!(
            read_all(&packet(GSSENC_REQUEST_CODE, b"")),
            Ok(Some(StartupPacket::GssEncRequest))
        );
    }

    #[test]
    fn split_at_every_byte_waits_then_parses() {
        let mut whole = BytesMut::new();
        build::startup_message(&mut whole, &[("user", "u"), ("application_name", "x")]);
        let expected = read_all(&whole).unwrap().unwrap();
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(read_startup(&mut buf), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut);
            buf.put_slice(&whole[cut..]);
            assert_eq!(read_startup(&mut buf), Ok(Some(expected.clone())));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn lengths_below_eight_are_bad() {
        for len in [i32::MIN, -1, 0, 4, 7] {
            let mut v = len.to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 8]);
            assert_eq!(read_all(&v), Err(WireError::BadLength(i64::from(len))));
        }
    }

    #[test]
    fn length_at_limit_is_accepted_and_one_more_is_too_large() {
        // "user" + NUL + value + NUL + final NUL fills the packet to exactly the limit.
        let value = "v".repeat(MAX_STARTUP_LEN - 8 - 5 - 1 - 1);
        let mut buf = BytesMut::new();
        build::startup_message(&mut buf, &[("user", &value)]);
        assert_eq!(buf.len(), MAX_STARTUP_LEN);
        assert!(matches!(read_startup(&mut buf), Ok(Some(_))));
        assert!(buf.is_empty());

        let mut over = ((MAX_STARTUP_LEN + 1) as i32).to_be_bytes().to_vec();
        over.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        assert_eq!(
            read_all(&over),
            Err(WireError::TooLarge {
                len: MAX_STARTUP_LEN + 1,
                limit: MAX_STARTUP_LEN
            })
        );
    }

    #[test]
    fn limit_counts_the_body_after_the_length_word_as_postgresql_does() {
        // postmaster: `len -= 4; if (len > MAX_STARTUP_PACKET_LENGTH) refuse`, so a packet of
        // 10004 bytes in all is the largest one PostgreSQL reads.
        assert_eq!(MAX_STARTUP_LEN, 10_004);
        for total in [10_001usize, 10_004] {
            let body = vec![0u8; total - 8];
            let mut buf = BytesMut::from(&packet(4 << 16, &body)[..]);
            assert_eq!(buf.len(), total);
            assert_eq!(
                read_startup(&mut buf),
                Ok(Some(StartupPacket::Startup {
                    major: 4,
                    minor: 0,
                    params: vec![]
                })),
                "{total} bytes"
            );
        }
        let over = packet(4 << 16, &[0u8; 10_005 - 8]);
        assert_eq!(
            read_all(&over),
            Err(WireError::TooLarge {
                len: 10_005,
                limit: 10_004
            })
        );
    }

    #[test]
    fn special_requests_must_have_no_body() {
        assert!(matches!(
            read_all(&packet(SSL_REQUEST_CODE, b"x")),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            read_all(&packet(GSSENC_REQUEST_CODE, b"xy")),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn cancel_key_length_is_bounded() {
        let with_key = |n: usize| {
            let mut rest = 7i32.to_be_bytes().to_vec();
            rest.extend(std::iter::repeat_n(9u8, n));
            read_all(&packet(CANCEL_REQUEST_CODE, &rest))
        };
        assert!(matches!(with_key(3), Err(WireError::Malformed { .. })));
        assert!(matches!(with_key(4), Ok(Some(_))));
        assert!(matches!(with_key(256), Ok(Some(_))));
        assert!(matches!(with_key(257), Err(WireError::Malformed { .. })));
        assert!(matches!(
            read_all(&packet(CANCEL_REQUEST_CODE, &[0, 0])),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_params_are_rejected_and_not_consumed() {
        for rest in [
            &b""[..],              // no final terminator
            b"user\0app",          // value without NUL
            b"user\0app\0",        // pairs without the final empty name
            b"user\0\xff\0\0",     // invalid UTF-8
            b"user\0app\0\0extra", // bytes after the terminator
            b"user\0",             // name without value
        ] {
            let mut buf = BytesMut::from(&packet(PROTOCOL_3_0, rest)[..]);
            let before = buf.len();
            assert!(
                matches!(read_startup(&mut buf), Err(WireError::Malformed { .. })),
                "{rest:?}"
            );
            assert_eq!(buf.len(), before);
        }
    }

    #[test]
    fn empty_parameter_list_and_other_versions() {
        assert_eq!(
            read_all(&packet(PROTOCOL_3_0 | 2, b"\0")),
            Ok(Some(StartupPacket::Startup {
                major: 3,
                minor: 2,
                params: vec![]
            }))
        );
        assert_eq!(
            read_all(&packet(2 << 16, &[0xff; 40])),
            Ok(Some(StartupPacket::Startup {
                major: 2,
                minor: 0,
                params: vec![]
            }))
        );
        assert_eq!(
            read_all(&packet(80_877_105, b"")),
            Ok(Some(StartupPacket::Startup {
                major: 1234,
                minor: 5681,
                params: vec![]
            }))
        );
    }
}

//! Messages the server sends that a pooler must read. Each parser takes the BODY only (tag and
//! length already stripped by [`crate::frame`] or [`crate::scanner`]); layouts are in
//! "Message Formats".

mod authentication;
mod error_fields;

pub(crate) use authentication::code as auth_code;
pub use authentication::{parse_authentication, Authentication};
pub use error_fields::{parse_error_fields, ErrorFields};

use crate::reader::Reader;
use crate::startup::{MAX_SECRET_KEY_LEN, MIN_SECRET_KEY_LEN};
use crate::WireError;

/// Tags of every backend message ("Message Formats"; ones marked (B)).
pub mod tag {
    /// Authentication request or result ('R', all AuthenticationXxx messages).
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData: process ID and secret key for cancel requests.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete, with the command tag.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyData (also sent by the frontend).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (also sent by the frontend).
    pub const COPY_DONE: u8 = b'c';
    /// CopyInResponse: the server now expects COPY FROM STDIN data.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse: COPY TO STDOUT data follows.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse: streaming replication copy mode.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// NegotiateProtocolVersion: the server supports an older minor version or fewer options.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// NoData.
    pub const NO_DATA: u8 = b'n';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse (LISTEN/NOTIFY).
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// ParameterStatus: a run-time parameter's current value.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ReadyForQuery, carrying the transaction status.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Transaction status from ReadyForQuery: what decides whether a server can go back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// 'I': not in a transaction block.
    Idle,
    /// 'T': in a transaction block.
    InTransaction,
    /// 'E': in a failed transaction block; queries are rejected until it ends.
    Failed,
}

impl TxStatus {
    /// The status byte as sent on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }

    /// Decodes a status byte; None for anything but 'I', 'T', 'E'.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }
}

/// Parses a ReadyForQuery ('Z') body: exactly one status byte.
pub fn parse_ready_for_query(body: &[u8]) -> Result<TxStatus, WireError> {
    let mut r = Reader::new(body, "ReadyForQuery");
    let status = r.u8()?;
    r.finish()?;
    TxStatus::from_byte(status).ok_or(WireError::Malformed {
        what: "ReadyForQuery",
        why: "unknown transaction status",
    })
}

/// Parses a ParameterStatus ('S') body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body, "ParameterStatus");
    let name = r.cstr()?;
    let value = r.cstr()?;
    r.finish()?;
    Ok((name, value))
}

/// Parses a BackendKeyData ('K') body into (process ID, secret key); the key is 4 bytes in
/// protocol 3.0 and up to 256 in 3.2.
pub fn parse_backend_key_data(body: &[u8]) -> Result<(i32, &[u8]), WireError> {
    let mut r = Reader::new(body, "BackendKeyData");
    let process_id = r.i32()?;
    let key = r.rest();
    if !(MIN_SECRET_KEY_LEN..=MAX_SECRET_KEY_LEN).contains(&key.len()) {
        return Err(WireError::Malformed {
            what: "BackendKeyData",
            why: "secret key must be 4 to 256 bytes",
        });
    }
    Ok((process_id, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use crate::frame::read_message;
    use bytes::BytesMut;

    fn body_of(buf: &mut BytesMut, expected_tag: u8) -> bytes::Bytes {
        let m = read_message(buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, expected_tag);
        m.body
    }

    #[test]
    fn tx_status_bytes_round_trip() {
        for s in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            assert_eq!(TxStatus::from_byte(s.as_byte()), Some(s));
        }
        assert_eq!(TxStatus::from_byte(b'X'), None);
    }

    #[test]
    fn ready_for_query_round_trips() {
        for s in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            let mut buf = BytesMut::new();
            build::ready_for_query(&mut buf, s);
            assert_eq!(&buf[..], &[b'Z', 0, 0, 0, 5, s.as_byte()]);
            let body = body_of(&mut buf, tag::READY_FOR_QUERY);
            assert_eq!(parse_ready_for_query(&body), Ok(s));
        }
    }

    #[test]
    fn ready_for_query_rejects_bad_bodies() {
        for body in [&b""[..], b"X", b"II"] {
            assert!(matches!(
                parse_ready_for_query(body),
                Err(WireError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn parameter_status_round_trips() {
        let mut buf = BytesMut::new();
        build::parameter_status(&mut buf, "TimeZone", "Europe/Berlin");
        let body = body_of(&mut buf, tag::PARAMETER_STATUS);
        assert_eq!(
            parse_parameter_status(&body),
            Ok(("TimeZone", "Europe/Berlin"))
        );
    }

    #[test]
    fn parameter_status_rejects_bad_bodies() {
        for body in [&b""[..], b"a\0", b"a\0b", b"a\0b\0c", b"a\0\xc3\0"] {
            assert!(
                matches!(
                    parse_parameter_status(body),
                    Err(WireError::Malformed { .. })
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn backend_key_data_round_trips_short_and_long_keys() {
        for key in [vec![1u8, 2, 3, 4], vec![0xab; 256]] {
            let mut buf = BytesMut::new();
            build::backend_key_data(&mut buf, -5, &key);
            let body = body_of(&mut buf, tag::BACKEND_KEY_DATA);
            assert_eq!(parse_backend_key_data(&body), Ok((-5, &key[..])));
        }
    }

    #[test]
    fn backend_key_data_rejects_bad_key_lengths() {
        for len in [0usize, 3, 257] {
            let mut body = 1i32.to_be_bytes().to_vec();
            body.extend(std::iter::repeat_n(0u8, len));
            assert!(matches!(
                parse_backend_key_data(&body),
                Err(WireError::Malformed { .. })
            ));
        }
        assert!(parse_backend_key_data(&[0, 0]).is_err());
    }
}

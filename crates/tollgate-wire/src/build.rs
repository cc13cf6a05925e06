//! Builders that append whole messages to a `BytesMut`, computing each length field
//! ("Message Formats"). Backend-direction ones are what the pooler says to clients; the
//! frontend-direction ones (from [`startup_message`] on) are what it says to servers.
//!
//! A String field cannot hold a NUL: it would end the field early and corrupt the framing of
//! everything after it. Builders therefore drop NUL bytes from every `&str` they write as a
//! String (and from the password), and skip list entries that end up empty where an empty name
//! would end the list. Messages are assumed to stay under PostgreSQL's 1 GB limit; a length that
//! does not fit an Int32 is written as `i32::MAX`.

use bytes::{BufMut, BytesMut};

use crate::backend::auth_code;
use crate::backend::tag as backend_tag;
use crate::frontend::tag as frontend_tag;
use crate::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};
use crate::TxStatus;

/// Writes a String field: `s` without any NUL bytes, then the terminating NUL.
fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    for part in s.split(|&b| b == 0) {
        buf.put_slice(part);
    }
    buf.put_u8(0);
}

/// True if `s` would be written as an empty String by [`put_cstr`].
fn empty_after_strip(s: &str) -> bool {
    s.bytes().all(|b| b == 0)
}

/// Overwrites the Int32 at `at` with the byte count from `at` to the end of `buf`.
fn patch_len(buf: &mut BytesMut, at: usize) {
    let len = buf.len().saturating_sub(at);
    let len = i32::try_from(len).unwrap_or(i32::MAX);
    if let Some(slot) = buf.get_mut(at..at.saturating_add(4)) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Appends a tagged message whose body `body` writes.
fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    patch_len(buf, at);
}

/// Appends an untagged start-up packet with `code` whose rest `body` writes.
fn untagged(buf: &mut BytesMut, code: i32, body: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(code);
    body(buf);
    patch_len(buf, at);
}

/// Writes ErrorResponse or NoticeResponse fields ("Error and Notice Message Fields").
fn error_or_notice(
    buf: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    tagged(buf, tag, |b| {
        let mut field = |kind: u8, value: &str| {
            b.put_u8(kind);
            put_cstr(b, value.as_bytes());
        };
        field(b'S', severity);
        field(b'V', severity);
        field(b'C', code);
        field(b'M', message);
        if let Some(d) = detail {
            field(b'D', d);
        }
        if let Some(h) = hint {
            field(b'H', h);
        }
        b.put_u8(0);
    });
}

/// Appends an ErrorResponse with S and V (both `severity`), C, M and optional D and H fields.
pub fn error_response(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    error_or_notice(
        buf,
        backend_tag::ERROR_RESPONSE,
        severity,
        code,
        message,
        detail,
        hint,
    );
}

/// Appends a NoticeResponse with the same fields as [`error_response`].
pub fn notice_response(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    error_or_notice(
        buf,
        backend_tag::NOTICE_RESPONSE,
        severity,
        code,
        message,
        detail,
        hint,
    );
}

/// Appends AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    tagged(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::OK)
    });
}

/// Appends AuthenticationCleartextPassword.
pub fn auth_cleartext_password(buf: &mut BytesMut) {
    tagged(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::CLEARTEXT_PASSWORD)
    });
}

/// Appends AuthenticationMD5Password with its salt.
pub fn auth_md5_password(buf: &mut BytesMut, salt: [u8; 4]) {
    tagged(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::MD5_PASSWORD);
        b.put_slice(&salt);
    });
}

/// Appends AuthenticationSASL listing `mechanisms` (empty names skipped: they would end the list).
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    tagged(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::SASL);
        for m in mechanisms.iter().filter(|m| !empty_after_strip(m)) {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Appends AuthenticationSASLContinue carrying the server's challenge.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::SASL_CONTINUE);
        b.put_slice(data);
    });
}

/// Appends AuthenticationSASLFinal carrying the server's final message.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::SASL_FINAL);
        b.put_slice(data);
    });
}

/// Appends ParameterStatus reporting a run-time parameter to the client.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    tagged(buf, backend_tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// Appends BackendKeyData with the key the client must quote to cancel.
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    tagged(buf, backend_tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(process_id);
        b.put_slice(secret_key);
    });
}

/// Appends ReadyForQuery with the transaction status.
pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    tagged(buf, backend_tag::READY_FOR_QUERY, |b| {
        b.put_u8(status.as_byte())
    });
}

/// Appends NegotiateProtocolVersion: the newest minor version supported and the protocol
/// options (`_pq_.*`) not recognized ("Protocol Versions").
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: u32, unrecognized: &[&str]) {
    tagged(buf, backend_tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_u32(newest_minor);
        b.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
        for name in unrecognized {
            put_cstr(b, name.as_bytes());
        }
    });
}

/// Appends a protocol 3.0 StartupMessage (pairs with an empty name skipped: it would end the list).
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    untagged(buf, PROTOCOL_3_0, |b| {
        for (name, value) in params.iter().filter(|(n, _)| !empty_after_strip(n)) {
            put_cstr(b, name.as_bytes());
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Appends an SSLRequest.
pub fn ssl_request(buf: &mut BytesMut) {
    untagged(buf, SSL_REQUEST_CODE, |_| {});
}

/// Appends a CancelRequest for the backend the key identifies.
pub fn cancel_request(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    untagged(buf, CANCEL_REQUEST_CODE, |b| {
        b.put_i32(process_id);
        b.put_slice(secret_key);
    });
}

/// Appends a PasswordMessage (cleartext or MD5 hash), NUL bytes dropped.
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    tagged(buf, frontend_tag::PASSWORD, |b| put_cstr(b, password));
}

/// Appends SASLInitialResponse: the chosen mechanism and the client's first message.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, frontend_tag::PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
        b.put_slice(data);
    });
}

/// Appends SASLResponse carrying the client's next message.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, frontend_tag::PASSWORD, |b| b.put_slice(data));
}

/// Appends a simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    tagged(buf, frontend_tag::QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// Appends RowDescription for text columns ("Message Formats": RowDescription); the proxy's
/// own result sets (the admin console) are all text.
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    tagged(buf, backend_tag::ROW_DESCRIPTION, |b| {
        b.put_i16(i16::try_from(columns.len()).unwrap_or(i16::MAX));
        for name in columns {
            put_cstr(b, name.as_bytes());
            b.put_i32(0); // table OID
            b.put_i16(0); // column number
            b.put_i32(25); // type OID: text
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text format
        }
    });
}

/// Appends DataRow with text values (`None` is SQL NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    tagged(buf, backend_tag::DATA_ROW, |b| {
        b.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// Appends CommandComplete with its tag ("SELECT 3", "PAUSE", ...).
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    tagged(buf, backend_tag::COMMAND_COMPLETE, |b| {
        put_cstr(b, command_tag.as_bytes())
    });
}

/// Appends EmptyQueryResponse (the answer to an empty query string).
pub fn empty_query_response(buf: &mut BytesMut) {
    tagged(buf, backend_tag::EMPTY_QUERY_RESPONSE, |_| {});
}

/// Appends Terminate.
pub fn terminate(buf: &mut BytesMut) {
    tagged(buf, frontend_tag::TERMINATE, |_| {});
}

/// Appends Sync.
pub fn sync(buf: &mut BytesMut) {
    tagged(buf, frontend_tag::SYNC, |_| {});
}

#[cfg(test)]
mod result_set_tests {
    use super::*;
    use crate::frame::read_message;

    #[test]
    fn result_set_messages_frame_correctly() {
        let mut buf = BytesMut::new();
        row_description(&mut buf, &["a", "bb"]);
        data_row(&mut buf, &[Some("x"), None]);
        command_complete(&mut buf, "SELECT 1");
        empty_query_response(&mut buf);
        let tags: Vec<u8> = std::iter::from_fn(|| {
            read_message(&mut buf, 1 << 20)
                .ok()
                .flatten()
                .map(|m| m.tag)
        })
        .collect();
        assert_eq!(tags, b"TDCI");
        assert!(buf.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{self, ErrorFields};
    use crate::frame::read_message;
    use crate::frontend;
    use crate::startup::{read_startup, StartupPacket};

    #[test]
    fn fixed_messages_have_exact_bytes() {
        let mut b = BytesMut::new();
        sync(&mut b);
        terminate(&mut b);
        auth_ok(&mut b);
        ssl_request(&mut b);
        assert_eq!(
            &b[..],
            &[
                b'S', 0, 0, 0, 4, //
                b'X', 0, 0, 0, 4, //
                b'R', 0, 0, 0, 8, 0, 0, 0, 0, //
                0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f,
            ]
        );
    }

    #[test]
    fn builders_append_after_existing_bytes() {
        let mut b = BytesMut::from(&b"prefix"[..]);
        query(&mut b, "select 1");
        assert_eq!(&b[..6], b"prefix");
        let _ = b.split_to(6);
        let m = read_message(&mut b, 100).unwrap().unwrap();
        assert_eq!(frontend::parse_query(&m.body), Ok(&b"select 1"[..]));
    }

    #[test]
    fn nul_bytes_are_stripped_from_strings() {
        let mut b = BytesMut::new();
        query(&mut b, "sel\0ect 1\0");
        error_response(&mut b, "ERR\0OR", "XX\x00000", "a\0b", Some("\0"), None);
        password_message(&mut b, b"pa\0ss");
        let q = read_message(&mut b, 100).unwrap().unwrap();
        assert_eq!(frontend::parse_query(&q.body), Ok(&b"select 1"[..]));
        let e = read_message(&mut b, 100).unwrap().unwrap();
        assert_eq!(
            backend::parse_error_fields(&e.body),
            Ok(ErrorFields {
                severity: "ERROR".into(),
                code: "XX000".into(),
                message: "ab".into(),
                detail: Some(String::new()),
                hint: None,
            })
        );
        let p = read_message(&mut b, 100).unwrap().unwrap();
        assert_eq!(frontend::parse_password(&p.body), Ok(&b"pass"[..]));
    }

    #[test]
    fn empty_list_entries_are_skipped() {
        let mut b = BytesMut::new();
        auth_sasl(&mut b, &["", "SCRAM-SHA-256", "\0"]);
        let m = read_message(&mut b, 100).unwrap().unwrap();
        assert_eq!(
            backend::parse_authentication(&m.body),
            Ok(backend::Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into()]
            })
        );
        startup_message(&mut b, &[("", "x"), ("user", "u\0"), ("\0", "y")]);
        assert_eq!(
            read_startup(&mut b),
            Ok(Some(StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: vec![("user".into(), "u".into())]
            }))
        );
    }

    #[test]
    fn negotiate_protocol_version_layout() {
        let mut b = BytesMut::new();
        negotiate_protocol_version(&mut b, 2, &["_pq_.a", "_pq_.b"]);
        let m = read_message(&mut b, 100).unwrap().unwrap();
        assert_eq!(m.tag, backend_tag::NEGOTIATE_PROTOCOL_VERSION);
        assert_eq!(&m.body[..], b"\0\0\0\x02\0\0\0\x02_pq_.a\0_pq_.b\0");
    }

    #[test]
    fn sasl_initial_response_layout() {
        let mut b = BytesMut::new();
        sasl_initial_response(&mut b, "SCRAM-SHA-256", b"abc");
        assert_eq!(&b[..], b"p\0\0\0\x19SCRAM-SHA-256\0\0\0\0\x03abc");
    }
}

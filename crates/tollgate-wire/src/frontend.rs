//! Messages a client sends that a pooler must read to route, pin or authenticate. Each parser
//! takes the BODY only; layouts are in "Message Formats" (messages marked (F)).

use crate::reader::Reader;
use crate::WireError;

/// Tags of the frontend messages after start-up ("Message Formats").
pub mod tag {
    /// Query: simple query protocol.
    pub const QUERY: u8 = b'Q';
    /// Parse: create a prepared statement.
    pub const PARSE: u8 = b'P';
    /// Bind: create a portal from a prepared statement.
    pub const BIND: u8 = b'B';
    /// Describe a statement or portal.
    pub const DESCRIBE: u8 = b'D';
    /// Execute a portal.
    pub const EXECUTE: u8 = b'E';
    /// Close a statement or portal.
    pub const CLOSE: u8 = b'C';
    /// Sync: end of an extended-query batch; the server answers ReadyForQuery.
    pub const SYNC: u8 = b'S';
    /// Flush: ask the server to send what it has.
    pub const FLUSH: u8 = b'H';
    /// Terminate: the client is leaving.
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse all use 'p'.
    pub const PASSWORD: u8 = b'p';
    /// FunctionCall.
    pub const FUNCTION_CALL: u8 = b'F';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail.
    pub const COPY_FAIL: u8 = b'f';
}

/// Whether `t` is the tag of a message a client may send after start-up ("Message Formats").
pub fn is_message_tag(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::CLOSE
            | tag::SYNC
            | tag::FLUSH
            | tag::TERMINATE
            | tag::PASSWORD
            | tag::FUNCTION_CALL
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
    )
}

/// Parses a Query ('Q') body: one String, its NUL required and last. The text is bytes in the
/// client's `client_encoding` (LATIN1, SJIS, BIG5, ... as well as UTF-8: "Character Set
/// Support"), so it is not required to be UTF-8; the server converts and validates it.
pub fn parse_query(body: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body, "Query");
    let sql = r.cstr_bytes()?;
    r.finish()?;
    Ok(sql)
}

/// The parts of a Parse message a pooler needs to track prepared statements. Name and text
/// are bytes in the client's encoding, as in [`parse_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    /// Prepared statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// The SQL text.
    pub query: &'a [u8],
    /// Parameter type OIDs the client pre-specified (0 = unspecified).
    pub param_types: Vec<u32>,
}

/// Parses a Parse ('P') body; the parameter count is checked against the bytes left before
/// anything is allocated.
pub fn parse_parse(body: &[u8]) -> Result<ParseMsg<'_>, WireError> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr_bytes()?;
    let query = r.cstr_bytes()?;
    let count = r.i16()?;
    let count = usize::try_from(count).map_err(|_| r.malformed("negative parameter count"))?;
    if count.checked_mul(4) != Some(r.remaining()) {
        return Err(r.malformed("parameter count does not match length"));
    }
    let mut param_types = Vec::with_capacity(count);
    for _ in 0..count {
        param_types.push(r.u32()?);
    }
    r.finish()?;
    Ok(ParseMsg {
        name,
        query,
        param_types,
    })
}

/// Reads the leading (portal, statement) names of a Bind ('B') body; the rest is not checked.
/// Names are bytes in the client's encoding.
pub fn parse_bind_names(body: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr_bytes()?;
    let statement = r.cstr_bytes()?;
    Ok((portal, statement))
}

/// Whether a Close or Describe targets a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// 'S': a prepared statement.
    Statement,
    /// 'P': a portal.
    Portal,
}

impl CloseKind {
    /// The kind byte as sent on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            CloseKind::Statement => b'S',
            CloseKind::Portal => b'P',
        }
    }
}

/// Reads the kind byte and name (bytes in the client's encoding) shared by Close and Describe.
fn parse_kind_and_name<'a>(
    body: &'a [u8],
    what: &'static str,
) -> Result<(CloseKind, &'a [u8]), WireError> {
    let mut r = Reader::new(body, what);
    let kind = match r.u8()? {
        b'S' => CloseKind::Statement,
        b'P' => CloseKind::Portal,
        _ => return Err(r.malformed("kind must be 'S' or 'P'")),
    };
    let name = r.cstr_bytes()?;
    r.finish()?;
    Ok((kind, name))
}

/// Parses a Close ('C') body into what to close and its name.
pub fn parse_close(body: &[u8]) -> Result<(CloseKind, &[u8]), WireError> {
    parse_kind_and_name(body, "Close")
}

/// Parses a Describe ('D') body into what to describe and its name.
pub fn parse_describe(body: &[u8]) -> Result<(CloseKind, &[u8]), WireError> {
    parse_kind_and_name(body, "Describe")
}

/// Parses a 'p' body as PasswordMessage: the bytes before the trailing NUL, which must be the
/// only NUL. Not required to be UTF-8 (MD5 hashes are ASCII, cleartext may be any encoding).
pub fn parse_password(body: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let password = r.cstr_bytes()?;
    r.finish()?;
    Ok(password)
}

/// Parses a 'p' body as SASLInitialResponse: the mechanism, then the client's first message,
/// None when the Int32 length is -1 ("Message Formats").
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, Option<&[u8]>), WireError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len == -1 {
        None
    } else {
        let len = usize::try_from(len).map_err(|_| r.malformed("negative data length"))?;
        Some(r.bytes(len)?)
    };
    r.finish()?;
    Ok((mechanism, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use crate::frame::read_message;
    use bytes::{BufMut, BytesMut};

    fn body_of(write: impl FnOnce(&mut BytesMut), expected_tag: u8) -> bytes::Bytes {
        let mut buf = BytesMut::new();
        write(&mut buf);
        let m = read_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, expected_tag);
        assert!(buf.is_empty());
        m.body
    }

    fn is_malformed<T: std::fmt::Debug>(r: Result<T, WireError>) -> bool {
        matches!(r, Err(WireError::Malformed { .. }))
    }

    #[test]
    fn query_round_trips() {
        let body = body_of(|b| build::query(b, "select 1"), tag::QUERY);
        assert_eq!(parse_query(&body), Ok(&b"select 1"[..]));
        assert_eq!(parse_query(b"\0"), Ok(&b""[..]));
    }

    #[test]
    fn query_requires_single_trailing_nul() {
        assert!(is_malformed(parse_query(b"")));
        assert!(is_malformed(parse_query(b"select 1")));
        assert!(is_malformed(parse_query(b"select\x001\0")));
    }

    #[test]
    fn query_and_parse_text_in_any_client_encoding_are_accepted_as_bytes() {
        // LATIN1 'caf\xe9', SJIS '\x95\x5c' (the second byte is an ASCII backslash).
        assert_eq!(
            parse_query(b"select 'caf\xe9'\0"),
            Ok(&b"select 'caf\xe9'"[..])
        );
        assert_eq!(
            parse_query(b"select '\x95\x5c'\0"),
            Ok(&b"select '\x95\x5c'"[..])
        );
        let mut body = b"st\xe9\0select '\x95\x5c'\0".to_vec();
        body.extend_from_slice(&0i16.to_be_bytes());
        let p = parse_parse(&body).unwrap();
        assert_eq!(p.name, b"st\xe9");
        assert_eq!(p.query, b"select '\x95\x5c'");
        assert_eq!(
            parse_bind_names(b"\xff\0st\xe9\0\0\0"),
            Ok((&b"\xff"[..], &b"st\xe9"[..]))
        );
        assert_eq!(
            parse_close(b"Sst\xe9\0"),
            Ok((CloseKind::Statement, &b"st\xe9"[..]))
        );
    }

    fn parse_body(name: &str, sql: &str, count: i16, oids: &[u32]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
        b.put_i16(count);
        for o in oids {
            b.put_u32(*o);
        }
        b.to_vec()
    }

    #[test]
    fn parse_reads_name_query_and_types() {
        let body = parse_body("s1", "select $1, $2", 2, &[23, 0]);
        assert_eq!(
            parse_parse(&body),
            Ok(ParseMsg {
                name: b"s1",
                query: b"select $1, $2",
                param_types: vec![23, 0],
            })
        );
        let body = parse_body("", "select 1", 0, &[]);
        assert_eq!(parse_parse(&body).unwrap().param_types, Vec::<u32>::new());
    }

    #[test]
    fn parse_count_must_match_body() {
        assert!(is_malformed(parse_parse(&parse_body("", "q", 3, &[1, 2]))));
        assert!(is_malformed(parse_parse(&parse_body("", "q", 1, &[1, 2]))));
        assert!(is_malformed(parse_parse(&parse_body("", "q", -1, &[]))));
        assert!(is_malformed(parse_parse(&parse_body(
            "",
            "q",
            i16::MAX,
            &[]
        ))));
        assert!(is_malformed(parse_parse(b"s\0q\0\0")));
        assert!(is_malformed(parse_parse(b"s\0q")));
    }

    #[test]
    fn bind_names_ignore_the_rest() {
        assert_eq!(
            parse_bind_names(b"p1\0s1\0\0\0\0\0\0\0"),
            Ok((&b"p1"[..], &b"s1"[..]))
        );
        assert_eq!(parse_bind_names(b"\0\0"), Ok((&b""[..], &b""[..])));
        assert!(is_malformed(parse_bind_names(b"p1\0s1")));
        assert!(is_malformed(parse_bind_names(b"")));
    }

    #[test]
    fn close_and_describe_read_kind_and_name() {
        assert_eq!(
            parse_close(b"Sstmt\0"),
            Ok((CloseKind::Statement, &b"stmt"[..]))
        );
        assert_eq!(parse_close(b"P\0"), Ok((CloseKind::Portal, &b""[..])));
        assert_eq!(
            parse_describe(b"Pportal\0"),
            Ok((CloseKind::Portal, &b"portal"[..]))
        );
        for bad in [&b""[..], b"S", b"Sx", b"Xname\0", b"Sa\0b"] {
            assert!(is_malformed(parse_close(bad)), "{bad:?}");
            assert!(is_malformed(parse_describe(bad)), "{bad:?}");
        }
        assert_eq!(CloseKind::Statement.as_byte(), b'S');
        assert_eq!(CloseKind::Portal.as_byte(), b'P');
    }

    #[test]
    fn password_round_trips() {
        let body = body_of(|b| build::password_message(b, b"md5abc"), tag::PASSWORD);
        assert_eq!(parse_password(&body), Ok(&b"md5abc"[..]));
        assert_eq!(parse_password(b"\xff\xfe\0"), Ok(&b"\xff\xfe"[..]));
        assert!(is_malformed(parse_password(b"secret")));
        assert!(is_malformed(parse_password(b"se\0cret\0")));
    }

    #[test]
    fn sasl_initial_response_round_trips() {
        let body = body_of(
            |b| build::sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=abc"),
            tag::PASSWORD,
        );
        assert_eq!(
            parse_sasl_initial_response(&body),
            Ok(("SCRAM-SHA-256", Some(&b"n,,n=,r=abc"[..])))
        );
        let body = body_of(
            |b| build::sasl_response(b, b"c=biws,r=abc,p=xyz"),
            tag::PASSWORD,
        );
        assert_eq!(&body[..], b"c=biws,r=abc,p=xyz");
    }

    #[test]
    fn sasl_initial_response_lengths() {
        let with = |len: i32, data: &[u8]| {
            let mut v = b"M\0".to_vec();
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(data);
            v
        };
        assert_eq!(parse_sasl_initial_response(&with(-1, b"")), Ok(("M", None)));
        assert_eq!(
            parse_sasl_initial_response(&with(0, b"")),
            Ok(("M", Some(&b""[..])))
        );
        assert!(is_malformed(parse_sasl_initial_response(&with(-1, b"x"))));
        assert!(is_malformed(parse_sasl_initial_response(&with(-2, b""))));
        assert!(is_malformed(parse_sasl_initial_response(&with(3, b"ab"))));
        assert!(is_malformed(parse_sasl_initial_response(&with(1, b"ab"))));
        assert!(is_malformed(parse_sasl_initial_response(&with(
            i32::MAX,
            b"ab"
        ))));
        assert!(is_malformed(parse_sasl_initial_response(b"M\0\0\0")));
    }
}

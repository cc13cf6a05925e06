//! The fields of ErrorResponse ('E') and NoticeResponse ('N') a pooler logs or maps
//! ("Message Formats"; field codes in "Error and Notice Message Fields").

use crate::reader::Reader;
use crate::WireError;

/// Single-byte field type codes ("Error and Notice Message Fields").
pub(crate) mod field {
    pub(crate) const SEVERITY_LOCALIZED: u8 = b'S';
    pub(crate) const SEVERITY: u8 = b'V';
    pub(crate) const CODE: u8 = b'C';
    pub(crate) const MESSAGE: u8 = b'M';
    pub(crate) const DETAIL: u8 = b'D';
    pub(crate) const HINT: u8 = b'H';
}

/// The fields of an ErrorResponse or NoticeResponse a pooler cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity: the never-localized 'V' field if present, else the 'S' field.
    pub severity: String,
    /// SQLSTATE code ('C').
    pub code: String,
    /// Primary human-readable message ('M').
    pub message: String,
    /// Optional secondary message ('D').
    pub detail: Option<String>,
    /// Optional suggestion what to do ('H').
    pub hint: Option<String>,
}

/// Parses an ErrorResponse or NoticeResponse body; unknown fields are skipped.
///
/// Severity, code and message are "always present" per "Error and Notice Message Fields", so
/// a body missing any of them is Malformed, as is one without the final zero byte.
pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, WireError> {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut localized_severity = None;
    let mut severity = None;
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut hint = None;
    loop {
        let kind = r.u8()?;
        if kind == 0 {
            break;
        }
        let value = r.cstr()?;
        let slot = match kind {
            field::SEVERITY_LOCALIZED => &mut localized_severity,
            field::SEVERITY => &mut severity,
            field::CODE => &mut code,
            field::MESSAGE => &mut message,
            field::DETAIL => &mut detail,
            field::HINT => &mut hint,
            _ => continue,
        };
        *slot = Some(value);
    }
    r.finish()?;
    let missing = |why| WireError::Malformed {
        what: "ErrorResponse",
        why,
    };
    Ok(ErrorFields {
        severity: severity
            .or(localized_severity)
            .ok_or_else(|| missing("missing severity field"))?
            .to_owned(),
        code: code
            .ok_or_else(|| missing("missing code field"))?
            .to_owned(),
        message: message
            .ok_or_else(|| missing("missing message field"))?
            .to_owned(),
        detail: detail.map(str::to_owned),
        hint: hint.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tag;
    use crate::build;
    use crate::frame::read_message;
    use bytes::BytesMut;

    fn fields(pairs: &[(u8, &str)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (k, s) in pairs {
            v.push(*k);
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        v.push(0);
        v
    }

    #[test]
    fn error_and_notice_builders_round_trip() {
        let mut buf = BytesMut::new();
        build::error_response(
            &mut buf,
            "FATAL",
            "53300",
            "pool is full",
            Some("20 of 20 in use"),
            Some("raise pool_size"),
        );
        build::notice_response(&mut buf, "WARNING", "01000", "careful", None, None);
        let e = read_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(e.tag, tag::ERROR_RESPONSE);
        assert_eq!(
            parse_error_fields(&e.body),
            Ok(ErrorFields {
                severity: "FATAL".into(),
                code: "53300".into(),
                message: "pool is full".into(),
                detail: Some("20 of 20 in use".into()),
                hint: Some("raise pool_size".into()),
            })
        );
        let n = read_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(n.tag, tag::NOTICE_RESPONSE);
        let n = parse_error_fields(&n.body).unwrap();
        assert_eq!(
            (n.severity.as_str(), n.detail, n.hint),
            ("WARNING", None, None)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn unlocalized_severity_wins_and_unknown_fields_are_skipped() {
        let body = fields(&[
            (b'S', "FEHLER"),
            (b'V', "ERROR"),
            (b'C', "42P01"),
            (b'M', "relation does not exist"),
            (b'P', "15"),
            (b'F', "parse_relation.c"),
        ]);
        let f = parse_error_fields(&body).unwrap();
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.code, "42P01");
        let old_server = fields(&[(b'S', "ERROR"), (b'C', "42P01"), (b'M', "m")]);
        assert_eq!(parse_error_fields(&old_server).unwrap().severity, "ERROR");
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        let complete = fields(&[(b'S', "ERROR"), (b'C', "XX000"), (b'M', "m")]);
        let mut cases = vec![
            Vec::new(),
            complete[..complete.len() - 1].to_vec(), // no final zero byte
            complete[..complete.len() - 2].to_vec(), // value without NUL
            fields(&[(b'C', "XX000"), (b'M', "m")]),
            fields(&[(b'S', "ERROR"), (b'M', "m")]),
            fields(&[(b'S', "ERROR"), (b'C', "XX000")]),
            [complete.clone(), b"x".to_vec()].concat(),
        ];
        let mut bad_utf8 = complete.clone();
        bad_utf8[1] = 0xff;
        cases.push(bad_utf8);
        for body in cases {
            assert!(
                matches!(parse_error_fields(&body), Err(WireError::Malformed { .. })),
                "{body:?}"
            );
        }
        assert!(parse_error_fields(&complete).is_ok());
    }
}

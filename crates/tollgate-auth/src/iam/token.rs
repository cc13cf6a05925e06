//! Parsing an RDS IAM auth token into its parts, with no judgement about them yet.
//!
//! A token is a SigV4 presigned `GET` for the `rds-db` service without its scheme:
//! `HOST:PORT/?Action=connect&DBUser=USER&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=
//! AKID%2FDATE%2FREGION%2Frds-db%2Faws4_request&X-Amz-Date=...&X-Amz-Expires=900&
//! X-Amz-SignedHeaders=host[&X-Amz-Security-Token=...]&X-Amz-Signature=...` ("Connecting to
//! your DB instance using IAM authentication", Amazon RDS User Guide). SDKs differ in parameter
//! order and in how they escape, so everything is decoded here and re-encoded canonically by
//! the signature check. Whether the parts are acceptable is `checks.rs`'s business.

use std::fmt;

use crate::iam::amz_date::{parse_amz_date, parse_date};
use crate::iam::error::IamError;
use crate::iam::percent::decode_query_component;

/// A sane bound on token length: tokens run past 1 KiB with an STS session token; 8 KiB leaves
/// room for the longest session tokens while refusing junk before any work is done.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// More query parameters than any SDK sends (nine with a session token); a bound on work.
const MAX_PARAMS: usize = 32;

const ACTION: &str = "Action";
const DB_USER: &str = "DBUser";
const ALGORITHM: &str = "X-Amz-Algorithm";
const CREDENTIAL: &str = "X-Amz-Credential";
const DATE: &str = "X-Amz-Date";
const EXPIRES: &str = "X-Amz-Expires";
const SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
const SECURITY_TOKEN: &str = "X-Amz-Security-Token";
const SIGNATURE: &str = "X-Amz-Signature";

/// Every parameter name the parser knows; duplicate errors name only these.
const KNOWN: [&str; 9] = [
    ACTION,
    DB_USER,
    ALGORITHM,
    CREDENTIAL,
    DATE,
    EXPIRES,
    SIGNED_HEADERS,
    SECURITY_TOKEN,
    SIGNATURE,
];

/// The `X-Amz-Credential` value: `ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The access key id that signed the token (not a secret).
    pub access_key_id: String,
    /// The scope date, `YYYYMMDD`.
    pub date: String,
    /// The scope region, e.g. `us-east-1`.
    pub region: String,
    /// The scope service; `rds-db` for RDS tokens.
    pub service: String,
    /// The scope terminator; always `aws4_request` in SigV4.
    pub terminator: String,
}

/// A token split into its decoded parameters; see the module docs for the shape.
#[derive(Clone)]
pub struct ParsedToken {
    authority: String,
    host: String,
    port: u16,
    action: String,
    db_user: String,
    algorithm: String,
    credential: Credential,
    credential_date_unix: i64,
    amz_date: String,
    amz_date_unix: i64,
    expires_secs: u64,
    signed_headers: String,
    security_token: Option<String>,
    signature: String,
    /// Every decoded parameter but `X-Amz-Signature`, in token order: what was signed.
    signed_params: Vec<(String, String)>,
}

impl ParsedToken {
    /// Splits and decodes `token`; refuses tokens over `max_len` bytes before reading them.
    ///
    /// Never panics. Errors name the problem and never quote the signature or session token.
    pub fn parse(token: &str, max_len: usize) -> Result<Self, IamError> {
        if token.len() > max_len {
            return Err(IamError::TooLong {
                len: token.len(),
                max: max_len,
            });
        }
        if token.starts_with("https://") || token.starts_with("http://") {
            return Err(IamError::Malformed(
                "it starts with a URL scheme; tokens begin with HOST:PORT",
            ));
        }
        let (authority, query) = token.split_once("/?").ok_or(IamError::Malformed(
            "it is not of the form HOST:PORT/?QUERY",
        ))?;
        let (host, port) = split_host_port(authority).ok_or(IamError::Malformed(
            "it does not start with a valid HOST:PORT",
        ))?;

        let mut params: Vec<(String, String)> = Vec::new();
        for piece in query.split('&') {
            if params.len() == MAX_PARAMS {
                return Err(IamError::Malformed("it has too many query parameters"));
            }
            let (name, value) = piece
                .split_once('=')
                .ok_or(IamError::Malformed("a query parameter has no '='"))?;
            let name = decode_query_component(name).map_err(IamError::Malformed)?;
            let value = decode_query_component(value).map_err(IamError::Malformed)?;
            if name.is_empty() {
                return Err(IamError::Malformed("a query parameter has an empty name"));
            }
            if params.iter().any(|(n, _)| *n == name) {
                // Only known names are repeated back: the rest is arbitrary client text.
                let known = KNOWN.iter().find(|k| **k == name);
                return Err(IamError::DuplicateParameter(
                    known.map_or("(an unrecognised name)", |k| k),
                ));
            }
            params.push((name, value));
        }

        let take = |name: &'static str| -> Result<String, IamError> {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or(IamError::MissingParameter(name))
        };
        let action = take(ACTION)?;
        let db_user = take(DB_USER)?;
        let algorithm = take(ALGORITHM)?;
        let credential = take(CREDENTIAL)?;
        let amz_date = take(DATE)?;
        let expires = take(EXPIRES)?;
        let signed_headers = take(SIGNED_HEADERS)?;
        let signature = take(SIGNATURE)?;
        let security_token = take(SECURITY_TOKEN).ok();

        let credential = parse_credential(&credential)?;
        let credential_date_unix = parse_date(&credential.date).ok_or(IamError::BadParameter {
            name: CREDENTIAL,
            why: "its date is not a valid YYYYMMDD",
        })?;
        let amz_date_unix = parse_amz_date(&amz_date).ok_or(IamError::BadParameter {
            name: DATE,
            why: "it is not a valid YYYYMMDDTHHMMSSZ time",
        })?;
        let expires_secs = parse_expires(&expires).ok_or(IamError::BadParameter {
            name: EXPIRES,
            why: "it is not a whole number of seconds",
        })?;
        if !is_signature_hex(&signature) {
            return Err(IamError::BadParameter {
                name: SIGNATURE,
                why: "it is not 64 lowercase hex digits",
            });
        }
        if db_user.is_empty() {
            return Err(IamError::BadParameter {
                name: DB_USER,
                why: "it is empty",
            });
        }

        params.retain(|(n, _)| n != SIGNATURE);
        Ok(Self {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            action,
            db_user,
            algorithm,
            credential,
            credential_date_unix,
            amz_date,
            amz_date_unix,
            expires_secs,
            signed_headers,
            security_token,
            signature,
            signed_params: params,
        })
    }

    /// `HOST:PORT` exactly as the token spells it: the signed `host` header's value.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The host part of the endpoint (brackets kept for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port part of the endpoint.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Action`; `connect` for RDS tokens.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// `DBUser`: the database user the token lets its holder log in as.
    pub fn db_user(&self) -> &str {
        &self.db_user
    }

    /// `X-Amz-Algorithm`; `AWS4-HMAC-SHA256` for SigV4.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The parts of `X-Amz-Credential`.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// `X-Amz-Date` as sent, `YYYYMMDDTHHMMSSZ`.
    pub fn amz_date(&self) -> &str {
        &self.amz_date
    }

    /// `X-Amz-Date` in Unix seconds.
    pub fn amz_date_unix(&self) -> i64 {
        self.amz_date_unix
    }

    /// `X-Amz-Expires`: the lifetime the token claims, in seconds.
    pub fn expires_secs(&self) -> u64 {
        self.expires_secs
    }

    /// `X-Amz-SignedHeaders`; `host` for RDS tokens.
    pub fn signed_headers(&self) -> &str {
        &self.signed_headers
    }

    /// `X-Amz-Security-Token`, present when signed with temporary (STS) credentials. Secret:
    /// it lets its holder use those credentials, so never log it.
    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_deref()
    }

    /// The credential scope's date in Unix seconds (midnight UTC): the signing key's date.
    pub(crate) fn credential_date_unix(&self) -> i64 {
        self.credential_date_unix
    }

    /// `X-Amz-Signature`, 64 lowercase hex digits.
    pub(crate) fn signature(&self) -> &str {
        &self.signature
    }

    /// Every decoded parameter except `X-Amz-Signature`, in token order.
    pub(crate) fn signed_params(&self) -> &[(String, String)] {
        &self.signed_params
    }
}

impl fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("authority", &self.authority)
            .field("action", &self.action)
            .field("db_user", &self.db_user)
            .field("algorithm", &self.algorithm)
            .field("credential", &self.credential)
            .field("amz_date", &self.amz_date)
            .field("expires_secs", &self.expires_secs)
            .field("signed_headers", &self.signed_headers)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .field("signature", &"<redacted>")
            .finish()
    }
}

/// Splits `host:port` (or `[v6]:port`), checking the host's characters and the port's range.
///
/// Hosts are limited to DNS names (`A-Z a-z 0-9 - . _`) and bracketed IPv6 literals, so the
/// value is safe to put in the canonical request as the `host` header verbatim.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let valid_host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        !inner.is_empty()
            && inner.contains(':')
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !valid_host || port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((host, port))
}

/// Splits `X-Amz-Credential` into its five `/`-separated parts.
fn parse_credential(value: &str) -> Result<Credential, IamError> {
    let bad = |why| IamError::BadParameter {
        name: CREDENTIAL,
        why,
    };
    let mut parts = value.split('/');
    let mut next = || parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator)) =
        (next(), next(), next(), next(), next())
    else {
        return Err(bad(
            "it is not ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if parts.next().is_some() {
        return Err(bad("it has more than five '/'-separated parts"));
    }
    Ok(Credential {
        access_key_id,
        date,
        region,
        service,
        terminator,
    })
}

/// Parses `X-Amz-Expires`: 1 to 10 decimal digits, no sign.
fn parse_expires(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_signature_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aws-sdk-rds's `signing_works` vector.
    const SDK_TOKEN: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect\
        &DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2F\
        us-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900\
        &X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17\
        ce3eb3da098b983ad89";

    fn parse(token: &str) -> Result<ParsedToken, IamError> {
        ParsedToken::parse(token, MAX_TOKEN_LEN)
    }

    #[test]
    fn parses_every_part_of_an_sdk_token() {
        let t = parse(SDK_TOKEN).unwrap();
        assert_eq!(
            t.authority(),
            "prod-instance.us-east-1.rds.amazonaws.com:3306"
        );
        assert_eq!(t.host(), "prod-instance.us-east-1.rds.amazonaws.com");
        assert_eq!(t.port(), 3306);
        assert_eq!(t.action(), "connect");
        assert_eq!(t.db_user(), "peccy");
        assert_eq!(t.algorithm(), "AWS4-HMAC-SHA256");
        assert_eq!(
            t.credential(),
            &Credential {
                access_key_id: "akid".into(),
                date: "20240826".into(),
                region: "us-east-1".into(),
                service: "rds-db".into(),
                terminator: "aws4_request".into(),
            }
        );
        assert_eq!(t.amz_date(), "20240826T220000Z");
        assert_eq!(t.amz_date_unix(), 1_724_709_600);
        assert_eq!(t.credential_date_unix(), 1_724_630_400);
        assert_eq!(t.expires_secs(), 900);
        assert_eq!(t.signed_headers(), "host");
        assert_eq!(t.security_token(), None);
        assert_eq!(
            t.signature(),
            "dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
        let names: Vec<&str> = t.signed_params().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ACTION,
                DB_USER,
                ALGORITHM,
                CREDENTIAL,
                DATE,
                EXPIRES,
                SIGNED_HEADERS
            ]
        );
    }

    #[test]
    fn a_space_in_dbuser_may_be_sent_as_percent_20_or_plus_and_a_plus_as_percent_2b() {
        let with = |user: &str| SDK_TOKEN.replace("DBUser=peccy", &format!("DBUser={user}"));
        assert_eq!(parse(&with("app%20user")).unwrap().db_user(), "app user");
        assert_eq!(parse(&with("app+user")).unwrap().db_user(), "app user");
        assert_eq!(parse(&with("app%2Buser")).unwrap().db_user(), "app+user");
        assert_eq!(parse(&with("%61pp")).unwrap().db_user(), "app");
    }

    #[test]
    fn keeps_the_session_token_but_hides_it_and_the_signature_from_debug() {
        let token = format!("{SDK_TOKEN}&X-Amz-Security-Token=c2VjcmV0%2Bc2Vzc2lvbg%3D%3D");
        let t = parse(&token).unwrap();
        assert_eq!(t.security_token(), Some("c2VjcmV0+c2Vzc2lvbg=="));
        assert!(t.signed_params().iter().any(|(n, _)| n == SECURITY_TOKEN));
        let debug = format!("{t:?}");
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        assert!(!debug.contains("dd0cba84"), "{debug}");
        assert!(debug.contains("peccy"), "{debug}");
    }

    #[test]
    fn refuses_oversized_tokens_before_reading_them() {
        let long = format!("{SDK_TOKEN}&pad={}", "x".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            parse(&long).err(),
            Some(IamError::TooLong {
                len: long.len(),
                max: MAX_TOKEN_LEN
            })
        );
        assert!(ParsedToken::parse(SDK_TOKEN, SDK_TOKEN.len()).is_ok());
        assert!(matches!(
            ParsedToken::parse(SDK_TOKEN, SDK_TOKEN.len() - 1),
            Err(IamError::TooLong { .. })
        ));
    }

    #[test]
    fn refuses_duplicates_naming_only_known_parameters() {
        let dup = format!("{SDK_TOKEN}&DBUser=admin");
        assert_eq!(
            parse(&dup).err(),
            Some(IamError::DuplicateParameter("DBUser"))
        );
        let dup = format!("{SDK_TOKEN}&x=1&x=2");
        assert_eq!(
            parse(&dup).err(),
            Some(IamError::DuplicateParameter("(an unrecognised name)"))
        );
        // Two spellings of one name are one name once decoded.
        let dup = format!("{SDK_TOKEN}&%44BUser=admin");
        assert_eq!(
            parse(&dup).err(),
            Some(IamError::DuplicateParameter("DBUser"))
        );
    }

    #[test]
    fn names_the_missing_parameter() {
        for name in KNOWN {
            if name == SECURITY_TOKEN {
                continue;
            }
            let (endpoint, query) = SDK_TOKEN.split_once("/?").unwrap();
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with(&format!("{name}=")))
                .collect();
            let token = format!("{endpoint}/?{}", kept.join("&"));
            assert_eq!(
                parse(&token).err(),
                Some(IamError::MissingParameter(name)),
                "{token}"
            );
        }
    }

    #[test]
    fn refuses_malformed_shapes() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "malformed"),
            ("garbage".into(), "malformed"),
            (format!("https://{SDK_TOKEN}"), "malformed"),
            (SDK_TOKEN.replace(":3306/", "/"), "malformed"),
            (SDK_TOKEN.replace(":3306/", ":0/"), "malformed"),
            (SDK_TOKEN.replace(":3306/", ":65536/"), "malformed"),
            (SDK_TOKEN.replace(":3306/", ":+3306/"), "malformed"),
            (SDK_TOKEN.replace("prod-instance", "user@prod"), "malformed"),
            (SDK_TOKEN.replace("/?", "/x?"), "malformed"),
            (SDK_TOKEN.replace("&DBUser", "&&DBUser"), "malformed"),
            (SDK_TOKEN.replace("DBUser=peccy", "DBUser"), "malformed"),
            (
                SDK_TOKEN.replace("DBUser=peccy", "DBUser=pe%ccy"),
                "malformed",
            ),
            (SDK_TOKEN.replace("DBUser=peccy", "DBUser=%FF"), "malformed"),
            (
                format!(
                    "{SDK_TOKEN}{}",
                    (0..40).map(|i| format!("&a{i}=b")).collect::<String>()
                ),
                "malformed",
            ),
            (
                SDK_TOKEN.replace("DBUser=peccy", "DBUser="),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("Date=20240826T220000Z", "Date=2024-08-26"),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("Expires=900", "Expires=-1"),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("Expires=900", "Expires=9e2"),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("Expires=900", "Expires=99999999999"),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("Signature=dd", "Signature=DD"),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("Signature=dd", "Signature=d"),
                "bad_parameter",
            ),
            (SDK_TOKEN.replace("%2Faws4_request", ""), "bad_parameter"),
            (
                SDK_TOKEN.replace("aws4_request", "aws4_request%2Fx"),
                "bad_parameter",
            ),
            (
                SDK_TOKEN.replace("%2F20240826", "%2F2024082"),
                "bad_parameter",
            ),
            (SDK_TOKEN.replace("akid%2F", "%2F"), "bad_parameter"),
        ];
        for (token, reason) in cases {
            let err = parse(&token)
                .err()
                .unwrap_or_else(|| panic!("accepted {token}"));
            assert_eq!(err.reason(), reason, "{token}: {err}");
        }
    }

    #[test]
    fn splits_dns_and_ipv6_endpoints() {
        assert_eq!(
            split_host_port("db.example.com:5432"),
            Some(("db.example.com", 5432))
        );
        assert_eq!(split_host_port("DB_1:1"), Some(("DB_1", 1)));
        assert_eq!(split_host_port("[::1]:5432"), Some(("[::1]", 5432)));
        assert_eq!(
            split_host_port("[fe80::1:2]:65535"),
            Some(("[fe80::1:2]", 65535))
        );
        for bad in [
            "",
            ":5432",
            "db",
            "db:",
            "db:x",
            "db:123456",
            "::1:5432",
            "[::1:5432",
            "[]:1",
            "[zz::1]:1",
            "d b:1",
            "db:-1",
            "db%2F:1",
            "ü:1",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }
}

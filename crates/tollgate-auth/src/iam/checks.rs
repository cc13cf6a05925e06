//! The checks made on a parsed token before any signature work: cheap, and each its own error.
//!
//! They mirror what RDS enforces for IAM database authentication: a SigV4 `rds-db` `connect`
//! request, for this region and endpoint and for the user logging in, at most 15 minutes old.

use std::fmt;

use crate::iam::error::{shown, IamError};
use crate::iam::token::{split_host_port, ParsedToken, MAX_TOKEN_LEN};

/// The only SigV4 algorithm RDS tokens use.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The SigV4 service name RDS auth tokens are signed for.
pub const SERVICE: &str = "rds-db";
/// The `Action` RDS auth tokens carry.
pub const ACTION: &str = "connect";
/// RDS tokens live at most 15 minutes.
pub const MAX_EXPIRES_SECS: u64 = 900;
/// How far ahead of our clock a token's `X-Amz-Date` may be, by default.
pub const DEFAULT_CLOCK_SKEW_SECS: i64 = 300;

/// An endpoint name clients may sign tokens for: host (compared ignoring case) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// An endpoint from a host name (or `[v6]` literal) and a port.
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_ascii_lowercase(),
            port,
        }
    }

    /// Parses `host:port`, as written in config; `None` if it is not one.
    pub fn parse(host_port: &str) -> Option<Self> {
        split_host_port(host_port).map(|(host, port)| Self::new(host, port))
    }

    /// Whether a token's host and port name this endpoint.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host.eq_ignore_ascii_case(host)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Names this proxy in policy resources: `arn:PARTITION:rds-db:REGION:ACCOUNT:dbuser:ID/USER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbResource {
    /// The AWS partition: `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The 12-digit account id that owns the proxy.
    pub account_id: String,
    /// The proxy's resource id (RDS Proxy's `prx-...`, or a cluster's `cluster-...`).
    pub resource_id: String,
}

impl DbResource {
    /// A resource in the `aws` partition.
    pub fn new(account_id: &str, resource_id: &str) -> Self {
        Self {
            partition: "aws".to_owned(),
            account_id: account_id.to_owned(),
            resource_id: resource_id.to_owned(),
        }
    }

    /// The ARN a policy must allow for `user` to connect in `region`.
    pub fn arn(&self, region: &str, user: &str) -> String {
        format!(
            "arn:{}:rds-db:{region}:{}:dbuser:{}/{user}",
            self.partition, self.account_id, self.resource_id
        )
    }
}

/// What this proxy expects of every token: its region, its endpoints and time limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// The region tokens must be signed for.
    pub region: String,
    /// The `host:port` names clients may sign for; a token naming any other is refused.
    pub endpoints: Vec<Endpoint>,
    /// This proxy's identity in policy resource ARNs.
    pub resource: DbResource,
    /// How far in the future `X-Amz-Date` may be, in seconds, to allow for clock drift.
    pub clock_skew_secs: i64,
    /// The longest token accepted, in bytes.
    pub max_token_len: usize,
}

impl Expectations {
    /// Expectations with the default clock skew (300 s) and token bound (8 KiB).
    pub fn new(region: &str, endpoints: Vec<Endpoint>, resource: DbResource) -> Self {
        Self {
            region: region.to_owned(),
            endpoints,
            resource,
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
            max_token_len: MAX_TOKEN_LEN,
        }
    }
}

/// Runs every check that needs no secret, in a fixed order; the first failure is returned.
///
/// `startup_user` is the `user` from the client's startup message; `now_unix` is our clock.
/// A token is valid from `X-Amz-Date - clock_skew_secs` until just before
/// `X-Amz-Date + X-Amz-Expires`.
pub fn check(
    token: &ParsedToken,
    expect: &Expectations,
    startup_user: &str,
    now_unix: i64,
) -> Result<(), IamError> {
    let cred = token.credential();
    if token.algorithm() != ALGORITHM {
        return Err(IamError::WrongAlgorithm {
            got: shown(token.algorithm()),
        });
    }
    if cred.terminator != "aws4_request" {
        return Err(IamError::WrongScopeTerminator {
            got: shown(&cred.terminator),
        });
    }
    if cred.service != SERVICE {
        return Err(IamError::WrongService {
            got: shown(&cred.service),
        });
    }
    if token.action() != ACTION {
        return Err(IamError::WrongAction {
            got: shown(token.action()),
        });
    }
    if cred.region != expect.region {
        return Err(IamError::WrongRegion {
            got: shown(&cred.region),
            expected: expect.region.clone(),
        });
    }
    if token.amz_date().get(..8) != Some(cred.date.as_str()) {
        return Err(IamError::DateMismatch {
            credential_date: shown(&cred.date),
            amz_date: shown(token.amz_date()),
        });
    }
    if token.signed_headers() != "host" {
        return Err(IamError::WrongSignedHeaders {
            got: shown(token.signed_headers()),
        });
    }
    let expires = token.expires_secs();
    if expires == 0 || expires > MAX_EXPIRES_SECS {
        return Err(IamError::ExpiresOutOfRange { got: expires });
    }
    // X-Amz-Date is a real time in years 1970..=9999 and expires is at most 900, so none of
    // this arithmetic can overflow for any `now_unix` a clock reports; saturate anyway.
    let issued = token.amz_date_unix();
    let ahead = issued.saturating_sub(now_unix);
    if ahead > expect.clock_skew_secs {
        return Err(IamError::FromFuture {
            ahead,
            skew: expect.clock_skew_secs,
        });
    }
    let valid_until = issued.saturating_add(i64::try_from(expires).unwrap_or(i64::MAX));
    if now_unix >= valid_until {
        return Err(IamError::Expired {
            ago: now_unix.saturating_sub(valid_until),
            expires,
        });
    }
    if !expect
        .endpoints
        .iter()
        .any(|e| e.matches(token.host(), token.port()))
    {
        return Err(IamError::WrongEndpoint {
            got: shown(token.authority()),
        });
    }
    if token.db_user() != startup_user {
        return Err(IamError::WrongUser {
            token_user: shown(token.db_user()),
            startup_user: shown(startup_user),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUED: i64 = 1_724_709_600;
    const TOKEN: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect\
        &DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2F\
        us-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900\
        &X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17\
        ce3eb3da098b983ad89";

    fn expect() -> Expectations {
        Expectations::new(
            "us-east-1",
            vec![
                Endpoint::parse("Prod-Instance.us-east-1.rds.amazonaws.com:3306").unwrap(),
                Endpoint::new("other", 5432),
            ],
            DbResource::new("123456789012", "prx-0abc"),
        )
    }

    fn check_token(token: &str, user: &str, now: i64) -> Result<(), IamError> {
        let parsed = ParsedToken::parse(token, MAX_TOKEN_LEN).unwrap();
        check(&parsed, &expect(), user, now)
    }

    fn reason(token: &str, user: &str, now: i64) -> &'static str {
        check_token(token, user, now).unwrap_err().reason()
    }

    #[test]
    fn accepts_the_vector_throughout_its_lifetime() {
        for now in [ISSUED - 300, ISSUED, ISSUED + 600, ISSUED + 899] {
            check_token(TOKEN, "peccy", now).unwrap();
        }
    }

    #[test]
    fn refuses_tokens_outside_their_lifetime() {
        assert_eq!(
            check_token(TOKEN, "peccy", ISSUED + 900),
            Err(IamError::Expired {
                ago: 0,
                expires: 900
            })
        );
        assert_eq!(
            check_token(TOKEN, "peccy", ISSUED + 3600),
            Err(IamError::Expired {
                ago: 2700,
                expires: 900
            })
        );
        assert_eq!(
            check_token(TOKEN, "peccy", ISSUED - 301),
            Err(IamError::FromFuture {
                ahead: 301,
                skew: 300
            })
        );
        let short = TOKEN.replace("Expires=900", "Expires=60");
        assert_eq!(reason(&short, "peccy", ISSUED + 60), "expired");
        check_token(&short, "peccy", ISSUED + 59).unwrap();
    }

    #[test]
    fn clock_skew_is_configurable() {
        let parsed = ParsedToken::parse(TOKEN, MAX_TOKEN_LEN).unwrap();
        let mut e = expect();
        e.clock_skew_secs = 0;
        assert_eq!(check(&parsed, &e, "peccy", ISSUED), Ok(()));
        assert_eq!(
            check(&parsed, &e, "peccy", ISSUED - 1)
                .unwrap_err()
                .reason(),
            "from_future"
        );
    }

    #[test]
    fn expires_must_be_between_1_and_900() {
        for (expires, ok) in [
            ("0", false),
            ("1", true),
            ("900", true),
            ("901", false),
            ("604800", false),
        ] {
            let token = TOKEN.replace("Expires=900", &format!("Expires={expires}"));
            let result = check_token(&token, "peccy", ISSUED);
            assert_eq!(result.is_ok(), ok, "{expires}: {result:?}");
            if !ok {
                assert_eq!(result.unwrap_err().reason(), "expires_out_of_range");
            }
        }
    }

    #[test]
    fn each_wrong_field_fails_its_own_check() {
        let cases = [
            (TOKEN.replace("HMAC-SHA256", "HMAC-SHA1"), "wrong_algorithm"),
            (
                TOKEN.replace("aws4_request", "aws5_request"),
                "wrong_scope_terminator",
            ),
            (TOKEN.replace("%2Frds-db%2F", "%2Frds%2F"), "wrong_service"),
            (
                TOKEN.replace("Action=connect", "Action=Connect"),
                "wrong_action",
            ),
            (
                TOKEN.replace("us-east-1%2F", "us-west-2%2F"),
                "wrong_region",
            ),
            (
                TOKEN.replace("%2F20240826%2F", "%2F20240825%2F"),
                "date_mismatch",
            ),
            (
                TOKEN.replace("SignedHeaders=host", "SignedHeaders=host%3Bx-amz-date"),
                "wrong_signed_headers",
            ),
            (TOKEN.replace(":3306/", ":3307/"), "wrong_endpoint"),
            (
                TOKEN.replace("prod-instance.", "dev-instance."),
                "wrong_endpoint",
            ),
            (TOKEN.replace("DBUser=peccy", "DBUser=admin"), "wrong_user"),
        ];
        for (token, want) in cases {
            assert_eq!(reason(&token, "peccy", ISSUED), want, "{token}");
        }
        assert_eq!(reason(TOKEN, "Peccy", ISSUED), "wrong_user");
    }

    #[test]
    fn endpoint_host_compares_ignoring_case_but_port_exactly() {
        let upper = TOKEN.replace("prod-instance.us-east-1", "PROD-INSTANCE.US-EAST-1");
        check_token(&upper, "peccy", ISSUED).unwrap();
        let e = Endpoint::parse("DB.example.com:5432").unwrap();
        assert!(e.matches("db.EXAMPLE.com", 5432));
        assert!(!e.matches("db.example.com", 5433));
        assert_eq!(e.to_string(), "db.example.com:5432");
        assert_eq!(Endpoint::parse("db.example.com"), None);
    }

    #[test]
    fn messages_say_what_failed_and_quote_no_signature() {
        let err = check_token(
            &TOKEN.replace("us-east-1%2F", "eu-west-1%2F"),
            "peccy",
            ISSUED,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("region \"eu-west-1\"") && msg.contains("us-east-1"),
            "{msg}"
        );
        let err = check_token(TOKEN, "admin", ISSUED).unwrap_err().to_string();
        assert!(
            err.contains("\"peccy\"") && err.contains("\"admin\""),
            "{err}"
        );
        assert!(!err.contains("dd0cba84"), "{err}");
    }

    #[test]
    fn arns_name_the_partition_region_account_proxy_and_user() {
        let r = DbResource::new("123456789012", "prx-0abc");
        assert_eq!(
            r.arn("us-east-1", "app"),
            "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/app"
        );
    }
}

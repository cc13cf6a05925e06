//! Generating RDS IAM auth tokens, as the AWS SDKs do: for tests, and for Tollgate to log in to
//! an IAM-authenticated database itself.
//!
//! Signing is `aws-sigv4`'s HTTP presigner, configured as aws-sdk-rds's `AuthTokenGenerator`
//! configures it (query-parameter signature, `rds-db`, empty body), so the output has exactly
//! the SDK's shape. The verifier builds its canonical request by its own code, so the two
//! cross-check each other in the tests.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;

use crate::iam::checks::{MAX_EXPIRES_SECS, SERVICE};
use crate::iam::error::GenerateError;
use crate::iam::percent::uri_encode;
use crate::iam::token::split_host_port;

/// The last second `aws-sigv4` can format (9999-12-31T23:59:59Z); later times would panic it.
const MAX_UNIX_TIME: u64 = 253_402_300_799;

/// Everything a token is generated from.
#[derive(Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The endpoint clients connect to, `host:port`; signed as the `host` header.
    pub host_port: &'a str,
    /// The region to sign for.
    pub region: &'a str,
    /// The database user the token lets its holder log in as.
    pub user: &'a str,
    /// The signing access key id.
    pub access_key_id: &'a str,
    /// The signing secret access key.
    pub secret_access_key: &'a str,
    /// The STS session token, when signing with temporary credentials.
    pub session_token: Option<&'a str>,
    /// When the token is issued, in Unix seconds (its `X-Amz-Date`).
    pub unix_time: u64,
    /// How long it stays valid, 1 to 900 seconds (its `X-Amz-Expires`).
    pub expires_secs: u64,
}

impl fmt::Debug for TokenRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("host_port", &self.host_port)
            .field("region", &self.region)
            .field("user", &self.user)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .field("unix_time", &self.unix_time)
            .field("expires_secs", &self.expires_secs)
            .finish()
    }
}

/// Generates the token an AWS SDK's RDS auth token call would return for the same inputs.
///
/// The parameters come in the Rust SDK's order (`Action`, `DBUser`, the `X-Amz-*` signing
/// parameters, `X-Amz-Signature`, then `X-Amz-Security-Token` if any), every value
/// RFC 3986-encoded (a space in the user is `%20`, a plus `%2B`).
pub fn generate_token(req: &TokenRequest<'_>) -> Result<String, GenerateError> {
    presign(
        req,
        &format!("Action=connect&DBUser={}", uri_encode(req.user)),
    )
}

/// Signs `HOST:PORT/?<query>` plus the SigV4 parameters; `query` must already be encoded.
fn presign(req: &TokenRequest<'_>, query: &str) -> Result<String, GenerateError> {
    validate(req)?;
    let signing_error = |e: &dyn fmt::Display| GenerateError::Signing(e.to_string());

    let identity = Credentials::new(
        req.access_key_id,
        req.secret_access_key,
        req.session_token.map(str::to_owned),
        None,
        "tollgate",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(req.expires_secs));
    let time = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(req.unix_time))
        .ok_or(GenerateError::InvalidInput("the time is out of range"))?;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(req.region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| signing_error(&e))?
        .into();

    // The host header is given explicitly so it is signed as `host:port` even for ports 80
    // and 443, which the signer would otherwise drop as a URL scheme's default.
    let request = SignableRequest::new(
        "GET",
        format!("https://{}/?{query}", req.host_port),
        std::iter::once(("host", req.host_port)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| signing_error(&e))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| signing_error(&e))?
        .into_parts();

    let mut token = format!("{}/?{query}", req.host_port);
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&uri_encode(value));
    }
    Ok(token)
}

/// Refuses inputs that cannot make a valid token, or that would make the signer panic.
fn validate(req: &TokenRequest<'_>) -> Result<(), GenerateError> {
    let invalid = |why| Err(GenerateError::InvalidInput(why));
    if split_host_port(req.host_port).is_none() {
        return invalid("the endpoint is not HOST:PORT with a DNS name or [IPv6] host");
    }
    if req.region.is_empty()
        || !req
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("the region is not like us-east-1");
    }
    if req.user.is_empty() {
        return invalid("the user is empty");
    }
    if req.access_key_id.is_empty() || !req.access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return invalid("the access key id is not ASCII letters and digits");
    }
    if req.secret_access_key.is_empty() {
        return invalid("the secret access key is empty");
    }
    if req.session_token.is_some_and(str::is_empty) {
        return invalid("the session token is empty");
    }
    if req.unix_time > MAX_UNIX_TIME {
        return invalid("the time is after the year 9999");
    }
    if req.expires_secs == 0 || req.expires_secs > MAX_EXPIRES_SECS {
        return invalid("the lifetime must be between 1 and 900 seconds");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::signature::verify_signature;
    use crate::iam::token::{ParsedToken, MAX_TOKEN_LEN};

    fn sdk_vector() -> TokenRequest<'static> {
        TokenRequest {
            host_port: "prod-instance.us-east-1.rds.amazonaws.com:3306",
            region: "us-east-1",
            user: "peccy",
            access_key_id: "akid",
            secret_access_key: "secret",
            session_token: None,
            unix_time: 1_724_709_600,
            expires_secs: 900,
        }
    }

    fn verifies(token: &str, secret: &str) -> bool {
        let parsed = ParsedToken::parse(token, MAX_TOKEN_LEN).unwrap();
        verify_signature(&parsed, secret).is_ok()
    }

    #[test]
    fn reproduces_the_aws_sdk_for_rust_vector_exactly() {
        assert_eq!(
            generate_token(&sdk_vector()).unwrap(),
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1\
             %2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900\
             &X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace\
             491ea17ce3eb3da098b983ad89"
        );
    }

    #[test]
    fn reproduces_the_second_published_vector_exactly() {
        let req = TokenRequest {
            host_port: "mysql:3306",
            user: "root",
            access_key_id: "drjekyll",
            secret_access_key: "mrhyde",
            unix_time: 1_740_690_000,
            ..sdk_vector()
        };
        assert_eq!(
            generate_token(&req).unwrap(),
            "mysql:3306/?Action=connect&DBUser=root&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=drjekyll%2F20250227%2Fus-east-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20250227T210000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=6eb04929394feeb9e070621ecafc731145914cc53e542d5302c251b705c4ac72"
        );
    }

    #[test]
    fn reproduces_the_botocore_vector_signature() {
        let req = TokenRequest {
            user: "someusername",
            secret_access_key: "skid",
            unix_time: 1_478_540_373,
            ..sdk_vector()
        };
        let token = generate_token(&req).unwrap();
        assert!(
            token.ends_with(
                "&X-Amz-Signature=d1138cdbc0ca63eec012ec0fc6c2267e03642168f5884a7795320d4c18374c61"
            ),
            "{token}"
        );
    }

    #[test]
    fn session_token_follows_the_signature_encoded_and_is_signed() {
        let req = TokenRequest {
            session_token: Some("FwoGZXIvYXdzE+a/b=="),
            ..sdk_vector()
        };
        let token = generate_token(&req).unwrap();
        let (signed, token_param) = token.split_once("&X-Amz-Security-Token=").unwrap();
        assert_eq!(token_param, "FwoGZXIvYXdzE%2Ba%2Fb%3D%3D");
        assert!(signed.contains("&X-Amz-Signature="), "{token}");
        assert!(verifies(&token, "secret"));
        // The session token is part of what was signed: dropping it breaks the signature.
        assert!(!verifies(signed, "secret"));
    }

    #[test]
    fn encodes_users_per_rfc_3986() {
        let user = "app user+ops@x~1/ü";
        let token = generate_token(&TokenRequest {
            user,
            ..sdk_vector()
        })
        .unwrap();
        assert!(
            token.contains("DBUser=app%20user%2Bops%40x~1%2F%C3%BC&"),
            "{token}"
        );
        let parsed = ParsedToken::parse(&token, MAX_TOKEN_LEN).unwrap();
        assert_eq!(parsed.db_user(), user);
        assert!(verifies(&token, "secret"));
    }

    /// The evidence for reading `+` as a space: `aws-sigv4` itself signs `DBUser=a+b` as the
    /// user `a b`, and the verifier agrees with it.
    #[test]
    fn aws_sigv4_signs_a_literal_plus_as_a_space_and_so_do_we() {
        let token = presign(&sdk_vector(), "Action=connect&DBUser=app+user").unwrap();
        let parsed = ParsedToken::parse(&token, MAX_TOKEN_LEN).unwrap();
        assert_eq!(parsed.db_user(), "app user");
        assert!(verifies(&token, "secret"));
        // And the %20 spelling of the same user carries the same signature.
        let spelled = token.replace("DBUser=app+user", "DBUser=app%20user");
        assert!(verifies(&spelled, "secret"));
        let other = generate_token(&TokenRequest {
            user: "app user",
            ..sdk_vector()
        })
        .unwrap();
        assert_eq!(other, spelled);
    }

    #[test]
    fn signs_the_port_even_when_it_is_a_schemes_default() {
        for host_port in ["db.example.com:443", "db.example.com:80", "[::1]:5432"] {
            let token = generate_token(&TokenRequest {
                host_port,
                ..sdk_vector()
            })
            .unwrap();
            assert!(token.starts_with(&format!("{host_port}/?")), "{token}");
            assert!(verifies(&token, "secret"), "{token}");
        }
    }

    #[test]
    fn refuses_inputs_that_cannot_make_a_token() {
        let cases = [
            TokenRequest {
                host_port: "db.example.com",
                ..sdk_vector()
            },
            TokenRequest {
                host_port: "db example:1",
                ..sdk_vector()
            },
            TokenRequest {
                host_port: "dö:1",
                ..sdk_vector()
            },
            TokenRequest {
                region: "",
                ..sdk_vector()
            },
            TokenRequest {
                region: "us/east",
                ..sdk_vector()
            },
            TokenRequest {
                user: "",
                ..sdk_vector()
            },
            TokenRequest {
                access_key_id: "AKIA/1",
                ..sdk_vector()
            },
            TokenRequest {
                secret_access_key: "",
                ..sdk_vector()
            },
            TokenRequest {
                session_token: Some(""),
                ..sdk_vector()
            },
            TokenRequest {
                unix_time: u64::MAX,
                ..sdk_vector()
            },
            TokenRequest {
                unix_time: MAX_UNIX_TIME + 1,
                ..sdk_vector()
            },
            TokenRequest {
                expires_secs: 0,
                ..sdk_vector()
            },
            TokenRequest {
                expires_secs: 901,
                ..sdk_vector()
            },
        ];
        for req in cases {
            assert!(
                matches!(generate_token(&req), Err(GenerateError::InvalidInput(_))),
                "{req:?}"
            );
        }
        let last = TokenRequest {
            unix_time: MAX_UNIX_TIME,
            ..sdk_vector()
        };
        assert!(generate_token(&last).is_ok());
    }

    #[test]
    fn debug_hides_the_secret_and_session_token() {
        let req = TokenRequest {
            session_token: Some("sessiontok"),
            ..sdk_vector()
        };
        let debug = format!("{req:?}");
        assert!(!debug.contains("\"secret\""), "{debug}");
        assert!(!debug.contains("sessiontok"), "{debug}");
        assert!(debug.contains("akid"), "{debug}");
    }
}

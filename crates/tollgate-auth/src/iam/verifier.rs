//! Verifying an IAM auth token locally: the whole decision, from token text to a verdict.
//!
//! Order: parse → checks that need no secret → look the key up → signature → may this key log
//! in as this user (keys file `allow`, then the policy if one is configured). The signature
//! comes before the authorisation checks so that only a holder of the key's secret can learn
//! which users that key may or may not use; a forged token only ever hears "signature does not
//! match".

use sha2::{Digest, Sha256};

use crate::iam::checks::{check, Expectations};
use crate::iam::error::{shown, IamError};
use crate::iam::keys::KeyStore;
use crate::iam::policy::{Decision, Policy};
use crate::iam::signature::verify_signature;
use crate::iam::token::ParsedToken;

/// Who a verified token was signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The access key id that signed the token.
    pub access_key_id: String,
    /// The key's principal name from the keys file, if it has one.
    pub principal: Option<String>,
}

/// Every check that needs no secret, on the token's text: it parses (within the length bound)
/// and says the expected algorithm, service, action, region, endpoint, user and time. Both
/// verifiers run this first, so a bad token costs no signature work and no database login.
pub fn precheck(
    token: &str,
    expect: &Expectations,
    startup_user: &str,
    now_unix: i64,
) -> Result<ParsedToken, IamError> {
    let parsed = ParsedToken::parse(token, expect.max_token_len)?;
    check(&parsed, expect, startup_user, now_unix)?;
    Ok(parsed)
}

/// Verifies tokens against trusted keys held by the proxy, without asking AWS.
#[derive(Debug, Clone)]
pub struct LocalVerifier {
    /// The keys whose signatures are trusted, with the users each may log in as.
    pub keys: KeyStore,
    /// An IAM-shaped policy that must also allow the connection, if configured.
    pub policy: Option<Policy>,
    /// What every token must say about region, endpoint and time.
    pub expect: Expectations,
}

impl LocalVerifier {
    /// Decides whether `token` lets its sender log in as `startup_user` at `now_unix`.
    ///
    /// Never panics on any input. Errors map to SQLSTATEs with [`IamError::sqlstate`].
    pub fn verify(
        &self,
        token: &str,
        startup_user: &str,
        now_unix: i64,
    ) -> Result<Verified, IamError> {
        let parsed = precheck(token, &self.expect, startup_user, now_unix)?;

        let access_key_id = &parsed.credential().access_key_id;
        let key = self
            .keys
            .get(access_key_id)
            .ok_or_else(|| IamError::UnknownAccessKey {
                access_key_id: shown(access_key_id),
            })?;
        verify_signature(&parsed, key.secret_access_key())?;

        let user = parsed.db_user();
        if !key.allows_user(user) {
            return Err(IamError::NotAllowed {
                access_key_id: shown(access_key_id),
                user: shown(user),
            });
        }
        if let Some(policy) = &self.policy {
            let resource = self.expect.resource.arn(&self.expect.region, user);
            let mut principals = vec![key.access_key_id()];
            principals.extend(key.principal());
            let explicit = match policy.evaluate(&principals, &resource) {
                Decision::Allow => None,
                Decision::ExplicitDeny => Some(true),
                Decision::ImplicitDeny => Some(false),
            };
            if let Some(explicit) = explicit {
                return Err(IamError::PolicyDenied {
                    access_key_id: shown(access_key_id),
                    resource,
                    explicit,
                });
            }
        }
        Ok(Verified {
            access_key_id: key.access_key_id().to_owned(),
            principal: key.principal().map(str::to_owned),
        })
    }
}

/// A fixed-size key for caching verdicts on a token: SHA-256 of the token's exact text.
///
/// Two spellings of one signed request hash differently; that only costs a cache miss.
pub fn token_cache_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::checks::{DbResource, Endpoint};
    use crate::iam::generate::{generate_token, TokenRequest};
    use crate::iam::token::MAX_TOKEN_LEN;

    const NOW: i64 = 1_724_709_600;
    const HOST: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306";

    const KEYS: &str = r#"
[[key]]
access_key_id = "akid"
secret_access_key = "secret"
allow = ["peccy", "app user", "a+b", "report_*"]

[[key]]
access_key_id = "drjekyll"
secret_access_key = "mrhyde"
allow = ["root"]

[[key]]
access_key_id = "AKIASTS"
secret_access_key = "sts-secret"
principal = "arn:aws:iam::123456789012:role/app"
allow = ["*"]
"#;

    fn verifier() -> LocalVerifier {
        LocalVerifier {
            keys: KeyStore::parse(KEYS).unwrap(),
            policy: None,
            expect: Expectations::new(
                "us-east-1",
                vec![Endpoint::parse(HOST).unwrap(), Endpoint::new("mysql", 3306)],
                DbResource::new("123456789012", "prx-0abc"),
            ),
        }
    }

    fn request(user: &'static str) -> TokenRequest<'static> {
        TokenRequest {
            host_port: HOST,
            region: "us-east-1",
            user,
            access_key_id: "akid",
            secret_access_key: "secret",
            session_token: None,
            unix_time: 1_724_709_600,
            expires_secs: 900,
        }
    }

    fn token(user: &'static str) -> String {
        generate_token(&request(user)).unwrap()
    }

    fn reason(v: &LocalVerifier, token: &str, user: &str, now: i64) -> &'static str {
        v.verify(token, user, now).unwrap_err().reason()
    }

    fn akid() -> Verified {
        Verified {
            access_key_id: "akid".into(),
            principal: None,
        }
    }

    #[test]
    fn accepts_the_first_published_vector() {
        let published = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect\
            &DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2F\
            us-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900\
            &X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace491\
            ea17ce3eb3da098b983ad89";
        assert_eq!(published, token("peccy"));
        assert_eq!(verifier().verify(published, "peccy", NOW), Ok(akid()));
    }

    #[test]
    fn accepts_the_second_published_vector() {
        let published = "mysql:3306/?Action=connect&DBUser=root&X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=drjekyll%2F20250227%2Fus-east-1%2Frds-db%2Faws4_request\
            &X-Amz-Date=20250227T210000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
            &X-Amz-Signature=6eb04929394feeb9e070621ecafc731145914cc53e542d5302c251b705c4ac72";
        let verified = verifier().verify(published, "root", 1_740_690_000).unwrap();
        assert_eq!(verified.access_key_id, "drjekyll");
        // The key is right but the secret is not: a forged token with the same fields.
        let forged = published.replace("6eb04929", "6eb04928");
        assert_eq!(
            verifier().verify(&forged, "root", 1_740_690_000),
            Err(IamError::SignatureMismatch)
        );
    }

    #[test]
    fn accepts_shuffled_parameter_orders() {
        let t = token("peccy");
        let (endpoint, query) = t.split_once("/?").unwrap();
        let params: Vec<&str> = query.split('&').collect();
        let v = verifier();
        for rotation in 0..params.len() {
            let mut shuffled = params.clone();
            shuffled.rotate_left(rotation);
            let token = format!("{endpoint}/?{}", shuffled.join("&"));
            assert_eq!(v.verify(&token, "peccy", NOW), Ok(akid()), "{token}");
            shuffled.reverse();
            let token = format!("{endpoint}/?{}", shuffled.join("&"));
            assert_eq!(v.verify(&token, "peccy", NOW), Ok(akid()), "{token}");
        }
    }

    #[test]
    fn accepts_other_spellings_of_the_same_values() {
        let v = verifier();
        let spaced = token("app user");
        assert!(spaced.contains("DBUser=app%20user&"), "{spaced}");
        for spelling in ["app%20user", "app+user", "%61pp%20%75ser", "app%20user"] {
            let t = spaced.replace("DBUser=app%20user", &format!("DBUser={spelling}"));
            assert_eq!(v.verify(&t, "app user", NOW), Ok(akid()), "{t}");
        }
        // Lowercase hex escapes and an escaped unreserved character decode to the same values.
        let t = spaced
            .replace("akid%2F", "akid%2f")
            .replace("Action=connect", "Action=c%6Fnnect");
        assert_eq!(v.verify(&t, "app user", NOW), Ok(akid()), "{t}");
        // A plus in a user name travels as %2B; a bare `+` means a space.
        let plus = token("a+b");
        assert!(plus.contains("DBUser=a%2Bb&"), "{plus}");
        assert_eq!(v.verify(&plus, "a+b", NOW), Ok(akid()));
        let bare = plus.replace("DBUser=a%2Bb", "DBUser=a+b");
        assert_eq!(reason(&v, &bare, "a+b", NOW), "wrong_user");
        // Read as `a b`, it was not what the signer signed (`a%2Bb`).
        assert_eq!(reason(&v, &bare, "a b", NOW), "signature_mismatch");
    }

    #[test]
    fn accepts_tokens_with_a_session_token_and_refuses_them_without_it() {
        let v = verifier();
        let req = TokenRequest {
            access_key_id: "AKIASTS",
            secret_access_key: "sts-secret",
            session_token: Some(
                "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+secret+session+token==",
            ),
            ..request("peccy")
        };
        let t = generate_token(&req).unwrap();
        assert_eq!(
            v.verify(&t, "peccy", NOW),
            Ok(Verified {
                access_key_id: "AKIASTS".into(),
                principal: Some("arn:aws:iam::123456789012:role/app".into()),
            })
        );
        let (without, _) = t.split_once("&X-Amz-Security-Token=").unwrap();
        assert_eq!(reason(&v, without, "peccy", NOW), "signature_mismatch");
        let swapped = t.replace("secret%2Bsession", "secret%2Bsessiom");
        assert_eq!(reason(&v, &swapped, "peccy", NOW), "signature_mismatch");
        let err = v.verify(&swapped, "peccy", NOW).unwrap_err().to_string();
        assert!(!err.contains("session"), "{err}");
    }

    #[test]
    fn refuses_each_failed_check_with_its_own_reason() {
        let v = verifier();
        let t = token("peccy");
        let other = |req: TokenRequest<'static>| generate_token(&req).unwrap();
        let cases: Vec<(String, &str, i64, &str)> = vec![
            (t.clone(), "peccy", NOW + 900, "expired"),
            (t.clone(), "peccy", NOW + 86_400, "expired"),
            (t.clone(), "peccy", NOW - 301, "from_future"),
            (
                t.replace("Expires=900", "Expires=901"),
                "peccy",
                NOW,
                "expires_out_of_range",
            ),
            (t.clone(), "admin", NOW, "wrong_user"),
            (
                other(TokenRequest {
                    host_port: "evil.example.com:3306",
                    ..request("peccy")
                }),
                "peccy",
                NOW,
                "wrong_endpoint",
            ),
            (
                other(TokenRequest {
                    host_port: "prod-instance.us-east-1.rds.amazonaws.com:5432",
                    ..request("peccy")
                }),
                "peccy",
                NOW,
                "wrong_endpoint",
            ),
            (
                other(TokenRequest {
                    region: "eu-west-1",
                    ..request("peccy")
                }),
                "peccy",
                NOW,
                "wrong_region",
            ),
            (
                t.replace("%2Frds-db%2F", "%2Fs3%2F"),
                "peccy",
                NOW,
                "wrong_service",
            ),
            (
                t.replace("Action=connect", "Action=Connect"),
                "peccy",
                NOW,
                "wrong_action",
            ),
            (
                other(TokenRequest {
                    access_key_id: "AKIANOBODY",
                    ..request("peccy")
                }),
                "peccy",
                NOW,
                "unknown_access_key",
            ),
            (
                other(TokenRequest {
                    secret_access_key: "guess",
                    ..request("peccy")
                }),
                "peccy",
                NOW,
                "signature_mismatch",
            ),
            (token("admin"), "admin", NOW, "not_allowed"),
            ("garbage".into(), "peccy", NOW, "malformed"),
            (String::new(), "peccy", NOW, "malformed"),
            (
                format!("{t}&pad={}", "x".repeat(MAX_TOKEN_LEN)),
                "peccy",
                NOW,
                "too_long",
            ),
        ];
        for (token, user, now, want) in cases {
            assert_eq!(reason(&v, &token, user, now), want, "{token}");
        }
    }

    #[test]
    fn rejection_messages_never_repeat_the_signature() {
        let v = verifier();
        let t = token("peccy");
        let signature = t.rsplit_once("X-Amz-Signature=").unwrap().1;
        for (token, user, now) in [
            (t.clone(), "admin", NOW),
            (t.clone(), "peccy", NOW + 1000),
            (t.replace("Signature=dd", "Signature=de"), "peccy", NOW),
        ] {
            let msg = v.verify(&token, user, now).unwrap_err().to_string();
            assert!(
                !msg.contains(signature) && !msg.contains(&signature[2..]),
                "{msg}"
            );
        }
        let msg = v
            .verify(
                &generate_token(&TokenRequest {
                    access_key_id: "AKIANOBODY",
                    ..request("peccy")
                })
                .unwrap(),
                "peccy",
                NOW,
            )
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("unknown access key id \"AKIANOBODY\""),
            "{msg}"
        );
    }

    #[test]
    fn a_tampered_signature_is_refused() {
        let v = verifier();
        let t = token("peccy");
        let at = t.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        for i in at..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(
                v.verify(&tampered, "peccy", NOW),
                Err(IamError::SignatureMismatch),
                "{tampered}"
            );
        }
    }

    /// Flips every character of every signed part (endpoint and each parameter but the
    /// signature). Whatever parses must then fail the signature, even with the expectations
    /// and the startup user tuned to accept the altered fields.
    #[test]
    fn tampering_with_any_signed_field_breaks_the_signature() {
        let req = TokenRequest {
            access_key_id: "AKIASTS",
            secret_access_key: "sts-secret",
            session_token: Some("c2Vzc2lvbi10b2tlbg=="),
            ..request("peccy")
        };
        let t = generate_token(&req).unwrap();
        let signed_end = t.find("&X-Amz-Signature=").unwrap();
        let sts_start = t.find("&X-Amz-Security-Token=").unwrap();
        let original = ParsedToken::parse(&t, MAX_TOKEN_LEN).unwrap();
        let original_creq = crate::iam::signature::canonical_request(&original);
        let mut checked = 0;
        let positions = (0..signed_end).chain(sts_start..t.len());
        for i in positions {
            let b = t.as_bytes()[i];
            let flipped = match b {
                b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => b + 1,
                b'z' => b'a',
                b'Z' => b'A',
                b'9' => b'0',
                b'-' => b'_',
                b'.' => b'-',
                _ => b'x',
            };
            let mut bytes = t.clone().into_bytes();
            bytes[i] = flipped;
            let tampered = String::from_utf8(bytes).unwrap();
            let Ok(parsed) = ParsedToken::parse(&tampered, MAX_TOKEN_LEN) else {
                continue;
            };
            if crate::iam::signature::canonical_request(&parsed) == original_creq {
                continue; // a different spelling of the same signed request
            }
            checked += 1;
            assert_eq!(
                verify_signature(&parsed, "sts-secret"),
                Err(IamError::SignatureMismatch),
                "{tampered}"
            );
            let mut tuned = verifier();
            tuned.expect.region = parsed.credential().region.clone();
            tuned.expect.endpoints = vec![Endpoint::new(parsed.host(), parsed.port())];
            assert!(
                tuned.verify(&tampered, parsed.db_user(), NOW).is_err(),
                "{tampered}"
            );
        }
        assert!(checked > 150, "only {checked} tampered tokens parsed");
    }

    #[test]
    fn truncation_at_every_length_is_refused_without_panicking() {
        let v = verifier();
        let req = TokenRequest {
            session_token: Some("c2Vzc2lvbg=="),
            ..request("peccy")
        };
        for t in [token("peccy"), generate_token(&req).unwrap()] {
            for len in 0..t.len() {
                assert!(v.verify(&t[..len], "peccy", NOW).is_err(), "{}", &t[..len]);
            }
        }
    }

    #[test]
    fn garbage_is_refused() {
        let v = verifier();
        for garbage in [
            "",
            "/",
            "/?",
            "?",
            "&",
            "=",
            "a:1/?",
            "a:1/?=",
            "a:1/?&",
            "a:1/?a=b",
            "%",
            "\0",
            "host:5432/?Action=connect&DBUser=peccy",
            "ü:1/?x=ü",
            "[::1]:1/?Action=%",
            "SCRAM-SHA-256",
            "md5d41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert!(v.verify(garbage, "peccy", NOW).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn allow_lists_and_policies_both_gate_the_user() {
        let mut v = verifier();
        v.policy = Some(
            Policy::parse(
                r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "rds-db:connect",
                 "Resource": "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/*"},
                {"Effect": "Deny", "Action": "rds-db:connect",
                 "Resource": "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/report_*",
                 "Principal": {"AWS": "akid"}}]}"#,
            )
            .unwrap(),
        );
        assert_eq!(v.verify(&token("peccy"), "peccy", NOW), Ok(akid()));
        // Allowed by the keys file but explicitly denied by the policy.
        let err = v
            .verify(&token("report_daily"), "report_daily", NOW)
            .unwrap_err();
        assert_eq!(err.reason(), "policy_denied");
        assert_eq!(err.sqlstate(), "28000");
        assert!(
            err.to_string().contains(
                "explicitly denies rds-db:connect on \
                 arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/report_daily"
            ),
            "{err}"
        );
        // Denied by the keys file before the policy is asked.
        let err = v.verify(&token("admin"), "admin", NOW).unwrap_err();
        assert_eq!(err.reason(), "not_allowed");
        assert_eq!(err.sqlstate(), "28000");
        // A policy for another proxy allows nothing here.
        v.policy = Some(
            Policy::parse(
                r#"{"Statement": {"Effect": "Allow", "Action": "rds-db:connect",
                 "Resource": "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-other/*"}}"#,
            )
            .unwrap(),
        );
        let err = v.verify(&token("peccy"), "peccy", NOW).unwrap_err();
        assert_eq!(err.reason(), "policy_denied");
        assert!(err.to_string().contains("has no Allow statement"), "{err}");
    }

    #[test]
    fn policy_principals_match_the_keys_principal_name() {
        let mut v = verifier();
        v.policy = Some(
            Policy::parse(
                r#"{"Statement": {"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*",
                 "Principal": {"AWS": "arn:aws:iam::123456789012:role/app"}}}"#,
            )
            .unwrap(),
        );
        let sts = generate_token(&TokenRequest {
            access_key_id: "AKIASTS",
            secret_access_key: "sts-secret",
            ..request("peccy")
        })
        .unwrap();
        assert!(v.verify(&sts, "peccy", NOW).is_ok());
        assert_eq!(reason(&v, &token("peccy"), "peccy", NOW), "policy_denied");
    }

    #[test]
    fn a_forged_token_learns_nothing_about_the_allow_list() {
        let v = verifier();
        let forged = generate_token(&TokenRequest {
            secret_access_key: "guess",
            ..request("admin")
        })
        .unwrap();
        assert_eq!(reason(&v, &forged, "admin", NOW), "signature_mismatch");
    }

    #[test]
    fn cache_key_is_the_sha256_of_the_token_text() {
        assert_eq!(
            token_cache_key(""),
            [
                0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
                0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
                0x78, 0x52, 0xb8, 0x55
            ]
        );
        let t = token("peccy");
        assert_eq!(token_cache_key(&t), token_cache_key(&t.clone()));
        assert_ne!(token_cache_key(&t), token_cache_key(&token("app user")));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Characters that tokens are made of, so generated strings reach deep into the parser.
        fn tokenish() -> impl Strategy<Value = String> {
            proptest::string::string_regex("[a-zA-Z0-9:/?&=%+._~\\-\\[\\] ü]{0,300}").unwrap()
        }

        proptest! {
            #[test]
            fn parse_never_panics_on_any_string(s in any::<String>(), max in 0usize..10_000) {
                let _ = ParsedToken::parse(&s, max);
            }

            #[test]
            fn parse_never_panics_on_token_like_strings(s in tokenish()) {
                let _ = ParsedToken::parse(&s, MAX_TOKEN_LEN);
            }

            #[test]
            fn verify_never_panics(s in any::<String>(), user in any::<String>(), now in any::<i64>()) {
                let _ = verifier().verify(&s, &user, now);
            }

            #[test]
            fn verify_never_panics_on_mutated_real_tokens(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), "[a-zA-Z0-9%&=+/?:._~\\-]{0,3}"), 1..4),
                now in any::<i64>(),
            ) {
                let mut t = token("peccy");
                for (at, insert) in edits {
                    let i = at.index(t.len() + 1);
                    let end = (i + 2).min(t.len());
                    t.replace_range(i..end, &insert);
                }
                let _ = verifier().verify(&t, "peccy", now);
            }
        }
    }
}

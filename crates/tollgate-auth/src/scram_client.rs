//! Client side of SCRAM-SHA-256 (RFC 5802 section 5), used by the pooler to log in to
//! PostgreSQL. No channel binding: the gs2 header is always `n,,`, and the user name is left
//! empty as libpq does, since PostgreSQL takes it from the startup packet.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::ct::ct_eq;
use crate::error::ScramError;
use crate::scram_attr::{attr, is_extension, is_printable_nonce, new_nonce, utf8};
use crate::scram_verifier::{
    client_key, decode_b64, decode_key, hmac_sha256, parse_iterations, salted_password, server_key,
    sha256, xor32, ScramVerifier,
};

/// base64 of the gs2 header `n,,`, sent back in client-final's `c=`.
const GS2_HEADER: &str = "n,,";

/// The most PBKDF2 iterations a server may ask of the client side. The server chooses the
/// count and the derivation runs before it proves anything, so an impostor (or a role given a
/// huge `scram_iterations`) could otherwise keep a core busy for minutes per login.
/// PostgreSQL's default is 4096; this leaves room for deliberately slow settings (about a
/// quarter of a second per fresh derivation on one core).
pub const MAX_SERVER_ITERATIONS: u32 = 1_000_000;

/// What the pooler proves to PostgreSQL with.
#[derive(Clone)]
pub enum ScramCredential {
    /// The plaintext password, e.g. from the auth file.
    Password(String),
    /// Keys recovered from a client's exchange plus the verifier they match: lets the pooler
    /// log in without the plaintext.
    Keys {
        /// The ClientKey recovered by `ScramServer::client_final`.
        client_key: [u8; 32],
        /// The verifier the client was checked against; the server must hold the same one.
        verifier: ScramVerifier,
    },
}

impl ScramCredential {
    /// Derives from `password` the keys a server holding (salt, iterations) checks: the
    /// PBKDF2 part of an exchange, to run off the async threads and reuse across logins
    /// (PostgreSQL keeps one salt per role).
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let client_key = client_key(&salted);
        Self::Keys {
            client_key,
            verifier: ScramVerifier {
                iterations,
                salt: salt.to_vec(),
                stored_key: sha256(&client_key),
                server_key: server_key(&salted),
            },
        }
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(<redacted>)"),
            Self::Keys { verifier, .. } => f
                .debug_struct("Keys")
                .field("client_key", &"<redacted>")
                .field("verifier", verifier)
                .finish(),
        }
    }
}

/// Drives the client half of one SCRAM-SHA-256 exchange.
pub struct ScramClient {
    cred: ScramCredential,
    state: State,
}

enum State {
    Initial,
    SentFirst {
        nonce: String,
        client_first_bare: String,
    },
    SentFinal {
        server_signature: [u8; 32],
    },
    /// The server's signature matched.
    Verified,
    Finished,
}

/// A server-first-message's fields.
struct ServerFirst<'a> {
    text: &'a str,
    full_nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

/// Parses a server-first-message (RFC 5802 section 7):
/// `[reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]`.
fn parse_server_first(msg: &[u8]) -> Result<ServerFirst<'_>, ScramError> {
    let text = utf8(msg, "server-first-message is not UTF-8")?;
    let mut parts = text.split(',');
    let first = parts.next();
    if first.is_some_and(|p| p.starts_with("m=")) {
        return Err(ScramError::Malformed(
            "mandatory extension is not supported",
        ));
    }
    let full_nonce = attr(first, 'r', "server-first-message lacks r=")?;
    let salt = attr(parts.next(), 's', "server-first-message lacks s=")?;
    let salt = decode_b64(salt)
        .filter(|salt| !salt.is_empty())
        .ok_or(ScramError::Malformed("server salt is not base64"))?;
    let iterations = attr(parts.next(), 'i', "server-first-message lacks i=")?;
    let iterations = parse_iterations(iterations).ok_or(ScramError::Malformed(
        "server iteration count is not a positive number",
    ))?;
    if !parts.all(is_extension) {
        return Err(ScramError::Malformed(
            "bad attribute in server-first-message",
        ));
    }
    Ok(ServerFirst {
        text,
        full_nonce,
        salt,
        iterations,
    })
}

impl ScramClient {
    /// Prepares an exchange proving `cred`.
    pub fn new(cred: ScramCredential) -> Self {
        Self {
            cred,
            state: State::Initial,
        }
    }

    /// The client-first-message for SASLInitialResponse; calling it again restarts the exchange.
    pub fn client_first(&mut self) -> Vec<u8> {
        self.client_first_with_nonce(new_nonce())
    }

    fn client_first_with_nonce(&mut self, nonce: String) -> Vec<u8> {
        let client_first_bare = format!("n=,r={nonce}");
        let msg = format!("{GS2_HEADER}{client_first_bare}").into_bytes();
        self.state = State::SentFirst {
            nonce,
            client_first_bare,
        };
        msg
    }

    /// Takes the server-first-message (AuthenticationSASLContinue) and returns the
    /// client-final-message to send in SASLResponse.
    ///
    /// With [`ScramCredential::Keys`], the server's salt and iteration count must equal the
    /// verifier's, else [`ScramError::VerifierMismatch`].
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let (nonce, client_first_bare) = match std::mem::replace(&mut self.state, State::Finished) {
            State::SentFirst {
                nonce,
                client_first_bare,
            } => (nonce, client_first_bare),
            _ => return Err(ScramError::OutOfOrder),
        };
        let ServerFirst {
            text: server_first,
            full_nonce,
            salt,
            iterations,
        } = parse_server_first(msg)?;
        let server_part = full_nonce
            .strip_prefix(nonce.as_str())
            .ok_or(ScramError::NonceMismatch)?;
        if !is_printable_nonce(server_part) {
            return Err(ScramError::NonceMismatch);
        }

        let (client_key, server_key) = match &self.cred {
            ScramCredential::Password(_) if iterations > MAX_SERVER_ITERATIONS => {
                return Err(ScramError::TooManyIterations {
                    iterations,
                    limit: MAX_SERVER_ITERATIONS,
                })
            }
            ScramCredential::Password(password) => {
                let salted = salted_password(password, &salt, iterations);
                (client_key(&salted), server_key(&salted))
            }
            ScramCredential::Keys {
                client_key,
                verifier,
            } => {
                if verifier.salt != salt || verifier.iterations != iterations {
                    return Err(ScramError::VerifierMismatch);
                }
                (*client_key, verifier.server_key)
            }
        };

        let without_proof = format!("c={},r={full_nonce}", STANDARD.encode(GS2_HEADER));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let stored_key = sha256(&client_key);
        let client_signature = hmac_sha256(&stored_key, &[auth_message.as_bytes()]);
        let proof = xor32(&client_key, &client_signature);
        self.state = State::SentFinal {
            server_signature: hmac_sha256(&server_key, &[auth_message.as_bytes()]),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// The salt and iteration count a server-first-message asks for, so the caller can bound
    /// the count and derive the keys elsewhere ([`ScramCredential::derive`],
    /// [`ScramClient::set_credential`]) before [`ScramClient::server_first`].
    pub fn salt_and_iterations(msg: &[u8]) -> Result<(Vec<u8>, u32), ScramError> {
        let parsed = parse_server_first(msg)?;
        if parsed.iterations > MAX_SERVER_ITERATIONS {
            return Err(ScramError::TooManyIterations {
                iterations: parsed.iterations,
                limit: MAX_SERVER_ITERATIONS,
            });
        }
        Ok((parsed.salt, parsed.iterations))
    }

    /// Replaces the credential, e.g. a password with the keys derived from it, mid-exchange.
    pub fn set_credential(&mut self, cred: ScramCredential) {
        self.cred = cred;
    }

    /// Whether the server's signature was checked: only then has the server proved it holds
    /// the verifier, and only then may its AuthenticationOk be believed.
    pub fn is_verified(&self) -> bool {
        matches!(self.state, State::Verified)
    }

    /// Takes the server-final-message (AuthenticationSASLFinal) and checks the server's
    /// signature; `e=` from the server means it rejected our proof.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let expected = match std::mem::replace(&mut self.state, State::Finished) {
            State::SentFinal { server_signature } => server_signature,
            _ => return Err(ScramError::OutOfOrder),
        };
        let msg = utf8(msg, "server-final-message is not UTF-8")?;
        // server-final-message = (server-error / verifier) ["," extensions]
        let first = msg.split(',').next();
        if first.is_some_and(|p| p.starts_with("e=")) {
            return Err(ScramError::WrongPassword);
        }
        let signature = attr(first, 'v', "server-final-message lacks v=")?;
        let signature = decode_key(signature).ok_or(ScramError::Malformed(
            "server signature is not 32 bytes of base64",
        ))?;
        if ct_eq(&signature, &expected) {
            self.state = State::Verified;
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "Initial",
            State::SentFirst { .. } => "SentFirst",
            State::SentFinal { .. } => "SentFinal",
            State::Verified => "Verified",
            State::Finished => "Finished",
        };
        f.debug_struct("ScramClient")
            .field("cred", &self.cred)
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_client(cred: ScramCredential) -> ScramClient {
        let mut client = ScramClient::new(cred);
        // As if client_first had sent RFC 7677's message, which names the user in n=.
        client.state = State::SentFirst {
            nonce: RFC_CLIENT_NONCE.into(),
            client_first_bare: format!("n=user,r={RFC_CLIENT_NONCE}"),
        };
        client
    }

    fn rfc_verifier() -> ScramVerifier {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramVerifier::from_password("pencil", &salt, 4096)
    }

    #[test]
    fn rfc7677_example_produces_the_same_messages() {
        let mut client = rfc_client(ScramCredential::Password("pencil".into()));
        assert_eq!(
            client.server_first(RFC_SERVER_FIRST).unwrap(),
            RFC_CLIENT_FINAL
        );
        client.server_final(RFC_SERVER_FINAL).unwrap();
    }

    #[test]
    fn keys_credential_reproduces_the_password_proof() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password("pencil", &salt, 4096);
        let cred = ScramCredential::Keys {
            client_key: client_key(&salted),
            verifier: rfc_verifier(),
        };
        let mut client = rfc_client(cred);
        assert_eq!(
            client.server_first(RFC_SERVER_FIRST).unwrap(),
            RFC_CLIENT_FINAL
        );
        client.server_final(RFC_SERVER_FINAL).unwrap();
    }

    #[test]
    fn keys_credential_refuses_a_different_salt_or_iteration_count() {
        let cred = ScramCredential::Keys {
            client_key: [0; 32],
            verifier: rfc_verifier(),
        };
        let other_iterations = b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4097";
        let other_salt = b"r=rOprNGfwEbeRWgbNEkqOxyz,s=AAAA,i=4096";
        for msg in [&other_iterations[..], other_salt] {
            let mut client = rfc_client(cred.clone());
            assert_eq!(client.server_first(msg), Err(ScramError::VerifierMismatch));
        }
    }

    #[test]
    fn keys_derived_elsewhere_reproduce_the_password_proof() {
        let (salt, iterations) = ScramClient::salt_and_iterations(RFC_SERVER_FIRST).unwrap();
        assert_eq!(iterations, 4096);
        let mut client = rfc_client(ScramCredential::Password("pencil".into()));
        client.set_credential(ScramCredential::derive("pencil", &salt, iterations));
        assert_eq!(
            client.server_first(RFC_SERVER_FIRST).unwrap(),
            RFC_CLIENT_FINAL
        );
        assert!(!client.is_verified(), "not before the server's signature");
        client.server_final(RFC_SERVER_FINAL).unwrap();
        assert!(client.is_verified());
    }

    #[test]
    fn a_server_asking_for_too_many_iterations_is_refused_before_any_derivation() {
        let over = format!(
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={}",
            MAX_SERVER_ITERATIONS + 1
        );
        let refused = Err(ScramError::TooManyIterations {
            iterations: MAX_SERVER_ITERATIONS + 1,
            limit: MAX_SERVER_ITERATIONS,
        });
        assert_eq!(
            ScramClient::salt_and_iterations(over.as_bytes()).map(|_| ()),
            refused
        );
        let mut client = rfc_client(ScramCredential::Password("pencil".into()));
        assert_eq!(client.server_first(over.as_bytes()).map(|_| ()), refused);
        let at =
            format!("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={MAX_SERVER_ITERATIONS}");
        assert!(ScramClient::salt_and_iterations(at.as_bytes()).is_ok());
    }

    #[test]
    fn client_first_has_no_channel_binding_and_no_user() {
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        let msg = String::from_utf8(client.client_first()).unwrap();
        let nonce = msg.strip_prefix("n,,n=,r=").unwrap();
        assert!(is_printable_nonce(nonce));
    }

    #[test]
    fn server_errors_and_bad_signatures_are_reported() {
        let mut client = rfc_client(ScramCredential::Password("pencil".into()));
        client.server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(
            client.server_final(b"e=invalid-proof"),
            Err(ScramError::WrongPassword)
        );

        let mut client = rfc_client(ScramCredential::Password("pencil".into()));
        client.server_first(RFC_SERVER_FIRST).unwrap();
        let forged = format!("v={}", STANDARD.encode([0u8; 32]));
        assert_eq!(
            client.server_final(forged.as_bytes()),
            Err(ScramError::BadServerSignature)
        );

        let mut client = rfc_client(ScramCredential::Password("wrong".into()));
        client.server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(
            client.server_final(RFC_SERVER_FINAL),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn server_nonce_must_extend_ours() {
        for msg in [
            &b"r=somebodyElse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..],
            b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqO\x01,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            let mut client = rfc_client(ScramCredential::Password("pencil".into()));
            assert_eq!(client.server_first(msg), Err(ScramError::NonceMismatch));
        }
    }

    #[test]
    fn out_of_order_calls_are_refused() {
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        assert_eq!(
            client.server_first(RFC_SERVER_FIRST),
            Err(ScramError::OutOfOrder)
        );
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        assert_eq!(
            client.server_final(RFC_SERVER_FINAL),
            Err(ScramError::OutOfOrder)
        );
        let mut client = rfc_client(ScramCredential::Password("pencil".into()));
        client.server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(
            client.server_first(RFC_SERVER_FIRST),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn truncated_and_garbled_server_messages_error_and_never_panic() {
        // Only cuts inside "i=4096" that leave digits ("i=4", "i=40", "i=409") stay valid.
        let shortest_valid = RFC_SERVER_FIRST.len() - 3;
        for end in 0..RFC_SERVER_FIRST.len() {
            let mut client = rfc_client(ScramCredential::Password("pencil".into()));
            let result = client.server_first(&RFC_SERVER_FIRST[..end]);
            assert_eq!(result.is_ok(), end >= shortest_valid, "[..{end}]");
        }
        for end in 0..RFC_SERVER_FINAL.len() {
            let mut client = rfc_client(ScramCredential::Password("pencil".into()));
            client.server_first(RFC_SERVER_FIRST).unwrap();
            assert!(
                client.server_final(&RFC_SERVER_FINAL[..end]).is_err(),
                "[..{end}]"
            );
        }
        for msg in [
            &b"m=x,r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=1"[..],
            b"r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=1",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=0",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=-1",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=99999999999",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=1,?",
            b"\xff",
        ] {
            let mut client = rfc_client(ScramCredential::Password("pencil".into()));
            assert!(
                matches!(client.server_first(msg), Err(ScramError::Malformed(_))),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let key = client_key(&salted_password("pencil", &salt, 4096));
        let password = ScramClient::new(ScramCredential::Password("pencil".into()));
        let keys = ScramClient::new(ScramCredential::Keys {
            client_key: key,
            verifier: rfc_verifier(),
        });
        let debug = format!("{password:?} {keys:?}");
        assert!(!debug.contains("pencil"));
        assert!(!debug.contains(&STANDARD.encode(key)));
        assert!(!debug.contains(&format!("{key:?}")));
    }
}

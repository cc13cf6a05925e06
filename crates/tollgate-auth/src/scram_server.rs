//! Server side of one SCRAM-SHA-256 exchange, as PostgreSQL runs it.
//!
//! See the PostgreSQL docs, "SASL Authentication", and RFC 5802 section 5. We never offer
//! SCRAM-SHA-256-PLUS, so a client asking for channel binding (gs2 flag `p`) is refused, while
//! `n` (client can't bind) and `y` (client could, but thinks we can't) are both accepted. The
//! user name in `n=` is ignored: PostgreSQL takes it from the startup packet instead.

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::ct::ct_eq;
use crate::error::ScramError;
use crate::scram_attr::{attr, is_extension, is_printable_nonce, new_nonce, utf8};
use crate::scram_verifier::{decode_key, hmac_sha256, sha256, xor32, ScramVerifier};

/// Iteration count advertised for unknown users: PostgreSQL's default, so mocks look ordinary.
const MOCK_ITERATIONS: u32 = 4096;
/// Salt length for unknown users: PostgreSQL's default salt length.
const MOCK_SALT_LEN: usize = 16;

/// Drives the server half of one SCRAM-SHA-256 exchange: client-first in, client-final in.
pub struct ScramServer {
    verifier: ScramVerifier,
    /// Further verifiers with the same salt and iteration count that also admit the client
    /// (a rotated secret's AWSPREVIOUS password during the rotation window).
    others: Vec<ScramVerifier>,
    /// After a wrong proof: the AuthMessage and the proof, so the caller can check them
    /// against a verifier it learns only now (a secret re-read), without a new exchange.
    failed: Option<(String, [u8; 32])>,
    /// Set for unknown users: the exchange runs to the end and then fails.
    doomed: bool,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(Exchange),
    Finished,
}

/// What client-final must be checked against.
struct Exchange {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// A successful exchange: the message to send and the key the client proved it holds.
pub struct ScramSuccess {
    /// The server-final-message (`v=...`), to send in AuthenticationSASLFinal.
    pub server_final: Vec<u8>,
    /// The client's ClientKey recovered from its proof; lets the pooler log in to a server
    /// holding the same verifier.
    pub client_key: [u8; 32],
}

impl ScramServer {
    /// Starts an exchange that checks the client against `verifier`.
    pub fn new(verifier: ScramVerifier) -> Self {
        Self::with_alternates(verifier, Vec::new())
    }

    /// Starts an exchange that admits a client proving any of `verifier` and `others`; they
    /// must share `verifier`'s salt and iteration count (those are what the client is sent).
    pub fn with_alternates(verifier: ScramVerifier, others: Vec<ScramVerifier>) -> Self {
        let others = others
            .into_iter()
            .filter(|o| o.salt == verifier.salt && o.iterations == verifier.iterations)
            .collect();
        Self {
            verifier,
            others,
            failed: None,
            doomed: false,
            state: State::AwaitingClientFirst,
        }
    }

    /// For an unknown user: runs the exchange with a salt derived from (user, a per-process
    /// random key) so a prober can't tell unknown users from wrong passwords; always ends in
    /// WrongPassword. PostgreSQL's default iteration count; see [`ScramServer::mock_with`].
    pub fn mock(user: &str) -> Self {
        Self::mock_with(user, MOCK_ITERATIONS)
    }

    /// [`ScramServer::mock`] advertising `iterations`: the caller passes the count its real
    /// users' verifiers have, so the mock's server-first-message looks like theirs. The salt is
    /// the same for every exchange with one name (within this process), as a real user's is.
    pub fn mock_with(user: &str, iterations: u32) -> Self {
        static MOCK_KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = MOCK_KEY.get_or_init(rand::random);
        let mut salt = hmac_sha256(key, &[user.as_bytes()]).to_vec();
        salt.truncate(MOCK_SALT_LEN);
        // The keys are random so that even the checks that run before `doomed` is consulted
        // cannot match anything a client could know.
        let verifier = ScramVerifier {
            iterations: iterations.max(1),
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        };
        Self {
            verifier,
            others: Vec::new(),
            failed: None,
            doomed: true,
            state: State::AwaitingClientFirst,
        }
    }

    /// Takes the client-first-message (from SASLInitialResponse) and returns the
    /// server-first-message to send in AuthenticationSASLContinue.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        self.client_first_with_nonce(msg, new_nonce())
    }

    fn client_first_with_nonce(
        &mut self,
        msg: &[u8],
        server_nonce: String,
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            self.state = State::Finished;
            return Err(ScramError::OutOfOrder);
        }
        // Any error ends the exchange; success replaces this below.
        self.state = State::Finished;
        let msg = utf8(msg, "client-first-message is not UTF-8")?;

        // gs2-header = gs2-cbind-flag "," [authzid] ","
        let mut gs2 = msg.splitn(3, ',');
        let flag = gs2.next().unwrap_or_default();
        let authzid = gs2.next();
        let bare = gs2.next().ok_or(ScramError::Malformed(
            "client-first-message lacks a GS2 header",
        ))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("unknown channel-binding flag")),
        }
        if authzid != Some("") {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let gs2_header = format!("{flag},,");

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut parts = bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extension is not supported",
            ));
        }
        attr(first, 'n', "client-first-message lacks n=")?;
        let client_nonce = attr(parts.next(), 'r', "client-first-message lacks r=")?;
        if !is_printable_nonce(client_nonce) {
            return Err(ScramError::Malformed("client nonce is not printable"));
        }
        if !parts.all(is_extension) {
            return Err(ScramError::Malformed(
                "bad attribute in client-first-message",
            ));
        }

        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal(Exchange {
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        });
        Ok(reply)
    }

    /// Takes the client-final-message (from SASLResponse) and, if the proof is right, returns
    /// the server-final-message and the recovered ClientKey.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<ScramSuccess, ScramError> {
        let ex = match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingClientFinal(ex) => ex,
            _ => return Err(ScramError::OutOfOrder),
        };
        let msg = utf8(msg, "client-final-message is not UTF-8")?;

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = msg
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("client-final-message lacks a proof"))?;
        let proof = attr(Some(proof), 'p', "client-final-message does not end in p=")?;
        let mut parts = without_proof.split(',');
        let binding = attr(parts.next(), 'c', "client-final-message lacks c=")?;
        if STANDARD.encode(&ex.gs2_header) != binding {
            return Err(ScramError::Malformed("c= does not match the GS2 header"));
        }
        let nonce = attr(parts.next(), 'r', "client-final-message lacks r=")?;
        if nonce != ex.nonce {
            return Err(ScramError::NonceMismatch);
        }
        if !parts.all(is_extension) {
            return Err(ScramError::Malformed(
                "bad attribute in client-final-message",
            ));
        }
        let proof = decode_key(proof).ok_or(ScramError::Malformed(
            "client proof is not 32 bytes of base64",
        ))?;

        let auth_message = format!(
            "{},{},{}",
            ex.client_first_bare, ex.server_first, without_proof
        );
        if self.doomed {
            let _ = check_proof(&self.verifier, &auth_message, &proof);
            return Err(ScramError::WrongPassword);
        }
        let found = std::iter::once(&self.verifier)
            .chain(&self.others)
            .find_map(|v| check_proof(v, &auth_message, &proof));
        match found {
            Some(success) => Ok(success),
            None => {
                self.failed = Some((auth_message, proof));
                Err(ScramError::WrongPassword)
            }
        }
    }

    /// After [`client_final`](Self::client_final) said WrongPassword: whether the same proof
    /// satisfies `verifier` (same salt and iteration count as the one the client was sent).
    pub fn recheck(&self, verifier: &ScramVerifier) -> Option<ScramSuccess> {
        if self.doomed
            || verifier.salt != self.verifier.salt
            || verifier.iterations != self.verifier.iterations
        {
            return None;
        }
        let (auth_message, proof) = self.failed.as_ref()?;
        check_proof(verifier, auth_message, proof)
    }
}

/// Checks a client proof against one verifier; the success carries its server signature.
fn check_proof(v: &ScramVerifier, auth_message: &str, proof: &[u8; 32]) -> Option<ScramSuccess> {
    let client_signature = hmac_sha256(&v.stored_key, &[auth_message.as_bytes()]);
    let client_key = xor32(proof, &client_signature);
    if !ct_eq(&sha256(&client_key), &v.stored_key) {
        return None;
    }
    let server_signature = hmac_sha256(&v.server_key, &[auth_message.as_bytes()]);
    Some(ScramSuccess {
        server_final: format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        client_key,
    })
}

impl ScramServer {}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitingClientFirst => "AwaitingClientFirst",
            State::AwaitingClientFinal(_) => "AwaitingClientFinal",
            State::Finished => "Finished",
        };
        f.debug_struct("ScramServer")
            .field("verifier", &self.verifier)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ScramSuccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSuccess")
            .field("server_final", &String::from_utf8_lossy(&self.server_final))
            .field("client_key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram_client::{ScramClient, ScramCredential};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn verifier(password: &str) -> ScramVerifier {
        // Few iterations keep the many small exchanges below fast in debug builds.
        ScramVerifier::from_password(password, b"0123456789abcdef", 64)
    }

    /// Runs rust-postgres' real SCRAM client against our server.
    fn exchange_with_postgres_protocol(
        server: &mut ScramServer,
        password: &str,
        binding: ChannelBinding,
    ) -> Result<ScramSuccess, ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), binding);
        let server_first = server.client_first(client.message())?;
        client.update(&server_first).unwrap();
        let success = server.client_final(client.message())?;
        client.finish(&success.server_final).unwrap();
        Ok(success)
    }

    fn exchange_with_our_client(
        server: &mut ScramServer,
        cred: ScramCredential,
    ) -> Result<ScramSuccess, ScramError> {
        let mut client = ScramClient::new(cred);
        let server_first = server.client_first(&client.client_first())?;
        let client_final = client.server_first(&server_first)?;
        let success = server.client_final(&client_final)?;
        client.server_final(&success.server_final)?;
        Ok(success)
    }

    #[test]
    fn rfc7677_example_exchange_succeeds_byte_for_byte() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut server = ScramServer::new(ScramVerifier::from_password("pencil", &salt, 4096));
        let server_first = server
            .client_first_with_nonce(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            )
            .unwrap();
        assert_eq!(
            server_first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let success = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            success.server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// The RFC 7677 exchange, with the server holding `verifier` and `others`.
    fn rfc_exchange(
        verifier: ScramVerifier,
        others: Vec<ScramVerifier>,
    ) -> (ScramServer, Result<ScramSuccess, ScramError>) {
        let mut server = ScramServer::with_alternates(verifier, others);
        server
            .client_first_with_nonce(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            )
            .unwrap();
        let r = server.client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        (server, r)
    }

    #[test]
    fn an_alternate_verifier_admits_its_password_with_its_own_server_signature() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (_, r) = rfc_exchange(
            ScramVerifier::from_password("rotated", &salt, 4096),
            vec![ScramVerifier::from_password("pencil", &salt, 4096)],
        );
        assert_eq!(
            r.unwrap().server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // An alternate with another salt could not have been what the client was sent: ignored.
        let (_, r) = rfc_exchange(
            ScramVerifier::from_password("rotated", &salt, 4096),
            vec![ScramVerifier::from_password("pencil", b"other salt", 4096)],
        );
        assert!(matches!(r, Err(ScramError::WrongPassword)));
    }

    #[test]
    fn a_wrong_proof_can_be_rechecked_against_a_verifier_learnt_afterwards() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (server, r) =
            rfc_exchange(ScramVerifier::from_password("old", &salt, 4096), Vec::new());
        assert!(matches!(r, Err(ScramError::WrongPassword)));
        assert!(server
            .recheck(&ScramVerifier::from_password("other", &salt, 4096))
            .is_none());
        let ok = server
            .recheck(&ScramVerifier::from_password("pencil", &salt, 4096))
            .unwrap();
        assert_eq!(
            ok.server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // A mock (unknown user) never succeeds, even on recheck.
        let mut mock = ScramServer::mock("user");
        assert!(mock
            .recheck(&ScramVerifier::from_password("pencil", &salt, 4096))
            .is_none());
        let _ = mock.client_first(b"n,,n=user,r=x");
    }

    /// The salt and iteration count a server-first-message advertises.
    fn advertised(server: &mut ScramServer) -> (String, String) {
        let first = String::from_utf8(server.client_first(b"n,,n=,r=abc").unwrap()).unwrap();
        let mut parts = first.split(',').skip(1);
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    }

    #[test]
    fn a_mock_repeats_its_salt_per_name_and_advertises_the_given_iterations() {
        let (salt, iterations) = advertised(&mut ScramServer::mock_with("ghost", 10_000));
        assert_eq!(iterations, "i=10000");
        // Probing the same name again sees the same salt, as with a real user.
        assert_eq!(
            advertised(&mut ScramServer::mock_with("ghost", 10_000)).0,
            salt
        );
        assert_ne!(
            advertised(&mut ScramServer::mock_with("other", 10_000)).0,
            salt
        );
        // The salt is as long as PostgreSQL's (16 bytes: 24 base64 characters).
        assert_eq!(salt.len(), "s=".len() + 24);
        assert_eq!(advertised(&mut ScramServer::mock("ghost")).1, "i=4096");
    }

    #[test]
    fn postgres_protocol_client_logs_in_with_right_password() {
        let mut server = ScramServer::new(verifier("hunter2"));
        let success =
            exchange_with_postgres_protocol(&mut server, "hunter2", ChannelBinding::unsupported())
                .unwrap();
        assert_eq!(sha256(&success.client_key), verifier("hunter2").stored_key);
    }

    #[test]
    fn postgres_protocol_client_with_y_flag_logs_in() {
        let mut server = ScramServer::new(verifier("hunter2"));
        exchange_with_postgres_protocol(&mut server, "hunter2", ChannelBinding::unrequested())
            .unwrap();
    }

    #[test]
    fn postgres_protocol_client_with_wrong_password_gets_wrong_password() {
        let mut server = ScramServer::new(verifier("hunter2"));
        let result =
            exchange_with_postgres_protocol(&mut server, "hunter3", ChannelBinding::unsupported());
        assert_eq!(result.err(), Some(ScramError::WrongPassword));
    }

    #[test]
    fn verifier_from_postgres_protocol_accepts_its_password() {
        let stored = postgres_protocol::password::scram_sha_256(b"s3cret");
        let v = ScramVerifier::parse(&stored).unwrap();
        let mut server = ScramServer::new(v.clone());
        exchange_with_postgres_protocol(&mut server, "s3cret", ChannelBinding::unsupported())
            .unwrap();
        let mut server = ScramServer::new(v);
        let result =
            exchange_with_postgres_protocol(&mut server, "s3cre", ChannelBinding::unsupported());
        assert_eq!(result.err(), Some(ScramError::WrongPassword));
    }

    #[test]
    fn channel_binding_request_is_refused() {
        let mut server = ScramServer::new(verifier("pw"));
        let result = server.client_first(b"p=tls-server-end-point,,n=,r=abcdef");
        assert_eq!(result, Err(ScramError::ChannelBinding));
    }

    #[test]
    fn our_client_logs_in_with_password_and_with_recovered_keys() {
        let v = verifier("hunter2");
        let mut server = ScramServer::new(v.clone());
        let first =
            exchange_with_our_client(&mut server, ScramCredential::Password("hunter2".into()))
                .unwrap();

        // The pooler replays the recovered key against a server holding the same verifier.
        let mut server = ScramServer::new(v.clone());
        let cred = ScramCredential::Keys {
            client_key: first.client_key,
            verifier: v,
        };
        exchange_with_our_client(&mut server, cred).unwrap();
    }

    #[test]
    fn our_client_with_wrong_password_gets_wrong_password() {
        let mut server = ScramServer::new(verifier("hunter2"));
        let result = exchange_with_our_client(&mut server, ScramCredential::Password("x".into()));
        assert_eq!(result.err(), Some(ScramError::WrongPassword));
    }

    #[test]
    fn mock_always_fails_and_looks_stable_per_user() {
        for password in ["", "hunter2", "anything"] {
            let mut server = ScramServer::mock("ghost");
            let result =
                exchange_with_our_client(&mut server, ScramCredential::Password(password.into()));
            assert_eq!(result.err(), Some(ScramError::WrongPassword));
        }
        let salt_of = |user: &str| {
            let mut server = ScramServer::mock(user);
            let reply = server.client_first(b"n,,n=,r=abc").unwrap();
            let reply = String::from_utf8(reply).unwrap();
            reply.split(',').nth(1).unwrap().to_owned()
        };
        assert_eq!(salt_of("ghost"), salt_of("ghost"));
        assert_ne!(salt_of("ghost"), salt_of("spook"));
        let mut server = ScramServer::mock("ghost");
        let reply = String::from_utf8(server.client_first(b"n,,n=,r=abc").unwrap()).unwrap();
        assert!(reply.ends_with(",i=4096"));
    }

    #[test]
    fn mock_even_with_a_replayed_real_proof_fails() {
        let mut server = ScramServer::mock("ghost");
        let result =
            exchange_with_postgres_protocol(&mut server, "", ChannelBinding::unsupported());
        assert_eq!(result.err(), Some(ScramError::WrongPassword));
    }

    #[test]
    fn messages_out_of_order_are_refused() {
        let mut server = ScramServer::new(verifier("pw"));
        assert_eq!(
            server.client_final(b"c=biws,r=x,p=x").err(),
            Some(ScramError::OutOfOrder)
        );
        let mut server = ScramServer::new(verifier("pw"));
        server.client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            server.client_first(b"n,,n=,r=abc"),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn no_second_try_after_a_failed_proof() {
        let mut server = ScramServer::new(verifier("pw"));
        let mut client = ScramClient::new(ScramCredential::Password("nope".into()));
        let server_first = server.client_first(&client.client_first()).unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        assert_eq!(
            server.client_final(&client_final).err(),
            Some(ScramError::WrongPassword)
        );
        assert_eq!(
            server.client_final(&client_final).err(),
            Some(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn malformed_client_first_messages_are_rejected() {
        let cases: &[(&[u8], ScramError)] = &[
            (
                b"",
                ScramError::Malformed("client-first-message lacks a GS2 header"),
            ),
            (
                b"x,,n=,r=abc",
                ScramError::Malformed("unknown channel-binding flag"),
            ),
            (
                b"n,a=bob,n=,r=abc",
                ScramError::Malformed("authorization identity is not supported"),
            ),
            (
                b"n,,m=ext,n=,r=abc",
                ScramError::Malformed("mandatory extension is not supported"),
            ),
            (
                b"n,,r=abc",
                ScramError::Malformed("client-first-message lacks n="),
            ),
            (
                b"n,,n=",
                ScramError::Malformed("client-first-message lacks r="),
            ),
            (
                b"n,,n=,r=",
                ScramError::Malformed("client nonce is not printable"),
            ),
            (
                b"n,,n=,r=a b",
                ScramError::Malformed("client nonce is not printable"),
            ),
            (
                b"n,,n=,r=abc,??",
                ScramError::Malformed("bad attribute in client-first-message"),
            ),
            (
                b"n,,n=,r=\xff",
                ScramError::Malformed("client-first-message is not UTF-8"),
            ),
        ];
        for (msg, err) in cases {
            let mut server = ScramServer::new(verifier("pw"));
            assert_eq!(server.client_first(msg).as_ref(), Err(err), "{msg:?}");
        }
        // Extensions after the nonce are allowed and ignored.
        let mut server = ScramServer::new(verifier("pw"));
        server.client_first(b"y,,n=someone,r=abc,x=1").unwrap();
    }

    /// A server past client-first with a fixed server nonce, so one client-final fits many.
    fn server_after(client_first: &[u8]) -> ScramServer {
        let mut server = ScramServer::new(verifier("pw"));
        server
            .client_first_with_nonce(client_first, "fixed-server-nonce".into())
            .unwrap();
        server
    }

    /// A client-first and the matching client-final for password "pw".
    fn good_messages() -> (Vec<u8>, String) {
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        let client_first = client.client_first();
        let server_first = server_after(&client_first).state_server_first();
        let client_final = client.server_first(server_first.as_bytes()).unwrap();
        (client_first, String::from_utf8(client_final).unwrap())
    }

    impl ScramServer {
        fn state_server_first(&self) -> String {
            match &self.state {
                State::AwaitingClientFinal(ex) => ex.server_first.clone(),
                _ => panic!("not awaiting client-final"),
            }
        }
    }

    #[test]
    fn tampered_client_final_messages_are_rejected() {
        let (client_first, good) = good_messages();
        let nonce = good.split(',').nth(1).unwrap().to_owned();
        let (without_proof, proof) = good.rsplit_once(",p=").unwrap();
        let mut flipped = STANDARD.decode(proof).unwrap();
        flipped[0] ^= 1;
        let cases = [
            (
                good.replace("c=biws", "c=eSws"),
                ScramError::Malformed("c= does not match the GS2 header"),
            ),
            (good.replace(&nonce, "r=forged"), ScramError::NonceMismatch),
            (
                good.replacen("c=biws,", "", 1),
                ScramError::Malformed("client-final-message lacks c="),
            ),
            (
                without_proof.to_string(),
                ScramError::Malformed("client-final-message does not end in p="),
            ),
            (
                format!("{without_proof},p=!!!"),
                ScramError::Malformed("client proof is not 32 bytes of base64"),
            ),
            (
                format!("{without_proof},p=AAAA"),
                ScramError::Malformed("client proof is not 32 bytes of base64"),
            ),
            (
                format!("{without_proof},?,p={proof}"),
                ScramError::Malformed("bad attribute in client-final-message"),
            ),
            // An extension the proof did not cover changes the AuthMessage.
            (
                format!("{without_proof},x=1,p={proof}"),
                ScramError::WrongPassword,
            ),
            (
                format!("{without_proof},p={}", STANDARD.encode(flipped)),
                ScramError::WrongPassword,
            ),
        ];
        for (msg, err) in cases {
            let mut server = server_after(&client_first);
            assert_eq!(
                server.client_final(msg.as_bytes()).err(),
                Some(err),
                "{msg}"
            );
        }
        let mut server = server_after(&client_first);
        assert!(server.client_final(good.as_bytes()).is_ok());
    }

    #[test]
    fn truncated_messages_error_and_never_panic() {
        let (client_first, client_final) = good_messages();
        let client_final = client_final.into_bytes();
        // Cutting into the nonce still leaves a valid (shorter) nonce; any shorter cut is invalid.
        let shortest_valid = b"n,,n=,r=x".len();
        for end in 0..client_first.len() {
            let mut server = ScramServer::new(verifier("pw"));
            let result = server.client_first(&client_first[..end]);
            assert_eq!(result.is_ok(), end >= shortest_valid, "first[..{end}]");
        }
        for end in 0..client_final.len() {
            let mut server = server_after(&client_first);
            assert!(
                server.client_final(&client_final[..end]).is_err(),
                "final[..{end}]"
            );
        }
        // Every single byte value, alone and as a would-be proof.
        for b in 0..=255u8 {
            let mut server = ScramServer::new(verifier("pw"));
            assert!(server.client_first(&[b]).is_err());
            let mut server = server_after(&client_first);
            assert!(server.client_final(&[b, b',', b'p', b'=']).is_err());
        }
        let mut server = server_after(&client_first);
        assert!(server.client_final(&client_final).is_ok());
    }

    #[test]
    fn debug_output_redacts_keys() {
        let v = verifier("pw");
        let mut server = ScramServer::new(v.clone());
        let success =
            exchange_with_our_client(&mut server, ScramCredential::Password("pw".into())).unwrap();
        let debug = format!("{server:?} {success:?}");
        assert!(!debug.contains(&STANDARD.encode(success.client_key)));
        assert!(!debug.contains(&STANDARD.encode(v.stored_key)));
        assert!(!debug.contains(&STANDARD.encode(v.server_key)));
    }
}

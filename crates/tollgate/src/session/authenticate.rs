//! The client's login ("Message Flow: Start-up", "SASL Authentication", "Password
//! Authentication"): run the exchange the [`Plan`] calls for, or under `iam_auth` the cleartext
//! exchange that carries an IAM auth token, and return what Tollgate will present to the
//! database for this user.

use super::client::{ClientConn, LOGIN_MAX_MESSAGE};
use super::error::SessionError;
use crate::auth::{backend_credential, check_cleartext, stored_credential, Plan};
use crate::backend::Credential;
use crate::config::IamMode;
use crate::iam::{looks_like_token, now_unix, Accepted, IamState, Refusal};
use crate::shared::Shared;
use bytes::BytesMut;
use std::sync::LazyLock;
use tollgate_auth::{verify_md5_response, ScramError, ScramServer, ScramVerifier, Secret};
use tollgate_wire::{build, frontend, WireError};

/// Authenticates `user` logging in to `database`; on success AuthenticationOk has been sent.
/// The credential is `None` only for a console login (`console`), which needs none.
pub async fn authenticate(
    shared: &Shared,
    client: &mut ClientConn,
    user: &str,
    database: &str,
    console: bool,
) -> Result<Option<Credential>, SessionError> {
    let iam = shared.iam.state();
    let mut iam_accepted = None;
    let cred = if iam.mode == IamMode::Disabled {
        Some(password_login(shared, client, user).await?)
    } else if client.stream.is_tls() || iam.allow_plaintext {
        // The delegate check logs in to a real database: the console's is virtual.
        let check_db = if console { "postgres" } else { database };
        match cleartext(shared, &iam, client, user).await? {
            Cleartext::Token(token) => {
                let accepted = iam_token_login(shared, &iam, &token, user, check_db).await?;
                iam_accepted = Some(accepted);
                // RDS Proxy's classic pairing: IAM for clients, the secret for the database.
                match shared.auth.secrets().filter(|s| s.entry(user).is_some()) {
                    Some(store) => Some(Credential::Secret(store.clone())),
                    None => shared
                        .auth
                        .secret(user)
                        .as_ref()
                        .and_then(stored_credential),
                }
            }
            Cleartext::Password(password) => {
                Some(cleartext_password_login(shared, user, password).await?)
            }
        }
    } else if iam.mode == IamMode::Required {
        // Refused before anything is asked: a token must never cross plain TCP.
        return Err(iam_refused(shared, user, Refusal::TlsRequired));
    } else {
        // iam_auth = enabled over plain TCP: passwords only, by SCRAM or md5 as without IAM.
        // A client that sent a token here fails SCRAM/md5: tell it why it might have.
        Some(
            password_login(shared, client, user)
                .await
                .map_err(|e| match e {
                    SessionError::AuthFailed { user, reason, .. } => SessionError::AuthFailed {
                        user,
                        reason: format!("{reason}; over plain TCP, where IAM is not offered"),
                        hint: PLAIN_TCP_IAM_HINT,
                    },
                    other => other,
                })?,
        )
    };
    // With backend_iam every database login is Tollgate's own, whatever the client proved.
    let cred = match &shared.backend_iam {
        Some(source) => Some(Credential::Iam(source.clone())),
        None => cred,
    };
    if cred.is_none() && !console {
        if iam_accepted.is_some() {
            shared.stats.iam_failed("no_backend_credential");
        }
        return Err(SessionError::NoBackendCredential {
            user: user.to_string(),
            why: match shared.auth.secret(user) {
                Some(_) => "its auth-file entry is a SCRAM verifier, which cannot log in without the client's own SCRAM proof; put its password or md5 hash in the auth file, or enable backend_iam",
                None => "add it to the auth file or enable backend_iam",
            },
        });
    }
    if let Some(accepted) = iam_accepted {
        shared.stats.iam_succeeded(accepted.how());
        tracing::debug!(user, verifier = accepted.how(), "IAM auth token accepted");
    }
    let mut out = BytesMut::new();
    build::auth_ok(&mut out);
    client.send(&out).await?;
    Ok(cred)
}

/// For a failed password login over plain TCP while IAM auth is enabled: the client may have
/// sent an IAM auth token, which Tollgate only asks for over TLS.
const PLAIN_TCP_IAM_HINT: &str = "check the password; if you sent an RDS IAM auth token, \
     connect with sslmode=require: Tollgate accepts tokens only over TLS";

/// What a client sent when asked for a cleartext password under `iam_auth`.
enum Cleartext {
    /// An RDS IAM auth token (by its SigV4 parameters).
    Token(String),
    /// A password (`iam_auth = enabled` only).
    Password(String),
}

/// Under `iam_auth` over TLS: asks for a cleartext password (as RDS Proxy does) and sorts the
/// answer into a token or (`enabled` only) a password.
async fn cleartext(
    shared: &Shared,
    iam: &IamState,
    client: &mut ClientConn,
    user: &str,
) -> Result<Cleartext, SessionError> {
    let mut out = BytesMut::new();
    build::auth_cleartext_password(&mut out);
    client.send(&out).await?;
    let msg = match expect_password(client).await {
        Ok(msg) => msg,
        Err(SessionError::Wire(WireError::TooLarge { limit, .. })) => {
            return Err(iam_refused(shared, user, Refusal::TooLong { limit }))
        }
        Err(e) => return Err(e),
    };
    let password = frontend::parse_password(&msg)?;
    let Ok(password) = std::str::from_utf8(password) else {
        return Err(if iam.mode == IamMode::Required {
            iam_refused(shared, user, Refusal::NotAToken)
        } else {
            fail(user, "password is not UTF-8")
        });
    };
    if looks_like_token(password) {
        Ok(Cleartext::Token(password.to_string()))
    } else if iam.mode == IamMode::Required {
        Err(iam_refused(shared, user, Refusal::NotAToken))
    } else {
        Ok(Cleartext::Password(password.to_string()))
    }
}

/// Verifies an IAM auth token before any pool is touched, so a refused token never costs a
/// pooled connection. `check_db` is the database a delegate check logs in to.
async fn iam_token_login(
    shared: &Shared,
    iam: &IamState,
    token: &str,
    user: &str,
    check_db: &str,
) -> Result<Accepted, SessionError> {
    shared
        .iam
        .verify(
            iam,
            token,
            user,
            check_db,
            shared.pools.connector(),
            now_unix(),
        )
        .await
        .map_err(|refusal| iam_refused(shared, user, refusal))
}

/// `iam_auth = enabled` and a cleartext password: check it against the auth file. The client
/// proved it knows the password itself, which logs in to the database by any method.
async fn cleartext_password_login(
    shared: &Shared,
    user: &str,
    password: String,
) -> Result<Credential, SessionError> {
    if let Some(store) = shared.auth.secrets().filter(|s| s.entry(user).is_some()) {
        use sha2::{Digest, Sha256};
        let given = Sha256::digest(password.as_bytes());
        let seen = store.generation(user);
        let matches = |store: &crate::secrets::SecretStore| {
            store
                .accepted(user)
                .iter()
                .any(|(_, p)| tollgate_auth::ct_eq(&Sha256::digest(p.as_bytes()), &given))
        };
        let ok =
            matches(store) || (store.refresh_now(user, seen, UNMATCHED).await && matches(store));
        if !ok {
            return Err(fail(user, "wrong password (cleartext, auth_secret)"));
        }
        return Ok(Credential::Secret(store.clone()));
    }
    let secret = shared.auth.secret(user);
    let ok = if needs_pbkdf2(secret.as_ref()) {
        // A SCRAM verifier, or an unknown user: an unknown user costs the same derivation
        // (against a throwaway verifier), so timing does not tell which users exist.
        let (user, password, secret) = (user.to_string(), password.clone(), secret.clone());
        crate::auth::pbkdf2(move || match &secret {
            Some(s) => check_cleartext(s, &user, &password),
            None => {
                let _ = check_cleartext(&unknown_user_verifier(), &user, &password);
                false
            }
        })
        .await
        .unwrap_or(false)
    } else {
        secret
            .as_ref()
            .is_some_and(|s| check_cleartext(s, user, &password))
    };
    if secret.is_none() {
        return Err(fail(
            user,
            "user not in the auth file (cleartext password under iam_auth)",
        ));
    }
    if !ok {
        return Err(fail(
            user,
            "wrong password (cleartext, under iam_auth = enabled)",
        ));
    }
    Ok(Credential::Password(password))
}

/// Whether checking a cleartext password against `secret` costs a PBKDF2 derivation (a
/// SCRAM verifier, or no entry at all, which pays the same to hide that).
fn needs_pbkdf2(secret: Option<&Secret>) -> bool {
    matches!(secret, Some(Secret::Scram(_)) | None)
}

/// A SCRAM verifier no password matches, with the usual iteration count.
fn unknown_user_verifier() -> Secret {
    static VERIFIER: LazyLock<Secret> = LazyLock::new(|| {
        let salt: [u8; 16] = rand::random();
        let secret: [u8; 32] = rand::random();
        Secret::Scram(ScramVerifier::from_password(
            &String::from_utf8_lossy(&secret),
            &salt,
            crate::auth::SCRAM_ITERATIONS,
        ))
    });
    VERIFIER.clone()
}

/// Counts a refused IAM login; the session logs it with its reason when it ends.
fn iam_refused(shared: &Shared, user: &str, refusal: Refusal) -> SessionError {
    shared.stats.iam_failed(refusal.reason());
    SessionError::IamRefused {
        user: user.to_string(),
        refusal,
    }
}

/// The login without IAM: SCRAM-SHA-256 or md5, as the auth file's entry allows.
async fn password_login(
    shared: &Shared,
    client: &mut ClientConn,
    user: &str,
) -> Result<Credential, SessionError> {
    if let Some(store) = shared.auth.secrets().filter(|s| s.entry(user).is_some()) {
        return secret_login(shared, store, client, user).await;
    }
    let cred = match shared.auth.plan(user) {
        Plan::Scram { mut server, secret } => {
            let client_key = scram_exchange(client, &mut server, user, "wrong password").await?;
            backend_credential(&secret, Some(client_key))
        }
        Plan::Unknown { mut server } => {
            scram_exchange(client, &mut server, user, "user not in the auth file").await?;
            // mock() never succeeds; should it, refuse anyway.
            return Err(fail(user, "user not in the auth file"));
        }
        Plan::Md5 { secret } => {
            let (salt, response) = md5_challenge(client).await?;
            if !verify_md5_response(&secret, user, salt, &response) {
                return Err(fail(user, "wrong password (md5)"));
            }
            backend_credential(&secret, None)
        }
        Plan::UnknownMd5 => {
            // The same messages as a wrong md5 password, and the same failure.
            md5_challenge(client).await?;
            return Err(fail(user, "user not in the auth file"));
        }
    };
    Ok(cred)
}

/// Why a secret is re-read when a client's password matched neither of its versions.
const UNMATCHED: &str = "a client's password matched neither AWSCURRENT nor AWSPREVIOUS";

/// A user whose credentials are in Secrets Manager: SCRAM-SHA-256 (or md5, by
/// client_password_auth_type) against AWSCURRENT and AWSPREVIOUS; a password matching
/// neither gets the secret re-read (rate-limited) before it is refused, so a client that
/// already has a freshly rotated password is not turned away.
async fn secret_login(
    shared: &Shared,
    store: &std::sync::Arc<crate::secrets::SecretStore>,
    client: &mut ClientConn,
    user: &str,
) -> Result<Credential, SessionError> {
    let wrong = "wrong password (auth_secret)";
    match shared.config.secrets.client_auth {
        crate::config::ClientPasswordAuth::ScramSha256 => {
            let seen = store.generation(user);
            let mut verifiers = shared
                .auth
                .secret_verifiers(user, store.accepted(user))
                .await;
            if verifiers.is_empty() {
                return Err(fail(user, "no password derived from the secret"));
            }
            let first = verifiers.remove(0);
            let mut server = ScramServer::with_alternates(first, verifiers);
            scram_start(client, &mut server, user, wrong).await?;
            let last = expect_password(client).await?;
            let success = match server.client_final(&last) {
                Ok(s) => s,
                Err(ScramError::WrongPassword) => {
                    let mut found = None;
                    if store.refresh_now(user, seen, UNMATCHED).await {
                        for v in shared
                            .auth
                            .secret_verifiers(user, store.accepted(user))
                            .await
                        {
                            if let Some(s) = server.recheck(&v) {
                                found = Some(s);
                                break;
                            }
                        }
                    }
                    found.ok_or_else(|| fail(user, wrong))?
                }
                Err(e) => return Err(scram_error(user, e, wrong)),
            };
            let mut out = BytesMut::new();
            build::auth_sasl_final(&mut out, &success.server_final);
            client.send(&out).await?;
        }
        crate::config::ClientPasswordAuth::Md5 => {
            let seen = store.generation(user);
            let (salt, response) = md5_challenge(client).await?;
            let matches = |store: &crate::secrets::SecretStore| {
                store.accepted(user).iter().any(|(_, p)| {
                    let stored = Secret::Md5(tollgate_auth::md5_stored(p, user));
                    verify_md5_response(&stored, user, salt, &response)
                })
            };
            let ok = matches(store)
                || (store.refresh_now(user, seen, UNMATCHED).await && matches(store));
            if !ok {
                return Err(fail(user, "wrong password (md5, auth_secret)"));
            }
        }
    }
    Ok(Credential::Secret(store.clone()))
}

/// Sends AuthenticationMD5Password with a fresh salt; returns the salt and the response.
async fn md5_challenge(client: &mut ClientConn) -> Result<([u8; 4], Vec<u8>), SessionError> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    build::auth_md5_password(&mut out, salt);
    client.send(&out).await?;
    let msg = expect_password(client).await?;
    Ok((salt, frontend::parse_password(&msg)?.to_vec()))
}

fn fail(user: &str, reason: &str) -> SessionError {
    SessionError::AuthFailed {
        user: user.to_string(),
        reason: reason.to_string(),
        hint: "check the password, and that the user is in Tollgate's auth file",
    }
}

async fn expect_password(client: &mut ClientConn) -> Result<bytes::Bytes, SessionError> {
    let msg = client.read_message(LOGIN_MAX_MESSAGE).await?;
    if msg.tag != frontend::tag::PASSWORD {
        return Err(SessionError::Protocol(format!(
            "expected a password message during login, got message type {:?}",
            msg.tag as char
        )));
    }
    Ok(msg.body)
}

fn scram_error(user: &str, e: ScramError, wrong: &str) -> SessionError {
    match e {
        ScramError::WrongPassword => fail(user, wrong),
        ScramError::ChannelBinding => SessionError::Unsupported(
            "SCRAM channel binding is not supported by Tollgate; connect with channel_binding=disable or prefer".into(),
        ),
        other => SessionError::Protocol(other.to_string()),
    }
}

/// Runs SCRAM-SHA-256 and returns the ClientKey the client proved it holds.
async fn scram_exchange(
    client: &mut ClientConn,
    server: &mut ScramServer,
    user: &str,
    wrong: &str,
) -> Result<[u8; 32], SessionError> {
    scram_start(client, server, user, wrong).await?;
    let last = expect_password(client).await?;
    let success = server
        .client_final(&last)
        .map_err(|e| scram_error(user, e, wrong))?;
    let mut out = BytesMut::new();
    build::auth_sasl_final(&mut out, &success.server_final);
    client.send(&out).await?;
    Ok(success.client_key)
}

/// SCRAM up to the client-final-message: offers the mechanism, takes client-first, sends
/// server-first.
async fn scram_start(
    client: &mut ClientConn,
    server: &mut ScramServer,
    user: &str,
    wrong: &str,
) -> Result<(), SessionError> {
    let mut out = BytesMut::new();
    build::auth_sasl(&mut out, &["SCRAM-SHA-256"]);
    client.send(&out).await?;

    let first = expect_password(client).await?;
    let (mechanism, data) = frontend::parse_sasl_initial_response(&first)?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(SessionError::Protocol(format!(
            "client chose SASL mechanism {mechanism:?}; Tollgate offers SCRAM-SHA-256"
        )));
    }
    let data =
        data.ok_or_else(|| SessionError::Protocol("SASLInitialResponse carried no data".into()))?;
    let server_first = server
        .client_first(data)
        .map_err(|e| scram_error(user, e, wrong))?;
    out.clear();
    build::auth_sasl_continue(&mut out, &server_first);
    client.send(&out).await?;
    Ok(())
}

//! The client's login ("Message Flow: Start-up", "SASL Authentication", "Password
//! Authentication"): run the exchange the [`Plan`] calls for, or under `iam_auth` the cleartext
//! exchange that carries an IAM auth token, and return what Tollgate will present to the
//! database for this user.

use super::client::{ClientConn, LOGIN_MAX_MESSAGE};
use super::error::SessionError;
use crate::auth::{backend_credential, check_cleartext, stored_credential, Plan};
use crate::backend::Credential;
use crate::config::IamMode;
use crate::iam::{looks_like_token, now_unix, IamState, Refusal};
use crate::server::Shared;
use bytes::BytesMut;
use tollgate_auth::{verify_md5_response, ScramError, ScramServer, Secret};
use tollgate_wire::{build, frontend};

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
    let cred = if iam.mode == IamMode::Disabled {
        Some(password_login(shared, client, user).await?)
    } else if client.stream.is_tls() || iam.allow_plaintext {
        cleartext_login(shared, &iam, client, user, database).await?
    } else if iam.mode == IamMode::Required {
        // Refused before anything is asked: a token must never cross plain TCP.
        return Err(iam_refused(shared, user, Refusal::plaintext()));
    } else {
        // iam_auth = enabled over plain TCP: passwords only, by SCRAM or md5 as without IAM.
        Some(password_login(shared, client, user).await?)
    };
    // With backend_iam every database login is Tollgate's own, whatever the client proved.
    let cred = match &shared.backend_iam {
        Some(source) => Some(Credential::Iam(source.clone())),
        None => cred,
    };
    if cred.is_none() && !console {
        return Err(SessionError::NoBackendCredential {
            user: user.to_string(),
            why: match shared.auth.secret(user) {
                Some(_) => "its auth-file entry is a SCRAM verifier, which cannot log in without the client's own SCRAM proof; put its password or md5 hash in the auth file, or enable backend_iam",
                None => "add it to the auth file or enable backend_iam",
            },
        });
    }
    let mut out = BytesMut::new();
    build::auth_ok(&mut out);
    client.send(&out).await?;
    Ok(cred)
}

/// Under `iam_auth` over TLS: asks for a cleartext password (as RDS Proxy does) and checks it
/// as an IAM auth token, or (`enabled` only) as the auth file's password. Tokens are verified
/// before any pool is touched, so a refused token never costs a pooled connection.
async fn cleartext_login(
    shared: &Shared,
    iam: &IamState,
    client: &mut ClientConn,
    user: &str,
    database: &str,
) -> Result<Option<Credential>, SessionError> {
    let mut out = BytesMut::new();
    build::auth_cleartext_password(&mut out);
    client.send(&out).await?;
    let msg = expect_password(client).await?;
    let password = frontend::parse_password(&msg)?;
    let Ok(password) = std::str::from_utf8(password) else {
        return Err(if iam.mode == IamMode::Required {
            iam_refused(shared, user, Refusal::not_a_token())
        } else {
            fail(user, "password is not UTF-8")
        });
    };

    let token = looks_like_token(password);
    if !token && iam.mode == IamMode::Required {
        return Err(iam_refused(shared, user, Refusal::not_a_token()));
    }
    if token {
        let verdict = shared
            .iam
            .verify(
                iam,
                password,
                user,
                database,
                shared.pools.connector(),
                now_unix(),
            )
            .await;
        return match verdict {
            Ok(accepted) => {
                shared.stats.iam_succeeded(accepted.how());
                tracing::debug!(user, verifier = accepted.how(), "IAM auth token accepted");
                Ok(shared
                    .auth
                    .secret(user)
                    .as_ref()
                    .and_then(stored_credential))
            }
            Err(refusal) => Err(iam_refused(shared, user, refusal)),
        };
    }

    // iam_auth = enabled and a password: check it against the auth file.
    let Some(secret) = shared.auth.secret(user) else {
        return Err(fail(
            user,
            "user not in the auth file (cleartext password under iam_auth)",
        ));
    };
    let ok = match secret {
        // PBKDF2 with the verifier's iteration count: milliseconds, off the async threads.
        Secret::Scram(_) => {
            let (user, password) = (user.to_string(), password.to_string());
            tokio::task::spawn_blocking(move || check_cleartext(&secret, &user, &password))
                .await
                .unwrap_or(false)
        }
        _ => check_cleartext(&secret, user, password),
    };
    if !ok {
        return Err(fail(
            user,
            "wrong password (cleartext, under iam_auth = enabled)",
        ));
    }
    // The client proved it knows the password itself: that logs in by any method.
    Ok(Some(Credential::Password(password.to_string())))
}

/// Counts a refused IAM login; the session logs it with its reason when it ends.
fn iam_refused(shared: &Shared, user: &str, refusal: Refusal) -> SessionError {
    shared.stats.iam_failed(refusal.reason);
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
            let salt: [u8; 4] = rand::random();
            let mut out = BytesMut::new();
            build::auth_md5_password(&mut out, salt);
            client.send(&out).await?;
            let msg = expect_password(client).await?;
            let response = frontend::parse_password(&msg)?;
            if !verify_md5_response(&secret, user, salt, response) {
                return Err(fail(user, "wrong password (md5)"));
            }
            backend_credential(&secret, None)
        }
    };
    Ok(cred)
}

fn fail(user: &str, reason: &str) -> SessionError {
    SessionError::AuthFailed {
        user: user.to_string(),
        reason: reason.to_string(),
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

    let last = expect_password(client).await?;
    let success = server
        .client_final(&last)
        .map_err(|e| scram_error(user, e, wrong))?;
    out.clear();
    build::auth_sasl_final(&mut out, &success.server_final);
    client.send(&out).await?;
    Ok(success.client_key)
}

//! The client's login ("Message Flow: Start-up", "SASL Authentication"): run the exchange the
//! [`Plan`] calls for and return what Tollgate will present to the database for this user.

use super::client::{ClientConn, LOGIN_MAX_MESSAGE};
use super::error::SessionError;
use crate::auth::{backend_credential, Plan};
use crate::backend::Credential;
use crate::server::Shared;
use bytes::BytesMut;
use tollgate_auth::{verify_md5_response, ScramError, ScramServer};
use tollgate_wire::{build, frontend};

/// Authenticates `user`; on success AuthenticationOk has been sent.
pub async fn authenticate(
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
    let mut out = BytesMut::new();
    build::auth_ok(&mut out);
    client.send(&out).await?;
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

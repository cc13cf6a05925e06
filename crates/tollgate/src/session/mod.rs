//! One client session, one task: startup (TLS, cancel) → authenticate → ready → relay →
//! finish. Every error that ends a session is turned into an ErrorResponse here, in
//! [`run`], and nowhere else.

pub mod authenticate;
pub mod buffers;
pub mod client;
pub mod error;
pub mod lost;
pub mod prepared;
pub mod relay;
pub mod startup;

use crate::config::PoolMode;
use crate::params::{is_tracked, parse_options, valid_name, ParamSet};
use crate::pool::PoolKey;
use crate::shared::Shared;
use crate::topology::Endpoint;
use bytes::BytesMut;
use client::ClientConn;
use error::SessionError;
use relay::{End, Relay};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tollgate_wire::{build, TxStatus};

/// Serves one accepted connection to the end; `endpoint` says which listener took it.
pub async fn run(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, endpoint: Endpoint) {
    let started = Instant::now();
    let Some((mut client, params)) = Box::pin(open(&shared, tcp, peer)).await else {
        return;
    };
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let database = params
        .iter()
        .find(|(k, _)| k == "database")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| user.clone());
    let tls = client.stream.is_tls();

    // Login runs in its own boxed future, freed before the relay starts: an idle client's task
    // keeps only what the relay needs (see `Live`).
    let result = {
        let served = Box::pin(serve(
            &shared,
            &mut client,
            &user,
            &database,
            params,
            started,
            endpoint,
        ))
        .await;
        match served {
            Ok(Serving::Ended(end)) => Ok(end),
            Ok(Serving::Relay(mut live)) => {
                let result = live.relay.run().await;
                Box::pin(live.relay.finish()).await;
                result.map_err(|e| (e, true))
            }
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(end) => {
            // Explicit fields rather than a span: a span would be kept for the whole session,
            // and idle clients should cost as little memory as possible.
            tracing::info!(%peer, %user, %database, tls, reason = ?end,
                duration_ms = started.elapsed().as_millis() as u64, "client disconnected");
        }
        Err((e, logged_in)) => {
            if !logged_in {
                shared.stats.setup_failed(e.reason());
                if matches!(
                    e,
                    SessionError::AuthFailed { .. } | SessionError::IamRefused { .. }
                ) {
                    shared.stats.auth_failures.inc();
                }
            }
            match &e {
                SessionError::AuthFailed { reason, .. } => {
                    tracing::warn!(%peer, %user, %database, tls, reason = "auth_failed", detail = %reason,
                        "client authentication failed")
                }
                SessionError::IamRefused { refusal, .. } => {
                    tracing::warn!(%peer, %user, %database, tls, reason = "auth_failed", iam_reason = refusal.reason(),
                        sqlstate = refusal.sqlstate(), detail = %refusal, "client IAM authentication failed")
                }
                _ => {
                    // Refusals that an operator should see (pool exhausted, database down) are
                    // warnings; ordinary ends (idle timeout, client gone) are info.
                    let operator_relevant = matches!(
                        e,
                        SessionError::Pool(_)
                            | SessionError::Backend(_)
                            | SessionError::ServerLost(_)
                    );
                    if operator_relevant {
                        tracing::warn!(%peer, %user, %database, tls, reason = e.reason(), error = %e, logged_in,
                            "client session ended with an error");
                    } else {
                        tracing::info!(%peer, %user, %database, tls, reason = e.reason(), error = %e, logged_in,
                            "client session ended with an error");
                    }
                }
            }
            client.send_error("FATAL", &e).await;
        }
    }
    client.close().await;
}

/// TLS or not, cancel requests, the startup packet: the client and its startup parameters
/// when a session is to follow (every refusal is answered and logged here).
async fn open(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(ClientConn, Vec<(String, String)>)> {
    let login_timeout = shared.live().client_login_timeout;
    let negotiated = tokio::time::timeout(
        login_timeout,
        Box::pin(startup::negotiate(shared, tcp, peer)),
    )
    .await;
    match negotiated {
        Ok((Some(client), Ok(startup::Opening::Session { params }))) => Some((client, params)),
        Ok((_, Ok(_))) => None,
        Ok((client, Err(e))) => {
            shared.stats.setup_failed(e.reason());
            tracing::info!(%peer, reason = e.reason(), error = %e, "client refused during startup");
            if let Some(mut client) = client {
                client.send_error("FATAL", &e).await;
                client.close().await;
            }
            None
        }
        Err(_) => {
            shared.stats.setup_failed("login_timeout");
            tracing::info!(%peer, reason = "login_timeout", "client did not finish startup within client_login_timeout");
            None
        }
    }
}

/// What a completed login leads to.
enum Serving<'a> {
    /// The session is over already (the admin console ran to its end).
    Ended(End),
    /// A logged-in client to relay. Boxed: the session's task then holds a pointer to it
    /// rather than its bytes next to the login's, whose futures are gone by then.
    Relay(Box<Live<'a>>),
}

/// A logged-in client's relay and the registrations that must last exactly as long as it
/// (dropped in this order when the session ends).
struct Live<'a> {
    relay: Relay<'a>,
    _registration: crate::clients::ClientHandle<'a>,
    _current: CurrentClient<'a>,
}

/// The session after startup up to the end of login; the bool in the error says whether
/// login had completed.
async fn serve<'a>(
    shared: &'a Shared,
    client: &'a mut ClientConn,
    user: &str,
    database: &str,
    params: Vec<(String, String)>,
    started: Instant,
    endpoint: Endpoint,
) -> Result<Serving<'a>, (SessionError, bool)> {
    let not_in = |e: SessionError| (e, false);
    if user.is_empty() {
        return Err(not_in(SessionError::NoUser));
    }
    if params
        .iter()
        .any(|(k, v)| k == "replication" && v != "false" && v != "0" && v != "off")
    {
        return Err(not_in(SessionError::Unsupported("replication connections are not supported through Tollgate; connect to the database directly".into())));
    }
    // The client's own settings from its startup packet.
    let mut startup_settings = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" => startup_settings
                .extend(parse_options(v).map_err(|e| not_in(SessionError::Unsupported(e)))?),
            name if valid_name(name) => startup_settings.push((name.to_string(), v.clone())),
            name => {
                return Err(not_in(SessionError::Protocol(format!(
                    "startup parameter name {name:?} is not a valid setting name"
                ))))
            }
        }
    }
    // Everything held across the session's awaits stays allocated for as long as the client
    // is connected, idle or not: what is no longer needed is dropped here and below.
    drop(params);

    let login_timeout = shared.live().client_login_timeout;
    let key = PoolKey {
        database: shared.pools.connector().database_for(database).to_string(),
        user: user.to_string(),
        endpoint,
    };
    let console = key.database == crate::admin::console::DATABASE;
    let cred = match tokio::time::timeout(
        login_timeout,
        Box::pin(authenticate::authenticate(
            shared, client, user, database, console,
        )),
    )
    .await
    {
        Ok(r) => r.map_err(not_in)?,
        Err(_) => {
            return Err(not_in(SessionError::Protocol(
                "login did not complete within client_login_timeout".into(),
            )))
        }
    };
    if console {
        if !shared.live().admin_users.iter().any(|u| u == user) {
            return Err(not_in(SessionError::NotAdmin {
                user: user.to_string(),
            }));
        }
        shared.stats.clients_setup_succeeded.inc();
        let _current = CurrentClient(shared, None);
        return Box::pin(crate::admin::console::serve(shared, client, user))
            .await
            .map(Serving::Ended)
            .map_err(|e| (e, true));
    }
    let Some(cred) = cred else {
        // authenticate() gives a credential for every login but the console's.
        return Err(not_in(SessionError::NoBackendCredential {
            user: user.to_string(),
            why: "add it to the auth file or enable backend_iam",
        }));
    };
    let pool = shared
        .pools
        .get_or_create(key)
        .map_err(|e| not_in(SessionError::Pool(e)))?;
    pool.set_credential(cred);
    shared.stats.clients_setup_succeeded.inc();
    shared.stats.clients_current.inc();
    pool.stats.clients.inc();
    let _current = CurrentClient(shared, Some(pool.clone()));
    let registration = shared
        .clients
        .register(client.peer, user, database, client.stream.is_tls());
    let logged_in = |e: SessionError| (e, true);

    let cancel_key = shared.cancels.issue();
    let mut relay = Relay::new(
        shared,
        client,
        pool.clone(),
        cancel_key,
        ParamSet::default(),
        Vec::new(),
        registration.info.clone(),
    );
    match Box::pin(finish_login(
        &mut relay,
        startup_settings,
        (user, database),
        started,
    ))
    .await
    {
        Ok(()) => Ok(Serving::Relay(Box::new(Live {
            relay,
            _registration: registration,
            _current,
        }))),
        Err(e) => {
            Box::pin(relay.finish()).await;
            Err(logged_in(e))
        }
    }
}

/// The end of a login: the client's settings over the backend's defaults (checked on a
/// backend when they differ from them, as PostgreSQL checks them at login), then the
/// ParameterStatus, BackendKeyData and ReadyForQuery that tell the client it is in.
async fn finish_login(
    relay: &mut Relay<'_>,
    startup_settings: Vec<(String, String)>,
    (user, database): (&str, &str),
    started: Instant,
) -> Result<(), SessionError> {
    let shared = relay.shared;
    let pool = relay.pool.clone();
    let mut first = None;
    if shared.config.pool_mode == PoolMode::Session || !pool.has_baseline() {
        first = Some(Box::pin(relay.take_from_pool()).await?);
    }
    // Session mode: the client keeps this backend, so it is told the backend's own pid
    // (with a secret of Tollgate's), as pg_backend_pid(), NOTIFY and pg_stat_activity say.
    if let (PoolMode::Session, Some(conn)) = (shared.config.pool_mode, &first) {
        if let Some(key) = shared.cancels.issue_with_pid(conn.cancel.process_id) {
            relay.key = key;
        }
    }
    let baseline = pool.baseline().unwrap_or_default();
    let mut want = baseline.clone();
    let mut extras = Vec::new();
    for (k, v) in &startup_settings {
        want.set(k, v);
        // Every untracked setting is applied per backend, including ones the server
        // reports (default_transaction_read_only): the baseline's value is not the client's.
        let k = k.to_ascii_lowercase();
        if !is_tracked(&k) && !extras.contains(&k) {
            extras.push(k);
        }
    }
    relay.want = want;
    relay.extras = extras;
    relay.startup = startup_settings;
    if let Some(conn) = first {
        Box::pin(relay.attach(conn)).await?;
    } else if relay.want.diff_sql(&baseline, &relay.extras).is_some() {
        // Validate and normalise the client's settings now, as PostgreSQL would at login.
        Box::pin(relay.borrow()).await?;
    }
    relay.maybe_release();

    let out = login_reply(relay, &baseline);
    relay.client.send(&out).await?;
    // From here on only the settings that are re-applied across backends matter; keeping
    // just those makes an idle client's state smaller.
    let extras = &relay.extras;
    relay
        .want
        .retain(|k| is_tracked(k) || extras.iter().any(|e| e == k));
    tracing::info!(peer = %relay.client.peer, user, database, tls = relay.client.stream.is_tls(),
        login_ms = started.elapsed().as_millis() as u64, "client connected");
    Ok(())
}

/// ParameterStatus for each of the client's settings, BackendKeyData and ReadyForQuery: the end
/// of a login.
fn login_reply(relay: &Relay<'_>, baseline: &ParamSet) -> BytesMut {
    let mut out = BytesMut::new();
    for (k, v) in relay.want.iter() {
        // Announce what the server reports (the baseline's names), not the extras it never does.
        let unreported =
            baseline.get(k).is_none() && relay.extras.iter().any(|e| e.eq_ignore_ascii_case(k));
        if !unreported {
            build::parameter_status(&mut out, k, v);
        }
    }
    build::backend_key_data(&mut out, relay.key.process_id, &relay.key.secret);
    build::ready_for_query(&mut out, TxStatus::Idle);
    out
}

/// Keeps the connected-clients gauges right however the session ends.
struct CurrentClient<'a>(&'a Shared, Option<Arc<crate::pool::Pool>>);

impl Drop for CurrentClient<'_> {
    fn drop(&mut self) {
        self.0.stats.clients_closed.inc();
        if let Some(pool) = &self.1 {
            self.0.stats.clients_current.dec();
            pool.stats.clients.dec();
        }
    }
}

//! The admin console: an admin user connects to the virtual database `tollgate` with any
//! PostgreSQL client and runs PgBouncer-style commands (`SHOW POOLS`, `PAUSE`, ...). Each
//! command lives in its own file; this module reads queries and dispatches them.

pub mod format;
pub mod kill;
pub mod pause;
pub mod reload;
pub mod result;
pub mod show_clients;
pub mod show_config;
pub mod show_pools;
pub mod show_secrets;
pub mod show_servers;
pub mod show_stats;
pub mod show_targets;

use crate::session::client::ClientConn;
use crate::session::error::SessionError;
use crate::session::relay::End;
use crate::shared::Shared;
use bytes::BytesMut;
use result::Reply;
use tollgate_wire::{build, frontend, TxStatus};

/// The virtual database name that opens the console.
pub const DATABASE: &str = "tollgate";

/// Largest console query accepted.
const MAX_QUERY: usize = 64 * 1024;

/// Every command, for the error that lists them.
pub const COMMANDS: &str = "SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, SHOW STATS, SHOW CONFIG, SHOW TARGETS, SHOW SECRETS, RELOAD, PAUSE [db], RESUME [db], KILL client_id";

/// A console command failed; the session goes on.
#[derive(Debug)]
pub struct CommandError {
    /// SQLSTATE.
    pub code: &'static str,
    /// What to tell the operator.
    pub message: String,
}

impl CommandError {
    /// A command error with SQLSTATE `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

/// Serves one admin session after login.
pub async fn serve(
    shared: &Shared,
    client: &mut ClientConn,
    user: &str,
) -> Result<End, SessionError> {
    tracing::info!(peer = %client.peer, user, "admin console session opened");
    let mut out = BytesMut::new();
    for (k, v) in [
        ("server_version", "15.0 (Tollgate console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        build::parameter_status(&mut out, k, v);
    }
    build::backend_key_data(&mut out, 0, &[0, 0, 0, 0]);
    build::ready_for_query(&mut out, TxStatus::Idle);
    client.send(&out).await?;
    loop {
        let msg = client.read_message(MAX_QUERY).await;
        let msg = match msg {
            Ok(m) => m,
            Err(SessionError::ClientIo(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(End::Disconnected)
            }
            Err(e) => return Err(e),
        };
        out.clear();
        match msg.tag {
            frontend::tag::TERMINATE => return Ok(End::Terminated),
            frontend::tag::QUERY => {
                let text = frontend::parse_query(&msg.body)?;
                // The console's own commands are ASCII and read as UTF-8; a client in another
                // encoding gets an error for that command, not a disconnect.
                match std::str::from_utf8(text) {
                    Ok(sql) => {
                        tracing::info!(peer = %client.peer, user, command = sql.trim(), "admin console command");
                        match run_command(shared, sql).await {
                            Ok(reply) => reply.write(&mut out),
                            Err(e) => build::error_response(
                                &mut out, "ERROR", e.code, &e.message, None, None,
                            ),
                        }
                    }
                    Err(_) => build::error_response(
                        &mut out,
                        "ERROR",
                        "22021",
                        "the Tollgate console reads commands as UTF-8 and this one is not; send it with client_encoding UTF8",
                        None,
                        None,
                    ),
                }
            }
            other => {
                build::error_response(
                    &mut out,
                    "ERROR",
                    "0A000",
                    &format!(
                        "the Tollgate console speaks the simple query protocol only (got message type {:?}); use psql",
                        other as char
                    ),
                    None,
                    None,
                );
            }
        }
        build::ready_for_query(&mut out, TxStatus::Idle);
        client.send(&out).await?;
    }
}

/// Parses and runs one command.
pub async fn run_command(shared: &Shared, sql: &str) -> Result<Reply, CommandError> {
    let text = sql.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        return Ok(Reply::Empty);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let keyword = |i: usize| words.get(i).map(|w| w.to_ascii_lowercase());
    let arg = words.get(1).copied();
    match (keyword(0).as_deref(), keyword(1).as_deref(), words.len()) {
        (Some("show"), Some("pools"), 2) => Ok(show_pools::run(shared)),
        (Some("show"), Some("clients"), 2) => Ok(show_clients::run(shared)),
        (Some("show"), Some("servers"), 2) => Ok(show_servers::run(shared)),
        (Some("show"), Some("stats"), 2) => Ok(show_stats::run(shared)),
        (Some("show"), Some("config"), 2) => Ok(show_config::run(shared)),
        (Some("show"), Some("targets"), 2) => Ok(show_targets::run(shared)),
        (Some("show"), Some("secrets"), 2) => Ok(show_secrets::run(shared)),
        (Some("reload"), _, 1) => reload::run(shared),
        (Some("pause"), _, 1 | 2) => pause::pause(shared, arg).await,
        (Some("resume"), _, 1 | 2) => Ok(pause::resume(shared, arg)),
        (Some("kill"), Some(_), 2) => kill::run(shared, arg.unwrap_or_default()),
        (Some("kill"), _, _) => Err(CommandError::new(
            "42601",
            "KILL takes one client id (SHOW CLIENTS lists them): KILL 42",
        )),
        _ => Err(CommandError::new(
            "42601",
            format!("unknown Tollgate console command {text:?}; the commands are: {COMMANDS}"),
        )),
    }
}

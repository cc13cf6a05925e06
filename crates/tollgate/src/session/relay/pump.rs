//! The two directions of the relay: client → backend (`pump_client`) and backend → client
//! (`pump_server`). Each scans the bytes read so far, reads the few messages routing needs,
//! rewrites named-statement messages in transaction mode (see `session/prepared.rs`), and
//! writes everything else through unchanged in one write per read.

use super::{Relay, HIGH_WATER};
use crate::clients::ClientState;
use crate::config::PoolMode;
use crate::pin::{inspect, Dialect, PinReason, Reset};
use crate::session::error::SessionError;
use bytes::BufMut;
use std::time::Instant;
use tollgate_wire::frame::HEADER_LEN;
use tollgate_wire::scanner::Chunk;
use tollgate_wire::{backend, frontend, TxStatus};

/// Most client bytes kept to send a request again on another backend (see `Relay::replay`).
const REPLAY_LIMIT: usize = 64 * 1024;

/// Client messages read whole in session mode.
fn client_inspects_session(tag: u8) -> bool {
    matches!(
        tag,
        frontend::tag::QUERY | frontend::tag::PARSE | frontend::tag::TERMINATE
    )
}

/// Client messages read whole in transaction mode (named statements are rewritten).
fn client_inspects_transaction(tag: u8) -> bool {
    matches!(
        tag,
        frontend::tag::QUERY
            | frontend::tag::PARSE
            | frontend::tag::TERMINATE
            | frontend::tag::BIND
            | frontend::tag::DESCRIBE
            | frontend::tag::CLOSE
    )
}

/// Server messages read whole.
fn server_inspects(tag: u8) -> bool {
    matches!(
        tag,
        backend::tag::READY_FOR_QUERY
            | backend::tag::PARAMETER_STATUS
            | backend::tag::ERROR_RESPONSE
            | backend::tag::PARSE_COMPLETE
            | backend::tag::CLOSE_COMPLETE
    )
}

/// Server messages read whole while a client's RESET / DISCARD / DEALLOCATE awaits its
/// CommandComplete.
fn server_inspects_resets(tag: u8) -> bool {
    server_inspects(tag) || tag == backend::tag::COMMAND_COMPLETE
}

impl Relay<'_> {
    /// Moves complete (or pass-through) client messages into `to_server`, until it holds
    /// [`HIGH_WATER`] bytes. Returns true when the client sent Terminate.
    pub(super) fn process_client(&mut self) -> Result<bool, SessionError> {
        let max = self.live.max_message_size;
        // In transaction mode Bind/Describe/Close are always read: statements (the unnamed
        // one too) follow the client across backends, even after a reload set
        // max_prepared_statements to 0 (then new named statements pin instead).
        let rewrite = self.mode() == PoolMode::Transaction;
        let inspects = if rewrite {
            client_inspects_transaction
        } else {
            client_inspects_session
        };
        let was_waiting = self.flow.waiting();
        let before = self.to_server.len();
        while self.to_server.len() < HIGH_WATER && !self.flow.backlogged() {
            let chunk = self.c_scan.next(&self.client.rbuf, inspects, max)?;
            match chunk {
                Chunk::NeedMore => break,
                Chunk::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.note_client_message(t);
                        self.flow.sent(t);
                    }
                    let bytes = self.client.rbuf.split_to(n);
                    self.keep_for_replay(&bytes);
                    self.to_server.extend_from_slice(&bytes);
                }
                Chunk::Whole { tag, len } => {
                    let msg = self.client.rbuf.split_to(len);
                    if tag == frontend::tag::TERMINATE {
                        return Ok(true);
                    }
                    self.keep_for_replay(&msg);
                    let body = msg.get(HEADER_LEN..).unwrap_or(&[]);
                    let from = self.to_server.len();
                    self.client_message(tag, &msg, body, rewrite)?;
                    // What went out may include messages the proxy added (a Parse a backend
                    // lacked, a Close to make room): the flow must count them all.
                    let mut at = from;
                    while let Some(Ok(Some(h))) = self
                        .to_server
                        .get(at..)
                        .map(tollgate_wire::frame::peek_header)
                    {
                        self.flow.sent(h.tag);
                        at = at.saturating_add(h.frame_len());
                    }
                }
            }
        }
        let added = self.to_server.len() - before.min(self.to_server.len());
        if added > 0 {
            self.pool.stats.bytes_from_clients.add(added as u64);
            if !was_waiting && self.flow.waiting() {
                let now = Instant::now();
                self.request_started = Some(now);
                self.sent_at = Some(now);
            }
        }
        Ok(false)
    }

    /// Keeps the client's bytes while the request could still be sent to another backend;
    /// gives up (for good, until the next borrow) past [`REPLAY_LIMIT`].
    fn keep_for_replay(&mut self, bytes: &[u8]) {
        if let Some(r) = self.replay.as_mut() {
            if r.len() + bytes.len() > REPLAY_LIMIT {
                self.forget_replay();
            } else {
                r.extend_from_slice(bytes);
            }
        }
    }

    /// One whole client message of interest: note what it means, then append what the backend
    /// gets to `self.to_server`.
    fn client_message(
        &mut self,
        tag: u8,
        msg: &[u8],
        body: &[u8],
        rewrite: bool,
    ) -> Result<(), SessionError> {
        let batch = self.flow.next_batch();
        match tag {
            frontend::tag::QUERY => {
                let sql = frontend::parse_query(body)?;
                self.note_statement(sql);
                if let Some(server) = self.server.as_mut() {
                    self.statements.on_query(&mut server.statements);
                }
                self.to_server.put_slice(msg);
            }
            frontend::tag::PARSE => {
                let p = frontend::parse_parse(body)?;
                self.note_statement(p.query);
                let named = !p.name.is_empty();
                if named {
                    // The client's statement record changes with it: a replay would see the
                    // name as taken.
                    self.forget_replay();
                }
                let Some(server) = self.server.as_mut() else {
                    return Err(no_backend());
                };
                if !rewrite {
                    if named {
                        self.pin(PinReason::NamedStatement);
                    }
                    self.to_server.put_slice(msg);
                    return Ok(());
                }
                let limit = self.live.max_prepared_statements;
                match self.statements.on_parse(
                    msg,
                    body,
                    &mut server.statements,
                    batch,
                    limit,
                    &mut self.to_server,
                ) {
                    Ok(()) => {}
                    Err(why) => {
                        tracing::info!(peer = %self.client.peer, reason = ?why,
                            "named statement cannot be shared across backends; pinning the client");
                        self.pin(PinReason::NamedStatement);
                        self.to_server.put_slice(msg);
                    }
                }
            }
            frontend::tag::BIND | frontend::tag::DESCRIBE | frontend::tag::CLOSE => {
                if tag == frontend::tag::CLOSE {
                    self.forget_replay();
                }
                let Some(server) = self.server.as_mut() else {
                    return Err(no_backend());
                };
                let out = &mut self.to_server;
                let limit = self.live.max_prepared_statements;
                match tag {
                    frontend::tag::BIND => self.statements.on_bind(
                        msg,
                        body,
                        &mut server.statements,
                        batch,
                        limit,
                        out,
                    ),
                    frontend::tag::DESCRIBE => self.statements.on_describe(
                        msg,
                        body,
                        &mut server.statements,
                        batch,
                        limit,
                        out,
                    ),
                    _ => self
                        .statements
                        .on_close(msg, body, &mut server.statements, batch, out),
                }
            }
            _ => self.to_server.put_slice(msg),
        }
        Ok(())
    }

    /// What a Query's or Parse's text does to the session: pins it, or resets settings.
    fn note_statement(&mut self, sql: &[u8]) {
        let dialect = Dialect::from_reported(
            self.want.client_encoding(),
            self.want.standard_conforming_strings(),
        );
        let (pin, resets) = inspect(sql, dialect);
        if let Some(r) = pin {
            self.pin(r);
        }
        // Booked when the server confirms each one (its CommandComplete), not now: a DISCARD
        // ALL inside a transaction block fails (25001) and changes nothing.
        self.pending_resets.extend(resets);
    }

    /// The server confirmed a command (CommandComplete `tag`): book the effect of the reset
    /// it was, if one is awaited.
    fn confirm_reset(&mut self, body: &[u8]) {
        let tag = body.split(|&b| b == 0).next().unwrap_or_default();
        let pick = |r: &Reset| match tag {
            b"RESET" => matches!(r, Reset::All | Reset::Setting(_)),
            b"DISCARD ALL" => matches!(r, Reset::All | Reset::Statements),
            b"DEALLOCATE ALL" => matches!(r, Reset::Statements),
            _ => false,
        };
        let take = if tag == b"DISCARD ALL" { 2 } else { 1 };
        let mut confirmed = Vec::new();
        for _ in 0..take {
            if let Some(i) = self.pending_resets.iter().position(pick) {
                confirmed.push(self.pending_resets.remove(i));
            }
        }
        if !confirmed.is_empty() {
            self.note_restores(&confirmed);
            self.apply_resets(confirmed);
        }
    }

    /// The client's own startup settings a confirmed reset put back to the server's defaults:
    /// on PostgreSQL, RESET returns a setting to the value the session started with, which for
    /// a pooled backend is not the client's. They are set again before the client sees the
    /// ReadyForQuery (see [`Self::inject_restore`]).
    fn note_restores(&mut self, confirmed: &[Reset]) {
        for reset in confirmed {
            for (name, _) in &self.startup {
                let hit = match reset {
                    Reset::All => true,
                    Reset::Setting(n) => n.eq_ignore_ascii_case(name),
                    Reset::Statements => false,
                };
                let lower = name.to_ascii_lowercase();
                if hit && !self.restore_due.contains(&lower) {
                    self.restore_due.push(lower);
                }
            }
        }
    }

    /// Sends the backend the `set_config` calls that put the client's startup values back, as
    /// a Query of the proxy's own whose answers the client does not see (but for the settings
    /// it reports that differ from what the client last saw, and its ReadyForQuery, which
    /// stands in for the one of the client's batch).
    fn inject_restore(&mut self) {
        let mut sql = String::new();
        for name in std::mem::take(&mut self.restore_due) {
            if let Some((n, v)) = self
                .startup
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                sql.push_str(&format!(
                    "SELECT pg_catalog.set_config({}, {}, false);",
                    crate::params::quote_literal(n),
                    crate::params::quote_literal(v)
                ));
            }
        }
        if sql.is_empty() {
            return;
        }
        let mut out = bytes::BytesMut::new();
        tollgate_wire::build::query(&mut out, &sql);
        self.to_server.extend_from_slice(&out);
        self.flow.sent(frontend::tag::QUERY);
        if let Some(server) = self.server.as_mut() {
            // A simple Query destroys the unnamed statement, on the server and so for us.
            self.statements.on_query(&mut server.statements);
        }
        self.restoring = true;
    }

    /// A client's RESET / DISCARD ALL leaves untracked settings on this backend in a state the
    /// proxy cannot be sure of (RESET is transactional): mark them unknown so the next borrow
    /// sets or resets them explicitly. Tracked settings are reported back by the server.
    /// DISCARD ALL and DEALLOCATE ALL also drop every prepared statement.
    fn apply_resets(&mut self, resets: Vec<Reset>) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        for reset in resets {
            match reset {
                Reset::All => {
                    let extras = server.extras.clone();
                    server.params.mark_unknown(&extras);
                }
                Reset::Statements => {
                    server.statements.clear();
                    self.statements.clear();
                }
                Reset::Setting(name) if !crate::params::is_tracked(&name) => {
                    server.params.mark_unknown([&name]);
                    if !server.extras.contains(&name) {
                        server.extras.push(name);
                    }
                }
                Reset::Setting(_) => {}
            }
        }
    }

    /// A client message passed through unread: what it means beyond the flow's count.
    fn note_client_message(&mut self, tag: u8) {
        if tag == frontend::tag::FUNCTION_CALL {
            // A function called by OID with arguments the proxy cannot see may leave any
            // session state behind.
            self.pin(PinReason::FunctionCall);
        }
    }

    /// Moves what the backend sent into `to_client` (until it holds [`HIGH_WATER`] bytes),
    /// noting transaction status, settings and what the backend still owes.
    pub(super) fn process_server(&mut self) -> Result<(), SessionError> {
        let max = self.live.max_message_size;
        let mut answered = false;
        let before = self.to_client.len();
        while self.to_client.len() < HIGH_WATER {
            let inspects = if self.pending_resets.is_empty() {
                server_inspects
            } else {
                server_inspects_resets
            };
            let Some(server) = self.server.as_mut() else {
                break;
            };
            let chunk = match self.s_scan.next(&server.rbuf, inspects, max) {
                Ok(c) => c,
                Err(e) => {
                    server.broken = true;
                    return Err(
                        self.server_lost(format!("malformed message from the database: {e}"))
                    );
                }
            };
            match chunk {
                Chunk::NeedMore => break,
                Chunk::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.flow.received(t);
                    }
                    let bytes = server.rbuf.split_to(n);
                    // The answers to the proxy's own restore query are not the client's.
                    if !self.restoring {
                        self.to_client.extend_from_slice(&bytes);
                    }
                }
                Chunk::Whole { tag, len } => {
                    let msg = server.rbuf.split_to(len);
                    let body = msg.get(HEADER_LEN..).unwrap_or(&[]);
                    let mut forward = true;
                    let mut restore = false;
                    match tag {
                        backend::tag::READY_FOR_QUERY => match backend::parse_ready_for_query(body)
                        {
                            Ok(status) => {
                                server.tx_status = status;
                                let batch = self.flow.current_batch();
                                self.flow.received(tag);
                                self.restoring = false;
                                // Parse/Close the server skipped after an error (sent before
                                // this batch's Sync) never happened: undo what was booked.
                                for name in server.statements.on_error(batch) {
                                    self.statements.forget(&name);
                                }
                                // Resets the server did not confirm did not happen.
                                self.pending_resets.clear();
                                let stats = &self.pool.stats;
                                stats.queries.inc();
                                match (status == TxStatus::Idle, self.in_transaction) {
                                    (true, true) => {
                                        stats.in_transaction.dec();
                                        self.in_transaction = false;
                                        self.info.set_state(ClientState::Active);
                                    }
                                    (false, false) => {
                                        stats.in_transaction.inc();
                                        self.in_transaction = true;
                                        self.info.set_state(ClientState::InTransaction);
                                    }
                                    _ => {}
                                }
                                if status == TxStatus::Idle {
                                    stats.transactions.inc();
                                }
                                if !self.restore_due.is_empty() {
                                    if status == TxStatus::Failed {
                                        // The transaction's RESETs roll back with it.
                                        self.restore_due.clear();
                                    } else {
                                        // This ReadyForQuery waits for the restore's.
                                        forward = false;
                                        restore = true;
                                    }
                                }
                                if !self.flow.waiting() {
                                    answered = true;
                                    if let Some(sent) = self.sent_at.take() {
                                        stats.db_latency.record_since(sent);
                                    }
                                }
                            }
                            Err(_) => server.broken = true,
                        },
                        backend::tag::PARAMETER_STATUS => {
                            if let Ok((k, v)) = backend::parse_parameter_status(body) {
                                server.params.set(k, v);
                                let to_restore =
                                    self.restore_due.iter().any(|n| n.eq_ignore_ascii_case(k));
                                if to_restore {
                                    // The server's default, about to be replaced by the
                                    // client's startup value: not what the client should see.
                                    forward = false;
                                } else if self.restoring && self.want.get(k) == Some(v) {
                                    // Back to what the client last saw: PostgreSQL would
                                    // report nothing.
                                    forward = false;
                                } else if crate::params::is_tracked(k)
                                    || self.extras.iter().any(|e| e.eq_ignore_ascii_case(k))
                                {
                                    // The client's view of what follows it across backends.
                                    self.want.set(k, v);
                                }
                            }
                        }
                        backend::tag::ERROR_RESPONSE if self.restoring => {
                            self.flow.received(tag);
                            forward = false;
                            tracing::warn!(peer = %self.client.peer, "could not restore a startup setting after the client's RESET");
                        }
                        backend::tag::ERROR_RESPONSE => {
                            for name in server.statements.on_error(self.flow.current_batch()) {
                                self.statements.forget(&name);
                            }
                            self.flow.received(tag);
                            if let Ok(f) = backend::parse_error_fields(body) {
                                if f.severity == "FATAL" || f.severity == "PANIC" {
                                    server.broken = true;
                                    // A FATAL 57P01 (SIGTERM: pg_terminate_backend, a fast
                                    // shutdown) or 57P05 before any other byte of the answer
                                    // means the request did not run (or was rolled back: a
                                    // commit already made would have said so first), so it
                                    // may go to another backend even though it was sent.
                                    let not_run = matches!(f.code.as_str(), "57P01" | "57P05");
                                    if (self.retry_possible()
                                        || (not_run && self.retry_possible_after_send()))
                                        && self.to_client.len() == before
                                    {
                                        // Nothing of this backend's answer reached the client:
                                        // the loop replaces it and sends the request again.
                                        self.retry_due =
                                            Some(format!("{} ({})", f.message, f.code));
                                        return Ok(());
                                    }
                                    // Not forwarded: the relay tells the client as an
                                    // ERROR and keeps its connection (lose_backend).
                                    forward = false;
                                    self.server_fatal = Some(super::lost::Failure {
                                        code: f.code.clone(),
                                        message: f.message.clone(),
                                    });
                                }
                            }
                        }
                        backend::tag::PARSE_COMPLETE | backend::tag::CLOSE_COMPLETE => {
                            self.flow.received(tag);
                            forward = server.statements.on_complete(tag);
                        }
                        backend::tag::COMMAND_COMPLETE => {
                            self.flow.received(tag);
                            if !self.restoring {
                                self.to_client.extend_from_slice(&msg);
                                self.confirm_reset(body);
                            }
                            continue;
                        }
                        _ => self.flow.received(tag),
                    }
                    if forward {
                        self.to_client.extend_from_slice(&msg);
                    }
                    if restore {
                        self.inject_restore();
                    }
                    if self.server_fatal.is_some() {
                        break;
                    }
                }
            }
        }
        if self.to_client.len() > before {
            // Part of the answer is on its way to the client: the request can no longer be
            // sent elsewhere.
            self.forget_replay();
        }
        if answered {
            if let Some(started) = self.request_started.take() {
                self.pool.stats.query_latency.record_since(started);
            }
        }
        Ok(())
    }
}

fn no_backend() -> SessionError {
    SessionError::Protocol("client data with no backend attached".into())
}

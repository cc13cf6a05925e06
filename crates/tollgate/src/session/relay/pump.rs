//! The two directions of the relay: client → backend (`pump_client`) and backend → client
//! (`pump_server`). Each scans the bytes read so far, reads the few messages routing needs,
//! rewrites named-statement messages in transaction mode (see `session/prepared.rs`), and
//! writes everything else through unchanged in one write per read.

use super::Relay;
use crate::clients::ClientState;
use crate::config::PoolMode;
use crate::pin::{inspect, Dialect, PinReason, Reset};
use crate::session::error::SessionError;
use bytes::BufMut;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tollgate_wire::frame::HEADER_LEN;
use tollgate_wire::scanner::Chunk;
use tollgate_wire::{backend, frontend, TxStatus};

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

impl Relay<'_> {
    /// Forwards complete (or pass-through) client messages to the backend. Returns true when
    /// the client sent Terminate.
    pub(super) async fn pump_client(&mut self) -> Result<bool, SessionError> {
        let max = self.live.max_message_size;
        let rewrite = self.mode() == PoolMode::Transaction && self.live.max_prepared_statements > 0;
        let inspects = if rewrite {
            client_inspects_transaction
        } else {
            client_inspects_session
        };
        let mut terminate = false;
        let handled_at = Instant::now();
        let outstanding_before = self.outstanding;
        self.out.clear();
        loop {
            let chunk = self.c_scan.next(&self.client.rbuf, inspects, max)?;
            match chunk {
                Chunk::NeedMore => break,
                Chunk::Pass { n, tag } => {
                    if let Some(t) = tag {
                        self.note_client_message(t);
                    }
                    let bytes = self.client.rbuf.split_to(n);
                    self.out.extend_from_slice(&bytes);
                }
                Chunk::Whole { tag, len } => {
                    let msg = self.client.rbuf.split_to(len);
                    let body = msg.get(HEADER_LEN..).unwrap_or(&[]);
                    if tag == frontend::tag::TERMINATE {
                        terminate = true;
                        break;
                    }
                    self.client_message(tag, &msg, body, rewrite)?;
                }
            }
        }
        if !self.out.is_empty() {
            let Some(server) = self.server.as_mut() else {
                return Err(no_backend());
            };
            let written = async {
                server.stream.write_all(&self.out).await?;
                server.stream.flush().await
            };
            if let Err(e) = written.await {
                return Err(self.server_lost(e.to_string()));
            }
            self.pool
                .stats
                .bytes_from_clients
                .add(self.out.len() as u64);
            if outstanding_before == 0 && self.outstanding > 0 {
                self.request_started = Some(handled_at);
                self.sent_at = Some(Instant::now());
            }
        }
        Ok(terminate)
    }

    /// One whole client message of interest: note what it means, then append what the backend
    /// gets to `self.out`.
    fn client_message(
        &mut self,
        tag: u8,
        msg: &[u8],
        body: &[u8],
        rewrite: bool,
    ) -> Result<(), SessionError> {
        let batch = self.batches_sent;
        match tag {
            frontend::tag::QUERY => {
                self.outstanding += 1;
                self.batches_sent += 1;
                let sql = frontend::parse_query(body)?;
                self.note_statement(sql);
                self.out.put_slice(msg);
            }
            frontend::tag::PARSE => {
                self.extended_open = true;
                let p = frontend::parse_parse(body)?;
                self.note_statement(p.query);
                let named = !p.name.is_empty();
                let Some(server) = self.server.as_mut() else {
                    return Err(no_backend());
                };
                if !rewrite {
                    if named {
                        self.pin(PinReason::NamedStatement);
                    }
                    self.out.put_slice(msg);
                    return Ok(());
                }
                let limit = self.live.max_prepared_statements;
                match self.statements.on_parse(
                    msg,
                    body,
                    &mut server.statements,
                    batch,
                    limit,
                    &mut self.out,
                ) {
                    Ok(()) => {}
                    Err(why) => {
                        tracing::info!(peer = %self.client.peer, reason = ?why,
                            "named statement cannot be shared across backends; pinning the client");
                        self.pin(PinReason::NamedStatement);
                        self.out.put_slice(msg);
                    }
                }
            }
            frontend::tag::BIND | frontend::tag::DESCRIBE | frontend::tag::CLOSE => {
                self.extended_open = true;
                let Some(server) = self.server.as_mut() else {
                    return Err(no_backend());
                };
                let out = &mut self.out;
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
            _ => self.out.put_slice(msg),
        }
        Ok(())
    }

    /// What a Query's or Parse's text does to the session: pins it, or resets settings.
    fn note_statement(&mut self, sql: &[u8]) {
        let dialect = Dialect::from_reported(
            self.want.get("client_encoding"),
            self.want.get("standard_conforming_strings"),
        );
        let (pin, resets) = inspect(sql, dialect);
        if let Some(r) = pin {
            self.pin(r);
        }
        if !resets.is_empty() {
            self.note_resets(resets);
        }
    }

    /// A client's RESET / DISCARD ALL leaves untracked settings on this backend in a state the
    /// proxy cannot be sure of (RESET is transactional): mark them unknown so the next borrow
    /// sets or resets them explicitly. Tracked settings are reported back by the server.
    /// DISCARD ALL and DEALLOCATE ALL also drop every prepared statement.
    fn note_resets(&mut self, resets: Vec<Reset>) {
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

    fn note_client_message(&mut self, tag: u8) {
        match tag {
            frontend::tag::SYNC => {
                self.outstanding += 1;
                self.batches_sent += 1;
                self.extended_open = false;
            }
            frontend::tag::FUNCTION_CALL => {
                self.outstanding += 1;
                self.batches_sent += 1;
                self.pin(PinReason::FunctionCall);
            }
            frontend::tag::BIND
            | frontend::tag::DESCRIBE
            | frontend::tag::EXECUTE
            | frontend::tag::CLOSE
            | frontend::tag::FLUSH => self.extended_open = true,
            _ => {}
        }
    }

    /// Forwards what the backend sent to the client, noting transaction status and settings.
    pub(super) async fn pump_server(&mut self) -> Result<(), SessionError> {
        let max = self.live.max_message_size;
        self.out.clear();
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let mut fatal = false;
        let mut answered = false;
        loop {
            let chunk = match self.s_scan.next(&server.rbuf, server_inspects, max) {
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
                Chunk::Pass { n, .. } => {
                    let bytes = server.rbuf.split_to(n);
                    self.out.extend_from_slice(&bytes);
                }
                Chunk::Whole { tag, len } => {
                    let msg = server.rbuf.split_to(len);
                    let body = msg.get(HEADER_LEN..).unwrap_or(&[]);
                    let mut forward = true;
                    match tag {
                        backend::tag::READY_FOR_QUERY => match backend::parse_ready_for_query(body)
                        {
                            Ok(status) => {
                                server.tx_status = status;
                                self.outstanding = self.outstanding.saturating_sub(1);
                                self.batches_done += 1;
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
                                if self.outstanding == 0 {
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
                                // The client's view of what follows it across backends.
                                if crate::params::is_tracked(k)
                                    || self.extras.iter().any(|e| e.eq_ignore_ascii_case(k))
                                {
                                    self.want.set(k, v);
                                }
                            }
                        }
                        backend::tag::ERROR_RESPONSE => {
                            server.statements.on_error(self.batches_done);
                            if let Ok(f) = backend::parse_error_fields(body) {
                                if f.severity == "FATAL" || f.severity == "PANIC" {
                                    fatal = true;
                                    server.broken = true;
                                }
                            }
                        }
                        backend::tag::PARSE_COMPLETE | backend::tag::CLOSE_COMPLETE => {
                            forward = server.statements.on_complete(tag);
                        }
                        _ => {}
                    }
                    if forward {
                        self.out.extend_from_slice(&msg);
                    }
                }
            }
        }
        if !self.out.is_empty() {
            self.client.stream.write_all(&self.out).await?;
            self.client.stream.flush().await?;
            self.pool.stats.bytes_to_clients.add(self.out.len() as u64);
        }
        if answered {
            if let Some(started) = self.request_started.take() {
                self.pool.stats.query_latency.record_since(started);
            }
        }
        if fatal {
            // The server ended this session and said why; the client has been told.
            let _ = self.server_lost("the database ended the session".into());
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::ConnectionAborted.into(),
            ));
        }
        Ok(())
    }
}

fn no_backend() -> SessionError {
    SessionError::Protocol("client data with no backend attached".into())
}

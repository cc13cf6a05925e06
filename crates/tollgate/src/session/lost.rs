//! Answering a client whose backend is gone, as PostgreSQL would answer it, so the client
//! keeps its connection (the "one clear error, then the next transaction works").
//!
//! Three things can be owed once the relay has sent the error for what was in flight:
//! - an error for the client's next request (`pending`): a session-mode or pinned client
//!   whose server session ended while it was idle, or a request no backend could be found for;
//! - the rest of an extended-query batch up to its Sync (`skip_to_sync`), as the server
//!   discards messages after an error ("Message Flow: Extended Query");
//! - an aborted transaction (`aborted`): the client was inside a transaction, which is gone.
//!   Until it ends it with ROLLBACK (or COMMIT, which then reports ROLLBACK) its statements
//!   get 25P02 and ReadyForQuery says `E`, exactly as on a server whose transaction failed;
//!   so a client that carries on with its transaction's next statement cannot have it run
//!   in autocommit on a new backend.
//!
//! Pure: message bytes in, answer bytes out.

use bytes::{BufMut, BytesMut};
use tollgate_wire::{backend, build, frontend, TxStatus};

/// PostgreSQL's text for statements in a failed transaction.
const IN_FAILED_TRANSACTION: &str =
    "current transaction is aborted, commands ignored until end of transaction block";

/// An error to send: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// SQLSTATE.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

/// What the relay owes a client with no backend, after a loss.
#[derive(Debug, Default)]
pub struct Owed {
    /// The next request fails with this.
    pub pending: Option<Failure>,
    /// Discarding messages up to the next Sync.
    pub skip_to_sync: bool,
    /// The client's transaction is gone and not yet ended by the client.
    pub aborted: bool,
    /// Bytes of a message being discarded still to come.
    pub discard: usize,
    /// In an aborted transaction: the current batch parsed a statement that ends it.
    batch_ends: bool,
    /// ... and executed it.
    batch_ended: bool,
}

/// What [`Owed::step`] did with the front of the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Consumed this many bytes (answers, if any, appended).
    Consumed(usize),
    /// A whole message is needed and not all of it is here yet.
    NeedMore,
    /// Nothing owed: the relay handles the rest as usual.
    Done,
    /// The client sent Terminate (not consumed).
    Terminate,
}

impl Owed {
    /// Whether anything is owed (the relay must not borrow for these bytes).
    pub fn active(&self) -> bool {
        self.pending.is_some() || self.skip_to_sync || self.aborted || self.discard > 0
    }

    /// The transaction status to report.
    pub fn status(&self) -> TxStatus {
        if self.aborted {
            TxStatus::Failed
        } else {
            TxStatus::Idle
        }
    }

    /// Handles the front of `buf`, appending answers to `out`. `max` bounds a message read
    /// whole (only Query and Parse texts are, in an aborted transaction).
    pub fn step(
        &mut self,
        buf: &[u8],
        max: usize,
        out: &mut BytesMut,
    ) -> Result<Step, tollgate_wire::WireError> {
        if self.discard > 0 {
            let n = self.discard.min(buf.len());
            if n == 0 {
                return Ok(Step::NeedMore);
            }
            self.discard -= n;
            return Ok(Step::Consumed(n));
        }
        if !self.active() {
            return Ok(Step::Done);
        }
        let Some(h) = tollgate_wire::frame::peek_header(buf)? else {
            return Ok(Step::NeedMore);
        };
        let len = h.frame_len();
        use frontend::tag as f;
        match h.tag {
            f::TERMINATE => return Ok(Step::Terminate),
            // Stray COPY data (the COPY it was for failed) and Flush: dropped.
            f::COPY_DATA | f::COPY_DONE | f::COPY_FAIL | f::FLUSH => return Ok(self.skip(len, buf)),
            _ => {}
        }
        if self.skip_to_sync {
            if h.tag != f::SYNC {
                return Ok(self.skip(len, buf));
            }
            self.skip_to_sync = false;
            self.end_batch(out);
            return Ok(Step::Consumed(len));
        }
        if let Some(fail) = self.pending.take() {
            error(out, &fail.code, &fail.message);
            match h.tag {
                f::QUERY | f::FUNCTION_CALL | f::SYNC => build::ready_for_query(out, self.status()),
                _ => self.skip_to_sync = true,
            }
            return Ok(self.skip(len, buf));
        }
        // Aborted transaction: look at the statement texts.
        let needs_text = matches!(h.tag, f::QUERY | f::PARSE);
        if needs_text && len > max {
            return Err(tollgate_wire::WireError::TooLarge { len, limit: max });
        }
        if needs_text && buf.len() < len {
            return Ok(Step::NeedMore);
        }
        let body = buf
            .get(tollgate_wire::frame::HEADER_LEN..len)
            .unwrap_or(&[]);
        match h.tag {
            f::QUERY => {
                let text = frontend::parse_query(body)?;
                if ends_transaction(text) {
                    self.aborted = false;
                    build::command_complete(out, "ROLLBACK");
                } else if text.iter().all(|b| b.is_ascii_whitespace() || *b == b';') {
                    build::empty_query_response(out);
                } else {
                    error(out, "25P02", IN_FAILED_TRANSACTION);
                }
                build::ready_for_query(out, self.status());
            }
            f::PARSE => {
                let msg = frontend::parse_parse(body)?;
                if ends_transaction(msg.query) {
                    self.batch_ends = true;
                    empty_message(out, backend::tag::PARSE_COMPLETE);
                } else {
                    self.fail_batch(out);
                }
            }
            f::BIND if self.batch_ends => empty_message(out, b'2'),
            f::DESCRIBE if self.batch_ends => {
                if body.first() == Some(&b'S') {
                    // ParameterDescription with no parameters.
                    out.put_u8(b't');
                    out.put_i32(6);
                    out.put_i16(0);
                }
                empty_message(out, b'n');
            }
            f::EXECUTE if self.batch_ends => {
                self.batch_ended = true;
                build::command_complete(out, "ROLLBACK");
            }
            f::CLOSE => empty_message(out, backend::tag::CLOSE_COMPLETE),
            f::SYNC => self.end_batch(out),
            f::FUNCTION_CALL => {
                error(out, "25P02", IN_FAILED_TRANSACTION);
                build::ready_for_query(out, self.status());
            }
            _ => self.fail_batch(out),
        }
        Ok(self.skip(len, buf))
    }

    /// Consumes a message of `len` bytes, as much of it as is here.
    fn skip(&mut self, len: usize, buf: &[u8]) -> Step {
        let n = len.min(buf.len());
        self.discard = len - n;
        Step::Consumed(n)
    }

    fn fail_batch(&mut self, out: &mut BytesMut) {
        error(out, "25P02", IN_FAILED_TRANSACTION);
        self.batch_ends = false;
        self.skip_to_sync = true;
    }

    /// A Sync: the batch's ReadyForQuery (the transaction ended if its ROLLBACK ran).
    fn end_batch(&mut self, out: &mut BytesMut) {
        if std::mem::take(&mut self.batch_ended) {
            self.aborted = false;
        }
        self.batch_ends = false;
        build::ready_for_query(out, self.status());
    }
}

/// Appends an ERROR-severity ErrorResponse.
pub fn error(out: &mut BytesMut, code: &str, message: &str) {
    build::error_response(out, "ERROR", code, message, None, None);
}

/// A message with no body (ParseComplete, BindComplete, CloseComplete, NoData).
fn empty_message(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_i32(4);
}

/// Whether `sql` ends a transaction block: ROLLBACK, ABORT, COMMIT or END (not ROLLBACK TO
/// a savepoint, nor the two-phase forms), after whitespace and comments.
pub fn ends_transaction(sql: &[u8]) -> bool {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_ascii_start();
        if let Some(r) = trimmed.strip_prefix(b"--") {
            rest = r
                .iter()
                .position(|b| *b == b'\n')
                .and_then(|i| r.get(i..))
                .unwrap_or(&[]);
        } else if let Some(r) = trimmed.strip_prefix(b"/*") {
            rest = r
                .windows(2)
                .position(|w| w == b"*/")
                .and_then(|i| r.get(i + 2..))
                .unwrap_or(&[]);
        } else {
            rest = trimmed;
            break;
        }
    }
    let word_len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let word = rest.get(..word_len).unwrap_or(&[]).to_ascii_lowercase();
    if !matches!(word.as_slice(), b"rollback" | b"abort" | b"commit" | b"end") {
        return false;
    }
    let next = rest.get(word_len..).unwrap_or(&[]).trim_ascii_start();
    let next_len = next.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let next_word = next.get(..next_len).unwrap_or(&[]).to_ascii_lowercase();
    !matches!(next_word.as_slice(), b"to" | b"prepared")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::backend::tag as b;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn query(sql: &str) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        msg(b'Q', &b)
    }
    fn parse(sql: &str) -> Vec<u8> {
        let mut b = vec![0];
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        msg(b'P', &b)
    }
    /// Runs `owed` over `input` and returns the tags answered (and the last RFQ status).
    fn run(owed: &mut Owed, input: &[u8]) -> Vec<(u8, Option<u8>)> {
        let mut out = BytesMut::new();
        let mut at = 0;
        while at < input.len() {
            match owed.step(&input[at..], 1 << 20, &mut out).unwrap() {
                Step::Consumed(n) => at += n,
                Step::Done | Step::Terminate | Step::NeedMore => break,
            }
        }
        let mut tags = Vec::new();
        let mut i = 0;
        while i + 5 <= out.len() {
            let len = i32::from_be_bytes(out[i + 1..i + 5].try_into().unwrap()) as usize;
            let status = (out[i] == b::READY_FOR_QUERY).then(|| out[i + 5]);
            tags.push((out[i], status));
            i += 1 + len;
        }
        tags
    }

    #[test]
    fn transaction_enders_are_recognised_and_savepoint_rollbacks_are_not() {
        for s in [
            "ROLLBACK",
            "  rollback;",
            "commit",
            "END",
            "abort work",
            "/* x */ ROLLBACK",
            "-- c\nCOMMIT",
        ] {
            assert!(ends_transaction(s.as_bytes()), "{s}");
        }
        for s in [
            "ROLLBACK TO SAVEPOINT a",
            "COMMIT PREPARED 'x'",
            "SELECT 1",
            "",
            "rollbacks",
        ] {
            assert!(!ends_transaction(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn an_aborted_transaction_refuses_statements_until_rollback_as_postgresql_does() {
        let mut owed = Owed {
            aborted: true,
            ..Default::default()
        };
        let got = run(&mut owed, &query("INSERT INTO t VALUES (1)"));
        assert_eq!(
            got,
            vec![(b::ERROR_RESPONSE, None), (b::READY_FOR_QUERY, Some(b'E'))]
        );
        let got = run(&mut owed, &query("ROLLBACK"));
        assert_eq!(
            got,
            vec![
                (b::COMMAND_COMPLETE, None),
                (b::READY_FOR_QUERY, Some(b'I'))
            ]
        );
        assert!(!owed.active());
    }

    #[test]
    fn an_extended_rollback_in_an_aborted_transaction_ends_it() {
        let mut owed = Owed {
            aborted: true,
            ..Default::default()
        };
        let mut input = parse("ROLLBACK");
        input.extend(msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
        input.extend(msg(b'E', &[0, 0, 0, 0, 0]));
        input.extend(msg(b'S', &[]));
        let got = run(&mut owed, &input);
        assert_eq!(
            got,
            vec![
                (b'1', None),
                (b'2', None),
                (b::COMMAND_COMPLETE, None),
                (b::READY_FOR_QUERY, Some(b'I'))
            ]
        );
    }

    #[test]
    fn an_extended_statement_in_an_aborted_transaction_fails_its_batch_to_sync() {
        let mut owed = Owed {
            aborted: true,
            ..Default::default()
        };
        let mut input = parse("SELECT 1");
        input.extend(msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
        input.extend(msg(b'E', &[0, 0, 0, 0, 0]));
        input.extend(msg(b'S', &[]));
        let got = run(&mut owed, &input);
        assert_eq!(
            got,
            vec![(b::ERROR_RESPONSE, None), (b::READY_FOR_QUERY, Some(b'E'))]
        );
        assert!(owed.aborted);
    }

    #[test]
    fn a_pending_error_answers_the_next_request_once() {
        let fail = Failure {
            code: "08006".into(),
            message: "lost".into(),
        };
        let mut owed = Owed {
            pending: Some(fail.clone()),
            ..Default::default()
        };
        let got = run(&mut owed, &query("SELECT 1"));
        assert_eq!(
            got,
            vec![(b::ERROR_RESPONSE, None), (b::READY_FOR_QUERY, Some(b'I'))]
        );
        assert!(!owed.active());
        let mut owed = Owed {
            pending: Some(fail),
            ..Default::default()
        };
        let mut input = parse("SELECT 1");
        input.extend(msg(b'S', &[]));
        let got = run(&mut owed, &input);
        assert_eq!(
            got,
            vec![(b::ERROR_RESPONSE, None), (b::READY_FOR_QUERY, Some(b'I'))]
        );
    }

    #[test]
    fn a_message_arriving_in_pieces_is_discarded_across_steps() {
        let mut owed = Owed {
            skip_to_sync: true,
            ..Default::default()
        };
        let big = msg(b'd', &[7u8; 100]);
        let mut out = BytesMut::new();
        assert_eq!(
            owed.step(&big[..10], 1024, &mut out).unwrap(),
            Step::Consumed(10)
        );
        assert_eq!(owed.discard, 95);
        assert_eq!(
            owed.step(&big[10..], 1024, &mut out).unwrap(),
            Step::Consumed(95)
        );
        assert_eq!(
            owed.step(&msg(b'S', &[]), 1024, &mut out).unwrap(),
            Step::Consumed(5)
        );
        assert!(out.ends_with(&[b'Z', 0, 0, 0, 5, b'I']));
        assert!(!owed.active());
    }
}

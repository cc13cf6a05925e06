//! What the server still owes: a model of "Message Flow" that tells a pooler when a backend has
//! answered everything sent to it and sits idle, so it can change hands.
//!
//! Counting one ReadyForQuery per Query and Sync is not enough; the protocol has exceptions
//! that matter to a pooler ("Message Flow: Extended Query", "COPY Operations"):
//!
//! - After an error in an extended-query message the server discards every message up to the
//!   next Sync, Query and FunctionCall included: they get no answer at all.
//! - During COPY IN the server ignores Sync and Flush (libpq sends Parse/Bind/Execute/Sync, then
//!   the CopyData, CopyDone and another Sync: two Syncs, one ReadyForQuery).
//! - After Parse/Bind/Execute and a Flush with no Sync, every message has been answered but the
//!   implicit transaction is still open: the backend is not free until a Sync is answered.
//!
//! [`Flow`] is fed the tag of every message sent to the server, in order, and of every message
//! the server sends back, and keeps the queue of requests not yet answered. Pure: tags in,
//! answers out; `tests/flow_model.rs` checks it against a model server (proptest).

use crate::{backend::tag as b, frontend::tag as f};
use std::collections::VecDeque;

/// Most unanswered messages tracked before [`Flow::backlogged`] says to stop reading the client.
pub const MAX_UNANSWERED: usize = 1 << 16;

/// One request sent to the server and not yet answered, or a marker the server will consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Parse, Bind, Describe, Execute or Close (its tag): answered by its own message.
    Extended(u8),
    /// Sync: answered by ReadyForQuery; the number is the batch it ends.
    Sync(u64),
    /// Query or FunctionCall: answered by ReadyForQuery; the number is its batch.
    Query(u64),
    /// CopyDone or CopyFail from the client: where a COPY IN ends.
    CopyEnd,
}

/// The model. See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Flow {
    queue: VecDeque<Entry>,
    /// Batch-ending messages (Sync/Query/FunctionCall) sent so far: numbers the batches.
    batches: u64,
    /// The server is discarding messages until the next Sync (an extended-query error), and
    /// the client has not sent that Sync yet.
    skip_to_sync: bool,
    /// The server is in COPY IN for the request at the front of the queue.
    copy_in: bool,
    /// COPY IN began before the client sent its CopyDone/CopyFail: Syncs and Flushes the client
    /// sends until then are ignored by the server.
    client_copying: bool,
    /// Syncs ignored during the current COPY IN. If the COPY fails, the Syncs the server read
    /// before the failure were ignored and the first one after it is answered; which is which
    /// is not knowable from tags beyond libpq's pattern (one Sync right after the Execute).
    ignored_syncs: u32,
    /// Since the last answered Sync the client sent extended-query messages: an implicit
    /// transaction may be open even with nothing unanswered.
    extended_open: bool,
    /// The last message sent was an extended-query one with no Flush or Sync after it: the
    /// server may hold its answers until the client sends one, so it is the client's turn.
    unflushed: bool,
    /// The server said something this model cannot place (COPY BOTH, a ReadyForQuery nobody
    /// asked for, a message outside COPY IN during it): the backend can never be called idle
    /// again, so it stays with its client and is closed at the end.
    lost: bool,
}

impl Flow {
    /// A model for a backend that is idle (just logged in or taken from the pool).
    pub fn new() -> Self {
        Self::default()
    }

    /// Back to [`Flow::new`]'s state for the next backend, keeping the queue's allocation:
    /// transaction pooling attaches a backend per transaction, and that should not allocate.
    pub fn reset(&mut self) {
        let mut queue = std::mem::take(&mut self.queue);
        queue.clear();
        *self = Flow {
            queue,
            ..Flow::default()
        };
    }

    /// The client (or the proxy) sent a message with this tag to the server.
    pub fn sent(&mut self, tag: u8) {
        if self.client_copying {
            match tag {
                f::COPY_DATA => {}
                f::COPY_DONE | f::COPY_FAIL => self.client_copying = false,
                f::SYNC => self.ignored_syncs += 1,
                f::FLUSH => {}
                // "Receipt of any other non-copy message type constitutes an error": what the
                // server then skips depends on timing the tags do not show.
                _ => self.lost = true,
            }
            return;
        }
        if self.skip_to_sync {
            if tag == f::SYNC {
                self.skip_to_sync = false;
                self.queue.push_back(Entry::Sync(self.batches));
                self.batches += 1;
            }
            return;
        }
        self.unflushed = matches!(
            tag,
            f::PARSE | f::BIND | f::DESCRIBE | f::EXECUTE | f::CLOSE
        );
        match tag {
            f::PARSE | f::BIND | f::DESCRIBE | f::EXECUTE | f::CLOSE => {
                self.extended_open = true;
                self.queue.push_back(Entry::Extended(tag));
            }
            f::SYNC => {
                self.queue.push_back(Entry::Sync(self.batches));
                self.batches += 1;
            }
            f::QUERY | f::FUNCTION_CALL => {
                self.queue.push_back(Entry::Query(self.batches));
                self.batches += 1;
            }
            // Where a COPY IN not yet begun will end; with no request left that could start
            // one (its COPY already failed) the server ignores it.
            f::COPY_DONE | f::COPY_FAIL
                if self
                    .queue
                    .iter()
                    .any(|e| matches!(e, Entry::Query(_) | Entry::Extended(f::EXECUTE))) =>
            {
                self.queue.push_back(Entry::CopyEnd)
            }
            // CopyData before the server said COPY: consumed by it or ignored; Flush: no answer.
            _ => {}
        }
    }

    /// The server sent a message with this tag.
    pub fn received(&mut self, tag: u8) {
        let front = self.queue.front().copied();
        match (tag, front) {
            (b::PARSE_COMPLETE, Some(Entry::Extended(f::PARSE)))
            | (b::BIND_COMPLETE, Some(Entry::Extended(f::BIND)))
            | (b::CLOSE_COMPLETE, Some(Entry::Extended(f::CLOSE)))
            | (b::ROW_DESCRIPTION | b::NO_DATA, Some(Entry::Extended(f::DESCRIBE)))
            | (
                b::COMMAND_COMPLETE | b::EMPTY_QUERY_RESPONSE | b::PORTAL_SUSPENDED,
                Some(Entry::Extended(f::EXECUTE)),
            ) => {
                self.queue.pop_front();
                self.copy_in = false;
            }
            (b::COMMAND_COMPLETE, Some(Entry::Query(_))) => self.copy_in = false,
            (b::COPY_IN_RESPONSE, Some(Entry::Extended(f::EXECUTE))) => self.begin_copy_in(),
            (b::COPY_IN_RESPONSE, Some(Entry::Query(_))) => self.begin_copy_in(),
            (b::COPY_BOTH_RESPONSE, _) => self.lost = true,
            (b::ERROR_RESPONSE, Some(Entry::Extended(_))) => {
                if self.copy_in && self.ignored_syncs > 1 {
                    self.lost = true;
                }
                self.end_copy();
                // The server discards everything up to the next Sync, which it answers.
                while let Some(e) = self.queue.front() {
                    if matches!(e, Entry::Sync(_)) {
                        break;
                    }
                    self.queue.pop_front();
                }
                if self.queue.is_empty() {
                    self.skip_to_sync = true;
                }
            }
            (b::ERROR_RESPONSE, Some(Entry::Query(_))) => {
                // A Query's (or FunctionCall's) error: its ReadyForQuery still comes. A COPY
                // it ran ends; the client's CopyData/CopyDone after this are ignored.
                if self.copy_in && self.ignored_syncs > 0 {
                    self.lost = true;
                }
                self.end_copy();
            }
            (b::READY_FOR_QUERY, _) => {
                let mut answered = false;
                while let Some(e) = self.queue.pop_front() {
                    if matches!(e, Entry::Sync(_) | Entry::Query(_)) {
                        answered = true;
                        break;
                    }
                    // Anything before it was answered already or discarded.
                }
                if !answered {
                    self.lost = true;
                }
                self.end_copy();
                if !self.queue.iter().any(|e| matches!(e, Entry::Extended(_))) {
                    self.extended_open = false;
                }
            }
            _ => {}
        }
        self.drop_stray_copy_ends();
    }

    fn end_copy(&mut self) {
        self.copy_in = false;
        self.client_copying = false;
        self.ignored_syncs = 0;
    }

    /// COPY IN began for the request at the front: the Syncs the client sent between it and its
    /// CopyDone/CopyFail are ignored by the server; any other request there makes the server
    /// fail the COPY at a point the tags do not show.
    fn begin_copy_in(&mut self) {
        self.copy_in = true;
        self.ignored_syncs = 0;
        let end = self.queue.iter().position(|e| *e == Entry::CopyEnd);
        let window_end = end.unwrap_or(self.queue.len());
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (i, e) in self.queue.drain(..).enumerate() {
            if i == 0 || i > window_end {
                kept.push_back(e);
            } else if i == window_end {
                // The CopyEnd itself: the COPY's own answer (CommandComplete/Error) retires it.
            } else {
                match e {
                    Entry::Sync(_) => self.ignored_syncs += 1,
                    _ => self.lost = true,
                }
            }
        }
        self.queue = kept;
        if end.is_none() {
            self.client_copying = true;
        }
    }

    /// CopyDone/CopyFail markers whose COPY never started (it failed first) or has ended are
    /// ignored by the server: drop them from the front.
    fn drop_stray_copy_ends(&mut self) {
        if self.copy_in {
            return;
        }
        while self.queue.front() == Some(&Entry::CopyEnd) {
            self.queue.pop_front();
        }
    }

    /// Whether the server has answered everything and holds no open extended-query batch: the
    /// moment a backend may change hands (with transaction status idle).
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
            && !self.skip_to_sync
            && !self.copy_in
            && !self.client_copying
            && !self.extended_open
            && !self.lost
    }

    /// Whether requests are waiting for their answer.
    pub fn waiting(&self) -> bool {
        !self.queue.is_empty() || self.copy_in || self.client_copying
    }

    /// Whether the server owes an answer it will send without hearing more from the client
    /// (else it is the client's turn: its idle timeout runs).
    pub fn server_turn(&self) -> bool {
        !self.queue.is_empty() && !self.unflushed && !self.copy_in && !self.client_copying
    }

    /// Batch-ending requests (Query, FunctionCall, Sync) still waiting for their
    /// ReadyForQuery: what a client is owed if the backend dies now.
    pub fn unanswered_batches(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| matches!(e, Entry::Sync(_) | Entry::Query(_)))
            .count()
    }

    /// Whether the client is in the middle of an extended-query batch or a COPY IN (it has
    /// sent messages after its last Sync, or the server is skipping to one): if the backend
    /// dies now, what the client sends up to its next Sync belongs to a failed batch.
    pub fn client_mid_batch(&self) -> bool {
        self.skip_to_sync
            || self.client_copying
            || matches!(self.queue.back(), Some(Entry::Extended(_)))
            || (self.queue.is_empty() && self.extended_open)
    }

    /// Whether the model lost track of the server (see the field); never idle again.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// So many requests are unanswered that the relay should stop reading the client until the
    /// server catches up (bounds this model's memory).
    pub fn backlogged(&self) -> bool {
        self.queue.len() >= MAX_UNANSWERED
    }

    /// The batch a message sent now belongs to (count of batch-ending messages sent before).
    pub fn next_batch(&self) -> u64 {
        self.batches
    }

    /// The batch the server is working on: an error now belongs to it.
    pub fn current_batch(&self) -> u64 {
        self.queue
            .iter()
            .find_map(|e| match e {
                Entry::Sync(n) | Entry::Query(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(self.batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_forgets_what_was_owed_and_keeps_the_queue_allocation() {
        let mut flow = Flow::new();
        for _ in 0..8 {
            flow.sent(f::QUERY);
        }
        assert!(!flow.idle());
        let capacity = flow.queue.capacity();
        flow.reset();
        assert!(flow.idle());
        assert_eq!(format!("{flow:?}"), format!("{:?}", Flow::new()));
        assert_eq!(flow.queue.capacity(), capacity);
    }
}

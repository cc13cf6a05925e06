//! Named prepared statements in transaction mode, without pinning.
//!
//! A client's `Parse` of statement `N` is sent to whichever backend it holds under a name
//! derived from the statement's text and parameter types (`tg_<hash>`), so identical statements
//! from different clients share one server-side statement per backend. `Bind`, `Describe` and
//! `Close` of `N` are rewritten to that name; when the client lands on a backend that lacks it,
//! the proxy first sends that backend the `Parse` itself and swallows the `ParseComplete`.
//!
//! Responses are matched by order ("Message Flow: Extended Query": ParseComplete and
//! CloseComplete come back in the order their messages were sent). An ErrorResponse makes the
//! server skip the rest of the batch up to Sync, so pending entries of that batch are dropped
//! and their optimistic effects on the backend's statement set undone.
//!
//! A backend holds at most `max_prepared_statements` shared statements (PgBouncer's meaning of
//! the setting, per client and per server connection): preparing one more closes the least
//! recently used first, so many clients with distinct statements cannot grow one backend's
//! memory without bound. A client whose evicted statement is used again gets it re-prepared
//! transparently by the same path that follows a client to a new backend.
//!
//! Pure: messages in, bytes out; the relay does the I/O.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tollgate_wire::frontend;

/// Why the proxy cannot multiplex a client's statements (it pins the client instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The client holds more named statements than max_prepared_statements.
    TooMany,
    /// Two different statements hashed to one name (astronomically rare).
    Collision,
}

/// One client statement: the backend name and the Parse body after the name.
#[derive(Debug, Clone)]
struct Statement {
    name: Arc<str>,
    rest: Bytes,
}

/// The named statements a client has prepared, by the client's own names, and its unnamed
/// statement.
#[derive(Debug, Default)]
pub struct ClientStatements {
    /// By the client's name, as bytes: names are in the client's encoding, not always UTF-8.
    map: HashMap<Vec<u8>, Statement>,
    /// The client's unnamed statement (Parse body after the name), if it has one. It outlives
    /// a Sync (libpq's PQprepare then PQexecPrepared is two round trips), so a client that
    /// changed backends in between gets it prepared again on the new one; a simple Query
    /// destroys it, as on the server.
    unnamed: Option<Bytes>,
}

/// A Parse or Close sent to a backend whose Complete message has not come back yet.
#[derive(Debug, Clone)]
struct Pending {
    /// ParseComplete ('1') or CloseComplete ('3').
    tag: u8,
    /// The statement it creates or drops, with its Parse text (None: unnamed or a portal).
    stmt: Option<(Arc<str>, Bytes)>,
    /// Sent by the proxy on its own: the client must not see the answer.
    swallow: bool,
    /// For a Parse: the backend already held this statement when it was sent (so a skipped
    /// Parse leaves it in place).
    existed: bool,
    /// A Parse of the unnamed statement (a failed one leaves none).
    unnamed: bool,
    /// For a client's Parse of a named statement: the client's name, forgotten again if the
    /// server refuses the Parse (PostgreSQL keeps no statement from a failed Parse).
    client: Option<Vec<u8>>,
    /// Which batch (count of Query/Sync/FunctionCall sent before it).
    batch: u64,
}

impl Pending {
    /// The answer to a message passed through unchanged (an unnamed statement, a portal, a
    /// name the proxy never prepared): the client sees it, and it touches no statement.
    fn passed(tag: u8, batch: u64) -> Self {
        Pending {
            tag,
            stmt: None,
            swallow: false,
            existed: false,
            unnamed: false,
            client: None,
            batch,
        }
    }
}

/// The statements a backend holds (by backend name) and its unanswered Parse/Close.
#[derive(Debug, Default)]
pub struct ServerStatements {
    prepared: HashMap<Arc<str>, Held>,
    /// What the backend's unnamed statement holds, as far as the proxy sent it (another
    /// client's, possibly): compared with the client's before its Bind/Describe uses it.
    unnamed: Option<Bytes>,
    pending: VecDeque<Pending>,
    /// Use counter: `Held::used` values come from it, for least-recently-used eviction.
    tick: u64,
}

/// A statement a backend holds: its Parse text and when it was last used.
#[derive(Debug, Clone)]
struct Held {
    rest: Bytes,
    used: u64,
}

const PARSE_COMPLETE: u8 = b'1';
const CLOSE_COMPLETE: u8 = b'3';

fn backend_name(rest: &[u8]) -> Arc<str> {
    // SHA-256 of the text and parameter types, 128 bits of it: a client cannot craft a text
    // whose name is another client's statement (a 64-bit unkeyed hash could be), and the name
    // stays within NAMEDATALEN. Paid once per Parse, not per Bind.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(rest);
    let mut name = String::with_capacity(3 + 32);
    name.push_str("tg_");
    for b in digest.iter().take(16) {
        name.push_str(&format!("{b:02x}"));
    }
    Arc::from(name)
}

/// The bytes after the first C string of `body` (None when there is no terminator).
fn after_cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|&b| b == 0)?;
    Some((body.get(..end)?, body.get(end + 1..)?))
}

fn put_message(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    out.put_u8(tag);
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
    for p in parts {
        out.put_slice(p);
    }
}

fn put_parse(out: &mut BytesMut, name: &str, rest: &[u8]) {
    put_message(out, frontend::tag::PARSE, &[name.as_bytes(), b"\0", rest]);
}

fn put_close_statement(out: &mut BytesMut, name: &str) {
    put_message(out, frontend::tag::CLOSE, &[b"S", name.as_bytes(), b"\0"]);
}

impl ClientStatements {
    /// Number of named statements the client holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the client holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets them all (DISCARD ALL / DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Forgets one whose Parse the server refused.
    pub fn forget(&mut self, client_name: &[u8]) {
        self.map.remove(client_name);
    }

    /// Ensures `server` holds `stmt`, writing a Parse whose answer is swallowed if not.
    fn ensure(
        stmt: &Statement,
        server: &mut ServerStatements,
        batch: u64,
        cap: usize,
        out: &mut BytesMut,
    ) {
        if server.touch(&stmt.name) {
            return;
        }
        server.make_room(cap, batch, out);
        put_parse(out, &stmt.name, &stmt.rest);
        server.hold(stmt.name.clone(), stmt.rest.clone());
        server.pending.push_back(Pending {
            tag: PARSE_COMPLETE,
            stmt: Some((stmt.name.clone(), stmt.rest.clone())),
            swallow: true,
            existed: false,
            unnamed: false,
            client: None,
            batch,
        });
    }

    /// A client Parse (whole message body). Writes what the backend gets to `out`. `limit` is
    /// max_prepared_statements: the most named statements the client, and the backend, hold.
    pub fn on_parse(
        &mut self,
        msg: &[u8],
        body: &[u8],
        server: &mut ServerStatements,
        batch: u64,
        limit: usize,
        out: &mut BytesMut,
    ) -> Result<(), Fallback> {
        let Some((client_name, rest)) = after_cstr(body) else {
            out.put_slice(msg);
            return Ok(());
        };
        if client_name.is_empty() {
            out.put_slice(msg);
            let rest = Bytes::copy_from_slice(rest);
            self.unnamed = Some(rest.clone());
            server.unnamed = Some(rest);
            let mut p = Pending::passed(PARSE_COMPLETE, batch);
            p.unnamed = true;
            server.pending.push_back(p);
            return Ok(());
        }
        if let Some(existing) = self.map.get(client_name) {
            // PostgreSQL refuses a Parse of a name that exists (42P05). Make sure the backend
            // holds the client's statement, then send the Parse under its name so the server
            // itself refuses it, in order, skipping the rest of the batch as it would.
            Self::ensure(existing, server, batch, limit, out);
            put_parse(out, &existing.name, rest);
            server
                .pending
                .push_back(Pending::passed(PARSE_COMPLETE, batch));
            return Ok(());
        }
        let client_name = client_name.to_vec();
        if self.map.len() >= limit {
            return Err(Fallback::TooMany);
        }
        let name = backend_name(rest);
        let rest = Bytes::copy_from_slice(rest);
        let existed = match server.prepared.get(&name) {
            Some(existing) if existing.rest != rest => return Err(Fallback::Collision),
            Some(_) => {
                // The backend has it (from this or another client): drop and re-create, so
                // the client gets the ParseComplete it expects, in order.
                put_close_statement(out, &name);
                server.pending.push_back(Pending {
                    tag: CLOSE_COMPLETE,
                    stmt: Some((name.clone(), rest.clone())),
                    swallow: true,
                    existed: false,
                    unnamed: false,
                    client: None,
                    batch,
                });
                true
            }
            None => {
                server.make_room(limit, batch, out);
                false
            }
        };
        put_parse(out, &name, &rest);
        server.hold(name.clone(), rest.clone());
        server.pending.push_back(Pending {
            tag: PARSE_COMPLETE,
            stmt: Some((name.clone(), rest.clone())),
            swallow: false,
            existed,
            unnamed: false,
            client: Some(client_name.clone()),
            batch,
        });
        self.map.insert(client_name, Statement { name, rest });
        Ok(())
    }

    /// A client Bind: rewrites the statement name (portal, statement, rest).
    pub fn on_bind(
        &self,
        msg: &[u8],
        body: &[u8],
        server: &mut ServerStatements,
        batch: u64,
        limit: usize,
        out: &mut BytesMut,
    ) {
        let parts = after_cstr(body)
            .and_then(|(portal, rest)| after_cstr(rest).map(|(stmt, tail)| (portal, stmt, tail)));
        let Some((portal, stmt_name, tail)) = parts else {
            out.put_slice(msg);
            return;
        };
        let stmt = self.map.get(stmt_name);
        match stmt {
            Some(stmt) if !stmt_name.is_empty() => {
                Self::ensure(stmt, server, batch, limit, out);
                put_message(
                    out,
                    frontend::tag::BIND,
                    &[portal, b"\0", stmt.name.as_bytes(), b"\0", tail],
                );
            }
            _ if stmt_name.is_empty() => {
                self.ensure_unnamed(server, batch, out);
                out.put_slice(msg);
            }
            _ => out.put_slice(msg),
        }
    }

    /// Makes the backend's unnamed statement the client's before the client uses it: prepares
    /// the client's again where the backend holds another (or none), and where the client has
    /// none, closes whatever the backend holds so the server answers as PostgreSQL would for
    /// this client (26000, unnamed prepared statement does not exist). Never runs another
    /// client's text.
    fn ensure_unnamed(&self, server: &mut ServerStatements, batch: u64, out: &mut BytesMut) {
        if server.unnamed == self.unnamed {
            return;
        }
        match &self.unnamed {
            Some(rest) => {
                put_parse(out, "", rest);
                server.unnamed = Some(rest.clone());
                server.pending.push_back(Pending {
                    tag: PARSE_COMPLETE,
                    stmt: None,
                    swallow: true,
                    existed: false,
                    unnamed: true,
                    client: None,
                    batch,
                });
            }
            None => {
                put_close_statement(out, "");
                server.unnamed = None;
                server.pending.push_back(Pending {
                    tag: CLOSE_COMPLETE,
                    stmt: None,
                    swallow: true,
                    existed: false,
                    unnamed: false,
                    client: None,
                    batch,
                });
            }
        }
    }

    /// A simple Query: the server destroys the unnamed statement before running it.
    pub fn on_query(&mut self, server: &mut ServerStatements) {
        self.unnamed = None;
        server.unnamed = None;
    }

    /// A client Describe: rewrites `S name`; portals pass unchanged.
    pub fn on_describe(
        &self,
        msg: &[u8],
        body: &[u8],
        server: &mut ServerStatements,
        batch: u64,
        limit: usize,
        out: &mut BytesMut,
    ) {
        if body.first() == Some(&b'S') && body.get(1) == Some(&0) {
            self.ensure_unnamed(server, batch, out);
            out.put_slice(msg);
            return;
        }
        match self.statement_target(body) {
            Some(stmt) => {
                Self::ensure(stmt, server, batch, limit, out);
                put_message(
                    out,
                    frontend::tag::DESCRIBE,
                    &[b"S", stmt.name.as_bytes(), b"\0"],
                );
            }
            None => out.put_slice(msg),
        }
    }

    /// A client Close: forgets the client's name and closes the backend's copy (the answer is
    /// the client's CloseComplete).
    pub fn on_close(
        &mut self,
        msg: &[u8],
        body: &[u8],
        server: &mut ServerStatements,
        batch: u64,
        out: &mut BytesMut,
    ) {
        if body.first() == Some(&b'S') && body.get(1) == Some(&0) {
            self.unnamed = None;
            server.unnamed = None;
        }
        // A portal, or a name never prepared through us (the server answers CloseComplete for
        // unknown names too): passed through as it is.
        let Some(stmt) = statement_name(body).and_then(|name| self.map.remove(name)) else {
            out.put_slice(msg);
            server
                .pending
                .push_back(Pending::passed(CLOSE_COMPLETE, batch));
            return;
        };
        put_close_statement(out, &stmt.name);
        server.prepared.remove(&stmt.name);
        server.pending.push_back(Pending {
            tag: CLOSE_COMPLETE,
            stmt: Some((stmt.name, stmt.rest)),
            swallow: false,
            existed: false,
            unnamed: false,
            client: None,
            batch,
        });
    }

    fn statement_target(&self, body: &[u8]) -> Option<&Statement> {
        self.map.get(statement_name(body)?)
    }
}

/// The statement name of a Describe/Close body (`S` + name), if it names one.
fn statement_name(body: &[u8]) -> Option<&[u8]> {
    let (&kind, rest) = body.split_first()?;
    if kind != b'S' {
        return None;
    }
    let (name, _) = after_cstr(rest)?;
    if name.is_empty() {
        return None;
    }
    Some(name)
}

impl ServerStatements {
    /// Statements the backend holds.
    pub fn len(&self) -> usize {
        self.prepared.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }

    /// Whether answers are still owed (the backend must not change hands).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets everything (after DISCARD ALL / DEALLOCATE ALL / a reset query).
    pub fn clear(&mut self) {
        self.prepared.clear();
    }

    /// A simple Query was sent: it destroys the unnamed statement.
    pub fn forget_unnamed(&mut self) {
        self.unnamed = None;
    }

    /// Marks `name` used now; whether the backend holds it.
    fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        let tick = self.tick;
        self.prepared.get_mut(name).map(|h| h.used = tick).is_some()
    }

    /// Records `name` as held, used now.
    fn hold(&mut self, name: Arc<str>, rest: Bytes) {
        self.tick += 1;
        let used = self.tick;
        self.prepared.insert(name, Held { rest, used });
    }

    /// Before preparing one more: while the backend holds `cap` or more, closes the least
    /// recently used statement (its CloseComplete swallowed). A linear scan, paid only when
    /// the backend is full.
    fn make_room(&mut self, cap: usize, batch: u64, out: &mut BytesMut) {
        // At least one slot stays free for the statement being prepared.
        let cap = cap.max(1);
        while self.prepared.len() >= cap {
            let Some(victim) = self
                .prepared
                .iter()
                .min_by_key(|(_, h)| h.used)
                .map(|(name, _)| name.clone())
            else {
                return;
            };
            let Some(held) = self.prepared.remove(&victim) else {
                return;
            };
            put_close_statement(out, &victim);
            self.pending.push_back(Pending {
                tag: CLOSE_COMPLETE,
                stmt: Some((victim, held.rest)),
                swallow: true,
                existed: false,
                unnamed: false,
                client: None,
                batch,
            });
        }
    }

    /// A ParseComplete or CloseComplete arrived: whether the client should see it.
    pub fn on_complete(&mut self, tag: u8) -> bool {
        match self.pending.front() {
            Some(p) if p.tag == tag => {
                let swallow = p.swallow;
                if let Some(done) = self.pending.pop_front() {
                    if let (CLOSE_COMPLETE, Some((name, _))) = (done.tag, &done.stmt) {
                        // Closed for real: a Parse of it queued behind no longer finds it.
                        if let Some(next) = self.pending.iter_mut().find(|q| {
                            q.tag == PARSE_COMPLETE
                                && q.stmt.as_ref().is_some_and(|(n, _)| n == name)
                        }) {
                            next.existed = false;
                        }
                    }
                }
                !swallow
            }
            // Not one of ours (the proxy sent nothing this could answer): pass it on.
            _ => true,
        }
    }

    /// An ErrorResponse arrived during batch `batch`: the server skips the rest of it, so its
    /// unanswered Parse/Close never happen. Returns the client names whose Parse failed, for
    /// the client to forget.
    pub fn on_error(&mut self, batch: u64) -> Vec<Vec<u8>> {
        let mut failed = Vec::new();
        if !self.pending.iter().any(|p| p.batch == batch) {
            return failed;
        }
        let mut kept = VecDeque::with_capacity(self.pending.len());
        while let Some(p) = self.pending.pop_front() {
            if p.batch != batch {
                kept.push_back(p);
                continue;
            }
            if let Some(name) = p.client {
                failed.push(name);
            }
            if p.unnamed {
                // A failed (or skipped) Parse of the unnamed statement leaves none behind.
                self.unnamed = None;
            }
            match (p.tag, p.stmt) {
                (PARSE_COMPLETE, Some((name, rest))) => {
                    if p.existed {
                        self.hold(name, rest);
                    } else {
                        self.prepared.remove(&name);
                    }
                }
                (CLOSE_COMPLETE, Some((name, rest))) => {
                    // A skipped Close leaves the statement in place.
                    self.hold(name, rest);
                }
                _ => {}
            }
        }
        self.pending = kept;
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::frame::read_message;

    fn parse_msg(name: &str, sql: &str) -> BytesMut {
        let mut b = BytesMut::new();
        put_message(
            &mut b,
            b'P',
            &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0", &[0, 0]],
        );
        b
    }

    fn bind_msg(portal: &str, stmt: &str) -> BytesMut {
        let mut b = BytesMut::new();
        put_message(
            &mut b,
            b'B',
            &[
                portal.as_bytes(),
                b"\0",
                stmt.as_bytes(),
                b"\0",
                &[0, 0, 0, 0, 0, 0],
            ],
        );
        b
    }

    fn messages(mut out: BytesMut) -> Vec<(u8, Vec<u8>)> {
        std::iter::from_fn(|| {
            read_message(&mut out, 1 << 20)
                .ok()
                .flatten()
                .map(|m| (m.tag, m.body.to_vec()))
        })
        .collect()
    }

    fn send_parse(
        c: &mut ClientStatements,
        s: &mut ServerStatements,
        name: &str,
        sql: &str,
    ) -> Vec<(u8, Vec<u8>)> {
        let m = parse_msg(name, sql);
        let mut out = BytesMut::new();
        c.on_parse(&m, &m[5..], s, 0, 100, &mut out).unwrap();
        messages(out)
    }

    #[test]
    fn parse_is_renamed_and_bind_follows_to_a_new_backend() {
        let mut c = ClientStatements::default();
        let mut s1 = ServerStatements::default();
        let sent = send_parse(&mut c, &mut s1, "q1", "SELECT 1");
        assert_eq!(sent.len(), 1);
        assert!(sent[0].1.starts_with(b"tg_"));
        assert!(
            s1.on_complete(PARSE_COMPLETE),
            "the client's own ParseComplete is forwarded"
        );

        // A different backend: Bind brings the Parse along, whose answer is swallowed.
        let mut s2 = ServerStatements::default();
        let b = bind_msg("", "q1");
        let mut out = BytesMut::new();
        c.on_bind(&b, &b[5..], &mut s2, 1, 100, &mut out);
        let sent = messages(out);
        assert_eq!(sent.iter().map(|m| m.0).collect::<Vec<_>>(), b"PB");
        assert!(
            !s2.on_complete(PARSE_COMPLETE),
            "the injected ParseComplete is swallowed"
        );
        // Second Bind on the same backend: no Parse needed.
        let mut out = BytesMut::new();
        c.on_bind(&b, &b[5..], &mut s2, 1, 100, &mut out);
        assert_eq!(messages(out).len(), 1);
    }

    #[test]
    fn identical_statements_share_a_backend_name_and_reparse_is_close_then_parse() {
        let (mut a, mut b) = (ClientStatements::default(), ClientStatements::default());
        let mut s = ServerStatements::default();
        let first = send_parse(&mut a, &mut s, "x", "SELECT $1");
        assert!(s.on_complete(PARSE_COMPLETE));
        let second = send_parse(&mut b, &mut s, "y", "SELECT $1");
        assert_eq!(second.iter().map(|m| m.0).collect::<Vec<_>>(), b"CP");
        assert_eq!(first[0].1, second[1].1, "same text, same backend name");
        assert!(
            !s.on_complete(CLOSE_COMPLETE),
            "our Close's answer is swallowed"
        );
        assert!(s.on_complete(PARSE_COMPLETE));
    }

    #[test]
    fn an_error_undoes_the_batch_and_leaves_later_batches() {
        let mut c = ClientStatements::default();
        let mut s = ServerStatements::default();
        let m = parse_msg("q", "SELEC oops");
        let mut out = BytesMut::new();
        c.on_parse(&m, &m[5..], &mut s, 0, 100, &mut out).unwrap();
        let m2 = parse_msg("r", "SELECT 2");
        c.on_parse(&m2, &m2[5..], &mut s, 1, 100, &mut out).unwrap();
        s.on_error(0);
        assert_eq!(s.len(), 1, "only batch 1's statement may exist");
        assert!(
            s.on_complete(PARSE_COMPLETE),
            "batch 1's answer still matches"
        );
        // The failed statement is re-sent on next use.
        let b = bind_msg("", "q");
        let mut out = BytesMut::new();
        c.on_bind(&b, &b[5..], &mut s, 2, 100, &mut out);
        assert_eq!(messages(out).iter().map(|m| m.0).collect::<Vec<_>>(), b"PB");
    }

    #[test]
    fn unnamed_statements_and_unknown_names_pass_through() {
        let mut c = ClientStatements::default();
        let mut s = ServerStatements::default();
        let sent = send_parse(&mut c, &mut s, "", "SELECT 1");
        assert_eq!(sent[0].1.first(), Some(&0u8), "unnamed stays unnamed");
        let b = bind_msg("", "never_prepared");
        let mut out = BytesMut::new();
        c.on_bind(&b, &b[5..], &mut s, 0, 100, &mut out);
        assert_eq!(&out[..], &b[..]);
    }

    #[test]
    fn close_forgets_and_limit_falls_back() {
        let mut c = ClientStatements::default();
        let mut s = ServerStatements::default();
        send_parse(&mut c, &mut s, "q", "SELECT 1");
        s.on_complete(PARSE_COMPLETE);
        let mut close = BytesMut::new();
        put_message(&mut close, b'C', &[b"S", b"q", b"\0"]);
        let mut out = BytesMut::new();
        c.on_close(&close, &close[5..], &mut s, 0, &mut out);
        assert!(c.is_empty() && s.is_empty());
        assert!(
            s.on_complete(CLOSE_COMPLETE),
            "the client's CloseComplete is forwarded"
        );
        let m = parse_msg("z", "SELECT 3");
        assert_eq!(
            c.on_parse(&m, &m[5..], &mut s, 0, 0, &mut BytesMut::new()),
            Err(Fallback::TooMany)
        );
    }

    /// The backend statement name a Parse body or a Close/Describe `S` body names.
    fn named(tag: u8, body: &[u8]) -> &[u8] {
        let body = if tag == b'P' { body } else { &body[1..] };
        &body[..body.iter().position(|&b| b == 0).unwrap()]
    }

    #[test]
    fn a_full_backend_closes_its_least_recently_used_statement() {
        let (mut c1, mut c2) = (ClientStatements::default(), ClientStatements::default());
        let mut s = ServerStatements::default();
        let parse = |c: &mut ClientStatements, s: &mut ServerStatements, name: &str, sql: &str| {
            let m = parse_msg(name, sql);
            let mut out = BytesMut::new();
            c.on_parse(&m, &m[5..], s, 0, 2, &mut out).unwrap();
            messages(out)
        };
        let a = parse(&mut c1, &mut s, "a", "SELECT 'a'");
        let b = parse(&mut c1, &mut s, "b", "SELECT 'b'");
        let (a, b) = (named(b'P', &a[0].1).to_vec(), named(b'P', &b[0].1).to_vec());
        // Use "a" again: "b" is now the least recently used.
        let bind = bind_msg("", "a");
        let mut out = BytesMut::new();
        c1.on_bind(&bind, &bind[5..], &mut s, 0, 2, &mut out);
        assert_eq!(messages(out).len(), 1, "a is held: Bind alone");
        // Another client's statement on a backend capped at two: Close b, then Parse c.
        let sent = parse(&mut c2, &mut s, "c", "SELECT 'c'");
        assert_eq!(sent.iter().map(|m| m.0).collect::<Vec<_>>(), b"CP");
        assert_eq!(named(b'C', &sent[0].1), b.as_slice());
        assert_eq!(s.len(), 2);
        // The answers: a's and b's ParseComplete (forwarded), b's CloseComplete (swallowed),
        // c's ParseComplete (forwarded).
        assert!(s.on_complete(PARSE_COMPLETE) && s.on_complete(PARSE_COMPLETE));
        assert!(!s.on_complete(CLOSE_COMPLETE));
        assert!(s.on_complete(PARSE_COMPLETE));
        // c1 still has b: its next use prepares it again, evicting a (older than c).
        let bind = bind_msg("", "b");
        let mut out = BytesMut::new();
        c1.on_bind(&bind, &bind[5..], &mut s, 1, 2, &mut out);
        let sent = messages(out);
        assert_eq!(sent.iter().map(|m| m.0).collect::<Vec<_>>(), b"CPB");
        assert_eq!(named(b'C', &sent[0].1), a.as_slice());
        assert_eq!(named(b'P', &sent[1].1), b.as_slice());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn garbage_never_panics() {
        let mut c = ClientStatements::default();
        let mut s = ServerStatements::default();
        for body in [&b""[..], b"\0", b"abc", b"S", b"Sx", b"S\0", b"a\0b"] {
            let mut out = BytesMut::new();
            let _ = c.on_parse(body, body, &mut s, 0, 10, &mut out);
            c.on_bind(body, body, &mut s, 0, 10, &mut out);
            c.on_describe(body, body, &mut s, 0, 10, &mut out);
            c.on_close(body, body, &mut s, 0, &mut out);
        }
    }
}

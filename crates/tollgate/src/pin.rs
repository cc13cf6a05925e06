//! Pin detection: which statements leave session state behind on a backend, so that in
//! transaction mode the client must keep that backend for the rest of its session.
//!
//! Pure and conservative: a light lexer ([`lex`]: quotes, dollar quotes, comments, `;`, over
//! the bytes in the client's encoding) over the SQL a client sends in Query and Parse
//! messages. Settings the proxy tracks and re-applies ([`crate::params::TRACKED`]) do not
//! pin; `SET LOCAL`, `SET TRANSACTION` and `set_config(..., true)` live only as long as the
//! transaction, so they do not pin either. What no lexer can see (a function that sets state
//! when called) is listed in the README ("What transaction mode cannot preserve").

mod lex;

pub use lex::{Dialect, Encoding};

use crate::params::is_tracked;
use lex::{ident_cont, lex, Token};

/// Why a client was pinned to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// Parse with a statement name (named prepared statements live on one backend).
    NamedStatement,
    /// SQL `PREPARE`.
    Prepare,
    /// A session-level SET (or set_config(..., false)) of an untracked setting.
    SessionSet,
    /// `CREATE TEMP TABLE` and friends, anything created in `pg_temp`, a `search_path` that
    /// puts `pg_temp` first.
    TempTable,
    /// A session-level advisory lock.
    AdvisoryLock,
    /// `LISTEN`.
    Listen,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// `LOAD`.
    Load,
    /// `DO`: an anonymous block can do anything a session can (set_config, EXECUTE of any
    /// text, LISTEN, temp tables), none of which the text outside its body shows.
    DoBlock,
    /// A FunctionCall message: a function called by OID with arguments the proxy does not
    /// read (`set_config` among the possibilities).
    FunctionCall,
}

impl PinReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NamedStatement => "named_prepared_statement",
            Self::Prepare => "prepare",
            Self::SessionSet => "session_set",
            Self::TempTable => "temp_table",
            Self::AdvisoryLock => "advisory_lock",
            Self::Listen => "listen",
            Self::HoldCursor => "hold_cursor",
            Self::Load => "load",
            Self::DoBlock => "do_block",
            Self::FunctionCall => "function_call",
        }
    }

    /// All reasons, for exporting zero-valued counters.
    pub const ALL: [PinReason; 10] = [
        Self::NamedStatement,
        Self::Prepare,
        Self::SessionSet,
        Self::TempTable,
        Self::AdvisoryLock,
        Self::Listen,
        Self::HoldCursor,
        Self::Load,
        Self::DoBlock,
        Self::FunctionCall,
    ];
}

/// The pin a client message implies by its type alone: FunctionCall ('F') always pins, since
/// the function and its arguments are opaque to the proxy ("Function Call" in "Message Flow").
pub fn for_message(tag: u8) -> Option<PinReason> {
    (tag == tollgate_wire::frontend::tag::FUNCTION_CALL).then_some(PinReason::FunctionCall)
}

/// Words every statement that pins or resets contains (ASCII case-insensitive): `set` (also in
/// `reset`, `set_config`), `prepare`, `listen`, `load`, `temp` (`temporary`, `pg_temp`),
/// `hold`, `advisory`, `discard`, `deallocate`; and `do` as a whole word (see [`DO`]).
const NEEDLES: [&[u8]; 9] = [
    b"set",
    b"prepare",
    b"listen",
    b"load",
    b"temp",
    b"hold",
    b"advisory",
    b"discard",
    b"deallocate",
];

/// `DO` is a pre-filter needle only as a whole word: as a substring it is in too many
/// ordinary queries (`document`, `double`, `done`). A statement that starts with `DO` has
/// it between non-identifier bytes, so this loses nothing.
const DO: &[u8] = b"do";

/// Whether `sql` contains any of [`NEEDLES`] (or the word [`DO`]) anywhere. Most queries
/// (`SELECT ... WHERE id = $1`) contain none, and then no statement in them can pin or reset,
/// so the lexer (which allocates per word) is skipped: one pass over the bytes instead.
pub fn may_pin_or_reset(sql: &[u8]) -> bool {
    let b = sql;
    let ident = |i: Option<usize>| i.and_then(|i| b.get(i)).is_some_and(|&c| ident_cont(c));
    let starts = |rest: &[u8], n: &[u8]| {
        rest.get(..n.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(n))
    };
    b.iter().enumerate().any(|(i, &c)| {
        // Per statement on the relay's path: most bytes start no needle, and the two-letter
        // table rejects them without comparing any needle.
        let second = b.get(i + 1).map_or(0, |&n| n.to_ascii_lowercase());
        let allowed = NEEDLE_PAIRS.get(usize::from(c)).copied().unwrap_or(0);
        if !second.is_ascii_lowercase() || allowed & (1 << (second - b'a')) == 0 {
            return false;
        }
        let rest = b.get(i..).unwrap_or_default();
        NEEDLES.iter().any(|n| starts(rest, n))
            || (starts(rest, DO) && !ident(i.checked_sub(1)) && !ident(Some(i + DO.len())))
    })
}

/// For each byte, the second letters (bit `l - b'a'`) with which it starts a needle of
/// [`NEEDLES`] or [`DO`], either case: `se`, `pr`, `li`, `lo`, … Zero for bytes that start none.
const NEEDLE_PAIRS: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut k = 0;
    while k <= NEEDLES.len() {
        let needle = if k < NEEDLES.len() { NEEDLES[k] } else { DO };
        let bit = 1u32 << (needle[1] - b'a');
        table[needle[0] as usize] |= bit;
        table[needle[0].to_ascii_uppercase() as usize] |= bit;
        k += 1;
    }
    table
};

/// Both answers for one statement text, with one pre-filter pass and (nearly always) one lex:
/// the first reason `sql` must pin its session, and the resets in it. What the relay calls
/// for every Query and Parse, with the client's current [`Dialect`].
///
/// The pin verdict is conservative about the dialect: the one the relay passes is what the
/// server last reported, which a pipelined `SET standard_conforming_strings` or `SET
/// client_encoding` may already have changed, and a SQL_ASCII database reads bytes one by one
/// whatever the client encoding. So when the text has a backslash, or bytes whose reading
/// depends on the encoding, it is also read those other ways ([`other_readings_pin`]), and
/// any reading that pins pins.
/// Resets are taken from the given dialect only (forgetting statements the server still has
/// would be as wrong as keeping ones it dropped).
pub fn inspect(sql: &[u8], dialect: Dialect) -> (Option<PinReason>, Vec<Reset>) {
    if !may_pin_or_reset(sql) {
        return (None, Vec::new());
    }
    let tokens = lex(sql, dialect);
    let pin = pin_reason(sql, &tokens).or_else(|| other_readings_pin(sql, dialect));
    (pin, resets(&tokens))
}

/// The first reason `sql` must pin its session, if any (as [`inspect`]).
pub fn scan_sql(sql: &[u8], dialect: Dialect) -> Option<PinReason> {
    inspect(sql, dialect).0
}

/// The first pin under another plausible reading of `sql` than `dialect`: with the other
/// `standard_conforming_strings` if the text has a backslash, and byte by byte (a SQL_ASCII
/// database converts nothing) if its encoding has ASCII second bytes and the text has a high
/// byte. One hypothesis at a time: both together (a stale setting in a SQL_ASCII database)
/// would mostly add false pins for SJIS text, whose 表 or ソ end in 0x5C.
fn other_readings_pin(sql: &[u8], dialect: Dialect) -> Option<PinReason> {
    let flipped = sql.contains(&b'\\').then_some(Dialect {
        standard_conforming_strings: !dialect.standard_conforming_strings,
        ..dialect
    });
    let bytewise = (dialect.encoding != Encoding::AsciiSafe && sql.iter().any(|&c| c >= 0x80))
        .then_some(Dialect {
            encoding: Encoding::AsciiSafe,
            ..dialect
        });
    [flipped, bytewise]
        .into_iter()
        .flatten()
        .find_map(|d| pin_reason(sql, &lex(sql, d)))
}

fn pin_reason(sql: &[u8], tokens: &[Token]) -> Option<PinReason> {
    tokens
        .split(|t| *t == Token::Semicolon)
        .find_map(|stmt| scan_statement(sql, stmt))
}

/// The word a token is, if it is one spelled in UTF-8 (keywords and setting names are ASCII;
/// anything else is not a word these rules look for).
fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => std::str::from_utf8(w).ok(),
        _ => None,
    }
}

/// Whether `stmt` has the words `seq` one after another anywhere (each entry lists the
/// words allowed at that place; an empty string makes the place optional).
fn has_sequence(stmt: &[Token], seq: &[&[&str]]) -> bool {
    (0..stmt.len()).any(|start| {
        let mut i = start;
        seq.iter().all(|alts| {
            if word(stmt.get(i)).is_some_and(|w| alts.contains(&w)) {
                i += 1;
                true
            } else {
                alts.contains(&"")
            }
        })
    })
}

const TEMP: &[&str] = &["temp", "temporary"];

fn scan_statement(sql: &[u8], stmt: &[Token]) -> Option<PinReason> {
    match word(stmt.first()) {
        Some("set") => {
            if let Some(r) = scan_set(stmt.get(1..).unwrap_or(&[])) {
                return Some(r);
            }
        }
        Some("prepare") => return Some(PinReason::Prepare),
        Some("listen") => return Some(PinReason::Listen),
        Some("load") => return Some(PinReason::Load),
        Some("do") => return Some(PinReason::DoBlock),
        _ => {}
    }
    // Anywhere in a statement (so also after EXPLAIN ANALYZE, in CREATE ... AS, WITH ...):
    // CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP ..., SELECT ... INTO [GLOBAL|LOCAL] TEMP.
    if has_sequence(
        stmt,
        &[
            &["create"],
            &["or", ""],
            &["replace", ""],
            &["global", "local", ""],
            TEMP,
        ],
    ) || has_sequence(stmt, &[&["into"], &["global", "local", ""], TEMP])
    {
        return Some(PinReason::TempTable);
    }
    // Anything named in the session's temporary schema (`pg_temp.x`, `pg_temp_3.x`), or a
    // search_path naming it, under which even an unqualified CREATE makes a temp object.
    if stmt
        .iter()
        .any(|t| matches!(t, Token::Word(w) if is_temp_schema(w)))
    {
        return Some(PinReason::TempTable);
    }
    if word(stmt.first()) == Some("set") && temp_search_path_in_set(sql, stmt) {
        return Some(PinReason::TempTable);
    }
    if has_sequence(stmt, &[&["declare"]]) && has_sequence(stmt, &[&["with"], &["hold"]]) {
        return Some(PinReason::HoldCursor);
    }
    // Session advisory locks and set_config(..., false).
    for (i, t) in stmt.iter().enumerate() {
        let Token::Word(w) = t else { continue };
        if stmt.get(i + 1) != Some(&Token::Punct(b'(')) {
            continue;
        }
        match w.as_slice() {
            b"pg_advisory_lock"
            | b"pg_advisory_lock_shared"
            | b"pg_try_advisory_lock"
            | b"pg_try_advisory_lock_shared" => return Some(PinReason::AdvisoryLock),
            b"set_config" => {
                let args = call_args(stmt.get(i + 2..).unwrap_or(&[]));
                if set_config_is_session(&args) {
                    return Some(PinReason::SessionSet);
                }
                if set_config_temp_search_path(sql, &args) {
                    return Some(PinReason::TempTable);
                }
            }
            _ => {}
        }
    }
    None
}

/// `pg_temp`, or a backend's own `pg_temp_N`.
fn is_temp_schema(w: &[u8]) -> bool {
    w == b"pg_temp" || w.starts_with(b"pg_temp_")
}

/// Whether a string constant might name `pg_temp`: its body says so, or has escapes that
/// could spell it.
fn str_may_name_temp(sql: &[u8], t: &Token) -> bool {
    match t {
        Token::Str { start, end, plain } => {
            !plain
                || sql
                    .get(*start..*end)
                    .is_some_and(|body| body.windows(7).any(|w| w.eq_ignore_ascii_case(b"pg_temp")))
        }
        _ => false,
    }
}

/// `SET [LOCAL|SESSION] search_path|schema ...` with `pg_temp` in a quoted value (unquoted
/// ones are words, caught by [`is_temp_schema`]).
fn temp_search_path_in_set(sql: &[u8], stmt: &[Token]) -> bool {
    has_sequence(
        stmt,
        &[
            &["set"],
            &["local", "session", ""],
            &["search_path", "schema"],
        ],
    ) && stmt.iter().any(|t| str_may_name_temp(sql, t))
}

/// The top-level arguments of a call, given the tokens after its `(`.
fn call_args(after_paren: &[Token]) -> Vec<&[Token]> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, t) in after_paren.iter().enumerate() {
        match t {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') if depth == 0 => {
                args.push(after_paren.get(start..i).unwrap_or(&[]));
                return args;
            }
            Token::Punct(b')') => depth -= 1,
            Token::Punct(b',') if depth == 0 => {
                args.push(after_paren.get(start..i).unwrap_or(&[]));
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(after_paren.get(start..).unwrap_or(&[]));
    args
}

/// `set_config(name, value, is_local)`: only a literal `true`/`on` third argument is
/// transaction-scoped; `false`, a parameter, an expression or anything we cannot read pins.
fn set_config_is_session(args: &[&[Token]]) -> bool {
    !matches!(args.get(2), Some([t]) if matches!(word(Some(t)), Some("true" | "on")))
}

/// A transaction-scoped `set_config('search_path', value, true)` whose value may put
/// `pg_temp` in the path (then an unqualified CREATE in that transaction makes a temp object
/// that outlives it). Unknown names or values count as may.
fn set_config_temp_search_path(sql: &[u8], args: &[&[Token]]) -> bool {
    let name_may_be_search_path = match args.first() {
        Some(
            [Token::Str {
                start,
                end,
                plain: true,
            }],
        ) => sql
            .get(*start..*end)
            .is_some_and(|n| n.trim_ascii().eq_ignore_ascii_case(b"search_path")),
        _ => true,
    };
    let value_may_name_temp = match args.get(1) {
        Some([t @ Token::Str { .. }]) => str_may_name_temp(sql, t),
        _ => true,
    };
    name_may_be_search_path && value_may_name_temp
}

/// What a statement puts back to the backend's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    /// `RESET ALL` / `DISCARD ALL`: every setting.
    All,
    /// `RESET name` (lower-cased).
    Setting(String),
    /// `DEALLOCATE ALL` / `DISCARD ALL`: every prepared statement.
    Statements,
}

/// The resets in `sql`. They do not pin: the relay marks the affected settings on the backend
/// as unknown, so the next borrow re-applies (or resets) them explicitly for whichever client
/// gets it. (Why not just forget them: RESET is transactional, and a rolled-back RESET leaves
/// the old value in place.)
pub fn scan_resets(sql: &[u8], dialect: Dialect) -> Vec<Reset> {
    inspect(sql, dialect).1
}

fn resets(tokens: &[Token]) -> Vec<Reset> {
    let mut out = Vec::new();
    for stmt in tokens.split(|t| *t == Token::Semicolon) {
        match (word(stmt.first()), word(stmt.get(1)), word(stmt.get(2))) {
            (Some("reset"), Some("all"), _) => out.push(Reset::All),
            (Some("discard"), Some("all"), _) => {
                out.push(Reset::All);
                out.push(Reset::Statements);
            }
            (Some("deallocate"), Some("all"), _)
            | (Some("deallocate"), Some("prepare"), Some("all")) => out.push(Reset::Statements),
            (Some("reset"), Some("time"), Some("zone")) => {
                out.push(Reset::Setting("timezone".into()))
            }
            (Some("reset"), Some("session"), Some("authorization")) => {
                out.push(Reset::Setting("session_authorization".into()))
            }
            (Some("reset"), Some(name), _) => out.push(Reset::Setting(name.to_string())),
            _ => {}
        }
    }
    out
}

/// After `SET`: which forms outlive the transaction and touch untracked state (`SET ROLE`,
/// `SET SESSION AUTHORIZATION`, `SET x FROM CURRENT` of an untracked x all pin).
fn scan_set(rest: &[Token]) -> Option<PinReason> {
    let mut rest = rest;
    match word(rest.first()) {
        Some("local") | Some("transaction") | Some("constraints") => return None,
        Some("session") => {
            rest = rest.get(1..).unwrap_or(&[]);
            match word(rest.first()) {
                Some("authorization") | Some("characteristics") => {
                    return Some(PinReason::SessionSet)
                }
                _ => {}
            }
        }
        _ => {}
    }
    match (word(rest.first()), word(rest.get(1))) {
        (Some("time"), Some("zone")) | (Some("names"), _) => None,
        (Some(name), _) if is_tracked(name) => None,
        _ => Some(PinReason::SessionSet),
    }
}

#[cfg(test)]
mod tests;

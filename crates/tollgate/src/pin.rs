//! Pin detection: which statements leave session state behind on a backend, so that in
//! transaction mode the client must keep that backend for the rest of its session.
//!
//! Pure and conservative: a light lexer (quotes, dollar quotes, comments, `;`) over the SQL a
//! client sends in Query and Parse messages. Settings the proxy tracks and re-applies
//! ([`crate::params::TRACKED`]) do not pin; `SET LOCAL`, `SET TRANSACTION` and
//! `set_config(..., true)` live only as long as the transaction, so they do not pin either.

use crate::params::is_tracked;

/// Why a client was pinned to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// Parse with a statement name (named prepared statements live on one backend).
    NamedStatement,
    /// SQL `PREPARE`.
    Prepare,
    /// A session-level SET (or set_config(..., false)) of an untracked setting.
    SessionSet,
    /// `CREATE TEMP TABLE` and friends.
    TempTable,
    /// A session-level advisory lock.
    AdvisoryLock,
    /// `LISTEN`.
    Listen,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// `LOAD`.
    Load,
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
        }
    }

    /// All reasons, for exporting zero-valued counters.
    pub const ALL: [PinReason; 8] = [
        Self::NamedStatement,
        Self::Prepare,
        Self::SessionSet,
        Self::TempTable,
        Self::AdvisoryLock,
        Self::Listen,
        Self::HoldCursor,
        Self::Load,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Lower-cased keyword or identifier (quoted identifiers keep their case).
    Word(String),
    /// A string or number literal.
    Literal,
    Punct(char),
    /// End of a statement.
    Semicolon,
}

/// Words every statement that pins or resets contains (ASCII case-insensitive): `set` (also in
/// `reset`, `set_config`), `prepare`, `listen`, `load`, `temp` (`temporary`), `hold`,
/// `advisory`, `discard`, `deallocate`.
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

/// Whether `sql` contains any of [`NEEDLES`] anywhere. Most queries (`SELECT ... WHERE id =
/// $1`) contain none, and then no statement in them can pin or reset, so the lexer (which
/// allocates per word) is skipped: one pass over the bytes instead.
pub fn may_pin_or_reset(sql: &str) -> bool {
    let b = sql.as_bytes();
    (0..b.len()).any(|i| {
        let first = b.get(i).map(u8::to_ascii_lowercase);
        NEEDLES.iter().any(|n| {
            n.first().copied() == first
                && b.get(i..i + n.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(n))
        })
    })
}

/// Both answers for one statement text, with one pre-filter pass and at most one lex: the
/// first reason `sql` must pin its session, and the resets in it. What the relay calls for
/// every Query and Parse.
pub fn inspect(sql: &str) -> (Option<PinReason>, Vec<Reset>) {
    if !may_pin_or_reset(sql) {
        return (None, Vec::new());
    }
    let tokens = lex(sql);
    (pin_reason(&tokens), resets(&tokens))
}

/// Returns the first reason `sql` must pin its session, if any.
pub fn scan_sql(sql: &str) -> Option<PinReason> {
    if !may_pin_or_reset(sql) {
        return None;
    }
    pin_reason(&lex(sql))
}

fn pin_reason(tokens: &[Token]) -> Option<PinReason> {
    tokens
        .split(|t| *t == Token::Semicolon)
        .find_map(scan_statement)
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => Some(w.as_str()),
        _ => None,
    }
}

fn scan_statement(stmt: &[Token]) -> Option<PinReason> {
    let first = word(stmt.first());
    match first {
        Some("set") => return scan_set(stmt.get(1..).unwrap_or(&[])),
        // RESET and DISCARD ALL do not pin: see `scan_resets`.
        Some("reset") | Some("discard") => return None,
        Some("prepare") => return Some(PinReason::Prepare),
        Some("listen") => return Some(PinReason::Listen),
        Some("load") => return Some(PinReason::Load),
        Some("create") => {
            let mut i = 1;
            if matches!(word(stmt.get(i)), Some("global" | "local")) {
                i += 1;
            }
            if matches!(word(stmt.get(i)), Some("temp" | "temporary")) {
                return Some(PinReason::TempTable);
            }
        }
        Some("declare")
            if stmt
                .windows(2)
                .any(|w| word(w.first()) == Some("with") && word(w.get(1)) == Some("hold")) =>
        {
            return Some(PinReason::HoldCursor);
        }
        _ => {}
    }
    // Anywhere in a statement: session advisory locks and set_config(..., false).
    for (i, t) in stmt.iter().enumerate() {
        let Token::Word(w) = t else { continue };
        if stmt.get(i + 1) != Some(&Token::Punct('(')) {
            continue;
        }
        match w.as_str() {
            "pg_advisory_lock"
            | "pg_advisory_lock_shared"
            | "pg_try_advisory_lock"
            | "pg_try_advisory_lock_shared" => return Some(PinReason::AdvisoryLock),
            "set_config" if set_config_is_session(stmt.get(i + 2..).unwrap_or(&[])) => {
                return Some(PinReason::SessionSet);
            }
            _ => {}
        }
        // `SELECT ... INTO TEMP t` creates a temp table too.
    }
    if stmt.windows(2).any(|w| {
        word(w.first()) == Some("into") && matches!(word(w.get(1)), Some("temp" | "temporary"))
    }) {
        return Some(PinReason::TempTable);
    }
    None
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
pub fn scan_resets(sql: &str) -> Vec<Reset> {
    if !may_pin_or_reset(sql) {
        return Vec::new();
    }
    resets(&lex(sql))
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

/// After `SET`: which forms outlive the transaction and touch untracked state.
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

/// `set_config(name, value, is_local)`: only `false` (or anything we cannot read) pins.
fn set_config_is_session(args: &[Token]) -> bool {
    let mut depth = 0usize;
    let mut commas = 0;
    let mut last = None;
    for t in args {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') if depth == 0 => break,
            Token::Punct(')') => depth -= 1,
            Token::Punct(',') if depth == 0 => commas += 1,
            other if commas == 2 && depth == 0 => last = Some(other),
            _ => {}
        }
    }
    !matches!(last, Some(Token::Word(w)) if w == "true" || w == "on")
}

fn lex(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while b.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b.get(i) == Some(&b'/') && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b.get(i) == Some(&b'*') && b.get(i + 1) == Some(&b'/') {
                        depth = depth.saturating_sub(1);
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                i = skip_quoted(b, i + 1, b'\'', false);
                out.push(Token::Literal);
            }
            b'"' => {
                let start = i + 1;
                i = skip_quoted(b, start, b'"', false);
                let end = i.saturating_sub(1).max(start);
                let text = sql.get(start..end).unwrap_or("").replace("\"\"", "\"");
                out.push(Token::Word(text));
            }
            b'$' => {
                // $tag$ ... $tag$ or a positional parameter $1.
                let tag_end = b.get(i + 1..).and_then(|r| {
                    r.iter()
                        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                });
                match tag_end.map(|p| i + 1 + p) {
                    Some(end)
                        if b.get(end) == Some(&b'$')
                            && !b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) =>
                    {
                        let tag = b.get(i..=end).unwrap_or(&[]);
                        let body_start = end + 1;
                        let close = b
                            .get(body_start..)
                            .and_then(|r| r.windows(tag.len().max(1)).position(|w| w == tag))
                            .map(|p| body_start + p + tag.len());
                        i = close.unwrap_or(b.len());
                        out.push(Token::Literal);
                    }
                    _ => {
                        i += 1;
                        while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
                            i += 1;
                        }
                        out.push(Token::Literal);
                    }
                }
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // E'..' escape strings: the E prefix followed by a quote.
                if (c == b'e' || c == b'E') && b.get(i + 1) == Some(&b'\'') {
                    i = skip_quoted(b, i + 2, b'\'', true);
                    out.push(Token::Literal);
                    continue;
                }
                let start = i;
                while b.get(i).is_some_and(|&c| {
                    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
                }) {
                    i += 1;
                }
                out.push(Token::Word(
                    sql.get(start..i).unwrap_or("").to_ascii_lowercase(),
                ));
            }
            c if c.is_ascii_digit() => {
                while b
                    .get(i)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'.')
                {
                    i += 1;
                }
                out.push(Token::Literal);
            }
            c => {
                out.push(Token::Punct(c as char));
                i += 1;
            }
        }
    }
    out
}

/// Index just past the closing quote (doubled quotes stay inside; backslash escapes when `escapes`).
fn skip_quoted(b: &[u8], mut i: usize, q: u8, escapes: bool) -> usize {
    while let Some(&c) = b.get(i) {
        if escapes && c == b'\\' {
            i += 2;
        } else if c == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use PinReason::*;

    #[test]
    fn session_state_pins() {
        for (sql, why) in [
            ("SET search_path = app", SessionSet),
            ("set session role admin", SessionSet),
            ("SET SESSION AUTHORIZATION bob", SessionSet),
            ("PREPARE q AS SELECT 1", Prepare),
            ("create temp table t(x int)", TempTable),
            ("CREATE GLOBAL TEMPORARY TABLE t(x int)", TempTable),
            ("select * into temp t from x", TempTable),
            ("SELECT pg_advisory_lock(1)", AdvisoryLock),
            ("select 1; LISTEN chan", Listen),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", HoldCursor),
            ("select set_config('search_path', 'x', false)", SessionSet),
            ("LOAD 'auto_explain'", Load),
        ] {
            assert_eq!(scan_sql(sql), Some(why), "{sql}");
        }
    }

    #[test]
    fn transaction_scoped_and_tracked_statements_do_not_pin() {
        for sql in [
            "SELECT 1",
            "SET LOCAL search_path = x",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TimeZone = 'UTC'",
            "SET TIME ZONE 'UTC'",
            "set application_name to 'x'",
            "SET NAMES 'UTF8'",
            "RESET TimeZone",
            "RESET TIME ZONE",
            "reset application_name",
            "DISCARD PLANS",
            "DISCARD ALL",
            "RESET ALL",
            "RESET statement_timeout",
            "SELECT pg_advisory_xact_lock(1)",
            "select set_config('request.jwt', 'x', true)",
            "SELECT 'SET search_path = x; PREPARE'",
            "SELECT $$ LISTEN x $$, $t$ create temp table $t$",
            "-- SET search_path = x\nSELECT 1 /* LISTEN /* nested */ x */",
            "SELECT E'it\\'s; LISTEN x'",
            "CREATE TABLE temp(x int)",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert_eq!(scan_sql(sql), None, "{sql}");
        }
    }

    #[test]
    fn resets_are_found_per_statement() {
        assert_eq!(scan_resets("RESET ALL"), vec![Reset::All]);
        assert_eq!(
            scan_resets("select 1; discard all"),
            vec![Reset::All, Reset::Statements]
        );
        assert_eq!(scan_resets("DEALLOCATE ALL"), vec![Reset::Statements]);
        assert_eq!(
            scan_resets("RESET statement_timeout; RESET TIME ZONE"),
            vec![
                Reset::Setting("statement_timeout".into()),
                Reset::Setting("timezone".into())
            ]
        );
        assert!(scan_resets("SELECT 'RESET ALL'; DISCARD PLANS").is_empty());
    }

    #[test]
    fn lexer_survives_garbage() {
        for sql in [
            "'",
            "\"",
            "$",
            "$a",
            "$a$",
            "/*",
            "E'\\",
            "--",
            "\u{0}\u{ff}",
            "set_config(",
            "(((",
            ")))",
        ] {
            let _ = scan_sql(sql);
        }
    }

    mod prefilter {
        use super::super::*;
        use proptest::prelude::*;

        /// SQL-ish fragments: the pinning and resetting keywords in several cases, inside
        /// other words, quoted, commented, and ordinary query text.
        fn fragment() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "SET ",
                "set ",
                "Reset ",
                "RESET ALL",
                "offset ",
                "PREPARE ",
                "listen x",
                "LOAD 'x'",
                "create temp table t()",
                "TEMPORARY ",
                "declare c cursor with hold ",
                "pg_advisory_lock(1)",
                "set_config('a','b',false)",
                "DISCARD ALL",
                "deallocate all",
                "SELECT ",
                "abalance ",
                "FROM ",
                "pgbench_accounts ",
                "WHERE aid = $1",
                ";",
                "'",
                "\"",
                "$$",
                "--",
                "\n",
                "/*",
                "*/",
                "(",
                ")",
                ",",
                "local ",
                "session ",
                "time zone ",
                "into ",
                "all ",
                "e'x'",
                "1.5",
                "_",
            ])
            .prop_map(str::to_string)
        }

        proptest! {
            /// The byte pre-filter never changes a verdict: whatever it skips, the lexer
            /// would have found nothing in either.
            #[test]
            fn the_prefilter_never_changes_the_answer(
                parts in prop::collection::vec(fragment(), 0..12)
            ) {
                let sql = parts.concat();
                let tokens = lex(&sql);
                prop_assert_eq!(scan_sql(&sql), pin_reason(&tokens));
                prop_assert_eq!(scan_resets(&sql), resets(&tokens));
                prop_assert_eq!(inspect(&sql), (pin_reason(&tokens), resets(&tokens)));
            }
        }

        #[test]
        fn ordinary_queries_skip_the_lexer_and_keywords_do_not() {
            for sql in [
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                "INSERT INTO t VALUES (1)",
                "BEGIN",
                "COMMIT",
            ] {
                assert!(!may_pin_or_reset(sql), "{sql}");
            }
            for sql in [
                "UPDATE t SET x = 1",
                "reset all",
                "PREPARE q AS SELECT 1",
                "select pg_advisory_lock(1)",
                "Listen x",
                "SELECT 1 INTO TEMP t",
                "DISCARD ALL",
            ] {
                assert!(may_pin_or_reset(sql), "{sql}");
            }
        }
    }
}

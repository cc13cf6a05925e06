//! Pin rules, case by case; and the property that the pre-filter never changes a verdict.

use super::*;
use PinReason::*;

fn pins(sql: &str) -> Option<PinReason> {
    scan_sql(sql.as_bytes(), Dialect::default())
}

fn resets_in(sql: &str) -> Vec<Reset> {
    scan_resets(sql.as_bytes(), Dialect::default())
}

fn sjis() -> Dialect {
    Dialect {
        encoding: Encoding::Sjis,
        ..Dialect::default()
    }
}

fn scs_off() -> Dialect {
    Dialect {
        standard_conforming_strings: false,
        ..Dialect::default()
    }
}

#[test]
fn session_state_pins() {
    for (sql, why) in [
        ("SET search_path = app", SessionSet),
        ("set session role admin", SessionSet),
        ("SET ROLE admin", SessionSet),
        ("SET SESSION AUTHORIZATION bob", SessionSet),
        ("SET SESSION search_path = x", SessionSet),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            SessionSet,
        ),
        ("SET work_mem FROM CURRENT", SessionSet),
        ("SET SCHEMA 'app'", SessionSet),
        ("PREPARE q AS SELECT 1", Prepare),
        ("create temp table t(x int)", TempTable),
        ("CREATE GLOBAL TEMPORARY TABLE t(x int)", TempTable),
        ("CREATE TEMP TABLE t(x int) ON COMMIT DROP", TempTable),
        ("select * into temp t from x", TempTable),
        ("SELECT 1 AS x INTO LOCAL TEMPORARY t", TempTable),
        ("SELECT pg_advisory_lock(1)", AdvisoryLock),
        ("SELECT pg_try_advisory_lock_shared(1, 2)", AdvisoryLock),
        ("select 1; LISTEN chan", Listen),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", HoldCursor),
        ("select set_config('search_path', 'x', false)", SessionSet),
        ("select set_config('search_path', 'x', $1)", SessionSet),
        (
            "select pg_catalog.set_config('a.b', 'x', 1 = 1)",
            SessionSet,
        ),
        ("select \"set_config\"('a.b', 'x')", SessionSet),
        ("LOAD 'auto_explain'", Load),
    ] {
        assert_eq!(pins(sql), Some(why), "{sql}");
    }
}

#[test]
fn do_blocks_pin_whatever_their_body() {
    for sql in [
        "DO $$BEGIN PERFORM set_config('a.b', 'c', false); END$$",
        "do $$ begin execute 'LIS' || 'TEN x'; end $$",
        "DO LANGUAGE plpgsql $x$ BEGIN NULL; END $x$",
        "DO 'BEGIN NULL; END'",
        "select 1; Do $$ begin null; end $$",
        "/* c */ DO $$ BEGIN NULL; END $$",
    ] {
        assert_eq!(pins(sql), Some(DoBlock), "{sql}");
    }
    for sql in [
        "SELECT document FROM docs",
        "SELECT 'DO $$ x $$'",
        "select done, undo FROM t",
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING",
    ] {
        assert_eq!(pins(sql), None, "{sql}");
    }
}

#[test]
fn objects_in_the_temporary_schema_pin() {
    for sql in [
        "CREATE TABLE pg_temp.x (a int)",
        "CREATE UNLOGGED TABLE pg_temp.x (a int)",
        "create table PG_TEMP.x as select 1",
        "CREATE TABLE \"pg_temp\".x ()",
        "CREATE INDEX ON pg_temp.x (a)",
        "CREATE VIEW pg_temp.v AS SELECT 1",
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE SEQUENCE pg_temp_3.s",
        "SELECT 1 INTO pg_temp.t",
        "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
        "CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1",
        "CREATE TEMP SEQUENCE s",
        "CREATE LOCAL TEMP TABLE t ()",
        "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
        "EXPLAIN (ANALYZE, BUFFERS) CREATE TEMP TABLE t AS SELECT 1",
        "EXPLAIN ANALYZE SELECT 1 INTO TEMP t",
        "explain analyze select 1 into temporary table t",
        "WITH a AS (SELECT 1) SELECT * INTO TEMP t FROM a",
        // An unqualified CREATE under a search_path that starts with pg_temp makes a temp
        // object, even when the path itself is transaction-scoped.
        "SET LOCAL search_path = pg_temp, public",
        "SET LOCAL search_path TO 'pg_temp'",
        "set local search_path = '\"pg_temp\"', public",
        "SET LOCAL search_path = $$pg_temp$$",
        "SELECT set_config('search_path', 'pg_temp,public', true)",
        "SELECT set_config('search_path', $1, true)",
        "SELECT set_config($1, 'pg_temp', true)",
        "SELECT set_config('search_path', E'pg\\137temp', true)",
    ] {
        assert_eq!(pins(sql), Some(TempTable), "{sql}");
    }
}

#[test]
fn statements_inside_create_as_and_explain_are_seen() {
    for (sql, why) in [
        ("CREATE TABLE t AS SELECT pg_advisory_lock(1)", AdvisoryLock),
        (
            "CREATE MATERIALIZED VIEW m AS SELECT set_config('a.b','c',false)",
            SessionSet,
        ),
        ("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", AdvisoryLock),
        (
            "EXPLAIN ANALYZE DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            HoldCursor,
        ),
        (
            "WITH x AS (SELECT set_config('a.b', 'c', false)) SELECT * FROM x",
            SessionSet,
        ),
    ] {
        assert_eq!(pins(sql), Some(why), "{sql}");
    }
}

#[test]
fn transaction_scoped_and_tracked_statements_do_not_pin() {
    for sql in [
        "SELECT 1",
        "SET LOCAL search_path = x",
        "SET LOCAL search_path = 'app', public",
        "SET LOCAL ROLE admin",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TimeZone = 'UTC'",
        "SET TIME ZONE 'UTC'",
        "SET SESSION TIME ZONE 'UTC'",
        "SET timezone FROM CURRENT",
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
        "select set_config('request.jwt', $1, TRUE)",
        "select set_config('search_path', 'app, public', true)",
        "SELECT 'SET search_path = x; PREPARE'",
        "SELECT $$ LISTEN x $$, $t$ create temp table $t$",
        "-- SET search_path = x\nSELECT 1 /* LISTEN /* nested */ x */",
        "SELECT E'it\\'s; LISTEN x'",
        "CREATE TABLE temp(x int)",
        "CREATE TABLE t AS SELECT 1",
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pg_temp%'",
        "DECLARE c CURSOR FOR SELECT 1",
        "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
        "SELECT current_setting('search_path')",
    ] {
        assert_eq!(pins(sql), None, "{sql}");
    }
}

#[test]
fn backslashes_follow_standard_conforming_strings() {
    // With standard_conforming_strings off, \' does not end the string, so the LISTEN after
    // it is real (PostgreSQL lexes the whole text with the setting in force on arrival).
    let sql = br"SELECT 'a\'; LISTEN x; SELECT '";
    assert_eq!(scan_sql(sql, scs_off()), Some(Listen));
    // With it on, 'a\' is a whole string.
    let sql = br"SELECT 'a\'; LISTEN x; --'";
    assert_eq!(scan_sql(sql, Dialect::default()), Some(Listen));
    // E'' strings take escapes whatever the setting.
    let sql = br"SELECT E'a\'; LISTEN x; --'";
    assert_eq!(scan_sql(sql, Dialect::default()), None);
    let sql = br"SELECT E'a\\'; LISTEN x; --'";
    assert_eq!(scan_sql(sql, Dialect::default()), Some(Listen));
}

#[test]
fn a_stale_standard_conforming_strings_never_hides_a_pin() {
    // The relay's view may lag a pipelined SET: either reading that pins, pins.
    let sql = br"SELECT 'a\'; LISTEN x; SELECT '";
    assert_eq!(scan_sql(sql, Dialect::default()), Some(Listen));
    let sql = br"SELECT 'a\'; LISTEN x; --'";
    assert_eq!(scan_sql(sql, scs_off()), Some(Listen));
    // Resets follow the given reading only.
    let sql = br"SELECT 'a\'; RESET ALL; --'";
    assert_eq!(scan_resets(sql, Dialect::default()), vec![Reset::All]);
    assert_eq!(scan_resets(sql, scs_off()), vec![]);
}

#[test]
fn non_ascii_dollar_quote_tags_are_strings() {
    assert_eq!(pins("SELECT $é$ LISTEN x $é$"), None);
    assert_eq!(pins("SELECT $é$ it's $é$; LISTEN x"), Some(Listen));
    assert_eq!(
        pins("SELECT $tagé1$ ' $tagé1$; SET work_mem = '4MB'"),
        Some(SessionSet)
    );
    // LATIN1 é (0xE9) as a tag.
    assert_eq!(
        scan_sql(b"SELECT $\xe9$ it's $\xe9$; LISTEN x", Dialect::default()),
        Some(Listen)
    );
}

/// 表 is 0x95 0x5C in SJIS: the second byte is an ASCII backslash the server never sees (it
/// converts the text to its own encoding first).
const SJIS_HYO: &[u8] = b"\x95\x5c";

#[test]
fn sjis_text_with_a_backslash_second_byte_still_pins() {
    for (sql, why) in [
        // '表' ; SET work_mem = '4MB'
        (
            [b"SELECT '", SJIS_HYO, b"' ; SET work_mem = '4MB'"].concat(),
            Some(SessionSet),
        ),
        (
            [b"SELECT E'", SJIS_HYO, b"' ; SET work_mem = '4MB'"].concat(),
            Some(SessionSet),
        ),
        // '表'' ; SET x = 1' is one string: nothing pins.
        ([b"SELECT '", SJIS_HYO, b"'' ; SET x = 1'"].concat(), None),
        (
            [b"SELECT '", SJIS_HYO, b"''' ; SET work_mem = 1"].concat(),
            Some(SessionSet),
        ),
        (
            [b"SELECT $", SJIS_HYO, b"$ it's $", SJIS_HYO, b"$; LISTEN x"].concat(),
            Some(Listen),
        ),
        (
            [b"SELECT \"", SJIS_HYO, b"\" FROM t; LISTEN x"].concat(),
            Some(Listen),
        ),
        (
            [b"SELECT 1 AS ", SJIS_HYO, b"; LISTEN x"].concat(),
            Some(Listen),
        ),
        ([b"SELECT '", SJIS_HYO, b"'"].concat(), None),
    ] {
        assert_eq!(
            scan_sql(&sql, sjis()),
            why,
            "{}",
            String::from_utf8_lossy(&sql)
        );
    }
    // Under standard_conforming_strings = off the server reads 表 whole too, so the quote
    // after it still ends the string.
    let off = Dialect {
        standard_conforming_strings: false,
        ..sjis()
    };
    let sql = [b"SELECT '", SJIS_HYO, b"'; SET work_mem = '4MB'"].concat();
    assert_eq!(scan_sql(&sql, off), Some(SessionSet));
    // An escaped 表 (\表) is one escape: the 0x5C in it escapes nothing.
    let sql = [b"SELECT E'\\", SJIS_HYO, b"'; LISTEN x"].concat();
    assert_eq!(scan_sql(&sql, sjis()), Some(Listen));
}

#[test]
fn other_multibyte_encodings_step_over_whole_characters() {
    // BIG5 功 is 0xA5 0x5C, GBK 乗 0x81 0x5C, GB18030 four bytes 0x81 0x30 0x81 0x30.
    for (enc, ch) in [
        (Encoding::TwoByte, &b"\xa5\x5c"[..]),
        (Encoding::TwoByte, b"\x81\x5c"),
        (Encoding::Gb18030, b"\x81\x30\x81\x30"),
        (Encoding::Gb18030, b"\x81\x5c"),
        (Encoding::Johab, b"\x88\x5c"),
    ] {
        let d = Dialect {
            encoding: enc,
            ..Dialect::default()
        };
        let sql = [b"SELECT E'", ch, b"'; LISTEN x"].concat();
        assert_eq!(scan_sql(&sql, d), Some(Listen), "{enc:?}");
    }
}

#[test]
fn latin1_and_other_non_utf8_text_is_read_as_bytes() {
    let d = Dialect::default();
    assert_eq!(scan_sql(b"SELECT 'caf\xe9'; LISTEN x", d), Some(Listen));
    assert_eq!(scan_sql(b"SELECT caf\xe9 FROM t", d), None);
    assert_eq!(scan_sql(b"SET caf\xe9.x = 1", d), Some(SessionSet));
    assert_eq!(scan_resets(b"RESET caf\xe9", d), vec![]);
    assert_eq!(
        scan_resets(b"SELECT 'caf\xe9'; RESET ALL", d),
        vec![Reset::All]
    );
}

#[test]
fn function_call_messages_pin() {
    assert_eq!(for_message(b'F'), Some(FunctionCall));
    assert_eq!(for_message(b'Q'), None);
    assert_eq!(for_message(b'P'), None);
}

#[test]
fn every_reason_is_listed_once_with_a_distinct_label() {
    let labels: std::collections::BTreeSet<_> = PinReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), PinReason::ALL.len());
    assert!(labels.contains("do_block") && labels.contains("function_call"));
}

#[test]
fn resets_are_found_per_statement() {
    assert_eq!(resets_in("RESET ALL"), vec![Reset::All]);
    assert_eq!(
        resets_in("select 1; discard all"),
        vec![Reset::All, Reset::Statements]
    );
    assert_eq!(resets_in("DEALLOCATE ALL"), vec![Reset::Statements]);
    assert_eq!(
        resets_in("RESET statement_timeout; RESET TIME ZONE"),
        vec![
            Reset::Setting("statement_timeout".into()),
            Reset::Setting("timezone".into())
        ]
    );
    assert!(resets_in("SELECT 'RESET ALL'; DISCARD PLANS").is_empty());
}

const ENCODINGS: [Encoding; 5] = [
    Encoding::AsciiSafe,
    Encoding::Sjis,
    Encoding::TwoByte,
    Encoding::Gb18030,
    Encoding::Johab,
];

#[test]
fn lexer_survives_garbage() {
    for sql in [
        &b"'"[..],
        b"\"",
        b"$",
        b"$a",
        b"$a$",
        b"$\xe9",
        b"/*",
        b"E'\\",
        b"X'",
        b"--",
        b"\x00\xff",
        b"\x95",
        b"'\x95",
        b"\"\x95",
        b"$\x95",
        b"\x81\x30",
        b"set_config(",
        b"set_config('search_path'",
        b"(((",
        b")))",
    ] {
        for encoding in ENCODINGS {
            for standard_conforming_strings in [true, false] {
                let d = Dialect {
                    encoding,
                    standard_conforming_strings,
                };
                let _ = inspect(sql, d);
                let _ = lex(sql, d);
            }
        }
    }
}

mod prefilter {
    use super::super::*;
    use super::ENCODINGS;
    use proptest::prelude::*;

    /// SQL-ish fragments: the pinning and resetting keywords in several cases, inside other
    /// words, quoted, commented, ordinary query text, and bytes from other encodings.
    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(vec![
            &b"SET "[..],
            b"set ",
            b"Reset ",
            b"RESET ALL",
            b"offset ",
            b"PREPARE ",
            b"listen x",
            b"LOAD 'x'",
            b"create temp table t()",
            b"TEMPORARY ",
            b"pg_temp.",
            b"declare c cursor with hold ",
            b"pg_advisory_lock(1)",
            b"set_config('a','b',false)",
            b"set_config('search_path',$1,true)",
            b"DISCARD ALL",
            b"deallocate all",
            b"DO ",
            b"do",
            b"Do$$",
            b"undo ",
            b"document ",
            b"explain analyze ",
            b"SELECT ",
            b"abalance ",
            b"FROM ",
            b"pgbench_accounts ",
            b"WHERE aid = $1",
            b";",
            b"'",
            b"\"",
            b"$$",
            b"$\xe9$",
            b"\x95\x5c",
            b"\xe9",
            b"\\",
            b"--",
            b"\n",
            b"/*",
            b"*/",
            b"(",
            b")",
            b",",
            b"local ",
            b"session ",
            b"time zone ",
            b"into ",
            b"all ",
            b"e'x'",
            b"1.5",
            b"_",
        ])
        .prop_map(<[u8]>::to_vec)
    }

    fn dialect() -> impl Strategy<Value = Dialect> {
        (prop::sample::select(ENCODINGS.to_vec()), any::<bool>()).prop_map(
            |(encoding, standard_conforming_strings)| Dialect {
                encoding,
                standard_conforming_strings,
            },
        )
    }

    proptest! {
        /// The byte pre-filter never changes a verdict: whatever it skips, no reading of the
        /// text (any encoding, either standard_conforming_strings) finds anything; and the
        /// extra readings only ever add a pin.
        #[test]
        fn the_prefilter_never_changes_the_answer(
            parts in prop::collection::vec(fragment(), 0..12),
            d in dialect(),
        ) {
            let sql = parts.concat();
            let tokens = lex(&sql, d);
            if !may_pin_or_reset(&sql) {
                prop_assert_eq!(pin_reason(&sql, &tokens), None);
                prop_assert_eq!(resets(&tokens), vec![]);
                prop_assert_eq!(other_readings_pin(&sql, d), None);
            }
            let (pin, found) = inspect(&sql, d);
            prop_assert_eq!(found, resets(&tokens));
            if let Some(p) = pin_reason(&sql, &tokens) {
                prop_assert_eq!(pin, Some(p));
            }
        }
    }

    /// The pre-filter as first written, a needle compare at every byte: the fast one must
    /// answer as it does.
    fn may_pin_or_reset_by_every_needle_at_every_byte(b: &[u8]) -> bool {
        let ident = |i: Option<usize>| i.and_then(|i| b.get(i)).is_some_and(|&c| ident_cont(c));
        (0..b.len()).any(|i| {
            let at = |n: &[u8]| {
                b.get(i..i + n.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(n))
            };
            NEEDLES.iter().any(|n| at(n))
                || (at(DO) && !ident(i.checked_sub(1)) && !ident(Some(i + DO.len())))
        })
    }

    proptest! {
        /// The two-letter table rejects only bytes that start no needle: on statement-like
        /// text and on arbitrary bytes the pre-filter answers as a compare at every byte does.
        #[test]
        fn the_pair_table_skips_only_what_no_needle_starts(
            parts in prop::collection::vec(fragment(), 0..12),
            noise in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let sql = parts.concat();
            prop_assert_eq!(may_pin_or_reset(&sql), may_pin_or_reset_by_every_needle_at_every_byte(&sql));
            prop_assert_eq!(may_pin_or_reset(&noise), may_pin_or_reset_by_every_needle_at_every_byte(&noise));
            let mixed = [&noise[..], &sql[..]].concat();
            prop_assert_eq!(may_pin_or_reset(&mixed), may_pin_or_reset_by_every_needle_at_every_byte(&mixed));
        }
    }

    #[test]
    fn ordinary_queries_skip_the_lexer_and_keywords_do_not() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "INSERT INTO t VALUES (1)",
            "SELECT document, done, undo, double_it FROM t",
            "BEGIN",
            "COMMIT",
        ] {
            assert!(!may_pin_or_reset(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "UPDATE t SET x = 1",
            "reset all",
            "PREPARE q AS SELECT 1",
            "select pg_advisory_lock(1)",
            "Listen x",
            "SELECT 1 INTO TEMP t",
            "CREATE TABLE pg_temp.x()",
            "DISCARD ALL",
            "DO $$ BEGIN NULL; END $$",
            "do'begin null; end'",
            "x;do $$ $$",
        ] {
            assert!(may_pin_or_reset(sql.as_bytes()), "{sql}");
        }
    }
}

#[test]
fn a_sql_ascii_database_reading_never_hides_a_pin() {
    // A SQL_ASCII database converts nothing, so the server reads SJIS 表's 0x5C as a
    // backslash: E'表' does not end at its quote, and the LISTEN after the comment is real.
    let sql = [b"SELECT E'", SJIS_HYO, b"'; SELECT 1; --'; LISTEN x"].concat();
    assert_eq!(
        pin_reason(&sql, &lex(&sql, sjis())),
        None,
        "read as SJIS, LISTEN is in a comment"
    );
    assert_eq!(scan_sql(&sql, sjis()), Some(Listen));
}

//! Clients in non-UTF-8 encodings (LATIN1, WIN1252, SJIS, EUC_JP, BIG5) are served as
//! PostgreSQL serves them: query text, parameters and results are bytes in the client's
//! encoding, and Tollgate's answers match the server's byte for byte, in both pool modes.
//! Pin detection reads such text right, including SJIS and BIG5 characters whose second byte
//! is an ASCII backslash (表 is 0x95 0x5C).

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use tollgate::pin::PinReason;
use tollgate_e2e::raw::{error_fields, RawConn};
use tollgate_e2e::{Env, EnvOptions, APP_PASSWORD, APP_USER};
use tollgate_wire::backend;
use tollgate_wire::frame::Message;

/// (client_encoding, text to send in it, a non-ASCII letter of it for a dollar-quote tag).
const CASES: [(&str, &str, &str); 5] = [
    ("LATIN1", "café ñandú über", "é"),
    ("WIN1252", "café € “quoted” naïve", "€"),
    ("SJIS", "表 ソ 能 日本語 予定", "表"),
    ("EUC_JP", "日本語 表 カタカナ", "日"),
    ("BIG5", "功 許 中文 蓋", "功"),
];

/// What a client saw for one request, minus what legitimately differs through a pooler
/// (ParameterStatus, notices): every other message's bytes, errors by SQLSTATE.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Msg(char, Vec<u8>),
    Error(String),
}

fn seen(msgs: &[Message]) -> Vec<Seen> {
    msgs.iter()
        .filter_map(|m| match m.tag {
            backend::tag::ERROR_RESPONSE => Some(Seen::Error(
                error_fields(m).map(|f| f.code).unwrap_or_default(),
            )),
            backend::tag::PARAMETER_STATUS | b'N' => None,
            t => Some(Seen::Msg(t as char, m.body.to_vec())),
        })
        .collect()
}

/// The column values of every DataRow in `msgs`, as raw bytes.
fn rows(msgs: &[Message]) -> Vec<Vec<Option<Vec<u8>>>> {
    msgs.iter()
        .filter(|m| m.tag == backend::tag::DATA_ROW)
        .map(|m| {
            let b = &m.body;
            let n = i16::from_be_bytes([b[0], b[1]]) as usize;
            let mut at = 2;
            (0..n)
                .map(|_| {
                    let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                    at += 4;
                    (len >= 0).then(|| {
                        let v = b[at..at + len as usize].to_vec();
                        at += len as usize;
                        v
                    })
                })
                .collect()
        })
        .collect()
}

fn frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn cstr(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(s);
    b.push(0);
}

/// A simple Query with `sql` as raw bytes.
fn query(sql: &[u8]) -> BytesMut {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    let mut out = BytesMut::new();
    frame(&mut out, b'Q', &body);
    out
}

/// Parse `name`/`sql`, Bind one text parameter, Describe, Execute, Sync: one batch.
fn extended(name: &[u8], sql: &[u8], param: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut parse = Vec::new();
    cstr(&mut parse, name);
    cstr(&mut parse, sql);
    parse.extend_from_slice(&0i16.to_be_bytes());
    frame(&mut out, b'P', &parse);
    let mut bind = Vec::new();
    cstr(&mut bind, b"");
    cstr(&mut bind, name);
    bind.extend_from_slice(&0i16.to_be_bytes()); // parameter formats: all text
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&(param.len() as i32).to_be_bytes());
    bind.extend_from_slice(param);
    bind.extend_from_slice(&0i16.to_be_bytes()); // result formats: all text
    frame(&mut out, b'B', &bind);
    frame(&mut out, b'D', b"P\0");
    frame(&mut out, b'E', b"\0\0\0\0\0");
    frame(&mut out, b'S', b"");
    out
}

/// Sends `bytes` and reads up to the ReadyForQuery that ends them.
async fn exchange(c: &mut RawConn, bytes: &[u8]) -> Result<Vec<Message>> {
    c.send(bytes).await?;
    let mut msgs = Vec::new();
    loop {
        let m = c.expect().await?;
        if m.tag == backend::tag::READY_FOR_QUERY {
            return Ok(msgs);
        }
        msgs.push(m);
    }
}

/// The same steps, against PostgreSQL and through Tollgate.
struct Pair {
    direct: RawConn,
    proxied: RawConn,
}

impl Pair {
    async fn open(env: &Env) -> Result<Pair> {
        let pg: SocketAddr = format!("127.0.0.1:{}", env.pg.port()).parse()?;
        let (direct, _) = RawConn::login(pg, APP_USER, APP_PASSWORD).await?;
        let (proxied, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
        Ok(Pair { direct, proxied })
    }

    /// Runs one request on both and checks the answers agree; returns Tollgate's.
    async fn same(&mut self, what: &str, bytes: &[u8]) -> Result<Vec<Message>> {
        let direct = exchange(&mut self.direct, bytes)
            .await
            .with_context(|| format!("{what}: directly"))?;
        let proxied = exchange(&mut self.proxied, bytes)
            .await
            .with_context(|| format!("{what}: through Tollgate"))?;
        ensure!(
            seen(&direct) == seen(&proxied),
            "{what}: PostgreSQL answered {:?}, Tollgate {:?}",
            seen(&direct),
            seen(&proxied)
        );
        ensure!(
            !proxied
                .iter()
                .any(|m| m.tag == backend::tag::ERROR_RESPONSE),
            "{what}: error {:?}",
            seen(&proxied)
        );
        Ok(proxied)
    }
}

/// `text` in `encoding`, as PostgreSQL converts it.
async fn encoded(env: &Env, text: &str, encoding: &str) -> Result<Vec<u8>> {
    let admin = env.connect_direct_superuser().await?;
    let row = admin
        .query_one("SELECT convert_to($1::text, $2::name)", &[&text, &encoding])
        .await?;
    Ok(row.get(0))
}

fn sql(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Every case, both protocols: rows come back byte-identical to PostgreSQL's and equal to
/// what was sent. In transaction mode, a pinning statement after a string holding such text
/// still pins, and one inside the string does not.
async fn encodings_round_trip(mode: &'static str) -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_mode: mode,
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let admin = env.connect_direct_superuser().await?;
    let server_encoding: String = admin
        .query_one(
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'app'",
            &[],
        )
        .await?
        .get(0);
    ensure!(
        server_encoding == "UTF8",
        "the app database is {server_encoding}"
    );
    let pins = || env.shared.stats.pins_for(PinReason::SessionSet);
    for (encoding, text, tag) in CASES {
        let t = encoded(&env, text, encoding).await?;
        let tag = encoded(&env, tag, encoding).await?;
        ensure!(t.iter().any(|&b| b >= 0x80), "{encoding}: {t:?} is ASCII");
        if encoding == "SJIS" || encoding == "BIG5" {
            ensure!(t.contains(&b'\\'), "{encoding}: no 0x5C second byte");
        }
        let mut p = Pair::open(&env).await?;
        let set = format!("SET client_encoding = '{encoding}'");
        p.same(&set, &query(set.as_bytes())).await?;

        // Simple query: plain, escape and dollar-quoted (non-ASCII tag) strings.
        let q = sql(&[
            b"SELECT '",
            &t,
            b"' AS a, E'",
            &t,
            b"' AS b, $",
            &tag,
            b"$",
            &t,
            b"$",
            &tag,
            b"$ AS c, length('",
            &t,
            b"')",
        ]);
        let got = p
            .same(&format!("{encoding} simple query"), &query(&q))
            .await?;
        let r = rows(&got);
        ensure!(
            r.first().and_then(|row| row.first()) == Some(&Some(t.clone())),
            "{encoding}: got {r:?}"
        );
        ensure!(r[0][1] == Some(t.clone()) && r[0][2] == Some(t.clone()));

        // Extended protocol: text and a parameter in the encoding, unnamed statement.
        let parse_sql = sql(&[
            b"SELECT '",
            &t,
            b"' AS a, $1::text AS p, $1::text = '",
            &t,
            b"'",
        ]);
        let got = p
            .same(
                &format!("{encoding} extended query"),
                &extended(b"", &parse_sql, &t),
            )
            .await?;
        let r = rows(&got);
        ensure!(
            r == vec![vec![Some(t.clone()), Some(t.clone()), Some(b"t".to_vec())]],
            "{encoding}: got {r:?}"
        );

        // A SET after a string of such text still pins (transaction mode counts pins).
        let before = pins();
        let q = sql(&[b"SELECT '", &t, b"' ; SET work_mem = '5MB'"]);
        p.same(&format!("{encoding} string then SET"), &query(&q))
            .await?;
        let got = p.same("SHOW work_mem", &query(b"SHOW work_mem")).await?;
        ensure!(rows(&got) == vec![vec![Some(b"5MB".to_vec())]]);
        if mode == "transaction" {
            ensure!(
                pins() == before + 1,
                "{encoding}: SET after text did not pin"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_client_encodings_round_trip_in_transaction_mode() -> Result<()> {
    encodings_round_trip("transaction").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_client_encodings_round_trip_in_session_mode() -> Result<()> {
    encodings_round_trip("session").await
}

/// 表 (SJIS 0x95 0x5C) next to quotes: E'表' ends at its quote, '表'' ...' does not, and
/// with standard_conforming_strings off '表' still ends at its quote: the server converts to
/// UTF-8 before it lexes, so the 0x5C is never a backslash. Tollgate pins exactly when a SET
/// really runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sjis_backslash_second_bytes_neither_hide_nor_invent_a_pin() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_mode: "transaction",
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let hyo = encoded(&env, "表", "SJIS").await?;
    ensure!(hyo == b"\x95\x5c");
    let pins = || env.shared.stats.pins_for(PinReason::SessionSet);
    let sjis = query(b"SET client_encoding = 'SJIS'");
    // (text, whether a SET runs and so pins)
    let cases: [(Vec<u8>, bool, bool); 5] = [
        (
            sql(&[b"SELECT E'", &hyo, b"' ; SET work_mem = '5MB'"]),
            true,
            true,
        ),
        (
            sql(&[b"SELECT '", &hyo, b"'' ; SET work_mem = ''5MB'''"]),
            false,
            true,
        ),
        (
            sql(&[b"SELECT '", &hyo, b"''' ; SET work_mem = '5MB'"]),
            true,
            true,
        ),
        (
            sql(&[
                b"SELECT $",
                &hyo,
                b"$ it's $",
                &hyo,
                b"$; SET work_mem = '5MB'",
            ]),
            true,
            true,
        ),
        // standard_conforming_strings off: the quote after 表 still ends the string.
        (
            sql(&[b"SELECT '", &hyo, b"'; SET work_mem = '5MB'"]),
            true,
            false,
        ),
    ];
    for (q, pins_expected, scs_on) in cases {
        let what = String::from_utf8_lossy(&q).into_owned();
        let mut p = Pair::open(&env).await?;
        p.same("SET client_encoding", &sjis).await?;
        if !scs_on {
            let off = query(b"SET standard_conforming_strings = off");
            p.same("SET standard_conforming_strings", &off).await?;
        }
        let before = pins();
        p.same(&what, &query(&q)).await?;
        let got = p.same("SHOW work_mem", &query(b"SHOW work_mem")).await?;
        let expected: &[u8] = if pins_expected { b"5MB" } else { b"4MB" };
        ensure!(
            rows(&got) == vec![vec![Some(expected.to_vec())]],
            "{what}: work_mem {:?}",
            rows(&got)
        );
        ensure!(
            pins() == before + u64::from(pins_expected),
            "{what}: pinned {} times, expected {}",
            pins() - before,
            u64::from(pins_expected)
        );
    }
    Ok(())
}

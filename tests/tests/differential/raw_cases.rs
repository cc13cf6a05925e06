//! Raw protocol messages, for what no driver sends: Parse/Bind/Execute/Flush (results before
//! any Sync), an error after a Flush, then Sync.

use crate::runner::{Case, Endpoint, Log};
use crate::{all, targets};
use anyhow::{bail, Result};
use tollgate_e2e::raw::{error_fields, RawConn};
use tollgate_wire::backend::tag;
use tollgate_wire::frame::Message;

/// One frontend message: tag, length, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0u16.to_be_bytes());
    frame(b'P', &b)
}

fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as u32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0u16.to_be_bytes());
    frame(b'B', &b)
}

fn execute() -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    b.extend_from_slice(&0u32.to_be_bytes());
    frame(b'E', &b)
}

fn flush() -> Vec<u8> {
    frame(b'H', &[])
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// A message as a transcript line (ParameterStatus and notices included: they are part of
/// what the client sees).
fn describe(m: &Message) -> Result<String> {
    let body = &m.body;
    Ok(match m.tag {
        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
            let f = error_fields(m)?;
            format!("{} {} {} {}", m.tag as char, f.severity, f.code, f.message)
        }
        tag::DATA_ROW => format!("D {}", String::from_utf8_lossy(&body[2..])),
        tag::COMMAND_COMPLETE | tag::PARAMETER_STATUS => {
            format!(
                "{} {}",
                m.tag as char,
                String::from_utf8_lossy(body).replace('\0', " ")
            )
        }
        tag::READY_FOR_QUERY => format!("Z {}", String::from_utf8_lossy(body)),
        t => format!("{}", t as char),
    })
}

/// Reads and logs messages until one with tag `until` (inclusive).
async fn read_until(c: &mut RawConn, log: &Log, who: &str, step: &str, until: u8) -> Result<()> {
    loop {
        let m = c.expect().await?;
        log.emit(&[
            ("who", who.into()),
            ("step", step.into()),
            ("msg", describe(&m)?),
        ]);
        if m.tag == until {
            return Ok(());
        }
    }
}

async fn login(ep: &Endpoint) -> Result<RawConn> {
    let mut c = RawConn::connect(ep.addr).await?;
    c.startup(ep.user, &ep.db).await?;
    c.authenticate(ep.user, ep.password).await?;
    c.until_ready().await?;
    Ok(c)
}

async fn flush_without_sync(ep: Endpoint, log: Log) -> Result<()> {
    let mut a = login(&ep).await?;
    // Results must arrive on Flush, before any Sync.
    a.send(
        &[
            parse("", "SELECT $1::int + 1"),
            bind("", &["41"]),
            execute(),
            flush(),
        ]
        .concat(),
    )
    .await?;
    read_until(&mut a, &log, "a", "flush", tag::COMMAND_COMPLETE).await?;
    // Still inside the implicit transaction: a second batch, then Sync.
    a.send(&[bind("", &["1"]), execute(), flush()].concat())
        .await?;
    read_until(&mut a, &log, "a", "second flush", tag::COMMAND_COMPLETE).await?;
    a.send(&sync()).await?;
    read_until(&mut a, &log, "a", "sync", tag::READY_FOR_QUERY).await?;
    // An error after a Flush: the rest up to Sync is skipped.
    a.send(
        &[
            parse("", "SELECT 1 / $1::int"),
            bind("", &["0"]),
            execute(),
            flush(),
        ]
        .concat(),
    )
    .await?;
    read_until(&mut a, &log, "a", "error on flush", tag::ERROR_RESPONSE).await?;
    a.send(
        &[
            parse("", "SELECT 'skipped'"),
            bind("", &[]),
            execute(),
            flush(),
        ]
        .concat(),
    )
    .await?;
    a.send(&sync()).await?;
    read_until(&mut a, &log, "a", "sync after error", tag::READY_FOR_QUERY).await?;
    // Named statement, Flush, then a simple Query before Sync (the server answers both).
    a.send(&[parse("s1", "SELECT 'named'"), flush()].concat())
        .await?;
    read_until(&mut a, &log, "a", "parse flush", tag::PARSE_COMPLETE).await?;
    a.send(&[bind("s1", &[]), execute(), sync()].concat())
        .await?;
    read_until(&mut a, &log, "a", "named", tag::READY_FOR_QUERY).await?;
    let (msgs, status) = a.query("SELECT 'simple after'").await?;
    for m in &msgs {
        log.emit(&[
            ("who", "a".into()),
            ("step", "simple".into()),
            ("msg", describe(m)?),
        ]);
    }
    log.emit(&[
        ("who", "a".into()),
        ("step", "simple".into()),
        ("status", format!("{status:?}")),
    ]);
    let a = if ep.together {
        Some(a)
    } else {
        drop(a);
        None
    };
    // pool_size 1: the backend must be free again.
    let mut b = login(&ep).await?;
    let (msgs, _) = b.query("SELECT 'b got the backend'").await?;
    for m in &msgs {
        log.emit(&[
            ("who", "b".into()),
            ("step", "second client".into()),
            ("msg", describe(m)?),
        ]);
    }
    drop(a);
    if msgs.is_empty() {
        bail!("no answer for the second client");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_flush_without_sync_matches_postgres() {
    let t = targets().await;
    all(vec![
        t.check_in_process(
            Case::new("raw Parse/Bind/Execute/Flush, results before Sync").two_clients(),
            flush_without_sync,
        )
        .await,
    ])
    .await;
}

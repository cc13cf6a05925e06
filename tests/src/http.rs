//! Talking to Tollgate's admin HTTP listener the plain way (raw TCP), and reading single
//! samples out of a `/metrics` page. Written apart from Tollgate's own client and parser so
//! the tests check the server against an independent reader.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is and returns everything the server answered until it closed.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<String> {
    let talk = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request).await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8(raw)?)
    };
    tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .context("the admin listener did not answer within 10 s")?
}

/// Splits a whole response into (status, head, body).
pub fn split(response: &str) -> Result<(u16, &str, &str)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of response head")?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .context("no HTTP/1.1 status line")?
        .parse()?;
    Ok((status, head, body))
}

/// `GET path`: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let response = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: tollgate\r\n\r\n").as_bytes(),
    )
    .await?;
    let (status, _, body) = split(&response)?;
    Ok((status, body.to_string()))
}

/// The value of the one line of `page` that starts with `series` (the name and labels exactly
/// as Tollgate writes them, e.g. `tollgate_pool_queries_total{user="app",database="app"}`).
pub fn sample(page: &str, series: &str) -> Result<f64> {
    let mut found = page.lines().filter_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
    });
    let Some(value) = found.next() else {
        bail!("no sample {series} in /metrics:\n{page}");
    };
    if found.next().is_some() {
        bail!("{series} appears twice in /metrics");
    }
    Ok(value.trim().parse()?)
}

/// The series name for a per-pool metric of the app user's pool.
pub fn app_pool(name: &str) -> String {
    format!("{name}{{user=\"{}\",database=\"app\"}}", crate::APP_USER)
}

//! `tollgate status`: asks a running Tollgate for `/metrics` on its admin listener and prints
//! a one-screen summary. The fetch is plain TCP and HTTP/1.1 (this module); reading the text
//! format ([`exposition`]) and laying out the screen ([`report`]) are pure.

pub mod exposition;
pub mod report;

use crate::config::RawConfig;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The admin listener asked when nothing else says (config's default `admin_listen`).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9930";
/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the whole answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (500 pools export about 2 MB).
const MAX_RESPONSE: u64 = 64 << 20;

/// Options of the status command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatusArgs {
    /// The admin listener to ask [default: admin_listen from the settings, else 127.0.0.1:9930].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
}

/// Why no status could be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The address to ask is not usable.
    #[error("{0}")]
    Address(String),
    /// Nothing answers there.
    #[error("cannot reach Tollgate's admin listener at {addr}: {error}; is Tollgate running with admin_listen = \"{addr}\"? (--admin ADDR asks another address)")]
    Unreachable {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// Something answers, too slowly.
    #[error("Tollgate's admin listener at {addr} did not answer within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
    /// The answer is not HTTP.
    #[error("{addr} did not answer like Tollgate's admin listener: {why}")]
    NotHttp { addr: SocketAddr, why: &'static str },
    /// HTTP, but not 200.
    #[error("{addr} answered HTTP {status} for /metrics: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    /// 200, but not the text format.
    #[error("cannot read the metrics from {addr}: {error}")]
    Parse {
        addr: SocketAddr,
        error: exposition::ParseError,
    },
}

/// The admin listener to ask: `--admin`, else `admin_listen` from flags and environment, else
/// from the config file, else [`DEFAULT_ADMIN`]. An unspecified IP (`0.0.0.0`) means this host.
pub fn admin_addr(
    flag: Option<&str>,
    settings: &RawConfig,
    file: Option<&Path>,
) -> Result<SocketAddr, StatusError> {
    let from_file = match (flag, &settings.admin_listen, file) {
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StatusError::Address(format!("cannot read config file {}: {e}", path.display()))
            })?;
            RawConfig::from_toml(&text)
                .map_err(|e| StatusError::Address(format!("config file {}: {e}", path.display())))?
                .admin_listen
        }
        _ => None,
    };
    let text = flag
        .map(str::to_string)
        .or_else(|| settings.admin_listen.clone())
        .or(from_file)
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    if text == "off" || text.is_empty() {
        return Err(StatusError::Address(
            "admin_listen is off in the settings, so there is nothing to ask; pass --admin ADDR"
                .into(),
        ));
    }
    let mut addr: SocketAddr = text
        .parse()
        .map_err(|_| StatusError::Address(format!("{text:?} is not an IP:port address")))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `GET path` from the admin listener at `addr`: the status code and body.
pub async fn fetch(addr: SocketAddr, path: &str) -> Result<(u16, String), StatusError> {
    let mut tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return Err(StatusError::Unreachable { addr, error }),
        Err(_) => {
            return Err(StatusError::Timeout {
                addr,
                secs: CONNECT_TIMEOUT.as_secs(),
            })
        }
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    let exchange = async {
        tcp.write_all(request.as_bytes()).await?;
        (&mut tcp).take(MAX_RESPONSE).read_to_end(&mut raw).await
    };
    match tokio::time::timeout(READ_TIMEOUT, exchange).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(StatusError::Unreachable { addr, error }),
        Err(_) => {
            return Err(StatusError::Timeout {
                addr,
                secs: READ_TIMEOUT.as_secs(),
            })
        }
    }
    parse_response(&raw).map_err(|why| StatusError::NotHttp { addr, why })
}

/// Splits an HTTP/1.x response into status code and body.
fn parse_response(raw: &[u8]) -> Result<(u16, String), &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the response head")?;
    let head = std::str::from_utf8(raw.get(..end).unwrap_or_default())
        .map_err(|_| "the response head is not text")?;
    let mut status_line = head.lines().next().unwrap_or_default().split(' ');
    let (Some(version), Some(code)) = (status_line.next(), status_line.next()) else {
        return Err("no status line");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("not HTTP/1.x");
    }
    let code = code.parse::<u16>().map_err(|_| "no status code")?;
    let body = raw.get(end + 4..).unwrap_or_default();
    Ok((code, String::from_utf8_lossy(body).into_owned()))
}

/// The whole command: fetch `/metrics` and lay it out.
pub async fn run(
    args: StatusArgs,
    settings: RawConfig,
    file: Option<&Path>,
) -> Result<String, StatusError> {
    let addr = admin_addr(args.admin.as_deref(), &settings, file)?;
    let (status, body) = fetch(addr, "/metrics").await?;
    if status != 200 {
        return Err(StatusError::Status {
            addr,
            status,
            body: body.trim().to_string(),
        });
    }
    let samples = exposition::parse(&body).map_err(|error| StatusError::Parse { addr, error })?;
    Ok(report::format(
        &report::Report::from_samples(&samples),
        &addr.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_flag_then_settings_then_file_then_default() {
        let none = RawConfig::default();
        assert_eq!(
            admin_addr(None, &none, None).unwrap().to_string(),
            DEFAULT_ADMIN
        );
        let set = RawConfig {
            admin_listen: Some("0.0.0.0:9999".into()),
            ..Default::default()
        };
        assert_eq!(
            admin_addr(None, &set, None).unwrap().to_string(),
            "127.0.0.1:9999"
        );
        assert_eq!(
            admin_addr(Some("[::]:1"), &set, None).unwrap().to_string(),
            "[::1]:1"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "admin_listen = \"127.0.0.2:7\"\n").unwrap();
        assert_eq!(
            admin_addr(None, &none, Some(&file)).unwrap().to_string(),
            "127.0.0.2:7"
        );
        let off = RawConfig {
            admin_listen: Some("off".into()),
            ..Default::default()
        };
        assert!(admin_addr(None, &off, None)
            .unwrap_err()
            .to_string()
            .contains("--admin"));
        assert!(admin_addr(Some("localhost"), &none, None).is_err());
    }

    #[test]
    fn responses_split_into_status_and_body() {
        assert_eq!(
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nnot ready\n"),
            Ok((503, "not ready\n".to_string()))
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"FOO 200 OK\r\n\r\n").is_err());
    }
}

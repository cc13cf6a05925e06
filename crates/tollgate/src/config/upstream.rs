//! The `--upstream` URL: where the database is and how to reach it over TLS.
//! Shape follows libpq's connection URIs ("Connection Strings" in the PostgreSQL docs):
//! `postgres://host[:port][/database][?sslmode=...&sslrootcert=...]`.

use std::path::PathBuf;

/// How the proxy protects its connections to the database, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without checking the certificate.
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS always; the certificate must chain to the CA bundle.
    VerifyCa,
    /// TLS always; chain to the CA bundle and the host name must match.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" | "allow" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// libpq's spelling, for logs and SHOW CONFIG.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether this mode checks the server's certificate against a CA bundle.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// A validated upstream target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database to log in to instead of the client's; `None` passes the client's through.
    pub database: Option<String>,
    /// TLS mode for backend connections.
    pub sslmode: SslMode,
    /// CA bundle (PEM) for verify-ca / verify-full; Aurora's global RDS bundle in production.
    pub sslrootcert: Option<PathBuf>,
}

/// Parses and validates an upstream URL, returning a message that says what is wrong.
pub fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{url:?} must start with postgres:// or postgresql://"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, p),
        None => (before_query, ""),
    };
    if authority.contains('@') {
        return Err("the upstream URL must not carry a user or password; Tollgate logs in with each client's own user and the auth file's credentials".into());
    }
    let (host, port) = split_host_port(authority)?;
    let database = match percent_decode(path)? {
        d if d.is_empty() => None,
        d => Some(d),
    };
    let mut sslmode = SslMode::Prefer;
    let mut sslrootcert = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "sslmode" => {
                sslmode = SslMode::parse(&v).ok_or_else(|| {
                    format!(
                    "sslmode={v:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )
                })?
            }
            "sslrootcert" => sslrootcert = Some(PathBuf::from(v)),
            other => {
                return Err(format!(
                    "unknown upstream URL parameter {other:?} (supported: sslmode, sslrootcert)"
                ))
            }
        }
    }
    if sslmode.verifies() && sslrootcert.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert=PATH naming the CA bundle (for Aurora, the RDS global bundle)",
            sslmode.as_str()
        ));
    }
    Ok(Upstream {
        host,
        port,
        database,
        sslmode,
        sslrootcert,
    })
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("the upstream URL names no host".into());
    }
    // [v6addr]:port
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or("unclosed [ in upstream host")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if tail.is_empty() => 5432,
            None => return Err(format!("unexpected {tail:?} after the upstream host")),
        };
        return Ok((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), parse_port(p)?)),
        None => Ok((authority.to_string(), 5432)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("upstream port {p:?} is not a number between 1 and 65535"))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = parse_upstream(
            "postgres://db.example.com:5433/app?sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem",
        )
        .unwrap();
        assert_eq!(u.host, "db.example.com");
        assert_eq!(u.port, 5433);
        assert_eq!(u.database.as_deref(), Some("app"));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.sslrootcert, Some(PathBuf::from("/etc/rds.pem")));
    }

    #[test]
    fn defaults_port_and_prefer() {
        let u = parse_upstream("postgresql://localhost").unwrap();
        assert_eq!(
            (u.port, u.sslmode, u.database),
            (5432, SslMode::Prefer, None)
        );
        let u = parse_upstream("postgres://[::1]:6000/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 6000));
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        assert!(parse_upstream("mysql://x")
            .unwrap_err()
            .contains("postgres://"));
        assert!(parse_upstream("postgres://h:0")
            .unwrap_err()
            .contains("port"));
        assert!(parse_upstream("postgres://h?sslmode=bogus")
            .unwrap_err()
            .contains("sslmode"));
        assert!(parse_upstream("postgres://h?sslmode=verify-ca")
            .unwrap_err()
            .contains("sslrootcert"));
        assert!(parse_upstream("postgres://u:p@h")
            .unwrap_err()
            .contains("password"));
        assert!(parse_upstream("postgres://h?x=1")
            .unwrap_err()
            .contains("unknown"));
    }
}

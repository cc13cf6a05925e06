//! The settings that say where the database's instances are and how Tollgate watches them:
//! `instance`, `health_check_*`, and the read-only endpoint (`reader_listen`,
//! `reader_fallback`, `max_replica_lag`), validated into [`TopologyConfig`].

use super::{invalid, ConfigError, RawConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// What the reader endpoint does when no reader is up (RDS Proxy's READ_ONLY endpoint has
/// only readers; the choice is Tollgate's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderFallback {
    /// Serve reads from the writer (sessions there are still read-only by default).
    Writer,
    /// Queue the borrow until a reader is up, up to connection_borrow_timeout.
    Wait,
    /// Fail the request at once.
    Error,
}

impl ReaderFallback {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderFallback::Writer => "writer",
            ReaderFallback::Wait => "wait",
            ReaderFallback::Error => "error",
        }
    }
}

/// One instance's address as configured (`HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceAddr {
    /// Host name or IP address (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for InstanceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The validated topology settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyConfig {
    /// The cluster's instances (plain PostgreSQL); empty: the upstream alone, or Aurora's
    /// instances discovered through it.
    pub instances: Vec<InstanceAddr>,
    /// How often each instance is checked (faster while a failover is under way).
    pub health_check_interval: Duration,
    /// The user Tollgate's health checks log in as; `None`: no control-path checks (the
    /// upstream's state then comes from the data path's own connection attempts).
    pub health_check_user: Option<String>,
    /// The database the health checks log in to.
    pub health_check_database: String,
    /// The read-only endpoint's listen address.
    pub reader_listen: Option<SocketAddr>,
    /// What the read-only endpoint does with no reader up.
    pub reader_fallback: ReaderFallback,
    /// Readers further behind the writer than this leave the reader set (`None`: no bound).
    pub max_replica_lag: Option<Duration>,
}

/// Parses `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
pub fn parse_instance(s: &str) -> Result<InstanceAddr, String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?} is not [IPV6]:PORT"))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?
    };
    if host.is_empty() || host.contains(['/', '@', ' ', ',']) {
        return Err(format!("{s:?} does not name a host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?}: {port:?} is not a TCP port"))?;
    Ok(InstanceAddr {
        host: host.to_string(),
        port,
    })
}

impl TopologyConfig {
    /// Validates the topology settings; `upstream_db` is the upstream URL's database.
    pub fn validate(raw: &RawConfig, upstream_db: Option<&str>) -> Result<Self, ConfigError> {
        let mut instances = Vec::new();
        for s in raw.instance.iter().flatten() {
            if s.trim().is_empty() {
                continue;
            }
            let a = parse_instance(s).map_err(|why| invalid("instance", why))?;
            if instances.contains(&a) {
                return Err(invalid("instance", format!("{a} is listed twice")));
            }
            instances.push(a);
        }
        let interval = raw.health_check_interval.unwrap_or(1.0);
        if !(0.05..=300.0).contains(&interval) {
            return Err(invalid(
                "health_check_interval",
                format!("{interval} s is not between 0.05 and 300 seconds"),
            ));
        }
        let health_check_user = raw
            .health_check_user
            .as_ref()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty());
        let reader_listen = match raw.reader_listen.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "reader_listen",
                    format!("{a:?} is not an IP:port address (or \"off\")"),
                )
            })?),
        };
        let reader_fallback = match raw.reader_fallback.as_deref().unwrap_or("wait") {
            "writer" => ReaderFallback::Writer,
            "wait" => ReaderFallback::Wait,
            "error" => ReaderFallback::Error,
            other => {
                return Err(invalid(
                    "reader_fallback",
                    format!("{other:?} is not writer, wait or error"),
                ))
            }
        };
        // 0 means no bound.
        let max_replica_lag = match raw.max_replica_lag.filter(|s| *s != 0.0) {
            None => None,
            Some(s) if (0.0..=86_400.0).contains(&s) => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(invalid(
                    "max_replica_lag",
                    format!("{s} s is not between 0 (no bound) and 86400 seconds"),
                ))
            }
        };
        if health_check_user.is_none() {
            let needs = if !instances.is_empty() {
                Some("instance")
            } else if reader_listen.is_some() {
                Some("reader_listen")
            } else {
                None
            };
            if let Some(key) = needs {
                return Err(invalid(
                    "health_check_user",
                    format!("is required with {key}: Tollgate logs in to each instance to learn its role (pg_is_in_recovery()); name a user whose plaintext password is in the auth file, or one Tollgate logs in as with backend_iam"),
                ));
            }
        }
        if max_replica_lag.is_some() && reader_listen.is_none() {
            return Err(invalid(
                "max_replica_lag",
                "bounds the readers behind reader_listen; set reader_listen too",
            ));
        }
        Ok(TopologyConfig {
            instances,
            health_check_interval: Duration::from_secs_f64(interval),
            health_check_user,
            health_check_database: raw
                .health_check_database
                .clone()
                .or_else(|| upstream_db.map(str::to_string))
                .unwrap_or_else(|| "postgres".into()),
            reader_listen,
            reader_fallback,
            max_replica_lag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        RawConfig {
            upstream: Some("postgres://127.0.0.1:5432".into()),
            auth_file: Some("users.txt".into()),
            ..Default::default()
        }
    }

    #[test]
    fn instances_parse_as_host_port_and_defaults_follow_the_issue() {
        let r = RawConfig {
            instance: Some(vec!["a.example:5432".into(), "[::1]:5433".into()]),
            health_check_user: Some("tollgate".into()),
            ..raw()
        };
        let t = TopologyConfig::validate(&r, None).unwrap();
        assert_eq!(t.instances.len(), 2);
        assert_eq!(t.instances[1].host, "::1");
        assert_eq!(t.instances[1].to_string(), "[::1]:5433");
        assert_eq!(t.health_check_interval, Duration::from_secs(1));
        assert_eq!(t.reader_fallback, ReaderFallback::Wait);
        assert_eq!(t.health_check_database, "postgres");
    }

    #[test]
    fn instances_without_a_health_check_user_are_refused_with_what_to_do() {
        let r = RawConfig {
            instance: Some(vec!["a:1".into()]),
            ..raw()
        };
        let e = TopologyConfig::validate(&r, None).unwrap_err().to_string();
        assert!(
            e.contains("health_check_user") && e.contains("pg_is_in_recovery"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (r, key) in [
            (
                RawConfig {
                    instance: Some(vec!["nohost".into()]),
                    ..raw()
                },
                "instance",
            ),
            (
                RawConfig {
                    instance: Some(vec!["h:0".into()]),
                    ..raw()
                },
                "instance",
            ),
            (
                RawConfig {
                    health_check_interval: Some(0.0),
                    ..raw()
                },
                "health_check_interval",
            ),
            (
                RawConfig {
                    reader_fallback: Some("primary".into()),
                    ..raw()
                },
                "reader_fallback",
            ),
            (
                RawConfig {
                    reader_listen: Some("x".into()),
                    ..raw()
                },
                "reader_listen",
            ),
            (
                RawConfig {
                    max_replica_lag: Some(5.0),
                    ..raw()
                },
                "max_replica_lag",
            ),
        ] {
            let e = TopologyConfig::validate(&r, None).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }
}

//! What `tollgate status` prints: the `/metrics` samples gathered into a [`Report`] and laid
//! out on one screen. Pure, so the layout is tested without a running proxy.

use super::exposition::Sample;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Pools listed; the rest are summed up in one line.
pub const MAX_ROWS: usize = 20;

/// The numbers a person looks at first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Tollgate's version (`tollgate_build_info`).
    pub version: Option<String>,
    /// Clients logged in now.
    pub clients: f64,
    /// Database connections open.
    pub db_open: f64,
    /// The cap on them, once known.
    pub db_max: Option<f64>,
    /// Lent to clients now.
    pub borrowed: f64,
    /// Lent and inside a transaction now.
    pub in_transaction: f64,
    /// Clients pinned now.
    pub pinned: f64,
    /// Pins since start, by reason (non-zero only).
    pub pins: Vec<(String, f64)>,
    /// Refused clients since start, by reason (non-zero only).
    pub refused: Vec<(String, f64)>,
    /// Database targets and whether each answered the last attempt.
    pub targets: Vec<(String, bool)>,
    /// Pools that exist (some may not be exported).
    pub pool_count: f64,
    /// Exported pools.
    pub pools: Vec<PoolRow>,
}

/// One pool's line. Latencies in seconds (NaN: nothing recorded yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolRow {
    /// User.
    pub user: String,
    /// Database.
    pub database: String,
    /// Clients logged in.
    pub clients: f64,
    /// Clients waiting for a connection.
    pub waiting: f64,
    /// Connections lent out.
    pub borrowed: f64,
    /// Connections open.
    pub open: f64,
    /// pool_size.
    pub size: f64,
    /// Lent connections inside a transaction.
    pub in_transaction: f64,
    /// Pinned clients.
    pub pinned: f64,
    /// Query response latency, median.
    pub query_p50: f64,
    /// Query response latency, 99th percentile.
    pub query_p99: f64,
    /// Database response latency, median.
    pub db_p50: f64,
    /// Database response latency, 99th percentile.
    pub db_p99: f64,
    /// Borrow wait, 99th percentile.
    pub borrow_p99: f64,
}

impl Report {
    /// Gathers the samples Tollgate exports; others are ignored.
    pub fn from_samples(samples: &[Sample]) -> Report {
        let mut r = Report::default();
        let mut pools: BTreeMap<(String, String), PoolRow> = BTreeMap::new();
        for s in samples {
            let v = s.value;
            match s.name.as_str() {
                "tollgate_build_info" => r.version = s.label("version").map(str::to_string),
                "tollgate_client_connections" => r.clients = v,
                "tollgate_database_connections" => r.db_open = v,
                "tollgate_database_connections_max" => r.db_max = Some(v),
                "tollgate_database_connections_borrowed" => r.borrowed = v,
                "tollgate_database_connections_in_transaction" => r.in_transaction = v,
                "tollgate_database_connections_session_pinned" => r.pinned = v,
                "tollgate_pools" => r.pool_count = v,
                "tollgate_session_pins_total" if v > 0.0 => r
                    .pins
                    .push((s.label("reason").unwrap_or("?").to_string(), v)),
                "tollgate_client_connections_setup_failed_total" if v > 0.0 => r
                    .refused
                    .push((s.label("reason").unwrap_or("?").to_string(), v)),
                "tollgate_target_available" => r
                    .targets
                    .push((s.label("target").unwrap_or("?").to_string(), v > 0.0)),
                name if name.starts_with("tollgate_pool_") => {
                    let (Some(user), Some(database)) = (s.label("user"), s.label("database"))
                    else {
                        continue;
                    };
                    let row = pools
                        .entry((database.to_string(), user.to_string()))
                        .or_insert_with(|| PoolRow {
                            user: user.to_string(),
                            database: database.to_string(),
                            ..PoolRow::default()
                        });
                    pool_sample(row, name, s.label("quantile"), v);
                }
                _ => {}
            }
        }
        r.pools = pools.into_values().collect();
        r
    }
}

fn pool_sample(row: &mut PoolRow, name: &str, quantile: Option<&str>, v: f64) {
    let field = match (name, quantile) {
        ("tollgate_pool_client_connections", None) => &mut row.clients,
        ("tollgate_pool_clients_waiting", None) => &mut row.waiting,
        ("tollgate_pool_database_connections_borrowed", None) => &mut row.borrowed,
        ("tollgate_pool_database_connections", None) => &mut row.open,
        ("tollgate_pool_size", None) => &mut row.size,
        ("tollgate_pool_database_connections_in_transaction", None) => &mut row.in_transaction,
        ("tollgate_pool_database_connections_session_pinned", None) => &mut row.pinned,
        ("tollgate_pool_query_response_latency_seconds", Some("0.5")) => &mut row.query_p50,
        ("tollgate_pool_query_response_latency_seconds", Some("0.99")) => &mut row.query_p99,
        ("tollgate_pool_query_database_response_latency_seconds", Some("0.5")) => &mut row.db_p50,
        ("tollgate_pool_query_database_response_latency_seconds", Some("0.99")) => &mut row.db_p99,
        ("tollgate_pool_borrow_latency_seconds", Some("0.99")) => &mut row.borrow_p99,
        _ => return,
    };
    *field = v;
}

/// `part / whole` as a percentage, when `whole` is known and positive.
fn percent(part: f64, whole: Option<f64>) -> String {
    match whole {
        Some(w) if w > 0.0 => format!("{:.0}%", 100.0 * part / w),
        _ => "-".into(),
    }
}

/// A latency in seconds, in the unit that reads best.
pub fn latency(secs: f64) -> String {
    if !secs.is_finite() {
        "-".into()
    } else if secs < 0.001 {
        format!("{:.0}us", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else {
        format!("{secs:.2}s")
    }
}

fn reasons(list: &[(String, f64)]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lays the report out for a terminal; `source` says where it came from.
pub fn format(r: &Report, source: &str) -> String {
    let mut out = String::new();
    let version = r.version.as_deref().unwrap_or("?");
    let _ = writeln!(out, "Tollgate {version} at {source}");
    for (target, up) in &r.targets {
        let state = if *up {
            "available"
        } else {
            "UNAVAILABLE (the last connection attempt failed)"
        };
        let _ = writeln!(out, "database {target}: {state}");
    }
    let ratio = if r.db_open > 0.0 {
        format!("{:.1}", r.clients / r.db_open)
    } else {
        "-".into()
    };
    let _ = writeln!(
        out,
        "clients {:.0} on {:.0} database connections: multiplexing ratio {ratio}",
        r.clients, r.db_open
    );
    let max = r.db_max.map_or("unknown yet".into(), |m| format!("{m:.0}"));
    let _ = writeln!(
        out,
        "database connections: {:.0} borrowed of {max} allowed (utilisation {}), {:.0} in transaction, {:.0} pinned",
        r.borrowed,
        percent(r.borrowed, r.db_max),
        r.in_transaction,
        r.pinned
    );
    let _ = writeln!(out, "pins since start: {}", reasons(&r.pins));
    let _ = writeln!(out, "refused clients since start: {}", reasons(&r.refused));
    out.push('\n');
    if r.pools.is_empty() {
        out.push_str("no pools yet: no client has logged in\n");
        return out;
    }
    let mut rows: Vec<&PoolRow> = r.pools.iter().collect();
    rows.sort_by(|a, b| {
        b.clients
            .total_cmp(&a.clients)
            .then_with(|| (&a.user, &a.database).cmp(&(&b.user, &b.database)))
    });
    let names: Vec<String> = rows
        .iter()
        .take(MAX_ROWS)
        .map(|p| shorten(&format!("{}/{}", p.user, p.database), 32))
        .collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(13);
    let _ = writeln!(
        out,
        "{:<w$}  {:>7}  {:>7}  {:>17}  {:>4}  {:>5}  {:>6}  {:>17}  {:>17}  {:>10}",
        "USER/DATABASE",
        "CLIENTS",
        "WAITING",
        "BORROWED/OPEN/MAX",
        "UTIL",
        "IN-TX",
        "PINNED",
        "QUERY p50/p99",
        "DB p50/p99",
        "BORROW p99"
    );
    for (p, name) in rows.iter().zip(&names) {
        let limit = match r.db_max {
            Some(m) => p.size.min(m),
            None => p.size,
        };
        let _ = writeln!(
            out,
            "{name:<w$}  {:>7.0}  {:>7.0}  {:>17}  {:>4}  {:>5.0}  {:>6.0}  {:>17}  {:>17}  {:>10}",
            p.clients,
            p.waiting,
            format!("{:.0}/{:.0}/{:.0}", p.borrowed, p.open, limit),
            percent(p.borrowed, Some(limit)),
            p.in_transaction,
            p.pinned,
            format!("{} / {}", latency(p.query_p50), latency(p.query_p99)),
            format!("{} / {}", latency(p.db_p50), latency(p.db_p99)),
            latency(p.borrow_p99),
        );
    }
    let hidden = (r.pool_count as usize).max(rows.len()) - names.len();
    if hidden > 0 {
        let _ = writeln!(out, "... and {hidden} more pools not shown");
    }
    out
}

/// Cuts `s` to `max` characters, marking the cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(3)).collect();
        cut.push_str("...");
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{LatencySnapshot, MetricsSnapshot, PoolMetrics};

    fn pool(user: &str, clients: u64) -> PoolMetrics {
        PoolMetrics {
            user: user.into(),
            database: "shop".into(),
            clients,
            waiting: 2,
            open: 4,
            borrowed: 3,
            pool_size: 20,
            in_transaction: 1,
            pinned: 1,
            query_latency: LatencySnapshot {
                count: 10,
                window_count: 10,
                p50: 1_500,
                p99: 120_000,
                ..Default::default()
            },
            db_latency: LatencySnapshot {
                count: 10,
                window_count: 10,
                p50: 900,
                p99: 1_500_000,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A report as `tollgate status` would build it from a real /metrics page.
    fn report(snap: &MetricsSnapshot) -> Report {
        let text = crate::admin::prometheus::render(snap);
        Report::from_samples(&super::super::exposition::parse(&text).unwrap())
    }

    fn snap() -> MetricsSnapshot {
        MetricsSnapshot {
            clients_current: 40,
            setup_failures: vec![("auth_failed", 1)],
            pins: vec![("session_set", 2), ("listen", 0)],
            db_open: 8,
            db_max: Some(10),
            target: "db:5432".into(),
            available: true,
            totals: crate::metrics::snapshot::Totals {
                borrowed: 6,
                in_transaction: 2,
                pinned: 2,
                ..Default::default()
            },
            pool_count: 2,
            pools: vec![pool("app", 30), pool("batch", 10)],
            ..Default::default()
        }
    }

    #[test]
    fn the_metrics_page_becomes_a_report() {
        let r = report(&snap());
        assert_eq!((r.clients, r.db_open, r.db_max), (40.0, 8.0, Some(10.0)));
        assert_eq!((r.borrowed, r.in_transaction, r.pinned), (6.0, 2.0, 2.0));
        assert_eq!(r.pins, vec![("session_set".to_string(), 2.0)]);
        assert_eq!(r.refused, vec![("auth_failed".to_string(), 1.0)]);
        assert_eq!(r.targets, vec![("db:5432".to_string(), true)]);
        let app = &r.pools[0];
        assert_eq!(
            (app.user.as_str(), app.clients, app.waiting),
            ("app", 30.0, 2.0)
        );
        assert_eq!((app.borrowed, app.open, app.size), (3.0, 4.0, 20.0));
        assert_eq!((app.query_p50, app.query_p99), (0.0015, 0.12));
        assert_eq!((app.db_p50, app.db_p99), (0.0009, 1.5));
        assert!(app.borrow_p99.is_nan());
    }

    #[test]
    fn the_screen_shows_ratio_utilisation_pins_and_pools_busiest_first() {
        let text = format(&report(&snap()), "127.0.0.1:9930");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("Tollgate ") && lines[0].ends_with(" at 127.0.0.1:9930"),
            "{text}"
        );
        assert_eq!(lines[1], "database db:5432: available");
        assert_eq!(
            lines[2],
            "clients 40 on 8 database connections: multiplexing ratio 5.0"
        );
        assert_eq!(lines[3], "database connections: 6 borrowed of 10 allowed (utilisation 60%), 2 in transaction, 2 pinned");
        assert_eq!(lines[4], "pins since start: session_set 2");
        assert_eq!(lines[5], "refused clients since start: auth_failed 1");
        assert!(lines[7].starts_with("USER/DATABASE "), "{text}");
        // Pool limit is min(pool_size, global cap); utilisation is borrowed over it.
        let app = lines[8].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            app,
            [
                "app/shop", "30", "2", "3/4/10", "30%", "1", "1", "1.5ms", "/", "120.0ms", "900us",
                "/", "1.50s", "-"
            ],
            "{text}"
        );
        assert!(lines[9].starts_with("batch/shop "), "{text}");
    }

    #[test]
    fn many_pools_fit_one_screen() {
        let mut s = snap();
        s.pools = (0..30).map(|i| pool(&format!("u{i:02}"), i)).collect();
        s.pool_count = 600;
        let text = format(&report(&s), "x");
        assert!(text.lines().count() < 40, "{text}");
        assert!(text.contains("u29/shop"), "{text}");
        assert!(!text.contains("u00/shop"), "{text}");
        assert!(
            text.ends_with("... and 580 more pools not shown\n"),
            "{text}"
        );
    }

    #[test]
    fn an_idle_proxy_and_a_down_database_read_plainly() {
        let mut s = snap();
        s.available = false;
        s.db_open = 0;
        s.db_max = None;
        s.pools.clear();
        s.pins.clear();
        let text = format(&report(&s), "x");
        assert!(text.contains("database db:5432: UNAVAILABLE"), "{text}");
        assert!(text.contains("multiplexing ratio -"), "{text}");
        assert!(
            text.contains("of unknown yet allowed (utilisation -)"),
            "{text}"
        );
        assert!(text.contains("pins since start: none"), "{text}");
        assert!(
            text.ends_with("no pools yet: no client has logged in\n"),
            "{text}"
        );
    }

    #[test]
    fn latencies_read_in_the_right_unit() {
        assert_eq!(latency(f64::NAN), "-");
        assert_eq!(latency(0.000_25), "250us");
        assert_eq!(latency(0.012_34), "12.3ms");
        assert_eq!(latency(2.5), "2.50s");
    }
}

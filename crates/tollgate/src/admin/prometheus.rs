//! `/metrics`: a [`MetricsSnapshot`] in the Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>). Pure: snapshot in, text
//! out. Names are `tollgate_*`: process-wide series carry no pool labels, per-pool series are
//! `tollgate_pool_*` with labels `user` and `database` (at most
//! [`MAX_POOLS_EXPORTED`](crate::metrics::snapshot::MAX_POOLS_EXPORTED) pools). README
//! "Observability" maps each name to its RDS Proxy CloudWatch metric.

use crate::metrics::snapshot::MAX_POOLS_EXPORTED;
use crate::metrics::{LatencySnapshot, MetricsSnapshot, PoolMetrics};
use std::fmt::Write;

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Count = fn(&PoolMetrics) -> u64;
type Dist = fn(&PoolMetrics) -> &LatencySnapshot;

/// Per-pool gauges: name, help.
#[rustfmt::skip]
const POOL_GAUGES: &[(&str, &str, Count)] = &[
    ("tollgate_pool_client_connections", "Clients logged in to this pool now (RDS Proxy: ClientConnections).", |p| p.clients),
    ("tollgate_pool_clients_waiting", "Clients waiting for a database connection now.", |p| p.waiting),
    ("tollgate_pool_database_connections", "Database connections open or opening (RDS Proxy: DatabaseConnections).", |p| p.open),
    ("tollgate_pool_database_connections_idle", "Database connections idle in the pool.", |p| p.idle),
    ("tollgate_pool_database_connections_borrowed", "Database connections lent to clients now (RDS Proxy: DatabaseConnectionsCurrentlyBorrowed).", |p| p.borrowed),
    ("tollgate_pool_database_connections_in_transaction", "Lent database connections inside a transaction now (RDS Proxy: DatabaseConnectionsCurrentlyInTransaction).", |p| p.in_transaction),
    ("tollgate_pool_database_connections_session_pinned", "Clients pinned to their database connection now (RDS Proxy: DatabaseConnectionsCurrentlySessionPinned).", |p| p.pinned),
    ("tollgate_pool_size", "The pool's own cap on database connections (pool_size).", |p| p.pool_size),
    ("tollgate_pool_paused", "1 while an operator has paused the pool.", |p| u64::from(p.paused)),
];

/// Per-pool counters.
#[rustfmt::skip]
const POOL_COUNTERS: &[(&str, &str, Count)] = &[
    ("tollgate_pool_database_connection_requests_total", "Requests for a database connection (RDS Proxy: DatabaseConnectionRequests).", |p| p.connection_requests),
    ("tollgate_pool_database_connections_setup_succeeded_total", "Database connections opened (RDS Proxy: DatabaseConnectionsSetupSucceeded).", |p| p.setup_succeeded),
    ("tollgate_pool_database_connections_setup_failed_total", "Database connections that failed to open (RDS Proxy: DatabaseConnectionsSetupFailed).", |p| p.setup_failed),
    ("tollgate_pool_borrow_timeouts_total", "Borrows that gave up after connection_borrow_timeout.", |p| p.borrow_timeouts),
    ("tollgate_pool_queries_total", "Requests answered: ReadyForQuery relayed (RDS Proxy: QueryRequests).", |p| p.queries),
    ("tollgate_pool_transactions_total", "Transactions completed: ReadyForQuery idle relayed.", |p| p.transactions),
    ("tollgate_pool_bytes_from_clients_total", "Bytes clients sent through this pool.", |p| p.bytes_from_clients),
    ("tollgate_pool_bytes_to_clients_total", "Bytes relayed to this pool's clients.", |p| p.bytes_to_clients),
];

/// Per-pool latency summaries: base name (`_seconds` and `_max_seconds` are appended), help.
#[rustfmt::skip]
const POOL_LATENCIES: &[(&str, &str, Dist)] = &[
    ("tollgate_pool_query_response_latency", "Client request to the last byte of the answer relayed (RDS Proxy: QueryResponseLatency)", |p| &p.query_latency),
    ("tollgate_pool_query_database_response_latency", "Request forwarded to the database's ReadyForQuery (RDS Proxy: QueryDatabaseResponseLatency)", |p| &p.db_latency),
    ("tollgate_pool_borrow_latency", "Wait for a database connection (RDS Proxy: DatabaseConnectionsBorrowLatency)", |p| &p.borrow_latency),
];

/// Renders every metric.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut w = Writer::default();
    w.family(
        "tollgate_build_info",
        "gauge",
        "Tollgate version, as a label.",
    );
    w.sample(
        "tollgate_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1u64,
    );

    w.gauge(
        "tollgate_client_connections",
        "Clients logged in now (RDS Proxy: ClientConnections).",
        s.clients_current,
    );
    w.counter(
        "tollgate_client_connections_setup_succeeded_total",
        "Clients that logged in (RDS Proxy: ClientConnectionsSetupSucceeded).",
        s.clients_setup_succeeded,
    );
    w.family("tollgate_client_connections_setup_failed_total", "counter", "Clients refused during startup or login, by reason (RDS Proxy: ClientConnectionsSetupFailedAuth is reason=\"auth_failed\").");
    // auth_failed is always present, so an alert on its rate has a series from the start.
    if !s.setup_failures.iter().any(|(r, _)| *r == "auth_failed") {
        w.sample(
            "tollgate_client_connections_setup_failed_total",
            &[("reason", "auth_failed")],
            0u64,
        );
    }
    for (reason, n) in &s.setup_failures {
        w.sample(
            "tollgate_client_connections_setup_failed_total",
            &[("reason", reason)],
            *n,
        );
    }
    w.counter(
        "tollgate_client_connections_closed_total",
        "Client connections closed after login (RDS Proxy: ClientConnectionsClosed).",
        s.clients_closed,
    );
    w.counter(
        "tollgate_backend_retries_total",
        "Requests sent again on another database connection because the one borrowed died before answering (the client saw only latency).",
        s.backend_retries,
    );

    w.gauge(
        "tollgate_database_connections",
        "Database connections open or opening, all pools (RDS Proxy: DatabaseConnections).",
        s.db_open,
    );
    w.gauge(
        "tollgate_database_connections_idle",
        "Idle database connections, all pools.",
        s.db_idle,
    );
    if let Some(max) = s.db_max {
        w.gauge("tollgate_database_connections_max", "Cap on database connections: max_connections_percent of the server's max_connections (RDS Proxy: MaxDatabaseConnectionsAllowed). Absent until the first connection reads max_connections.", max);
    }
    w.family("tollgate_database_connections_closed_total", "counter", "Database connections closed, by reason: dead_idle = idle in the pool when the server ended it (pg_terminate_backend, restart, failover), noticed and closed before anyone borrowed it.");
    w.sample(
        "tollgate_database_connections_closed_total",
        &[("reason", "dead_idle")],
        s.db_closed_dead_idle,
    );
    w.gauge(
        "tollgate_client_message_memory_bytes",
        "Memory clients hold now in large messages being read whole, counted against max_message_memory.",
        s.message_memory,
    );
    let t = &s.totals;
    w.gauge("tollgate_database_connections_borrowed", "Database connections lent to clients now, all pools (RDS Proxy: DatabaseConnectionsCurrentlyBorrowed).", t.borrowed);
    w.gauge("tollgate_database_connections_in_transaction", "Lent database connections inside a transaction now, all pools (RDS Proxy: DatabaseConnectionsCurrentlyInTransaction).", t.in_transaction);
    w.gauge("tollgate_database_connections_session_pinned", "Clients pinned to their database connection now, all pools (RDS Proxy: DatabaseConnectionsCurrentlySessionPinned).", t.pinned);
    w.counter(
        "tollgate_queries_total",
        "Requests answered, all pools (RDS Proxy: QueryRequests).",
        t.queries,
    );
    w.counter(
        "tollgate_transactions_total",
        "Transactions completed, all pools.",
        t.transactions,
    );
    w.counter(
        "tollgate_bytes_from_clients_total",
        "Bytes clients sent, all pools.",
        t.bytes_from_clients,
    );
    w.counter(
        "tollgate_bytes_to_clients_total",
        "Bytes relayed to clients, all pools.",
        t.bytes_to_clients,
    );

    w.family(
        "tollgate_session_pins_total",
        "counter",
        "Clients pinned to one database connection, by what pinned them.",
    );
    for (reason, n) in &s.pins {
        w.sample("tollgate_session_pins_total", &[("reason", reason)], *n);
    }
    w.family("tollgate_cancel_requests_total", "counter", "CancelRequests by outcome: forwarded to the database, or ignored (forged key, nothing running).");
    w.sample(
        "tollgate_cancel_requests_total",
        &[("outcome", "forwarded")],
        s.cancels_forwarded,
    );
    w.sample(
        "tollgate_cancel_requests_total",
        &[("outcome", "ignored")],
        s.cancels_ignored,
    );
    w.family("tollgate_iam_auth_total", "counter", "IAM database authentication: tokens accepted (outcome=\"success\", reason = how: local, delegate, delegate_cache) and logins refused (outcome=\"failure\", reason = the check that failed).");
    for (how, n) in &s.iam_successes {
        w.sample(
            "tollgate_iam_auth_total",
            &[("outcome", "success"), ("reason", how)],
            *n,
        );
    }
    for (reason, n) in &s.iam_failures {
        w.sample(
            "tollgate_iam_auth_total",
            &[("outcome", "failure"), ("reason", reason)],
            *n,
        );
    }
    w.family("tollgate_target_available", "gauge", "1 if the database answered the last connection attempt (RDS Proxy: AvailabilityPercentage = 100 * avg_over_time).");
    w.sample(
        "tollgate_target_available",
        &[("target", &s.target)],
        u64::from(s.available),
    );
    w.family("tollgate_target_availability_percentage", "gauge", "Share of the last minute's health checks (or, without health_check_user, connection attempts) that found the instance up, in its role (RDS Proxy: AvailabilityPercentage).");
    for t in &s.targets {
        if let Some(p) = t.availability {
            w.sample(
                "tollgate_target_availability_percentage",
                &[("target", &t.target), ("role", t.role)],
                p,
            );
        }
    }
    w.family(
        "tollgate_target_up",
        "gauge",
        "1 if the instance takes sessions now, by role.",
    );
    for t in &s.targets {
        w.sample(
            "tollgate_target_up",
            &[("target", &t.target), ("role", t.role)],
            u64::from(t.up),
        );
    }
    w.family(
        "tollgate_target_connections",
        "gauge",
        "Database connections open to each instance, all pools.",
    );
    for t in &s.targets {
        w.sample(
            "tollgate_target_connections",
            &[("target", &t.target)],
            t.connections,
        );
    }
    w.family("tollgate_target_replica_lag_seconds", "gauge", "How far each reader is behind the writer, measured from the writer's WAL position at its health checks (resolution: health_check_interval).");
    for t in &s.targets {
        if let Some(l) = t.lag_secs {
            w.sample(
                "tollgate_target_replica_lag_seconds",
                &[("target", &t.target)],
                l,
            );
        }
    }
    w.counter(
        "tollgate_failovers_total",
        "Times the writer pools moved to another instance (a promotion found by the health checks).",
        s.failovers,
    );
    if let Some(d) = s.last_failover_secs {
        w.family(
            "tollgate_last_failover_duration_seconds",
            "gauge",
            "The last failover: from the writer first failing a check to the new writer chosen.",
        );
        w.sample("tollgate_last_failover_duration_seconds", &[], d);
    }
    if !s.secrets.is_empty() {
        w.family("tollgate_secret_refresh_total", "counter", "Reads of each auth_secret from Secrets Manager, by outcome (a failed one keeps the last good value).");
        for (name, ok, failed, _) in &s.secrets {
            w.sample(
                "tollgate_secret_refresh_total",
                &[("secret", name), ("outcome", "success")],
                *ok,
            );
            w.sample(
                "tollgate_secret_refresh_total",
                &[("secret", name), ("outcome", "failure")],
                *failed,
            );
        }
        w.family(
            "tollgate_secret_value_age_seconds",
            "gauge",
            "Since the value in force of each auth_secret was last read successfully.",
        );
        for (name, _, _, age) in &s.secrets {
            w.sample(
                "tollgate_secret_value_age_seconds",
                &[("secret", name)],
                *age,
            );
        }
    }
    w.counter(
        "tollgate_backends_lost_total",
        "Database connections lost under a request that could not be sent again: the client got one error (08006/57P01) and kept its connection.",
        s.backends_lost,
    );
    let help = format!("Pools (database, user) that exist; the first {MAX_POOLS_EXPORTED} by (database, user) are exported with labels.");
    w.gauge("tollgate_pools", &help, s.pool_count as u64);
    w.counter(
        "tollgate_pools_freed_total",
        "Pools freed after they had no clients and no connections (or to make room under max_pools).",
        s.pools_freed,
    );
    if s.pool_count > s.pools.len() {
        let _ = writeln!(
            w.out,
            "# {} pools exist; per-pool series cover the first {} by (database, user)",
            s.pool_count,
            s.pools.len()
        );
    }

    for (name, help, get) in POOL_GAUGES {
        w.family(name, "gauge", help);
        for p in &s.pools {
            w.sample(name, &pool_labels(p), get(p));
        }
    }
    for (name, help, get) in POOL_COUNTERS {
        w.family(name, "counter", help);
        for p in &s.pools {
            w.sample(name, &pool_labels(p), get(p));
        }
    }
    for (base, help, get) in POOL_LATENCIES {
        w.summary(base, help, &s.pools, *get);
    }
    w.out
}

/// A pool's labels: `user`, `database`, and `endpoint="read_only"` for the read-only
/// endpoint's pools (the writer's keep the two labels they always had).
fn pool_labels(p: &PoolMetrics) -> Vec<(&'static str, &str)> {
    let mut l = vec![("user", p.user.as_str()), ("database", p.database.as_str())];
    if p.read_only {
        l.push(("endpoint", "read_only"));
    }
    l
}

/// Microseconds to seconds.
fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A sample value: counts print as integers, seconds as shortest decimals.
trait Value {
    fn put(&self, out: &mut String);
}

impl Value for u64 {
    fn put(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn put(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

#[derive(Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.put(&mut self.out);
        self.out.push('\n');
    }

    fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], v);
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], v);
    }

    /// `{base}_seconds` as a summary (quantiles 0.5 / 0.9 / 0.99 / 0.999 over the last minute,
    /// NaN when it had no sample, as client libraries do; `_sum` and `_count` since start) and
    /// `{base}_max_seconds` as a gauge (the last minute's largest).
    fn summary(&mut self, base: &str, help: &str, pools: &[PoolMetrics], get: Dist) {
        let name = format!("{base}_seconds");
        self.family(
            &name,
            "summary",
            &format!("{help}, seconds; quantiles over the last minute."),
        );
        for p in pools {
            let l = get(p);
            let labels = pool_labels(p);
            for (q, v) in [
                ("0.5", l.p50),
                ("0.9", l.p90),
                ("0.99", l.p99),
                ("0.999", l.p999),
            ] {
                let v = if l.window_count == 0 {
                    f64::NAN
                } else {
                    secs(v)
                };
                let mut with_q = labels.clone();
                with_q.push(("quantile", q));
                self.sample(&name, &with_q, v);
            }
            self.sample(&format!("{name}_sum"), &labels, l.sum_micros / 1e6);
            self.sample(&format!("{name}_count"), &labels, l.count);
        }
        let max = format!("{base}_max_seconds");
        self.family(
            &max,
            "gauge",
            &format!("{help}: the largest in the last minute, seconds."),
        );
        for p in pools {
            self.sample(&max, &pool_labels(p), secs(get(p).max));
        }
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::Totals;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            clients_current: 7,
            clients_setup_succeeded: 9,
            setup_failures: vec![("auth_failed", 2), ("tls_required", 1)],
            clients_closed: 2,
            backend_retries: 0,
            backends_lost: 0,
            targets: Vec::new(),
            failovers: 0,
            last_failover_secs: None,
            secrets: Vec::new(),
            pins: vec![("named_prepared_statement", 0), ("session_set", 3)],
            cancels_forwarded: 1,
            cancels_ignored: 4,
            iam_successes: vec![("local", 5)],
            iam_failures: vec![("expired", 2), ("wrong_user", 1)],
            db_open: 3,
            db_idle: 1,
            db_max: Some(90),
            target: "db.example.com:5432".into(),
            available: true,
            totals: Totals {
                borrowed: 2,
                queries: 100,
                ..Default::default()
            },
            pool_count: 1,
            pools_freed: 6,
            db_closed_dead_idle: 2,
            message_memory: 0,
            pools: vec![PoolMetrics {
                user: "app".into(),
                database: "shop".into(),
                clients: 7,
                open: 3,
                borrowed: 2,
                pool_size: 20,
                queries: 100,
                query_latency: LatencySnapshot {
                    count: 100,
                    sum_micros: 150_000.0,
                    window_count: 100,
                    p50: 1_200,
                    p90: 2_000,
                    p99: 5_000,
                    p999: 9_000,
                    max: 9_500,
                },
                ..Default::default()
            }],
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn counters_and_gauges_render_with_help_type_and_labels() {
        let text = render(&snapshot());
        let l = lines(&text);
        for want in [
            "# TYPE tollgate_client_connections gauge",
            "tollgate_client_connections 7",
            "tollgate_client_connections_setup_failed_total{reason=\"auth_failed\"} 2",
            "tollgate_client_connections_setup_failed_total{reason=\"tls_required\"} 1",
            "tollgate_database_connections_max 90",
            "tollgate_database_connections_borrowed 2",
            "tollgate_session_pins_total{reason=\"session_set\"} 3",
            "tollgate_session_pins_total{reason=\"named_prepared_statement\"} 0",
            "tollgate_cancel_requests_total{outcome=\"ignored\"} 4",
            "# TYPE tollgate_iam_auth_total counter",
            "tollgate_iam_auth_total{outcome=\"success\",reason=\"local\"} 5",
            "tollgate_iam_auth_total{outcome=\"failure\",reason=\"expired\"} 2",
            "tollgate_iam_auth_total{outcome=\"failure\",reason=\"wrong_user\"} 1",
            "tollgate_target_available{target=\"db.example.com:5432\"} 1",
            "tollgate_pool_database_connections_borrowed{user=\"app\",database=\"shop\"} 2",
            "tollgate_pool_size{user=\"app\",database=\"shop\"} 20",
            "tollgate_pools_freed_total 6",
            "# TYPE tollgate_database_connections_closed_total counter",
            "tollgate_database_connections_closed_total{reason=\"dead_idle\"} 2",
            "# TYPE tollgate_pool_queries_total counter",
            "tollgate_pool_queries_total{user=\"app\",database=\"shop\"} 100",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn latency_is_a_summary_in_seconds_with_a_max_gauge() {
        let text = render(&snapshot());
        let l = lines(&text);
        let n = "tollgate_pool_query_response_latency_seconds";
        for want in [
            format!("# TYPE {n} summary"),
            format!("{n}{{user=\"app\",database=\"shop\",quantile=\"0.5\"}} 0.0012"),
            format!("{n}{{user=\"app\",database=\"shop\",quantile=\"0.9\"}} 0.002"),
            format!("{n}{{user=\"app\",database=\"shop\",quantile=\"0.99\"}} 0.005"),
            format!("{n}{{user=\"app\",database=\"shop\",quantile=\"0.999\"}} 0.009"),
            format!("{n}_sum{{user=\"app\",database=\"shop\"}} 0.15"),
            format!("{n}_count{{user=\"app\",database=\"shop\"}} 100"),
            "# TYPE tollgate_pool_query_response_latency_max_seconds gauge".to_string(),
            "tollgate_pool_query_response_latency_max_seconds{user=\"app\",database=\"shop\"} 0.0095".to_string(),
            // Nothing recorded yet: quantiles are NaN, count 0.
            "tollgate_pool_borrow_latency_seconds{user=\"app\",database=\"shop\",quantile=\"0.5\"} NaN".to_string(),
            "tollgate_pool_borrow_latency_seconds_count{user=\"app\",database=\"shop\"} 0".to_string(),
        ] {
            assert!(l.contains(&want.as_str()), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = snapshot();
        s.pools[0].user = "a\"b\\c\nd".into();
        let text = render(&s);
        assert!(
            text.contains("tollgate_pool_size{user=\"a\\\"b\\\\c\\nd\",database=\"shop\"} 20"),
            "{text}"
        );
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn every_family_is_declared_once_before_its_samples() {
        let text = render(&snapshot());
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} has no TYPE before it");
            }
        }
    }

    #[test]
    fn unknown_cap_is_absent_and_auth_failed_is_always_present() {
        let mut s = snapshot();
        s.db_max = None;
        s.setup_failures.clear();
        let text = render(&s);
        assert!(
            !text.contains("tollgate_database_connections_max "),
            "{text}"
        );
        assert!(text
            .contains("tollgate_client_connections_setup_failed_total{reason=\"auth_failed\"} 0"));
    }

    #[test]
    fn pools_beyond_the_cap_are_noted() {
        let mut s = snapshot();
        s.pool_count = 501;
        let text = render(&s);
        assert!(text.contains("tollgate_pools 501"));
        assert!(text.contains("# 501 pools exist; per-pool series cover the first 1"));
    }
}

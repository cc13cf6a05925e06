//! `SHOW TARGETS`: the database instances behind Tollgate, their roles and health, as the
//! health checks (or, without health_check_user, the connection attempts) last saw them: the
//! question "where are my connections going, and is anything down".

use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&[
        "host",
        "port",
        "role",
        "state",
        "state_for_s",
        "last_check",
        "connections",
        "availability_pct",
        "replica_lag_ms",
        "max_connections",
        "origin",
        "sslmode",
        "last_error",
    ]);
    let sslmode = shared.config.upstream.sslmode.as_str();
    for v in shared.topology.views() {
        let last_check = v
            .last_check
            .and_then(|t| t.elapsed().ok())
            .map(|d| format!("{} ms ago", d.as_millis()))
            .unwrap_or_default();
        rs.push(vec![
            v.addr.host.clone(),
            v.addr.port.to_string(),
            v.role.as_str().to_string(),
            v.health.as_str().to_string(),
            v.for_secs.to_string(),
            last_check,
            v.connections.to_string(),
            v.availability
                .map(|p| format!("{p:.1}"))
                .unwrap_or_default(),
            v.lag.map(|l| l.as_millis().to_string()).unwrap_or_default(),
            v.max_connections.map(|n| n.to_string()).unwrap_or_default(),
            match v.origin {
                crate::topology::Origin::Upstream => "upstream",
                crate::topology::Origin::Configured => "instance",
                crate::topology::Origin::Discovered => "aurora",
            }
            .to_string(),
            sslmode.to_string(),
            v.last_error.clone().unwrap_or_default(),
        ]);
    }
    Reply::Rows(rs)
}

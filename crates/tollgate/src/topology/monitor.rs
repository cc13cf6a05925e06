//! The health check loops: one task per target checks it every `health_check_interval`
//! (ten times as often while the writer is failing), at once when a data-path connection
//! fails, and feeds what it sees to [`Topology::observe`]; a change of writer or an instance
//! going down closes the idle connections that no longer serve their pools. Without an
//! `instance` list, a discovery loop asks the upstream for Aurora's topology.

use super::aurora;
use super::check::{Probe, ProbeSettings};
use super::{Health, Target};
use crate::config::InstanceAddr;
use crate::shared::{shutdown_started, Shared};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Checks per normal interval while a failover is under way.
const FAST_FACTOR: u32 = 10;
/// Aurora's topology is re-read every this many intervals (instances come and go slowly).
const DISCOVERY_EVERY: u32 = 10;

/// Runs the health checks until shutdown.
pub async fn run(shared: Arc<Shared>, settings: ProbeSettings) {
    let topology = shared.topology.clone();
    let mut tasks: HashMap<InstanceAddr, tokio::task::JoinHandle<()>> = HashMap::new();
    for t in topology.targets() {
        tasks.insert(t.addr.clone(), spawn_check(&shared, t, &settings));
    }
    let mut shutdown = shared.shutdown.clone();
    if !shared.config.topology.instances.is_empty() {
        shutdown_started(&mut shutdown).await;
    } else {
        discover(&shared, &settings, &mut tasks, &mut shutdown).await;
    }
    for (_, t) in tasks {
        t.abort();
    }
}

fn spawn_check(
    shared: &Arc<Shared>,
    target: Arc<Target>,
    settings: &ProbeSettings,
) -> tokio::task::JoinHandle<()> {
    let shared = shared.clone();
    let settings = settings.clone();
    tokio::spawn(async move {
        let probe = match Probe::new(target.addr.clone(), settings) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(target = %target.addr, error = %e, "health checks cannot run");
                return;
            }
        };
        check_loop(&shared, &target, &probe).await;
        probe.close();
    })
}

async fn check_loop(shared: &Shared, target: &Arc<Target>, probe: &Probe) {
    let topology = &shared.topology;
    let interval = shared.config.topology.health_check_interval;
    let fast = (interval / FAST_FACTOR).max(Duration::from_millis(20));
    let mut shutdown = shared.shutdown.clone();
    loop {
        if target.is_retired() {
            return;
        }
        let (obs, max_connections) = tokio::select! {
            r = probe.check() => r,
            _ = shutdown_started(&mut shutdown) => return,
        };
        let change = topology.observe(target, obs, max_connections);
        if change.writer_changed || change.went_down {
            shared.pools.close_unservable();
        }
        let hurry = topology.failing()
            || (target.health() != Health::Up
                && topology.writer().is_none_or(|w| Arc::ptr_eq(&w, target)));
        let wait = if hurry { fast } else { interval };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = topology.check_requested() => {}
            _ = shutdown_started(&mut shutdown) => return,
        }
    }
}

/// Asks the writer (the upstream until one is known) for `aurora_replica_status()` and makes
/// the instances it lists the targets; stops asking once the server says it is not Aurora.
async fn discover(
    shared: &Arc<Shared>,
    settings: &ProbeSettings,
    tasks: &mut HashMap<InstanceAddr, tokio::task::JoinHandle<()>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    let topology = shared.topology.clone();
    let upstream = InstanceAddr {
        host: shared.config.upstream.host.clone(),
        port: shared.config.upstream.port,
    };
    let every = shared.config.topology.health_check_interval * DISCOVERY_EVERY;
    let mut probes: HashMap<InstanceAddr, Probe> = HashMap::new();
    loop {
        // The cluster endpoint follows the writer by DNS; the writer itself by address is
        // preferred once known, so discovery works mid-failover too.
        let at = topology
            .writer()
            .map(|w| w.addr.clone())
            .unwrap_or(upstream.clone());
        if !probes.contains_key(&at) {
            match Probe::new(at.clone(), settings.clone()) {
                Ok(p) => {
                    probes.insert(at.clone(), p);
                }
                Err(e) => {
                    tracing::error!(error = %e, "Aurora topology discovery cannot run");
                    return shutdown_started(shutdown).await;
                }
            }
        }
        let rows = match probes.get(&at) {
            Some(p) => tokio::select! {
                r = p.aurora_rows() => r,
                _ = shutdown_started(shutdown) => return,
            },
            None => Err("no probe".into()),
        };
        match rows {
            Ok(None) => {
                tracing::info!(upstream = %upstream, "not Aurora (no aurora_replica_status()): the upstream is the only target");
                return shutdown_started(shutdown).await;
            }
            Ok(Some(rows)) => match aurora::discover(&upstream.host, &rows) {
                Ok(found) => {
                    for (id, why) in &found.rejected {
                        tracing::warn!(server_id = ?id, reason = why, "ignored a row of aurora_replica_status()");
                    }
                    let addrs: Vec<InstanceAddr> = found
                        .instances
                        .iter()
                        .map(|i| InstanceAddr {
                            host: i.host.clone(),
                            port: upstream.port,
                        })
                        .collect();
                    for t in topology.set_discovered(addrs) {
                        tracing::info!(target = %t.addr, "Aurora instance discovered");
                        tasks.insert(t.addr.clone(), spawn_check(shared, t, settings));
                    }
                    tasks.retain(|_, h| !h.is_finished());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot derive Aurora instance endpoints; list them with `instance` instead");
                    return shutdown_started(shutdown).await;
                }
            },
            Err(e) => tracing::debug!(error = %e, "Aurora topology not read this time"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown_started(shutdown) => return,
        }
    }
}

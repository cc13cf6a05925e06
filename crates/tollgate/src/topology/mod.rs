//! Where the database is: the instances behind Tollgate, their roles and health, and which
//! one is the writer right now. Pools ask [`Topology::pick`] for a target on every new backend
//! connection; the health checks (`monitor.rs`, on tokio-postgres through a deadpool pool per
//! target, `check.rs`) and the data path's own connection failures keep it current.
//!
//! The parts: [`Target`] and [`Topology`] here; `role.rs` (the pure writer decision),
//! `lag.rs` (replica lag measured from the writer), `aurora.rs` (instances discovered from
//! `aurora_replica_status()`), `check.rs` (one health check), `monitor.rs` (the check loops),
//! `pg_tls.rs` (rustls for tokio-postgres).

pub mod aurora;
pub mod check;
pub mod lag;
pub mod monitor;
mod pg_tls;
pub mod role;

use crate::config::{Config, InstanceAddr, ReaderFallback};
use crate::metrics::{Counter, Gauge};
use crate::sync::lock;
use role::{Decision, Observation, Seen};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};

/// Which endpoint a session came in on, and so which instances its pool may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The default listener: the writer.
    Writer,
    /// `reader_listen`: readers only (RDS Proxy's READ_ONLY endpoint).
    Reader,
}

impl Endpoint {
    /// For logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Writer => "read_write",
            Endpoint::Reader => "read_only",
        }
    }
}

/// An instance's role as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Out of recovery and chosen as the writer.
    Writer,
    /// In recovery (a hot standby / Aurora reader).
    Reader,
    /// Not known yet, unreachable, or out of recovery without being chosen (split brain).
    Unknown,
}

impl Role {
    /// For SHOW TARGETS and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Unknown => "unknown",
        }
    }
}

/// An instance's health as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet.
    Unchecked,
    /// Takes sessions.
    Up,
    /// Answers but takes no sessions yet (57P03: starting up, shutting down).
    Starting,
    /// No connection.
    Down,
}

impl Health {
    /// For SHOW TARGETS.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Up => "up",
            Health::Starting => "starting",
            Health::Down => "down",
        }
    }
}

/// How an instance came to be a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The upstream URL (no `instance` list).
    Upstream,
    /// The `instance` setting.
    Configured,
    /// Found in `aurora_replica_status()`.
    Discovered,
}

/// The share of checks in the last minute that found an instance up: RDS Proxy's
/// AvailabilityPercentage, per target.
#[derive(Debug, Default)]
struct Availability {
    samples: VecDeque<(Instant, bool)>,
}

/// The window AvailabilityPercentage covers (CloudWatch's one-minute period).
const AVAILABILITY_WINDOW: Duration = Duration::from_secs(60);

impl Availability {
    fn record(&mut self, now: Instant, up: bool) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > AVAILABILITY_WINDOW)
        {
            self.samples.pop_front();
        }
        // Bounded by the window over the fastest interval; a flood of data-path reports is
        // capped too.
        if self.samples.len() >= 4096 {
            self.samples.pop_front();
        }
        self.samples.push_back((now, up));
    }

    fn percentage(&self) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let up = self.samples.iter().filter(|(_, u)| *u).count();
        Some(100.0 * up as f64 / self.samples.len() as f64)
    }
}

#[derive(Debug)]
struct Status {
    health: Health,
    /// The latest observation from a health check (None before the first).
    latest: Option<Observation>,
    last_check: Option<SystemTime>,
    last_error: Option<String>,
    lag: Option<Duration>,
    max_connections: Option<u32>,
    availability: Availability,
    since: Instant,
}

/// One database instance Tollgate may connect to.
#[derive(Debug)]
pub struct Target {
    /// Where it is (also the TLS server name).
    pub addr: InstanceAddr,
    /// How it came to be a target.
    pub origin: Origin,
    /// Data-path backend connections open to it (for least-connections reader choice and
    /// SHOW TARGETS).
    pub connections: Gauge,
    /// Health checks run against it, by outcome.
    pub checks_ok: Counter,
    /// Failed health checks.
    pub checks_failed: Counter,
    status: Mutex<Status>,
    /// Dropped from the topology (Aurora removed it): its connections close as they return.
    retired: AtomicBool,
}

impl Target {
    fn new(addr: InstanceAddr, origin: Origin) -> Arc<Target> {
        Arc::new(Target {
            addr,
            origin,
            connections: Gauge::default(),
            checks_ok: Counter::default(),
            checks_failed: Counter::default(),
            status: Mutex::new(Status {
                health: Health::Unchecked,
                latest: None,
                last_check: None,
                last_error: None,
                lag: None,
                max_connections: None,
                availability: Availability::default(),
                since: Instant::now(),
            }),
            retired: AtomicBool::new(false),
        })
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        lock(&self.status).health
    }

    /// Whether it was dropped from the topology.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

/// A point-in-time view of one target (SHOW TARGETS, /metrics).
#[derive(Debug, Clone)]
pub struct TargetView {
    /// Host and port.
    pub addr: InstanceAddr,
    /// Role as decided.
    pub role: Role,
    /// Health as last seen.
    pub health: Health,
    /// When it was last checked (wall clock).
    pub last_check: Option<SystemTime>,
    /// The last failure, if the latest check failed.
    pub last_error: Option<String>,
    /// Data-path connections open to it.
    pub connections: u64,
    /// Share of checks in the last minute that found it up.
    pub availability: Option<f64>,
    /// Replica lag behind the writer (readers).
    pub lag: Option<Duration>,
    /// Its max_connections, from the health check.
    pub max_connections: Option<u32>,
    /// How it came to be a target.
    pub origin: Origin,
    /// Health checks by outcome.
    pub checks_ok: u64,
    /// Failed health checks.
    pub checks_failed: u64,
    /// How long it has been in its current health.
    pub for_secs: u64,
}

/// What [`Topology::pick`] found for a new backend connection.
#[derive(Debug)]
pub enum Pick {
    /// Connect here.
    Target(Arc<Target>),
    /// Nothing suitable now: wait for a change (up to the borrow timeout); the reason says why.
    Wait(&'static str),
    /// Nothing suitable, and the settings say not to wait.
    Refuse(&'static str),
}

/// What changed after an observation, for the monitor to act on (close connections).
#[derive(Debug, Default)]
pub struct Change {
    /// The writer changed (old, new).
    pub writer_changed: bool,
    /// A target's health changed away from up.
    pub went_down: bool,
}

/// The instances and who is the writer.
pub struct Topology {
    targets: RwLock<Vec<Arc<Target>>>,
    writer: RwLock<Option<Arc<Target>>>,
    /// The upstream alone, with no checks choosing: it is the writer whatever it says.
    fixed_writer: AtomicBool,
    /// Whether control-path health checks run (a health_check_user is set).
    checks: bool,
    upstream: InstanceAddr,
    /// Bumped on every change a waiting borrow may care about.
    changed: watch::Sender<u64>,
    /// Wakes the health checks at once (a data-path connection failed).
    check_now: Notify,
    /// When the current writer was first seen failing, while no other has taken over.
    failing_since: Mutex<Option<Instant>>,
    /// Writer changes from one instance to another.
    pub failovers: Counter,
    /// The last failover's duration (writer first seen failing → new writer chosen), ms.
    last_failover_ms: AtomicU64,
    /// Writer WAL samples, for replica lag.
    writer_history: Mutex<lag::WriterHistory>,
    reader_fallback: ReaderFallback,
    max_replica_lag: Option<Duration>,
    /// Instances that have been in the topology and are not now (retired), kept for the
    /// metrics' sake until their connections are gone.
    retired: Mutex<Vec<Arc<Target>>>,
}

impl Topology {
    /// The targets the configuration names: the instances, else the upstream.
    pub fn new(config: &Config) -> Arc<Topology> {
        Self::build(&config.upstream, &config.topology)
    }

    /// The upstream alone, no health checks (unit tests of the pool).
    pub fn single(upstream: &crate::config::Upstream) -> Arc<Topology> {
        let t = crate::config::TopologyConfig {
            instances: Vec::new(),
            health_check_interval: Duration::from_secs(1),
            health_check_user: None,
            health_check_database: "postgres".into(),
            reader_listen: None,
            reader_fallback: ReaderFallback::Wait,
            max_replica_lag: None,
        };
        Self::build(upstream, &t)
    }

    fn build(up: &crate::config::Upstream, t: &crate::config::TopologyConfig) -> Arc<Topology> {
        let upstream = InstanceAddr {
            host: up.host.clone(),
            port: up.port,
        };
        let targets: Vec<Arc<Target>> = if t.instances.is_empty() {
            vec![Target::new(upstream.clone(), Origin::Upstream)]
        } else {
            t.instances
                .iter()
                .map(|a| Target::new(a.clone(), Origin::Configured))
                .collect()
        };
        let fixed = t.instances.is_empty();
        let writer = fixed.then(|| targets.first().cloned()).flatten();
        Arc::new(Topology {
            targets: RwLock::new(targets),
            writer: RwLock::new(writer),
            fixed_writer: AtomicBool::new(fixed),
            checks: t.health_check_user.is_some(),
            upstream,
            changed: watch::channel(0).0,
            check_now: Notify::new(),
            failing_since: Mutex::new(None),
            failovers: Counter::default(),
            last_failover_ms: AtomicU64::new(0),
            writer_history: Mutex::new(lag::WriterHistory::default()),
            reader_fallback: t.reader_fallback,
            max_replica_lag: t.max_replica_lag,
            retired: Mutex::new(Vec::new()),
        })
    }

    /// Every current target.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The writer now, if one is known.
    pub fn writer(&self) -> Option<Arc<Target>> {
        self.writer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The writer, else the upstream's address: where one-off logins (the delegate IAM
    /// check) and cancels without a known target go.
    pub fn writer_addr(&self) -> InstanceAddr {
        self.writer()
            .map(|t| t.addr.clone())
            .unwrap_or_else(|| self.upstream.clone())
    }

    /// Whether control-path health checks run.
    pub fn checks_enabled(&self) -> bool {
        self.checks
    }

    /// A receiver that sees every change (for borrows waiting on a writer or reader).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Resolves when the health checks should run now rather than at their interval.
    pub async fn check_requested(&self) {
        self.check_now.notified().await
    }

    /// Whether a failover is under way (checks run faster).
    pub fn failing(&self) -> bool {
        lock(&self.failing_since).is_some()
    }

    /// The last failover's duration.
    pub fn last_failover(&self) -> Option<Duration> {
        match self.last_failover_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Where a new backend connection for `endpoint` should go.
    pub fn pick(&self, endpoint: Endpoint) -> Pick {
        match endpoint {
            Endpoint::Writer => self.pick_writer(),
            Endpoint::Reader => {
                let best = self
                    .targets()
                    .into_iter()
                    .filter(|t| self.serves_reads(t))
                    .min_by_key(|t| t.connections.get());
                let unchecked = || {
                    self.targets()
                        .iter()
                        .any(|t| lock(&t.status).latest.is_none())
                };
                match best {
                    Some(t) => Pick::Target(t),
                    // Just started: the first checks decide, whatever the fallback says.
                    None if unchecked() => Pick::Wait("the instances have not been checked yet"),
                    None => match self.reader_fallback {
                        ReaderFallback::Writer => self.pick_writer(),
                        ReaderFallback::Wait => Pick::Wait("no reader instance is up"),
                        ReaderFallback::Error => {
                            Pick::Refuse("no reader instance is up (reader_fallback = error)")
                        }
                    },
                }
            }
        }
    }

    fn pick_writer(&self) -> Pick {
        match self.writer() {
            // A writer that is down is waited for (a restart) unless nobody checks it, in
            // which case only a connection attempt can tell.
            Some(w)
                if w.health() == Health::Up || w.health() == Health::Unchecked || !self.checks =>
            {
                Pick::Target(w)
            }
            Some(_) => Pick::Wait("the writer is not reachable"),
            None => Pick::Wait("no instance is the writer"),
        }
    }

    fn serves_reads(&self, t: &Target) -> bool {
        let st = lock(&t.status);
        let reader = matches!(st.latest, Some(Observation::Standby { .. }));
        let fresh = match (self.max_replica_lag, st.lag) {
            (None, _) => true,
            (Some(max), Some(lag)) => lag <= max,
            (Some(_), None) => false,
        };
        reader && st.health == Health::Up && fresh && !t.is_retired()
    }

    /// Whether a backend on `target` may go back to a pool for `endpoint` (else it closes):
    /// the writer's pools keep only the writer's connections, the readers' only readers'.
    pub fn still_serves(&self, endpoint: Endpoint, target: &Arc<Target>) -> bool {
        if target.is_retired() {
            return false;
        }
        let is_writer = self.writer().is_some_and(|w| Arc::ptr_eq(&w, target));
        match endpoint {
            Endpoint::Writer => is_writer,
            Endpoint::Reader => {
                self.serves_reads(target)
                    || (is_writer && self.reader_fallback == ReaderFallback::Writer)
            }
        }
    }

    /// A data-path connection to `target` failed the way a down server fails (refused,
    /// timed out, 57P03 at login): run the checks now; without checks, mark it down.
    pub fn connect_failed(&self, target: &Target, why: &str) {
        if !self.checks {
            let mut st = lock(&target.status);
            st.availability.record(Instant::now(), false);
            if st.health != Health::Down {
                tracing::warn!(target = %target.addr, error = why, "database instance unreachable");
                st.health = Health::Down;
                st.since = Instant::now();
            }
            st.last_error = Some(why.to_string());
        }
        self.check_now.notify_waiters();
    }

    /// A data-path connection to `target` logged in.
    pub fn connect_succeeded(&self, target: &Target) {
        if self.checks {
            return;
        }
        let mut st = lock(&target.status);
        st.availability.record(Instant::now(), true);
        if st.health != Health::Up {
            if st.health == Health::Down {
                tracing::info!(target = %target.addr, "database instance reachable again");
            }
            st.health = Health::Up;
            st.since = Instant::now();
            st.last_error = None;
        }
    }

    /// Records a health check of `target` and re-decides the writer.
    pub fn observe(
        &self,
        target: &Arc<Target>,
        obs: Observation,
        max_connections: Option<u32>,
    ) -> Change {
        let now = Instant::now();
        let mut change = Change::default();
        {
            let mut st = lock(&target.status);
            let health = match &obs {
                Observation::Primary { .. } | Observation::Standby { .. } => Health::Up,
                Observation::Starting(_) => Health::Starting,
                Observation::Unreachable(_) => Health::Down,
            };
            if obs.is_up() {
                target.checks_ok.inc();
            } else {
                target.checks_failed.inc();
            }
            st.availability.record(now, obs.is_up());
            let role_changed = st.latest.as_ref().map(std::mem::discriminant)
                != Some(std::mem::discriminant(&obs));
            if health != st.health || role_changed {
                let what = match &obs {
                    Observation::Primary { .. } => "up, out of recovery (can be the writer)",
                    Observation::Standby { .. } => "up, in recovery (a reader)",
                    Observation::Starting(_) => "answering but not taking sessions (57P03)",
                    Observation::Unreachable(_) => "unreachable",
                };
                match &obs {
                    Observation::Unreachable(e) | Observation::Starting(e) => {
                        tracing::warn!(target = %target.addr, was = st.health.as_str(), error = %e, "database instance {what}")
                    }
                    _ => {
                        tracing::info!(target = %target.addr, was = st.health.as_str(), "database instance {what}")
                    }
                }
                if st.health == Health::Up && health != Health::Up {
                    change.went_down = true;
                }
                st.health = health;
                st.since = now;
                self.bump();
            }
            st.last_check = Some(SystemTime::now());
            st.last_error = match &obs {
                Observation::Unreachable(e) | Observation::Starting(e) => Some(e.clone()),
                _ => None,
            };
            if max_connections.is_some() {
                st.max_connections = max_connections;
            }
            let was_fresh = st.lag;
            match &obs {
                Observation::Standby {
                    replay_lsn: Some(r),
                } => {
                    st.lag = lock(&self.writer_history).lag(*r, now);
                }
                Observation::Standby { replay_lsn: None } => st.lag = None,
                _ => st.lag = None,
            }
            if self.max_replica_lag.is_some() && was_fresh != st.lag {
                // A reader crossing the bound changes the reader set.
                self.bump();
            }
            st.latest = Some(obs.clone());
        }
        if let Observation::Primary { lsn: Some(lsn) } = obs {
            if self.writer().is_some_and(|w| Arc::ptr_eq(&w, target)) {
                lock(&self.writer_history).record(now, lsn);
            }
        }
        change.writer_changed = self.decide();
        change
    }

    /// Applies [`role::decide`] to the latest observations; true when the writer changed.
    fn decide(&self) -> bool {
        if self.fixed_writer.load(Ordering::Relaxed) {
            return false;
        }
        let targets = self.targets();
        let current = self.writer();
        let current_idx = current
            .as_ref()
            .and_then(|w| targets.iter().position(|t| Arc::ptr_eq(t, w)));
        let guards: Vec<_> = targets.iter().map(|t| lock(&t.status)).collect();
        let seen: Vec<Seen<'_>> = guards
            .iter()
            .zip(&targets)
            .map(|(g, t)| Seen {
                latest: g.latest.as_ref(),
                preferred: t.addr == self.upstream,
            })
            .collect();
        let decision = role::decide(current_idx, &seen);
        let current_failing = current_idx.and_then(|i| seen.get(i)).is_some_and(|s| {
            s.latest
                .is_some_and(|o| !matches!(o, Observation::Primary { .. }))
        });
        drop(seen);
        drop(guards);
        let now = Instant::now();
        match decision {
            Decision::Keep => {
                let mut failing = lock(&self.failing_since);
                if current_failing && current.is_some() && targets.len() > 1 {
                    failing.get_or_insert(now);
                } else if !current_failing {
                    *failing = None;
                }
                false
            }
            Decision::Switch(i) => {
                let Some(new) = targets.get(i).cloned() else {
                    return false;
                };
                let started = lock(&self.failing_since).take();
                *self.writer.write().unwrap_or_else(|p| p.into_inner()) = Some(new.clone());
                lock(&self.writer_history).clear();
                match &current {
                    Some(old) => {
                        self.failovers.inc();
                        let took = started
                            .map(|s| now.saturating_duration_since(s))
                            .unwrap_or_default();
                        self.last_failover_ms
                            .store((took.as_millis() as u64).max(1), Ordering::Relaxed);
                        tracing::warn!(from = %old.addr, to = %new.addr, failover_ms = took.as_millis() as u64,
                            "writer failover: the writer pools now connect to the new writer");
                    }
                    None => tracing::info!(writer = %new.addr, "writer found"),
                }
                self.bump();
                true
            }
            Decision::Drop => {
                lock(&self.failing_since).get_or_insert(now);
                let was = self
                    .writer
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(old) = was {
                    tracing::warn!(writer = %old.addr, "the writer is in recovery and no other instance is out of it: no writer until one is promoted");
                }
                self.bump();
                true
            }
            Decision::Ambiguous(which) => {
                let addrs: Vec<String> = which
                    .iter()
                    .filter_map(|i| targets.get(*i))
                    .map(|t| t.addr.to_string())
                    .collect();
                tracing::error!(instances = %addrs.join(","), "several instances are out of recovery and none is the current writer; choosing none until only one is (resolve the split brain)");
                false
            }
        }
    }

    /// Replaces the targets with Aurora's discovered instances (by address; kept targets keep
    /// their state). Returns the new targets so the monitor can start checking them.
    pub fn set_discovered(&self, addrs: Vec<InstanceAddr>) -> Vec<Arc<Target>> {
        let mut added = Vec::new();
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(addrs.len());
        for a in addrs {
            match targets.iter().find(|t| t.addr == a) {
                Some(t) => next.push(t.clone()),
                None => {
                    let t = Target::new(a, Origin::Discovered);
                    added.push(t.clone());
                    next.push(t);
                }
            }
        }
        if next.is_empty() {
            return added;
        }
        for old in targets.iter() {
            if !next.iter().any(|t| Arc::ptr_eq(t, old)) {
                old.retired.store(true, Ordering::Relaxed);
                tracing::info!(target = %old.addr, "instance left the cluster's topology");
                lock(&self.retired).push(old.clone());
            }
        }
        *targets = next;
        drop(targets);
        if self.fixed_writer.swap(false, Ordering::Relaxed) {
            // The cluster endpoint stops being a target: the discovered writer replaces it.
            tracing::info!("Aurora topology discovered: connecting to the instances directly");
        }
        lock(&self.retired).retain(|t| t.connections.get() > 0);
        self.bump();
        added
    }

    /// Every target as it stands, for SHOW TARGETS and /metrics.
    pub fn views(&self) -> Vec<TargetView> {
        let writer = self.writer();
        self.targets()
            .iter()
            .map(|t| {
                let st = lock(&t.status);
                let is_writer = writer.as_ref().is_some_and(|w| Arc::ptr_eq(w, t));
                let role = if is_writer {
                    Role::Writer
                } else if matches!(st.latest, Some(Observation::Standby { .. })) {
                    Role::Reader
                } else {
                    Role::Unknown
                };
                TargetView {
                    addr: t.addr.clone(),
                    role,
                    health: st.health,
                    last_check: st.last_check,
                    last_error: st.last_error.clone(),
                    connections: t.connections.get(),
                    availability: st.availability.percentage(),
                    lag: st.lag,
                    max_connections: st.max_connections,
                    origin: t.origin,
                    checks_ok: t.checks_ok.get(),
                    checks_failed: t.checks_failed.get(),
                    for_secs: st.since.elapsed().as_secs(),
                }
            })
            .collect()
    }
}

/// Counts a data-path backend against its target while it lives (held by `ServerConn`).
#[derive(Debug)]
pub struct TargetLease(Arc<Target>);

impl TargetLease {
    /// Counts one more connection on `target`.
    pub fn new(target: Arc<Target>) -> Self {
        target.connections.inc();
        TargetLease(target)
    }

    /// The target.
    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for TargetLease {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

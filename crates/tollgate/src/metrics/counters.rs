//! Process-wide counters, cheap enough for the data path (relaxed atomics).

use crate::pin::PinReason;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one (never below zero).
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything Tollgate counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// Memory clients hold in large messages being read whole (max_message_memory).
    pub message_memory: crate::message_memory::MessageMemory,
    /// Clients connected now.
    pub clients_current: Gauge,
    /// Clients that logged in.
    pub clients_setup_succeeded: Counter,
    /// Clients refused during startup or login.
    pub clients_setup_failed: Counter,
    /// Failed logins (wrong password, unknown user).
    pub auth_failures: Counter,
    /// Clients pinned to a backend, by reason (index = position in [`PinReason::ALL`]).
    pub pins: [Counter; PinReason::ALL.len()],
    /// Cancels forwarded to a backend.
    pub cancels_forwarded: Counter,
    /// Cancels ignored (forged key or nothing running).
    pub cancels_ignored: Counter,
    /// Client connections closed after login.
    pub clients_closed: Counter,
    /// Requests sent again on another backend because the first died before answering.
    pub backend_retries: Counter,
    /// Backends lost under a request that could not be sent again (the client got an error
    /// and kept its connection).
    pub backends_lost: Counter,
    /// Clients refused during startup or login, by reason.
    pub setup_failures: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// IAM auth tokens accepted, by how (`local`, `delegate`, `delegate_cache`).
    pub iam_successes: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// IAM logins refused, by the check that failed (`expired`, `wrong_user`, ...).
    pub iam_failures: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts a refused client under `reason`.
    pub fn setup_failed(&self, reason: &'static str) {
        self.clients_setup_failed.inc();
        *crate::sync::lock(&self.setup_failures)
            .entry(reason)
            .or_insert(0) += 1;
    }

    /// Counts an accepted IAM auth token.
    pub fn iam_succeeded(&self, how: &'static str) {
        *crate::sync::lock(&self.iam_successes)
            .entry(how)
            .or_insert(0) += 1;
    }

    /// Counts a refused IAM login under the check that failed.
    pub fn iam_failed(&self, reason: &'static str) {
        *crate::sync::lock(&self.iam_failures)
            .entry(reason)
            .or_insert(0) += 1;
    }

    /// Counts a pin.
    pub fn pin(&self, reason: PinReason) {
        if let Some(i) = PinReason::ALL.iter().position(|r| *r == reason) {
            if let Some(c) = self.pins.get(i) {
                c.inc();
            }
        }
    }

    /// The pin count for one reason.
    pub fn pins_for(&self, reason: PinReason) -> u64 {
        PinReason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.pins.get(i))
            .map_or(0, Counter::get)
    }
}

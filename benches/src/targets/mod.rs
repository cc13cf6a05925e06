//! The four things a scenario runs against: PostgreSQL itself, PgBouncer, and Tollgate on one
//! worker thread and on two.

pub mod child;
pub mod files;
pub mod pgbouncer;
pub mod postgres;
pub mod tollgate;

use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, Result};

/// Where pgbench points in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// PostgreSQL with no pooler in between: the baseline.
    Direct,
    /// PgBouncer in transaction mode: the pooler Tollgate is compared with.
    PgBouncer,
    /// Tollgate in transaction mode on one thread (`--worker-threads 1`, tokio's
    /// current-thread runtime).
    Tollgate,
    /// The same Tollgate on two worker threads (`--worker-threads 2`, the multi-thread
    /// runtime): whether a second core buys throughput or only costs CPU.
    Tollgate2,
}

impl Target {
    /// All targets in their canonical order.
    pub const ALL: [Target; 4] = [
        Target::Direct,
        Target::PgBouncer,
        Target::Tollgate,
        Target::Tollgate2,
    ];

    /// The Tollgate arms.
    pub const TOLLGATES: [Target; 2] = [Target::Tollgate, Target::Tollgate2];

    /// The poolers, in the order the report lists them.
    pub const POOLERS: [Target; 3] = [Target::Tollgate, Target::Tollgate2, Target::PgBouncer];

    /// The name in progress lines and the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::PgBouncer => "pgbouncer",
            Target::Tollgate => "tollgate",
            Target::Tollgate2 => "tollgate-2t",
        }
    }

    /// The name in report headings and prose.
    pub fn title(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::PgBouncer => "PgBouncer",
            Target::Tollgate => "Tollgate",
            Target::Tollgate2 => "Tollgate-2t",
        }
    }

    /// `--worker-threads` of a Tollgate arm; `None` for the others.
    pub fn worker_threads(self) -> Option<usize> {
        match self {
            Target::Tollgate => Some(1),
            Target::Tollgate2 => Some(2),
            Target::Direct | Target::PgBouncer => None,
        }
    }

    /// The order the targets run in during repetition `rep` (0-based): rotated by one each
    /// repetition, so over four repetitions every target takes every position once and none
    /// always runs first on a cold cache or last on a warm one.
    pub fn order_for_rep(rep: usize) -> [Target; 4] {
        let mut order = Target::ALL;
        order.rotate_left(rep % Target::ALL.len());
        order
    }
}

/// A TCP port on 127.0.0.1 nobody is bound to right now (someone may take it before we bind it;
/// the child then fails to start and says so).
pub fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .context("find a free TCP port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_every_position_over_four_reps() {
        let orders: Vec<[Target; 4]> = (0..4).map(Target::order_for_rep).collect();
        for position in 0..4 {
            let mut seen: Vec<Target> = orders.iter().map(|o| o[position]).collect();
            seen.sort();
            assert_eq!(seen, Target::ALL.to_vec());
        }
        assert_eq!(Target::order_for_rep(4), Target::order_for_rep(0));
    }

    #[test]
    fn only_the_tollgate_arms_have_worker_threads() {
        let threads: Vec<Option<usize>> = Target::ALL.iter().map(|t| t.worker_threads()).collect();
        assert_eq!(threads, [None, None, Some(1), Some(2)]);
        assert_eq!(Target::Tollgate2.name(), "tollgate-2t");
    }
}

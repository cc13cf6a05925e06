//! The three things a scenario runs against: PostgreSQL itself, PgBouncer and Tollgate.

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
    /// Tollgate in transaction mode.
    Tollgate,
}

impl Target {
    /// All targets in their canonical order.
    pub const ALL: [Target; 3] = [Target::Direct, Target::PgBouncer, Target::Tollgate];

    /// The name in progress lines and the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::PgBouncer => "pgbouncer",
            Target::Tollgate => "tollgate",
        }
    }

    /// The order the targets run in during repetition `rep` (0-based): rotated by one each
    /// repetition, so every target takes every position equally often and none always runs
    /// first on a cold cache or last on a warm one.
    pub fn order_for_rep(rep: usize) -> [Target; 3] {
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
    fn every_target_takes_every_position_over_three_reps() {
        let orders: Vec<[Target; 3]> = (0..3).map(Target::order_for_rep).collect();
        for position in 0..3 {
            let mut seen: Vec<Target> = orders.iter().map(|o| o[position]).collect();
            seen.sort();
            assert_eq!(seen, Target::ALL.to_vec());
        }
        assert_eq!(Target::order_for_rep(3), Target::order_for_rep(0));
    }
}

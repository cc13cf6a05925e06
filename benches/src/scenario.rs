//! The scenarios: what pgbench runs, with how many clients, and what else a run needs.

use anyhow::{bail, Result};

/// The scenario names `--scenario` accepts, in the order they run.
pub const NAMES: [&str; 8] = [
    "select-simple",
    "select-extended",
    "select-prepared",
    "tpcb",
    "connect-storm",
    "connect-storm-iam",
    "idle-clients",
    "latency-c1",
];

/// The scenario that is not a pgbench case: it starts its own primary and replica, kills
/// one and promotes the other (see `failover.rs`).
pub const FAILOVER: &str = "failover";

/// Whether a plain `--quick` (no `--scenario`) runs [`FAILOVER`]: only if it keeps within a
/// smoke test's budget of 60 s there. It takes about 21 s under `--quick` (one run per arm)
/// on a 2-core machine; see benches/REPORT.md, "failover".
pub const FAILOVER_IN_QUICK: bool = true;

/// pgbench threads (`-j`) unless a case has fewer clients.
const THREADS: u32 = 2;

/// Idle connections held open during an idle-clients case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleClients {
    /// How many.
    pub count: usize,
    /// Whether they log in over TLS.
    pub tls: bool,
}

/// One measured configuration: a scenario with its client count and TLS choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The scenario it belongs to (one of [`NAMES`]).
    pub scenario: &'static str,
    /// Short label for progress lines and headings: "select-simple c=32".
    pub label: String,
    /// What it shows, for the report.
    pub about: &'static str,
    /// pgbench `-c`.
    pub clients: u32,
    /// pgbench's script and query-mode flags (`-S -M simple`; empty for TPC-B).
    pub script: Vec<&'static str>,
    /// pgbench `-C`: a new connection per transaction.
    pub connect_per_transaction: bool,
    /// pgbench connects with `sslmode=require` (otherwise `disable`).
    pub client_tls: bool,
    /// Idle connections held open during the run; poolers only.
    pub idle: Option<IdleClients>,
    /// Write pgbench's per-transaction log to get latency percentiles.
    pub latency_log: bool,
    /// Why PgBouncer is expected to fail this case, if it is.
    pub pgbouncer_fails_because: Option<&'static str>,
    /// pgbench's password is an RDS IAM auth token, against a Tollgate that requires IAM
    /// authentication (PgBouncer and PostgreSQL have none: n/a).
    pub iam: bool,
}

impl Case {
    /// A case with the defaults: 32 clients, plain TCP, nothing held open.
    fn new(
        scenario: &'static str,
        label: &str,
        about: &'static str,
        script: &[&'static str],
    ) -> Case {
        Case {
            scenario,
            label: label.to_owned(),
            about,
            clients: 32,
            script: script.to_vec(),
            connect_per_transaction: false,
            client_tls: false,
            idle: None,
            latency_log: false,
            pgbouncer_fails_because: None,
            iam: false,
        }
    }

    /// Why this case does not run against `target`, if it does not.
    pub fn not_applicable(&self, target: crate::targets::Target) -> Option<&'static str> {
        use crate::targets::Target;
        match target {
            Target::Direct if self.iam => Some("PostgreSQL cannot check RDS IAM auth tokens"),
            Target::Direct if self.idle.is_some() => {
                Some("direct PostgreSQL would need one backend per idle client")
            }
            Target::PgBouncer if self.iam => Some("PgBouncer has no IAM authentication"),
            _ => None,
        }
    }

    /// pgbench `-j`: two, or one per client when there are fewer.
    pub fn threads(&self) -> u32 {
        THREADS.min(self.clients)
    }

    /// The pgbench flags for a run of `seconds` (connection settings come separately).
    pub fn pgbench_args(&self, seconds: u32) -> Vec<String> {
        let mut args: Vec<String> = vec!["-n".into()];
        args.extend(self.script.iter().map(|s| (*s).to_owned()));
        if self.connect_per_transaction {
            args.push("-C".into());
        }
        args.extend([
            "-c".into(),
            self.clients.to_string(),
            "-j".into(),
            self.threads().to_string(),
            "-T".into(),
            seconds.to_string(),
        ]);
        args
    }

    /// The command line as the report shows it.
    pub fn command_line(&self, seconds: u32) -> String {
        let mut line = format!("pgbench {}", self.pgbench_args(seconds).join(" "));
        if self.latency_log {
            line.push_str(" -l");
        }
        line.push_str(if self.client_tls {
            " (sslmode=require)"
        } else {
            " (sslmode=disable)"
        });
        if self.iam {
            line.push_str(" with an IAM auth token as PGPASSWORD");
        }
        line
    }
}

/// Every case, in run order; `idle_count` is how many idle clients the idle cases hold.
pub fn all_cases(idle_count: usize) -> Vec<Case> {
    let simple = ["-S", "-M", "simple"];
    let mut cases = vec![
        Case::new(
            "select-simple",
            "select-simple c=32",
            "Point selects, simple protocol: the relay's per-message overhead.",
            &simple,
        ),
        Case {
            clients: 256,
            ..Case::new(
                "select-simple",
                "select-simple c=256",
                "As above with 256 clients over a 20-connection pool: queueing for a backend.",
                &simple,
            )
        },
        Case {
            clients: 1000,
            ..Case::new(
                "select-simple",
                "select-simple c=1000",
                "As above with 1,000 clients over a 20-connection pool: the cost of many \
                 active clients per backend (PostgreSQL direct runs 1,000 backends).",
                &simple,
            )
        },
        Case::new(
            "select-extended",
            "select-extended c=32",
            "Point selects, extended protocol with unnamed statements (Parse/Bind/Execute/Sync).",
            &["-S", "-M", "extended"],
        ),
        Case {
            pgbouncer_fails_because: Some(
                "PgBouncer in transaction mode does not keep named prepared statements across \
                 backends (before 1.21's max_prepared_statements, which the harness leaves off)",
            ),
            ..Case::new(
                "select-prepared",
                "select-prepared c=32",
                "Point selects with named prepared statements (each connection prepares once, \
                 then Bind/Execute per transaction).",
                &["-S", "-M", "prepared"],
            )
        },
        Case::new(
            "tpcb",
            "tpcb c=32",
            "pgbench's built-in TPC-B-like transaction (BEGIN, 3 UPDATEs, SELECT, INSERT, END).",
            &["-M", "simple"],
        ),
    ];
    for tls in [false, true] {
        cases.push(Case {
            connect_per_transaction: true,
            client_tls: tls,
            ..Case::new(
                "connect-storm",
                if tls {
                    "connect-storm tls c=32"
                } else {
                    "connect-storm c=32"
                },
                if tls {
                    "A new connection per transaction, TLS from the client (ECDSA P-256): \
                     handshake and SCRAM login cost."
                } else {
                    "A new connection per transaction, plain TCP: SCRAM login cost."
                },
                &simple,
            )
        });
    }
    cases.push(Case {
        connect_per_transaction: true,
        client_tls: true,
        iam: true,
        ..Case::new(
            "connect-storm-iam",
            "connect-storm-iam c=32",
            "A new TLS connection per transaction whose password is an RDS IAM auth token \
             (iam_auth = required, local verifier, a policy file): handshake and token \
             verification, the backend from the pool. Compare with connect-storm tls (SCRAM).",
            &simple,
        )
    });
    for tls in [false, true] {
        cases.push(Case {
            idle: Some(IdleClients {
                count: idle_count,
                tls,
            }),
            ..Case::new(
                "idle-clients",
                if tls {
                    "idle-clients tls c=32"
                } else {
                    "idle-clients c=32"
                },
                if tls {
                    "Idle TLS client connections held open (md5 login) while 32 clients run \
                     select-simple: memory per idle client and its cost to the active ones."
                } else {
                    "Idle plain client connections held open (md5 login) while 32 clients run \
                     select-simple: memory per idle client and its cost to the active ones."
                },
                &simple,
            )
        });
    }
    cases.push(Case {
        clients: 1,
        latency_log: true,
        ..Case::new(
            "latency-c1",
            "latency-c1",
            "One client, point selects: the latency a pooler adds to each round trip.",
            &simple,
        )
    });
    cases
}

/// The most pgbench clients any of `cases` opens at once: the open-files limit and the
/// direct PostgreSQL's max_connections must make room for them.
pub fn max_clients(cases: &[Case]) -> u32 {
    cases.iter().map(|c| c.clients).max().unwrap_or(0)
}

/// The cases of the named scenarios (all when `names` is empty), in run order; [`FAILOVER`]
/// is accepted but has no case ([`runs_failover`] says whether it runs).
pub fn select(cases: Vec<Case>, names: &[String]) -> Result<Vec<Case>> {
    for name in names {
        if !NAMES.contains(&name.as_str()) && name != FAILOVER {
            bail!(
                "unknown scenario {name:?}; the scenarios are: {}, {FAILOVER}",
                NAMES.join(", ")
            );
        }
    }
    Ok(cases
        .into_iter()
        .filter(|case| names.is_empty() || names.iter().any(|n| n == case.scenario))
        .collect())
}

/// Whether the failover scenario runs: when named, or when nothing is named (under
/// `--quick` only if [`FAILOVER_IN_QUICK`]).
pub fn runs_failover(names: &[String], quick: bool) -> bool {
    if names.is_empty() {
        !quick || FAILOVER_IN_QUICK
    } else {
        names.iter().any(|n| n == FAILOVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_case_and_every_case_a_known_scenario() {
        let cases = all_cases(500);
        for name in NAMES {
            assert!(
                cases.iter().any(|c| c.scenario == name),
                "{name} has no case"
            );
        }
        assert!(cases.iter().all(|c| NAMES.contains(&c.scenario)));
    }

    #[test]
    fn pgbench_args_follow_the_case() {
        let cases = all_cases(500);
        let args = |label: &str, seconds: u32| {
            let case = cases.iter().find(|c| c.label == label).unwrap();
            (
                case.pgbench_args(seconds).join(" "),
                case.command_line(seconds),
            )
        };
        let (storm, storm_line) = args("connect-storm tls c=32", 10);
        assert_eq!(storm, "-n -S -M simple -C -c 32 -j 2 -T 10");
        assert!(storm_line.ends_with("(sslmode=require)"));
        let (c1000, _) = args("select-simple c=1000", 3);
        assert_eq!(c1000, "-n -S -M simple -c 1000 -j 2 -T 3");
        assert_eq!(args("latency-c1", 5).0, "-n -S -M simple -c 1 -j 1 -T 5");
    }

    #[test]
    fn selecting_filters_by_scenario_and_rejects_unknown_names() {
        let picked = select(all_cases(10), &["select-simple".into()]).unwrap();
        let labels: Vec<&str> = picked.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "select-simple c=32",
                "select-simple c=256",
                "select-simple c=1000"
            ]
        );
        assert_eq!(
            select(all_cases(10), &[]).unwrap().len(),
            all_cases(10).len()
        );
        let err = select(all_cases(10), &["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("select-prepared"));
        assert!(err.to_string().contains("failover"));
    }

    #[test]
    fn failover_runs_when_named_or_in_a_full_run() {
        assert!(select(all_cases(10), &[FAILOVER.into()])
            .unwrap()
            .is_empty());
        assert!(runs_failover(&[FAILOVER.into()], true));
        assert!(runs_failover(&[], false));
        assert_eq!(runs_failover(&[], true), FAILOVER_IN_QUICK);
        assert!(!runs_failover(&["tpcb".into()], false));
    }

    #[test]
    fn most_clients_fit_the_limits_the_harness_sets() {
        assert_eq!(max_clients(&all_cases(10)), 1000);
        assert_eq!(max_clients(&[]), 0);
    }

    #[test]
    fn direct_is_skipped_only_for_idle_clients_and_iam() {
        for case in all_cases(10) {
            assert_eq!(
                case.not_applicable(crate::targets::Target::Direct)
                    .is_none(),
                case.scenario != "idle-clients" && case.scenario != "connect-storm-iam"
            );
            assert_eq!(
                case.not_applicable(crate::targets::Target::PgBouncer)
                    .is_some(),
                case.iam
            );
        }
    }
}

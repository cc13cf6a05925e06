//! Who is the writer: a pure decision from the latest health check of every instance, so
//! the rules can be tested without servers. The rules follow what the issue asks of a
//! failover: move to the first instance that says it is out of recovery, and never to two
//! writers at once (the old writer must be unreachable or itself in recovery).

/// What one health check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// No connection or no answer (refused, timed out, reset).
    Unreachable(String),
    /// The server answered but does not take sessions yet or any more (SQLSTATE 57P03:
    /// starting up, shutting down, in recovery without hot standby).
    Starting(String),
    /// `pg_is_in_recovery()` is false; the WAL position it reported.
    Primary { lsn: Option<u64> },
    /// `pg_is_in_recovery()` is true; the WAL position it has replayed.
    Standby { replay_lsn: Option<u64> },
}

impl Observation {
    /// Whether the instance serves sessions.
    pub fn is_up(&self) -> bool {
        matches!(
            self,
            Observation::Primary { .. } | Observation::Standby { .. }
        )
    }
}

/// One instance as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Its latest observation; `None` before its first check.
    pub latest: Option<&'a Observation>,
    /// The address the upstream names (a tie-breaker between two instances claiming to be
    /// the writer at start, before Tollgate has chosen one).
    pub preferred: bool,
}

/// What to do with the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The current writer stays (or there is none and none can be chosen yet).
    Keep,
    /// Make this instance (index into the slice) the writer.
    Switch(usize),
    /// The current writer is in recovery (demoted) and nobody else is out of it: no writer.
    Drop,
    /// Several instances claim to be the writer and none is the current one: choose none and
    /// say so (split brain is the operator's to resolve).
    Ambiguous(Vec<usize>),
}

/// Decides the writer from `seen`, given the current writer's index.
pub fn decide(current: Option<usize>, seen: &[Seen<'_>]) -> Decision {
    let current_obs = current.and_then(|c| seen.get(c)).map(|s| s.latest);
    match current_obs {
        // The writer still says it is the writer, or has not been checked yet.
        Some(Some(Observation::Primary { .. })) | Some(None) => return Decision::Keep,
        _ => {}
    }
    let candidates: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            Some(*i) != current && matches!(s.latest, Some(Observation::Primary { .. }))
        })
        .map(|(i, _)| i)
        .collect();
    match candidates.as_slice() {
        [one] => Decision::Switch(*one),
        [] => match current_obs {
            // Down or restarting: nobody else has taken over; it may come back as the writer.
            Some(Some(Observation::Unreachable(_) | Observation::Starting(_))) => Decision::Keep,
            Some(Some(Observation::Standby { .. })) => Decision::Drop,
            _ => Decision::Keep,
        },
        many => {
            let preferred: Vec<usize> = many
                .iter()
                .copied()
                .filter(|i| seen.get(*i).is_some_and(|s| s.preferred))
                .collect();
            match preferred.as_slice() {
                [one] => Decision::Switch(*one),
                _ => Decision::Ambiguous(many.to_vec()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> Observation {
        Observation::Primary { lsn: Some(1) }
    }
    fn standby() -> Observation {
        Observation::Standby {
            replay_lsn: Some(1),
        }
    }
    fn down() -> Observation {
        Observation::Unreachable("refused".into())
    }
    fn seen(obs: &[Option<&Observation>]) -> Vec<Seen<'static>> {
        // Leaked for the test's convenience: tiny and test-only.
        obs.iter()
            .map(|o| Seen {
                latest: o.map(|o| &*Box::leak(Box::new(o.clone()))),
                preferred: false,
            })
            .collect()
    }

    #[test]
    fn a_writer_that_still_says_primary_is_kept_even_if_another_claims_it() {
        let (p, s) = (primary(), standby());
        assert_eq!(
            decide(Some(0), &seen(&[Some(&p), Some(&p)])),
            Decision::Keep
        );
        assert_eq!(
            decide(Some(0), &seen(&[Some(&p), Some(&s)])),
            Decision::Keep
        );
    }

    #[test]
    fn the_first_check_picks_the_only_primary() {
        let (p, s) = (primary(), standby());
        assert_eq!(
            decide(None, &seen(&[Some(&s), Some(&p)])),
            Decision::Switch(1)
        );
        assert_eq!(decide(None, &seen(&[Some(&s), None])), Decision::Keep);
    }

    #[test]
    fn a_dead_writer_is_replaced_by_a_promoted_standby_and_kept_while_nobody_is_promoted() {
        let (p, s, d) = (primary(), standby(), down());
        assert_eq!(
            decide(Some(0), &seen(&[Some(&d), Some(&s)])),
            Decision::Keep
        );
        assert_eq!(
            decide(Some(0), &seen(&[Some(&d), Some(&p)])),
            Decision::Switch(1)
        );
        let starting = Observation::Starting("the database system is starting up".into());
        assert_eq!(
            decide(Some(0), &seen(&[Some(&starting), Some(&s)])),
            Decision::Keep
        );
    }

    #[test]
    fn a_demoted_writer_is_dropped_when_nobody_else_is_primary() {
        let s = standby();
        assert_eq!(
            decide(Some(0), &seen(&[Some(&s), Some(&s)])),
            Decision::Drop
        );
    }

    #[test]
    fn two_new_primaries_are_ambiguous_unless_one_is_the_upstream() {
        let (p, d) = (primary(), down());
        let mut v = seen(&[Some(&d), Some(&p), Some(&p)]);
        assert_eq!(decide(Some(0), &v), Decision::Ambiguous(vec![1, 2]));
        v[2].preferred = true;
        assert_eq!(decide(Some(0), &v), Decision::Switch(2));
        assert_eq!(
            decide(None, &seen(&[Some(&p), Some(&p)])),
            Decision::Ambiguous(vec![0, 1])
        );
    }

    #[test]
    fn an_unchecked_writer_is_kept() {
        let p = primary();
        assert_eq!(decide(Some(0), &seen(&[None, Some(&p)])), Decision::Keep);
    }
}

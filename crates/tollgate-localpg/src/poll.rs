//! Awaiting a condition on a server that has no event for it (a standby streaming, a row
//! replayed, recovery ending), by asking again with a growing pause and a deadline.

use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::LocalPgError;

/// How long a replication condition gets before we report it as stuck.
pub(crate) const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// First and largest pause between polls; a poll is one psql run, a few milliseconds.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// See [`FIRST_PAUSE`].
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Log lines quoted when a wait times out.
const LOG_LINES: usize = 20;

/// What one poll found.
#[derive(Debug)]
pub(crate) enum Poll {
    /// The condition holds.
    Done,
    /// Not yet; what was seen instead, for the timeout message.
    NotYet(String),
}

impl Cluster {
    /// Runs `check` until it says [`Poll::Done`] or `timeout` passes; `what` names the
    /// condition in the timeout error, which also quotes this cluster's log.
    pub(crate) fn poll_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Poll, LocalPgError>,
    ) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_PAUSE;
        loop {
            let last = match check()? {
                Poll::Done => return Ok(()),
                Poll::NotYet(seen) => seen,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(LocalPgError::WaitTimeout {
                    what: what.to_owned(),
                    port: self.port(),
                    secs: timeout.as_secs(),
                    last,
                    tail: self.log_tail(LOG_LINES),
                });
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Runs `sql` as the superuser until it prints `expected` (at most 30 s); for awaiting
    /// a replica's replay of a commit, which synchronous commit alone does not promise.
    ///
    /// An SQL error counts as "not yet" (the table may not have been replayed either).
    pub fn wait_for_value(&self, db: &str, sql: &str, expected: &str) -> Result<(), LocalPgError> {
        let what = format!("{sql:?} on database {db} to return {expected:?}");
        self.poll_until(&what, REPLICATION_TIMEOUT, || match self.psql(db, sql) {
            Ok(out) if out == expected => Ok(Poll::Done),
            Ok(out) => Ok(Poll::NotYet(format!("{out:?}"))),
            Err(LocalPgError::Psql { stderr, .. }) => Ok(Poll::NotYet(stderr)),
            Err(err) => Err(err),
        })
    }
}

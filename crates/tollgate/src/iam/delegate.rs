//! The `delegate` verifier: Tollgate cannot know an IAM principal's secret, so it asks the one
//! party that can check a token, the database (Aurora with IAM database authentication), by
//! logging in to it with the token as the password.
//!
//! A token the database accepts is remembered by its SHA-256 (never the token itself) until it
//! expires, so a burst of clients re-using one token (Lambda) costs one database login: the
//! first client checks, the others wait for its verdict. Refusals are not remembered, so a
//! transient failure does not stick. The checking connection is closed once it has logged in,
//! not put in the pool: the pool counts every connection it holds against `pool_size` and the
//! global cap, and a check must never push a pool past its bounds. At most `max_checks` checks
//! run at once; each is bounded by `server_connect_timeout`.

use super::Refusal;
use crate::backend::{BackendError, Connector, Credential};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, Semaphore};
use tollgate_auth::iam::token_cache_key;

/// The outcome of one check, shared by every client that waited for it.
type Verdict = Result<(), Refusal>;

struct Entry {
    /// When the token expires (Unix seconds): the verdict is not used from then on.
    until: i64,
    verdict: Arc<OnceCell<Verdict>>,
}

/// Verdicts on tokens, by the SHA-256 of the token's text, each until its token expires.
pub struct DelegateVerifier {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    capacity: AtomicUsize,
    checks: Semaphore,
}

impl DelegateVerifier {
    /// A cache of at most `capacity` verdicts; at most `max_checks` database logins at once.
    pub fn new(capacity: usize, max_checks: usize) -> Self {
        DelegateVerifier {
            entries: Mutex::new(HashMap::new()),
            capacity: AtomicUsize::new(capacity),
            checks: Semaphore::new(max_checks.max(1)),
        }
    }

    /// Applies a reloaded `iam_token_cache_size` (entries over it go as they expire).
    pub fn resize(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Verdicts held now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no verdict is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The verdict on `token` (valid until `valid_until`): from the cache, from a check
    /// already running for the same token, or from `check` run now. `Ok(true)` means the
    /// verdict was reused without running `check` here.
    pub async fn verify<F, Fut>(
        &self,
        token: &str,
        valid_until: i64,
        now_unix: i64,
        check: F,
    ) -> Result<bool, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Verdict>,
    {
        let key = token_cache_key(token);
        let cell = self.cell(key, valid_until, now_unix);
        let mut ran = false;
        let verdict = cell
            .get_or_init(|| async {
                ran = true;
                let _permit = self.checks.acquire().await;
                check().await
            })
            .await
            .clone();
        if verdict.is_err() {
            // Forget refusals (and failures to reach the database): a retry checks again.
            let mut entries = lock(&self.entries);
            if entries
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(&e.verdict, &cell))
            {
                entries.remove(&key);
            }
        }
        verdict.map(|()| !ran)
    }

    /// The shared cell for `key`, created if absent or expired. When the cache is full of
    /// unexpired verdicts the cell is not kept: the check runs, uncached.
    fn cell(&self, key: [u8; 32], until: i64, now: i64) -> Arc<OnceCell<Verdict>> {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get(&key) {
            if e.until > now {
                return e.verdict.clone();
            }
            entries.remove(&key);
        }
        let capacity = self.capacity.load(Ordering::Relaxed);
        if entries.len() >= capacity {
            entries.retain(|_, e| e.until > now);
        }
        let verdict = Arc::new(OnceCell::new());
        if entries.len() < capacity {
            entries.insert(
                key,
                Entry {
                    until,
                    verdict: verdict.clone(),
                },
            );
        }
        verdict
    }
}

/// Logs in to the database as `user` with `token` as the password: what Aurora does with it is
/// the verdict. The connection is closed straight after.
pub async fn check_with_database(
    connector: &Connector,
    token: &str,
    user: &str,
    database: &str,
) -> Verdict {
    let database = connector.database_for(database);
    match connector
        .connect(user, database, &Credential::Password(token.to_string()))
        .await
    {
        Ok(conn) => {
            tokio::spawn(conn.terminate());
            Ok(())
        }
        Err(BackendError::LoginRefused { fields, .. }) => Err(Refusal {
            sqlstate: "28P01",
            reason: "database_refused",
            message: format!(
                "the database at {} refused the IAM auth token: {}; generate the token for \
                 that endpoint and region, and check that the IAM identity may rds-db:connect \
                 as {user:?} and that the user has the rds_iam role",
                connector.addr(),
                fields.message
            ),
        }),
        Err(e) => Err(Refusal {
            sqlstate: "08001",
            reason: "database_unavailable",
            message: format!("could not check the IAM auth token with the database: {e}"),
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn refused() -> Refusal {
        Refusal {
            sqlstate: "28P01",
            reason: "database_refused",
            message: "no".into(),
        }
    }

    #[tokio::test]
    async fn a_verdict_is_reused_until_the_token_expires() {
        let v = DelegateVerifier::new(10, 2);
        let checks = AtomicU32::new(0);
        let check = || async {
            checks.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        assert_eq!(v.verify("t1", 1000, 100, check).await, Ok(false));
        assert_eq!(v.verify("t1", 1000, 999, check).await, Ok(true));
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        // At the expiry the verdict is dropped and a new check runs.
        assert_eq!(v.verify("t1", 1000, 1000, check).await, Ok(false));
        assert_eq!(checks.load(Ordering::SeqCst), 2);
        // Another token is another check.
        assert_eq!(v.verify("t2", 1000, 100, check).await, Ok(false));
        assert_eq!(checks.load(Ordering::SeqCst), 3);
        assert_eq!(v.len(), 2);
    }

    #[tokio::test]
    async fn refusals_are_passed_on_and_not_remembered() {
        let v = DelegateVerifier::new(10, 2);
        let checks = AtomicU32::new(0);
        let no = || async {
            checks.fetch_add(1, Ordering::SeqCst);
            Err(refused())
        };
        assert_eq!(v.verify("t", 1000, 100, no).await, Err(refused()));
        assert_eq!(v.verify("t", 1000, 101, no).await, Err(refused()));
        assert_eq!(checks.load(Ordering::SeqCst), 2);
        assert!(v.is_empty());
        // A later success is cached as usual.
        assert_eq!(
            v.verify("t", 1000, 102, || async { Ok(()) }).await,
            Ok(false)
        );
        assert_eq!(v.verify("t", 1000, 103, no).await, Ok(true));
    }

    #[tokio::test]
    async fn a_burst_on_one_token_runs_one_check() {
        let v = Arc::new(DelegateVerifier::new(10, 2));
        let checks = Arc::new(AtomicU32::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (v, checks, mut gate) = (v.clone(), checks.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                v.verify("burst", 1000, 100, || async move {
                    checks.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(())
                })
                .await
            }));
        }
        // Every task has queued on the one cell once the check is running.
        while checks.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        let mut reused = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                reused += 1;
            }
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        assert_eq!(reused, 19);
    }

    #[tokio::test]
    async fn a_full_cache_drops_expired_verdicts_then_stops_caching() {
        let v = DelegateVerifier::new(2, 1);
        let ok = || async { Ok(()) };
        v.verify("a", 200, 100, ok).await.unwrap();
        v.verify("b", 1000, 100, ok).await.unwrap();
        assert_eq!(v.len(), 2);
        // Full: "a" has expired by now and makes room.
        assert_eq!(v.verify("c", 1000, 300, ok).await, Ok(false));
        assert_eq!(v.len(), 2);
        // Full of live verdicts: "d" is checked but not kept.
        assert_eq!(v.verify("d", 1000, 300, ok).await, Ok(false));
        assert_eq!(v.verify("d", 1000, 301, ok).await, Ok(false));
        assert_eq!(v.len(), 2);
        assert_eq!(v.verify("b", 1000, 302, ok).await, Ok(true));
        v.resize(0);
        assert_eq!(v.verify("e", 1000, 303, ok).await, Ok(false));
        assert_eq!(v.len(), 2);
    }
}

//! The `delegate` verifier: Tollgate cannot know an IAM principal's secret, so it asks the one
//! party that can check a token, the database (Aurora with IAM database authentication), by
//! logging in to it with the token as the password.
//!
//! A token the database accepts is remembered by its SHA-256 (never the token itself) until it
//! expires, so a burst of clients re-using one token (Lambda) costs one database login: the
//! first client checks, the others wait for its verdict. Refusals are not remembered, so a
//! transient failure does not stick, and a check whose every waiter went away (client gone,
//! login timeout) leaves nothing behind: only accepted tokens stay in the cache, so forged
//! tokens cannot crowd genuine ones out. The check stops at the database's AuthenticationOk
//! (what happens after, such as a missing database or a full server, says nothing about the
//! token) and closes the connection; it never joins the pool, which counts every connection
//! it holds against `pool_size` and the global cap. At most `iam_delegate_max_checks` checks
//! run at once (a reload resizes that live); each is bounded by `server_connect_timeout`.

use super::Refusal;
use crate::backend::{BackendError, Connector, Credential, LoginProof};
use crate::sync::lock;
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

/// The cache and when expired entries were last swept out.
#[derive(Default)]
struct Entries {
    map: HashMap<[u8; 32], Entry>,
    swept_at: i64,
}

/// Verdicts on tokens, by the SHA-256 of the token's text, each until its token expires.
pub struct DelegateVerifier {
    entries: Mutex<Entries>,
    capacity: AtomicUsize,
    checks: Semaphore,
    /// Checks allowed at once, as configured.
    max_checks: AtomicUsize,
    /// Permits still to retire after a reload lowered `max_checks` while checks held them:
    /// each check that ends while this is above zero forgets its permit instead of returning it.
    retire: AtomicUsize,
}

impl DelegateVerifier {
    /// A cache of at most `capacity` verdicts; at most `max_checks` database logins at once.
    pub fn new(capacity: usize, max_checks: usize) -> Self {
        DelegateVerifier {
            entries: Mutex::new(Entries::default()),
            capacity: AtomicUsize::new(capacity),
            checks: Semaphore::new(max_checks.max(1)),
            max_checks: AtomicUsize::new(max_checks.max(1)),
            retire: AtomicUsize::new(0),
        }
    }

    /// Applies a reloaded `iam_delegate_max_checks`: more permits at once, or fewer as soon as
    /// running checks end (reloads run one at a time, so this is never raced by itself).
    pub fn set_max_checks(&self, max_checks: usize) {
        let new = max_checks.max(1);
        let old = self.max_checks.swap(new, Ordering::SeqCst);
        if new > old {
            let mut grow = new - old;
            // Cancel retirements still owed before adding permits.
            let _ = self
                .retire
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                    let paid = owed.min(grow);
                    grow = new - old - paid;
                    Some(owed - paid)
                });
            self.checks.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.checks.forget_permits(shrink);
            self.retire.fetch_add(shrink - forgotten, Ordering::SeqCst);
        }
    }

    /// Checks that may start now (for tests and logs).
    pub fn available_checks(&self) -> usize {
        self.checks.available_permits()
    }

    /// Applies a reloaded `iam_token_cache_size` (entries over it go as they expire).
    pub fn resize(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Entries held now (accepted tokens, and checks in flight).
    pub fn len(&self) -> usize {
        lock(&self.entries).map.len()
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
        // Dropped when this login finishes or is abandoned: removes the entry unless it ends
        // up holding an acceptance.
        let waiter = Waiter {
            owner: self,
            key,
            cell: Some(self.cell(key, valid_until, now_unix)),
        };
        let Some(cell) = waiter.cell.as_ref() else {
            return Err(Refusal::DatabaseUnavailable); // unreachable: set just above
        };
        let mut ran = false;
        let verdict = cell
            .get_or_init(|| async {
                ran = true;
                let permit = self.checks.acquire().await;
                let verdict = check().await;
                let retired = self
                    .retire
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                        owed.checked_sub(1)
                    })
                    .is_ok();
                if let (true, Ok(p)) = (retired, permit) {
                    p.forget();
                }
                verdict
            })
            .await
            .clone();
        drop(waiter);
        verdict.map(|()| !ran)
    }

    /// The shared cell for `key`, created if absent or expired. When the cache is full the
    /// cell is not kept: the check runs, uncached.
    fn cell(&self, key: [u8; 32], until: i64, now: i64) -> Arc<OnceCell<Verdict>> {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.map.get(&key) {
            if e.until > now {
                return e.verdict.clone();
            }
            entries.map.remove(&key);
        }
        let capacity = self.capacity.load(Ordering::Relaxed);
        // Full: sweep out expired entries, at most once a second (a full scan).
        if entries.map.len() >= capacity && entries.swept_at < now {
            entries.map.retain(|_, e| e.until > now);
            entries.swept_at = now;
        }
        let verdict = Arc::new(OnceCell::new());
        if entries.map.len() < capacity {
            entries.map.insert(
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

/// One login waiting on a token's cell. Every clone of a cell is made or dropped under the
/// cache's lock, so when the last waiter leaves, the count is exact: an entry without an
/// acceptance (a refusal, a failure, or a check nobody waits for any more) is removed.
struct Waiter<'a> {
    owner: &'a DelegateVerifier,
    key: [u8; 32],
    cell: Option<Arc<OnceCell<Verdict>>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut entries = lock(&self.owner.entries);
        let Some(mine) = self.cell.take() else { return };
        let Some(entry) = entries.map.get(&self.key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.verdict, &mine) {
            return; // replaced (expired and checked anew): not ours to judge
        }
        drop(mine);
        let remove = match entry.verdict.get() {
            Some(Ok(())) => false,
            // Refusals and failures to reach the database: a retry checks again.
            Some(Err(_)) => true,
            // Unsettled and only the cache holds it: every waiter gave up.
            None => Arc::strong_count(&entry.verdict) == 1,
        };
        if remove {
            entries.map.remove(&self.key);
        }
    }
}

/// Logs in to the database as `user` with `token` as the password, up to AuthenticationOk:
/// what Aurora does with it is the verdict. The connection is closed straight after. Only an
/// AuthenticationOk that followed the server's request for the password counts (Aurora asks
/// for a cleartext password; a stand-in whose role's password is the token may run md5 or
/// SCRAM, which equally prove the token): one that asked for nothing is refused, and so not
/// cached, with a message for the operator.
pub async fn check_with_database(
    connector: &Connector,
    token: &str,
    user: &str,
    database: &str,
) -> Verdict {
    let database = connector.database_for(database);
    match connector
        .check_login(user, database, &Credential::Password(token.to_string()))
        .await
    {
        Ok(LoginProof::Cleartext | LoginProof::Md5 | LoginProof::Scram) => Ok(()),
        Ok(LoginProof::Nothing) => {
            let why = format!(
                "it let Tollgate log in as {user:?} without asking for a password, so any token \
                 would pass; pg_hba.conf must require password or IAM authentication (not \
                 trust) for Tollgate's address"
            );
            tracing::warn!(user, database = connector.addr(), "{why}");
            Err(Refusal::CannotCheck(why))
        }
        Err(BackendError::AuthUnsupported(why)) => {
            tracing::warn!(user, database = connector.addr(), error = %why,
                "could not check a client's IAM auth token with the database");
            Err(Refusal::CannotCheck(why))
        }
        Err(BackendError::LoginRefused { fields, .. }) => {
            tracing::info!(user, database = connector.addr(), message = %fields.message,
                "the database refused a client's IAM auth token");
            Err(Refusal::DatabaseRefused {
                user: user.to_string(),
                server_message: fields.message,
            })
        }
        Err(e) => {
            tracing::warn!(user, database = connector.addr(), error = %e,
                "could not check a client's IAM auth token with the database");
            Err(Refusal::DatabaseUnavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn refused() -> Refusal {
        Refusal::DatabaseRefused {
            user: "app".into(),
            server_message: "no".into(),
        }
    }

    #[tokio::test]
    async fn a_database_that_never_asks_for_the_password_accepts_no_token_and_nothing_is_cached() {
        use crate::backend::connect::fake::serve;
        use tollgate_wire::build;
        // pg_hba.conf `trust` for Tollgate's address: AuthenticationOk straight away.
        let (connector, server) = serve(|mut s| async move {
            s.send(build::auth_ok).await;
            s.rest().await;
        })
        .await;
        let v = DelegateVerifier::new(10, 2);
        let verdict = v
            .verify("zero-signature-token", 1000, 100, || {
                check_with_database(&connector, "zero-signature-token", "app", "app")
            })
            .await;
        let Err(Refusal::CannotCheck(why)) = &verdict else {
            panic!("{verdict:?}");
        };
        assert!(why.contains("pg_hba.conf"), "{why}");
        assert_eq!(verdict.unwrap_err().sqlstate(), "28000");
        assert!(v.is_empty(), "a refusal is never cached");
        server.await.unwrap();

        // A database that asked (md5 here) and then accepted: the token is good.
        let (connector, server) = serve(|mut s| async move {
            s.send(|o| build::auth_md5_password(o, *b"salt")).await;
            let _ = s.recv().await;
            s.send(build::auth_ok).await;
            s.rest().await;
        })
        .await;
        assert_eq!(
            check_with_database(&connector, "token", "app", "app").await,
            Ok(())
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn max_checks_resizes_live_even_while_checks_hold_permits() {
        let v = Arc::new(DelegateVerifier::new(10, 2));
        v.set_max_checks(5);
        assert_eq!(v.available_checks(), 5);
        v.set_max_checks(2);
        assert_eq!(v.available_checks(), 2);

        // Two checks hold both permits when the limit drops to one.
        let (release, gate) = tokio::sync::watch::channel(false);
        let (started_tx, mut started) = tokio::sync::mpsc::channel(2);
        let tasks: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|token| {
                let (v, mut gate, started_tx) = (v.clone(), gate.clone(), started_tx.clone());
                tokio::spawn(async move {
                    v.verify(token, 1000, 100, || async move {
                        let _ = started_tx.send(()).await;
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        started.recv().await.unwrap();
        started.recv().await.unwrap();
        assert_eq!(v.available_checks(), 0);
        v.set_max_checks(1);
        release.send(true).unwrap();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(false));
        }
        assert_eq!(
            v.available_checks(),
            1,
            "one permit retired as its check ended"
        );
        // Raising it again first cancels retirements still owed (none here), then adds.
        v.set_max_checks(3);
        assert_eq!(v.available_checks(), 3);
    }

    #[tokio::test]
    async fn an_abandoned_check_leaves_nothing_behind() {
        let v = DelegateVerifier::new(10, 2);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let login = v.verify("forged", 1000, 100, || async {
            let _ = started_tx.send(());
            std::future::pending::<Verdict>().await
        });
        // The client goes away (disconnect, login timeout) once the check is running.
        tokio::select! {
            _ = login => unreachable!("the check never finishes"),
            _ = started_rx => {}
        }
        assert!(
            v.is_empty(),
            "an unfinished check must not hold a cache slot"
        );
        // And the token is checked afresh next time.
        assert_eq!(
            v.verify("forged", 1000, 101, || async { Ok(()) }).await,
            Ok(false)
        );
        assert_eq!(v.len(), 1);
    }

    #[tokio::test]
    async fn a_waiter_leaving_does_not_cancel_the_others_check() {
        let v = Arc::new(DelegateVerifier::new(10, 2));
        let (release, gate) = tokio::sync::watch::channel(false);
        let first = {
            let (v, mut gate) = (v.clone(), gate.clone());
            tokio::spawn(async move {
                v.verify("shared", 1000, 100, || async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(())
                })
                .await
            })
        };
        // A second login on the same token joins, then gives up.
        while v.is_empty() {
            tokio::task::yield_now().await;
        }
        let second = v.verify("shared", 1000, 100, || async { Err(refused()) });
        tokio::select! {
            biased;
            _ = second => unreachable!("the check is still running"),
            _ = tokio::task::yield_now() => {}
        }
        assert_eq!(v.len(), 1, "the first login still waits on the check");
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Ok(false));
        assert_eq!(
            v.verify("shared", 1000, 101, || async { Err(refused()) })
                .await,
            Ok(true)
        );
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

//! Query cancellation. Each client gets a BackendKeyData issued by Tollgate; a CancelRequest
//! carrying it is forwarded to whichever backend serves that client at that moment
//! ("Canceling Requests in Progress"). A wrong key, or a client with no backend, does nothing,
//! and the requester learns nothing either way (the connection just closes, as PostgreSQL does).
//!
//! A cancel on its way to a backend keeps that backend out of the pool until the cancel has been
//! delivered (the server has signalled the backend), so a cancel meant for one client's query
//! can never land on the next client's: a signal that reaches a backend idle between queries is
//! dropped by the server. The client itself is free meanwhile; its next request borrows as
//! usual (PgBouncer parks such a server the same way).

use crate::backend::CancelTarget;
use crate::sync::lock;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One issued key. The target has its own lock so that a session pointing its key at a new
/// backend (twice per transaction in transaction mode) never contends with other sessions.
struct Entry {
    secret: [u8; 4],
    target: Mutex<Target>,
    /// Woken when the last cancel in flight for this client has been delivered.
    delivered: tokio::sync::Notify,
}

/// The backend a client holds now, and how many cancels for it are on their way.
#[derive(Default)]
struct Target {
    conn: Option<CancelTarget>,
    in_flight: u32,
}

impl Entry {
    fn new(secret: [u8; 4]) -> Arc<Entry> {
        Arc::new(Entry {
            secret,
            target: Mutex::new(Target::default()),
            delivered: tokio::sync::Notify::new(),
        })
    }
}

/// A cancel being forwarded; while it lives, its client's backend stays with the client.
pub struct InFlight {
    entry: Arc<Entry>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut t = lock(&self.entry.target);
        t.in_flight = t.in_flight.saturating_sub(1);
        if t.in_flight == 0 {
            drop(t);
            self.entry.delivered.notify_one();
        }
    }
}

/// Waits for the cancels in flight for a released backend (see [`CancelKey::release`]).
pub struct Delivered(Arc<Entry>);

impl Delivered {
    /// Resolves once no cancel looked up for this client is still being forwarded.
    pub async fn wait(&self) {
        loop {
            if lock(&self.0.target).in_flight == 0 {
                return;
            }
            // A delivery between the check and here left a permit: no wake-up is lost.
            self.0.delivered.notified().await;
        }
    }
}

/// Keys Tollgate issued, and the backend each client currently holds.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<i32, Arc<Entry>>>,
}

/// A client's key; removes itself from the registry when the session ends.
pub struct CancelKey<'a> {
    registry: &'a CancelRegistry,
    entry: Arc<Entry>,
    /// The process id the client was told.
    pub process_id: i32,
    /// The secret the client was told.
    pub secret: [u8; 4],
}

impl CancelRegistry {
    /// Issues a fresh random key for a new client.
    pub fn issue(&self) -> CancelKey<'_> {
        let mut rng = rand::rng();
        let mut map = lock(&self.map);
        loop {
            let pid: i32 = rng.random_range(1..i32::MAX);
            if map.contains_key(&pid) {
                continue;
            }
            let secret: [u8; 4] = rng.random();
            let entry = Entry::new(secret);
            map.insert(pid, entry.clone());
            return CancelKey {
                registry: self,
                entry,
                process_id: pid,
                secret,
            };
        }
    }

    /// Issues a key carrying `pid` (session mode: the backend's own process id, so the client
    /// is told what `pg_backend_pid()` says) with a fresh random secret. `None` when `pid` is
    /// not positive or another live key holds it (a random one issued earlier): the caller
    /// keeps its random key then.
    pub fn issue_with_pid(&self, pid: i32) -> Option<CancelKey<'_>> {
        if pid <= 0 {
            return None;
        }
        let mut map = lock(&self.map);
        if map.contains_key(&pid) {
            return None;
        }
        let secret: [u8; 4] = rand::rng().random();
        let entry = Entry::new(secret);
        map.insert(pid, entry.clone());
        Some(CancelKey {
            registry: self,
            entry,
            process_id: pid,
            secret,
        })
    }

    /// The backend to cancel for this key, if the key is genuine and the client holds one,
    /// with the guard that keeps that backend with its client until the cancel is delivered.
    pub fn lookup(&self, process_id: i32, secret: &[u8]) -> Option<(CancelTarget, InFlight)> {
        let entry = lock(&self.map).get(&process_id)?.clone();
        if !tollgate_auth::ct_eq(&entry.secret, secret) {
            return None;
        }
        let mut t = lock(&entry.target);
        let conn = t.conn.clone()?;
        t.in_flight += 1;
        drop(t);
        Some((conn, InFlight { entry }))
    }

    /// Number of live keys (connected clients).
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CancelKey<'_> {
    /// Points this client's key at the backend it now holds (or none).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        lock(&self.entry.target).conn = target;
    }

    /// Lets go of the backend (the key points nowhere, so no new cancel finds it). `None` when
    /// it may go back to the pool at once; otherwise a cancel for it is still on its way and
    /// the backend must wait for [`Delivered::wait`] first.
    pub fn release(&self) -> Option<Delivered> {
        let mut t = lock(&self.entry.target);
        t.conn = None;
        (t.in_flight > 0).then(|| Delivered(self.entry.clone()))
    }
}

impl Drop for CancelKey<'_> {
    fn drop(&mut self) {
        lock(&self.registry.map).remove(&self.process_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_key_for_a_given_pid_has_its_own_secret_and_refuses_a_taken_pid() {
        let reg = CancelRegistry::default();
        let key = reg.issue_with_pid(4242).unwrap();
        assert_eq!(key.process_id, 4242);
        key.set_target(Some(CancelTarget {
            process_id: 4242,
            secret: Bytes::from_static(b"real"),
            target: None,
        }));
        assert_eq!(
            reg.lookup(4242, &key.secret).map(|t| t.0.secret),
            Some(Bytes::from_static(b"real"))
        );
        // The backend's own secret is not the client's: it finds nothing.
        if key.secret != *b"real" {
            assert!(reg.lookup(4242, b"real").is_none());
        }
        // Taken (by this key, or a random key that drew the same number), or impossible.
        assert!(reg.issue_with_pid(4242).is_none());
        let random = reg.issue();
        assert!(reg.issue_with_pid(random.process_id).is_none());
        assert!(reg.issue_with_pid(0).is_none());
        assert!(reg.issue_with_pid(-5).is_none());
        assert_eq!(reg.len(), 2);
        // Freed when the session ends, then issuable again.
        drop(key);
        assert!(reg.lookup(4242, &[0; 4]).is_none());
        assert!(reg.issue_with_pid(4242).is_some());
    }

    #[test]
    fn only_the_issued_key_finds_the_backend() {
        let reg = CancelRegistry::default();
        let key = reg.issue();
        assert!(
            reg.lookup(key.process_id, &key.secret).is_none(),
            "no backend yet"
        );
        key.set_target(Some(CancelTarget {
            process_id: 42,
            secret: Bytes::from_static(b"abcd"),
            target: None,
        }));
        assert_eq!(
            reg.lookup(key.process_id, &key.secret)
                .map(|t| t.0.process_id),
            Some(42)
        );
        let mut forged = key.secret;
        forged[0] ^= 1;
        assert!(reg.lookup(key.process_id, &forged).is_none());
        assert!(reg
            .lookup(key.process_id.wrapping_add(1), &key.secret)
            .is_none());
        let pid = key.process_id;
        drop(key);
        assert!(reg.lookup(pid, &[0; 4]).is_none());
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn a_backend_with_a_cancel_in_flight_is_kept_until_the_cancel_is_delivered() {
        let reg = CancelRegistry::default();
        let key = reg.issue();
        key.set_target(Some(CancelTarget {
            process_id: 7,
            secret: Bytes::from_static(b"abcd"),
            target: None,
        }));
        let (target, in_flight) = reg.lookup(key.process_id, &key.secret).unwrap();
        assert_eq!(target.process_id, 7);
        let delivered = key
            .release()
            .expect("a cancel is on its way: the backend must wait for it");
        let waiter = tokio::spawn(async move { delivered.wait().await });
        drop(in_flight);
        waiter.await.unwrap();
        assert!(key.release().is_none());
        assert!(
            reg.lookup(key.process_id, &key.secret).is_none(),
            "a released key points nowhere"
        );
    }
}

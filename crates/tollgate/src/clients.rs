//! Who is connected: one entry per logged-in client, for `SHOW CLIENTS`, `SHOW SERVERS` and
//! `KILL`. The session updates its entry's state as it borrows and releases backends.

use crate::pin::PinReason;
use crate::sync::lock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Logged in, holding no backend.
    Idle = 0,
    /// Holding a backend.
    Active = 1,
    /// Waiting for a backend.
    Waiting = 2,
    /// Holding a backend inside a transaction.
    InTransaction = 3,
}

impl ClientState {
    /// Label for the console.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
            ClientState::InTransaction => "in_transaction",
        }
    }
}

/// One connected client.
pub struct ClientInfo {
    /// Process-unique id (what `KILL` takes).
    pub id: u64,
    /// Client address.
    pub peer: SocketAddr,
    /// Login user.
    pub user: String,
    /// Database asked for.
    pub database: String,
    /// Whether it uses TLS.
    pub tls: bool,
    /// When it logged in.
    pub connected_at: SystemTime,
    state: AtomicU8,
    backend_pid: AtomicI32,
    /// When the held backend logged in.
    backend_created: Mutex<Option<Instant>>,
    pin: Mutex<Option<PinReason>>,
    killed: AtomicBool,
    kill: Notify,
}

impl ClientInfo {
    /// Current state.
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            3 => ClientState::InTransaction,
            _ => ClientState::Idle,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The PostgreSQL pid of the backend it holds (0 when none).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid.load(Ordering::Relaxed)
    }

    /// Records the backend it holds (0 for none).
    pub fn set_backend_pid(&self, pid: i32) {
        self.backend_pid.store(pid, Ordering::Relaxed);
    }

    /// Records the backend it holds and when that backend logged in (`SHOW SERVERS` age).
    pub fn set_backend(&self, pid: i32, created: Instant) {
        *lock(&self.backend_created) = Some(created);
        self.set_backend_pid(pid);
    }

    /// How long the held backend has been logged in (None when it holds none).
    pub fn backend_age(&self) -> Option<Duration> {
        if self.backend_pid() == 0 {
            return None;
        }
        lock(&self.backend_created).map(|c| c.elapsed())
    }

    /// Why it is pinned, if it is.
    pub fn pin(&self) -> Option<PinReason> {
        *lock(&self.pin)
    }

    /// Records a pin.
    pub fn set_pin(&self, reason: PinReason) {
        *lock(&self.pin) = Some(reason);
    }

    /// Resolves once an operator has killed this client.
    pub async fn killed(&self) {
        loop {
            let notified = self.kill.notified();
            if self.killed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// All logged-in clients.
#[derive(Default)]
pub struct ClientRegistry {
    map: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    next: AtomicU64,
}

/// A registration that removes itself when the session ends.
pub struct ClientHandle<'a> {
    registry: &'a ClientRegistry,
    /// The entry.
    pub info: Arc<ClientInfo>,
}

impl ClientRegistry {
    /// Adds a client.
    pub fn register(
        &self,
        peer: SocketAddr,
        user: &str,
        database: &str,
        tls: bool,
    ) -> ClientHandle<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            peer,
            user: user.to_string(),
            database: database.to_string(),
            tls,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            backend_pid: AtomicI32::new(0),
            backend_created: Mutex::new(None),
            pin: Mutex::new(None),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        });
        lock(&self.map).insert(id, info.clone());
        ClientHandle {
            registry: self,
            info,
        }
    }

    /// Every client, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        lock(&self.map).values().cloned().collect()
    }

    /// Asks a client's session to end; false if no such client.
    pub fn kill(&self, id: u64) -> bool {
        let Some(info) = lock(&self.map).get(&id).cloned() else {
            return false;
        };
        info.killed.store(true, Ordering::Release);
        info.kill.notify_waiters();
        true
    }
}

impl Drop for ClientHandle<'_> {
    fn drop(&mut self) {
        lock(&self.registry.map).remove(&self.info.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kill_wakes_the_session_and_unknown_ids_are_refused() {
        let reg = ClientRegistry::default();
        let h = reg.register("127.0.0.1:1".parse().unwrap(), "app", "app", false);
        assert_eq!(reg.list().len(), 1);
        assert!(!reg.kill(h.info.id + 100));
        assert!(reg.kill(h.info.id));
        h.info.killed().await;
        drop(h);
        assert!(reg.list().is_empty());
    }
}

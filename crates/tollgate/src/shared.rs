//! The state every session, the admin side and the listener share: [`Shared`], and the
//! shutdown signal they all watch. It sits below `server`, `session` and `admin` (it imports
//! none of them), so those three depend on it and not on each other.

use crate::auth::Authenticator;
use crate::cancel::CancelRegistry;
use crate::config::{Config, ConfigSource};
use crate::metrics::Stats;
use crate::pool::Pools;
use crate::sync::lock;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::watch;

/// State every session shares.
pub struct Shared {
    /// The configuration as started. Settings a reload cannot change (listen, upstream,
    /// pool_mode, TLS files, ...) are read here; the others through [`Shared::live`].
    pub config: Config,
    /// The configuration in force: `config` plus what reloads have applied since.
    pub live: std::sync::RwLock<Arc<Config>>,
    /// Where the configuration came from and one-reload-at-a-time (SIGHUP, RELOAD).
    pub reload: ReloadState,
    /// Backend pools.
    pub pools: Pools,
    /// The database's instances and which is the writer (the same one the connector uses).
    pub topology: Arc<crate::topology::Topology>,
    /// Client authentication.
    pub auth: Authenticator,
    /// Client IAM auth (iam_*): the verifier in force and the delegate verdict cache.
    pub iam: crate::iam::ClientIam,
    /// Tollgate's own IAM auth tokens for its database logins, when backend_iam is on.
    pub backend_iam: Option<Arc<crate::backend::IamTokenSource>>,
    /// Cancel keys.
    pub cancels: CancelRegistry,
    /// Logged-in clients (SHOW CLIENTS, KILL).
    pub clients: crate::clients::ClientRegistry,
    /// Client-side TLS, if configured.
    pub tls: Option<crate::tls::server::ClientTls>,
    /// Counters.
    pub stats: Stats,
    /// Becomes true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The configuration in force (reloadable settings are read here, once per use: per
    /// session, per borrow, never per message).
    pub fn live(&self) -> Arc<Config> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Where the configuration came from, and a lock so reloads (SIGHUP, RELOAD) run one at a time.
/// It lives here rather than in `admin::reload` because [`Shared`] holds it, and `Shared` must
/// not depend on the admin side.
#[derive(Default)]
pub struct ReloadState {
    source: OnceLock<ConfigSource>,
    running: Mutex<()>,
}

impl ReloadState {
    /// Records where the configuration came from (once, at start).
    pub fn set_source(&self, source: ConfigSource) {
        let _ = self.source.set(source);
    }

    /// Where the configuration came from, if recorded.
    pub fn source(&self) -> Option<&ConfigSource> {
        self.source.get()
    }

    /// Held for the length of one reload, so two never interleave.
    pub fn one_at_a_time(&self) -> MutexGuard<'_, ()> {
        lock(&self.running)
    }
}

/// Resolves once shutdown has started (or the sender is gone).
pub async fn shutdown_started(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

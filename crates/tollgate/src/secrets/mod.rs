//! Database credentials from AWS Secrets Manager (`auth_secret`), as RDS Proxy reads them:
//! each secret holds one user's RDS-format credentials. [`SecretStore`] reads them all at
//! start (any problem stops Tollgate with the secret's name and what is wrong), re-reads each
//! every `secret_refresh_interval` (a failure keeps the last good value and retries with
//! backoff), and on demand — single-flight and rate-limited — when the database refuses the
//! stored password (28P01) or a client's password matches neither AWSCURRENT nor AWSPREVIOUS.
//! Passwords are wiped from memory when replaced and never logged.
//!
//! The parts: the store here; `value.rs` (the JSON, pure), `fetch.rs` (the SDK).

pub mod fetch;
pub mod value;

use crate::metrics::Counter;
use crate::sync::lock;
use fetch::{FetchError, Fetcher};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

/// On-demand re-reads of one secret are at least this far apart (a storm of wrong passwords
/// must not become a storm of Secrets Manager calls).
const ON_DEMAND_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// First retry after a failed scheduled refresh; doubles up to the refresh interval.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// Why the secrets could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading failed.
    #[error("auth_secret {name:?}: {source}")]
    Fetch { name: String, source: FetchError },
    /// The value is wrong.
    #[error("auth_secret {name:?}: {source}")]
    Value {
        name: String,
        source: value::ValueError,
    },
    /// Two secrets (or a secret and the auth file) for one user.
    #[error("auth_secret {name:?}: user {user:?} {why}")]
    Conflict {
        name: String,
        user: String,
        why: String,
    },
}

/// One version of a secret.
pub struct Version {
    /// Its VersionId.
    pub id: String,
    /// The password, wiped when dropped.
    pub password: Zeroizing<String>,
}

struct Held {
    current: Version,
    previous: Option<Version>,
    refreshed: SystemTime,
    refreshed_at: Instant,
    last_error: Option<String>,
    /// The last on-demand read (rate limit).
    on_demand_at: Option<Instant>,
    /// Bumped whenever the current value changes.
    generation: u64,
}

/// One secret: its user and the values in force.
pub struct Entry {
    /// The ARN or name as configured.
    pub name: String,
    /// The database user it holds.
    pub user: String,
    held: std::sync::Mutex<Held>,
    /// One read at a time.
    reading: tokio::sync::Mutex<()>,
    /// Successful reads.
    pub refresh_ok: Counter,
    /// Failed reads.
    pub refresh_failed: Counter,
}

/// A view of one secret for SHOW SECRETS and /metrics (no value).
#[derive(Debug, Clone)]
pub struct SecretView {
    /// The ARN or name.
    pub name: String,
    /// The user.
    pub user: String,
    /// AWSCURRENT's VersionId.
    pub version_id: String,
    /// Whether an AWSPREVIOUS is held too.
    pub has_previous: bool,
    /// When the value in force was last read successfully.
    pub refreshed: SystemTime,
    /// Its age.
    pub age: Duration,
    /// The last read's error, if it failed.
    pub last_error: Option<String>,
    /// Reads by outcome.
    pub ok: u64,
    /// Failed reads.
    pub failed: u64,
}

/// Every auth_secret user's credentials.
pub struct SecretStore {
    fetcher: Fetcher,
    by_user: HashMap<String, Arc<Entry>>,
    interval: Duration,
}

impl SecretStore {
    /// Reads every secret once; any missing, unreadable or malformed one is an error naming it.
    pub async fn load(
        names: &[String],
        interval: Duration,
    ) -> Result<Arc<SecretStore>, SecretError> {
        let fetcher = Fetcher::from_default_chain().await;
        let mut by_user: HashMap<String, Arc<Entry>> = HashMap::new();
        for name in names {
            let (user, current, previous) = read(&fetcher, name).await?;
            if let Some(other) = by_user.get(&user) {
                return Err(SecretError::Conflict {
                    name: name.clone(),
                    user,
                    why: format!("is also in auth_secret {:?}", other.name),
                });
            }
            tracing::info!(secret = %name, %user, version_id = %current.id, previous = previous.is_some(),
                "database credentials read from Secrets Manager");
            let entry = Entry {
                name: name.clone(),
                user: user.clone(),
                held: std::sync::Mutex::new(Held {
                    current,
                    previous,
                    refreshed: SystemTime::now(),
                    refreshed_at: Instant::now(),
                    last_error: None,
                    on_demand_at: None,
                    generation: 0,
                }),
                reading: tokio::sync::Mutex::new(()),
                refresh_ok: Counter::default(),
                refresh_failed: Counter::default(),
            };
            entry.refresh_ok.inc();
            by_user.insert(user, Arc::new(entry));
        }
        Ok(Arc::new(SecretStore {
            fetcher,
            by_user,
            interval,
        }))
    }

    /// The secret holding `user`'s credentials.
    pub fn entry(&self, user: &str) -> Option<&Arc<Entry>> {
        self.by_user.get(user)
    }

    /// Every user a secret holds.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.by_user.keys().map(String::as_str)
    }

    /// The password in force (AWSCURRENT) for `user`.
    pub fn current(&self, user: &str) -> Option<Zeroizing<String>> {
        self.entry(user)
            .map(|e| Zeroizing::new(lock(&e.held).current.password.to_string()))
    }

    /// The passwords clients may log in with: AWSCURRENT, then AWSPREVIOUS (the rotation
    /// window), with their version ids (which key the derived SCRAM verifiers).
    pub fn accepted(&self, user: &str) -> Vec<(String, Zeroizing<String>)> {
        let Some(e) = self.entry(user) else {
            return Vec::new();
        };
        let held = lock(&e.held);
        let mut out = vec![(
            held.current.id.clone(),
            Zeroizing::new(held.current.password.to_string()),
        )];
        if let Some(p) = &held.previous {
            out.push((p.id.clone(), Zeroizing::new(p.password.to_string())));
        }
        out
    }

    /// A number that changes whenever `user`'s value in force changes: read it before using
    /// the value, pass it to [`refresh_now`](Self::refresh_now) if the value was refused.
    pub fn generation(&self, user: &str) -> u64 {
        self.entry(user).map_or(0, |e| lock(&e.held).generation)
    }

    /// Re-reads `user`'s secret now, because the value of generation `seen` was refused;
    /// unless it has changed since (then at once), another read is under way (then waits for
    /// it), or one ran less than [`ON_DEMAND_MIN_INTERVAL`] ago. True when the value in force
    /// now differs from generation `seen`.
    pub async fn refresh_now(&self, user: &str, seen: u64, why: &'static str) -> bool {
        let Some(entry) = self.entry(user).cloned() else {
            return false;
        };
        let before = seen;
        if lock(&entry.held).generation != before {
            return true;
        }
        let _one = entry.reading.lock().await;
        {
            let held = lock(&entry.held);
            if held.generation != before {
                return true;
            }
            if held
                .on_demand_at
                .is_some_and(|t| t.elapsed() < ON_DEMAND_MIN_INTERVAL)
            {
                return false;
            }
        }
        lock(&entry.held).on_demand_at = Some(Instant::now());
        tracing::info!(secret = %entry.name, user, reason = why, "re-reading the secret");
        self.refresh(&entry).await.unwrap_or(false)
    }

    /// Reads one secret and puts it in force; Ok(changed).
    async fn refresh(&self, entry: &Entry) -> Result<bool, String> {
        match read(&self.fetcher, &entry.name).await {
            Ok((user, current, previous)) if user == entry.user => {
                entry.refresh_ok.inc();
                let mut held = lock(&entry.held);
                let changed = held.current.id != current.id;
                if changed {
                    tracing::info!(secret = %entry.name, user = %entry.user, version_id = %current.id,
                        "the secret's value changed (rotation): new logins use it");
                    held.generation += 1;
                }
                // The old values drop here and are wiped.
                held.current = current;
                held.previous = previous;
                held.refreshed = SystemTime::now();
                held.refreshed_at = Instant::now();
                held.last_error = None;
                Ok(changed)
            }
            Ok((user, _, _)) => {
                let e = format!(
                    "now holds user {user:?}, not {:?}; keeping the last good value",
                    entry.user
                );
                self.failed(entry, &e);
                Err(e)
            }
            Err(e) => {
                let e = e.to_string();
                self.failed(entry, &e);
                Err(e)
            }
        }
    }

    fn failed(&self, entry: &Entry, e: &str) {
        entry.refresh_failed.inc();
        lock(&entry.held).last_error = Some(e.to_string());
        tracing::warn!(secret = %entry.name, user = %entry.user, error = %e,
            "could not re-read the secret; the last good value stays in force");
    }

    /// Re-reads every secret on the interval until shutdown; a failed read is retried with
    /// backoff (1 s doubling up to the interval).
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for entry in self.by_user.values().cloned() {
            let store = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut wait = store.interval;
                loop {
                    tokio::time::sleep(wait).await;
                    let ok = {
                        let _one = entry.reading.lock().await;
                        store.refresh(&entry).await.is_ok()
                    };
                    wait = if ok {
                        store.interval
                    } else if wait >= store.interval {
                        BACKOFF_FIRST
                    } else {
                        (wait * 2).min(store.interval)
                    };
                }
            }));
        }
        crate::shared::shutdown_started(&mut shutdown).await;
        for t in tasks {
            t.abort();
        }
    }

    /// Every secret, for SHOW SECRETS and /metrics.
    pub fn views(&self) -> Vec<SecretView> {
        let mut v: Vec<SecretView> = self
            .by_user
            .values()
            .map(|e| {
                let held = lock(&e.held);
                SecretView {
                    name: e.name.clone(),
                    user: e.user.clone(),
                    version_id: held.current.id.clone(),
                    has_previous: held.previous.is_some(),
                    refreshed: held.refreshed,
                    age: held.refreshed_at.elapsed(),
                    last_error: held.last_error.clone(),
                    ok: e.refresh_ok.get(),
                    failed: e.refresh_failed.get(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// Reads AWSCURRENT and AWSPREVIOUS of `name`: (user, current, previous).
async fn read(
    fetcher: &Fetcher,
    name: &str,
) -> Result<(String, Version, Option<Version>), SecretError> {
    let fetch_err = |source| SecretError::Fetch {
        name: name.to_string(),
        source,
    };
    let value_err = |source| SecretError::Value {
        name: name.to_string(),
        source,
    };
    let current = fetcher
        .get(name, "AWSCURRENT")
        .await
        .map_err(fetch_err)?
        .ok_or_else(|| fetch_err(FetchError::NotFound))?;
    let text = current
        .text
        .as_deref()
        .ok_or_else(|| value_err(value::ValueError::Binary))?;
    let v = value::parse(text).map_err(value_err)?;
    let user = v.username;
    let current = Version {
        id: current.version_id,
        password: v.password,
    };
    // AWSPREVIOUS is a courtesy for the rotation window: a bad or absent one is no error.
    let previous = match fetcher.get(name, "AWSPREVIOUS").await {
        Ok(Some(p)) => p
            .text
            .as_deref()
            .and_then(|t| value::parse(t).ok())
            .filter(|pv| pv.username == user)
            .map(|pv| Version {
                id: p.version_id,
                password: pv.password,
            }),
        _ => None,
    };
    Ok((user, current, previous))
}

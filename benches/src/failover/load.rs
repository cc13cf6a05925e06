//! The failover scenario's load generator: clients looping autocommit INSERTs, reconnecting
//! after an error as an application does, each recording what it saw.

#![allow(unused_imports)]
use super::*;

/// What one client saw.
#[derive(Debug, Clone, Default)]
pub(super) struct ClientLog {
    /// Every acknowledged n and when its acknowledgement arrived.
    pub(super) commits: Vec<(i32, Instant)>,
    /// Failed statements.
    pub(super) errors: u64,
    /// Statement errors by kind: count and one message.
    pub(super) error_kinds: BTreeMap<String, (u64, String)>,
    /// Connections closed under it.
    pub(super) lost: u64,
    /// Connections opened after its first.
    pub(super) reconnects: u64,
    /// Failed connection attempts.
    pub(super) failed_connects: u64,
    /// Failed connection attempts by message.
    pub(super) connect_errors: BTreeMap<String, u64>,
}

impl ClientLog {
    /// Counts a failed statement under its "SEVERITY SQLSTATE".
    fn record_error(&mut self, err: &tokio_postgres::Error) {
        self.errors += 1;
        let (kind, message) = match err.as_db_error() {
            Some(db) => (
                format!("{} {}", db.severity(), db.code().code()),
                db.message().to_owned(),
            ),
            None => ("no SQLSTATE".to_owned(), error_chain(err)),
        };
        let entry = self.error_kinds.entry(kind).or_insert((0, message));
        entry.0 += 1;
    }

    /// Counts a failed connection attempt under its message.
    fn record_connect_error(&mut self, err: &tokio_postgres::Error) {
        self.failed_connects += 1;
        *self.connect_errors.entry(error_chain(err)).or_insert(0) += 1;
    }
}

/// An error with its causes: tokio-postgres's `Display` names only the kind ("error
/// connecting to server"), the cause says which ("Connection refused", "database does not
/// allow writes").
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The running clients.
pub(super) struct Load {
    /// Tells every client to finish its statement and stop.
    pub(super) stop: Arc<AtomicBool>,
    /// Each client's log, shared so that a stuck client's commits still count.
    pub(super) logs: Vec<Arc<Mutex<ClientLog>>>,
    /// The client tasks.
    pub(super) tasks: Vec<JoinHandle<()>>,
    /// One message per client at its first commit.
    pub(super) first_commits: mpsc::Receiver<()>,
}

impl Load {
    /// Spawns `clients` looping writers on `runtime`.
    pub(super) fn start(runtime: &Runtime, config: Config, target: Target, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(config);
        let (first_tx, first_commits) = mpsc::channel();
        let mut logs = Vec::with_capacity(clients);
        let mut tasks = Vec::with_capacity(clients);
        for id in 0..clients {
            let log = Arc::new(Mutex::new(ClientLog::default()));
            logs.push(Arc::clone(&log));
            tasks.push(runtime.spawn(client_loop(
                id as i32,
                Arc::clone(&config),
                target == Target::Direct,
                Arc::clone(&stop),
                log,
                first_tx.clone(),
            )));
        }
        Load {
            stop,
            logs,
            tasks,
            first_commits,
        }
    }

    /// Blocks until every client has committed once, at most `timeout`.
    pub(super) fn wait_until_each_committed(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for done in 0..self.logs.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.first_commits.recv_timeout(left).is_err() {
                let example = self
                    .logs
                    .iter()
                    .find_map(|l| lock(l).connect_errors.keys().next().cloned())
                    .unwrap_or_else(|| "no connection error".to_owned());
                bail!(
                    "only {done} of {} clients committed within {} s (e.g. {example})",
                    self.logs.len(),
                    timeout.as_secs()
                );
            }
        }
        Ok(())
    }

    /// Stops the load and waits up to `timeout` for the statements in flight; the logs and
    /// how many clients were still stuck in a statement (they are aborted).
    pub(super) fn finish(
        mut self,
        runtime: &Runtime,
        timeout: Duration,
    ) -> (Vec<ClientLog>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + timeout;
        let tasks = &mut self.tasks;
        let stuck = runtime.block_on(async {
            let mut stuck = 0;
            for task in tasks.iter_mut() {
                if tokio::time::timeout_at(deadline, &mut *task).await.is_err() {
                    task.abort();
                    stuck += 1;
                }
            }
            stuck
        });
        let logs = self.logs.iter().map(|l| lock(l).clone()).collect();
        (logs, stuck)
    }
}

impl Drop for Load {
    /// A run that fails half-way leaves no writer behind.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client's log; a panic elsewhere cannot leave it half-written, so a poisoned lock is
/// still good.
pub(super) fn lock(log: &Mutex<ClientLog>) -> std::sync::MutexGuard<'_, ClientLog> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One writer: connect, INSERT (id, n++) until told to stop, reconnect when the connection
/// is gone. A direct client also reconnects after any other error (the server it reached
/// may no longer be the writer); through Tollgate only a closed connection is replaced.
pub(super) async fn client_loop(
    id: i32,
    config: Arc<Config>,
    direct: bool,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ClientLog>>,
    first_commit: mpsc::Sender<()>,
) {
    let mut n: i32 = 0;
    let mut connected_before = false;
    let mut announced = false;
    while !stop.load(Ordering::Relaxed) {
        let client = match connect(&config).await {
            Ok(client) => client,
            Err(err) => {
                lock(&log).record_connect_error(&err);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if connected_before {
            lock(&log).reconnects += 1;
        }
        connected_before = true;
        while !stop.load(Ordering::Relaxed) {
            // Every attempt takes a new n: a failed INSERT may still have committed.
            n += 1;
            // The simple protocol, one round trip per commit, as pgbench -M simple.
            let sql = format!("INSERT INTO acks (client, n) VALUES ({id}, {n})");
            match client.simple_query(&sql).await {
                Ok(_) => {
                    lock(&log).commits.push((n, Instant::now()));
                    if !announced {
                        announced = true;
                        // Nobody listens once the measured load has started; that is fine.
                        let _ = first_commit.send(());
                    }
                }
                Err(err) => {
                    let gone = connection_gone(&client, &err);
                    let mut log = lock(&log);
                    log.record_error(&err);
                    if gone {
                        log.lost += 1;
                    }
                    if gone || direct {
                        break;
                    }
                }
            }
        }
    }
}

/// Whether `err` ended the connection: it is closed, or the server said FATAL or PANIC (it
/// closes right after; the driver may not have read the end yet).
pub(super) fn connection_gone(client: &Client, err: &tokio_postgres::Error) -> bool {
    client.is_closed()
        || err.is_closed()
        || err
            .as_db_error()
            .and_then(|db| db.parsed_severity())
            .is_some_and(|s| matches!(s, Severity::Fatal | Severity::Panic))
}

/// Connects and drives the connection in its own task.
pub(super) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    // The connection's own error reaches the client's next statement; nothing to do here.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

//! A long-running child process (PgBouncer, Tollgate): started, awaited until it logs that it
//! is ready, its log kept for error messages, and stopped on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How many log lines are kept for error messages.
const LOG_LINES: usize = 40;

/// How long a child may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running child whose stderr is read by a thread into a ring of recent lines.
#[derive(Debug)]
pub struct Daemon {
    /// For messages: "pgbouncer", "tollgate".
    name: &'static str,
    /// The process; `None` once stopped.
    child: Option<Child>,
    /// The last [`LOG_LINES`] lines of its stderr (and stdout).
    log: Arc<Mutex<VecDeque<String>>>,
    /// Gets a message (or a disconnect) when its stderr closes, which is when it exits.
    eof: Receiver<()>,
}

impl Daemon {
    /// Spawns `cmd` with stderr captured and blocks until a stderr line contains `ready` (at most
    /// `timeout`); fails with the log tail if the child exits or stays silent.
    pub fn spawn(
        name: &'static str,
        cmd: &mut Command,
        ready: &str,
        timeout: Duration,
    ) -> Result<Daemon> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {name} ({cmd:?})"))?;
        let stderr = child
            .stderr
            .take()
            .with_context(|| format!("{name}'s stderr was not captured"))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let (eof_tx, eof_rx) = mpsc::channel::<()>();
        let ring = Arc::clone(&log);
        thread::Builder::new()
            .name(format!("{name}-log"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut ring) = ring.lock() {
                        if ring.len() == LOG_LINES {
                            ring.pop_front();
                        }
                        ring.push_back(line.clone());
                    }
                    // Nobody listens once the child is ready; that is fine.
                    let _ = line_tx.send(line);
                }
                let _ = eof_tx.send(());
            })
            .with_context(|| format!("start the thread reading {name}'s log"))?;

        let mut daemon = Daemon {
            name,
            child: Some(child),
            log,
            eof: eof_rx,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => return Ok(daemon),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    daemon.stop();
                    bail!(
                        "{name} did not log {ready:?} within {}s; its log:\n{}",
                        timeout.as_secs(),
                        daemon.log_tail()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    daemon.stop();
                    bail!(
                        "{name} exited during start-up; its log:\n{}",
                        daemon.log_tail()
                    );
                }
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("{} is stopped", self.name))
    }

    /// Fails (with the log tail) if the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let name = self.name;
        let Some(child) = self.child.as_mut() else {
            bail!("{name} is stopped");
        };
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("check whether {name} still runs"))?
        {
            bail!("{name} exited ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// The last lines it logged, one per line.
    pub fn log_tail(&self) -> String {
        match self.log.lock() {
            Ok(ring) => ring.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::from("(log unavailable)"),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_GRACE`]; reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill has no memory preconditions; the pid is our unreaped child, so
                // it cannot have been reused by another process.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            // Its stderr closes when it exits: wait for that rather than polling.
            if let Err(RecvTimeoutError::Timeout) = self.eof.recv_timeout(STOP_GRACE) {
                eprintln!(
                    "{} did not stop within {}s of SIGTERM; killing it",
                    self.name,
                    STOP_GRACE.as_secs()
                );
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

//! The `postgres` child process: spawning it, noticing when it exits, and stopping it.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::Duration;

use crate::error::LocalPgError;
use crate::privilege::as_server_user;

/// How long the postmaster gets after SIGKILL before we give up waiting for it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A running (or exited) postmaster, reaped by a waiter thread that reports its exit.
///
/// The waiter thread turns "the process exited" into a channel message, so callers can wait
/// for exit with a timeout instead of polling.
#[derive(Debug)]
pub(crate) struct Postmaster {
    /// Its process id, for signals.
    pid: u32,
    /// Gets one message (or a disconnect) when the process has exited and been reaped.
    exit_rx: Receiver<ExitStatus>,
    /// `Some` once we know it has exited; the inner `None` means the status was lost.
    exited: Option<Option<ExitStatus>>,
}

impl Postmaster {
    /// Starts `postgres -D data_dir -p port` with output appended to `log`.
    pub(crate) fn spawn(
        postgres: &Path,
        data_dir: &Path,
        port: u16,
        log: &Path,
        cwd: &Path,
    ) -> Result<Postmaster, LocalPgError> {
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(LocalPgError::io(format!(
                "open server log {}",
                log.display()
            )))?;
        let log_err = log_file
            .try_clone()
            .map_err(LocalPgError::io("duplicate the server log handle"))?;
        let mut cmd = Command::new(postgres);
        cmd.arg("-D")
            .arg(data_dir)
            .arg("-p")
            .arg(port.to_string())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        as_server_user(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(LocalPgError::io(format!("run {}", postgres.display())))?;
        Self::watch(child, port)
    }

    /// Hands `child` to a thread that waits for it and reports its exit.
    fn watch(mut child: Child, port: u16) -> Result<Postmaster, LocalPgError> {
        let pid = child.id();
        let (tx, exit_rx) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name(format!("localpg-wait-{port}"))
            .spawn(move || match child.wait() {
                Ok(status) => {
                    let _ = tx.send(status);
                }
                Err(err) => tracing::error!(pid, %err, "lost track of the postmaster"),
            });
        if let Err(err) = spawned {
            send_signal(pid, libc::SIGKILL);
            return Err(LocalPgError::io("start a thread to watch the postmaster")(
                err,
            ));
        }
        Ok(Postmaster {
            pid,
            exit_rx,
            exited: None,
        })
    }

    /// The postmaster's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some` (with the status, if known) if the process has exited; never blocks.
    pub(crate) fn try_exited(&mut self) -> Option<Option<ExitStatus>> {
        if self.exited.is_none() {
            match self.exit_rx.try_recv() {
                Ok(status) => self.exited = Some(Some(status)),
                Err(TryRecvError::Disconnected) => self.exited = Some(None),
                Err(TryRecvError::Empty) => {}
            }
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit; `true` if it has.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> bool {
        if self.exited.is_none() {
            match self.exit_rx.recv_timeout(timeout) {
                Ok(status) => self.exited = Some(Some(status)),
                Err(RecvTimeoutError::Disconnected) => self.exited = Some(None),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.exited.is_some()
    }

    /// Fast shutdown (SIGINT), then SIGKILL if it is still running after `grace`.
    ///
    /// SIGINT rather than SIGTERM: SIGTERM is "smart" shutdown, which waits for every client
    /// to disconnect, and a pooler under test holds its server connections open
    /// ("Shutting Down the Server" in the docs).
    pub(crate) fn stop(&mut self, grace: Duration) -> Result<(), LocalPgError> {
        self.shut_down(libc::SIGINT, "fast", grace)
    }

    /// Immediate shutdown (SIGQUIT, what `pg_ctl stop -m immediate` sends), then SIGKILL if
    /// it is still running after `grace`.
    ///
    /// The postmaster has every child quit at once and exits without a checkpoint, so the
    /// next start runs crash recovery: a crash, but one that leaves no orphaned backends
    /// holding shared memory (which a SIGKILL of the postmaster alone would).
    pub(crate) fn stop_immediate(&mut self, grace: Duration) -> Result<(), LocalPgError> {
        self.shut_down(libc::SIGQUIT, "immediate", grace)
    }

    /// Sends `signal` (a shutdown request of kind `mode`), then SIGKILL after `grace`.
    fn shut_down(
        &mut self,
        signal: libc::c_int,
        mode: &str,
        grace: Duration,
    ) -> Result<(), LocalPgError> {
        if self.try_exited().is_some() {
            return Ok(());
        }
        send_signal(self.pid, signal);
        if self.wait_exit(grace) {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            grace_secs = grace.as_secs(),
            mode,
            "PostgreSQL ignored the shutdown request; sending SIGKILL"
        );
        send_signal(self.pid, libc::SIGKILL);
        if self.wait_exit(KILL_WAIT) {
            return Ok(());
        }
        Err(LocalPgError::Io {
            action: format!(
                "stop the postmaster (pid {}) even with SIGKILL; kill it by hand",
                self.pid
            ),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        })
    }
}

/// Describes an exit status for messages, including the "we lost it" case.
pub(crate) fn describe_exit(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "exit status unknown".to_owned(), |s| s.to_string())
}

/// Sends `signal` to `pid`, ignoring "no such process" (it already exited).
fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions. `pid` is our child; callers check the
    // exit channel first, so it could only have been reaped (and its id reused) in the
    // moment between that check and this call.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pid, signal, %err, "could not signal the postmaster");
        }
    }
}

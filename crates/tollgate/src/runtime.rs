//! The async runtime the process runs on, shaped by `worker_threads`.
//!
//! One thread (the default) is tokio's current-thread runtime: the acceptor, every session,
//! every backend socket and the reactor share one thread, so a message relayed from a client
//! to its backend and back never wakes another thread. That is what the measurements in
//! ARCHITECTURE.md ("Runtime") chose on a 2-core box shared with PostgreSQL. More threads
//! use tokio's work-stealing runtime, for machines where one core cannot carry the traffic.
//! Blocking work (PBKDF2, admin HTTP rendering) goes to tokio's blocking pool either way.

use std::io;
use tokio::runtime::{Builder, Runtime};

/// Builds the runtime for `threads` worker threads (1: current-thread).
pub fn build(threads: usize) -> io::Result<Runtime> {
    let mut builder = if threads <= 1 {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().thread_name("tollgate-worker").build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread a task spawned on a runtime with `threads` workers runs on.
    fn spawned_task_thread(threads: usize) -> std::thread::ThreadId {
        let rt = build(threads).unwrap();
        rt.block_on(async { tokio::spawn(async { std::thread::current().id() }).await })
            .unwrap()
    }

    #[test]
    fn one_thread_runs_spawned_tasks_on_the_calling_thread() {
        assert_eq!(spawned_task_thread(1), std::thread::current().id());
    }

    #[test]
    fn more_threads_run_spawned_tasks_elsewhere() {
        assert_ne!(spawned_task_thread(2), std::thread::current().id());
    }
}

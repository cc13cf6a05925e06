//! The one error type of this crate; every message says what went wrong and what to do next.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Everything that can go wrong while finding binaries, starting, using or stopping a cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    /// No executable with this name in any place we search.
    #[error(
        "no PostgreSQL server binaries found (looked for {name} in {searched}); \
         install the Debian package postgresql or set TOLLGATE_PG_BINDIR to its bin directory"
    )]
    BinaryNotFound {
        /// The program we looked for (`initdb`, `postgres`, `psql`, ...).
        name: String,
        /// The places searched, for the message.
        searched: String,
    },

    /// `TOLLGATE_PG_BINDIR` is set but does not hold the program.
    #[error(
        "TOLLGATE_PG_BINDIR is {dir} but {name} is not an executable file there; \
         point it at a PostgreSQL bin directory (e.g. /usr/lib/postgresql/16/bin) or unset it"
    )]
    BinDirOverride {
        /// The value of `TOLLGATE_PG_BINDIR`.
        dir: PathBuf,
        /// The program we looked for.
        name: String,
    },

    /// A file-system or process operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What we were doing, phrased to follow "could not".
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `initdb` ran and failed.
    #[error("initdb failed ({status}); its output was:\n{output}")]
    Initdb {
        /// How initdb exited.
        status: ExitStatus,
        /// initdb's stdout and stderr.
        output: String,
    },

    /// The postmaster exited before it accepted connections.
    #[error("PostgreSQL exited during start-up ({status}); last lines of its log:\n{tail}")]
    ServerExited {
        /// How the postmaster exited, e.g. "exit status: 1".
        status: String,
        /// The end of the server log.
        tail: String,
    },

    /// The postmaster did not accept connections in time.
    #[error(
        "PostgreSQL on 127.0.0.1:{port} did not accept connections within {secs} s; \
         the machine may be overloaded; last lines of its log:\n{tail}"
    )]
    StartTimeout {
        /// The port it should listen on.
        port: u16,
        /// How long we waited.
        secs: u64,
        /// The end of the server log.
        tail: String,
    },

    /// The cluster was stopped and a call needs it running.
    #[error("the throwaway PostgreSQL on port {port} is stopped; call restart() first")]
    Stopped {
        /// The cluster's port.
        port: u16,
    },

    /// `start_replica` was called on a cluster not started for replication.
    #[error(
        "the throwaway PostgreSQL on port {port} was not started for replication; \
         start the primary with ClusterOptions {{ replication: true, .. }}"
    )]
    ReplicationOff {
        /// The cluster's port.
        port: u16,
    },

    /// `pg_basebackup` ran and failed.
    #[error("pg_basebackup from the primary on port {port} failed ({status}); its output was:\n{output}")]
    Basebackup {
        /// The primary's port.
        port: u16,
        /// How pg_basebackup exited.
        status: ExitStatus,
        /// pg_basebackup's stdout and stderr.
        output: String,
    },

    /// `promote` was called on a server that is not a standby (or a replica came up as one).
    #[error(
        "the throwaway PostgreSQL on port {port} is {found}, not a standby in recovery; \
         only a replica from start_replica can be promoted"
    )]
    NotInRecovery {
        /// The cluster's port.
        port: u16,
        /// What it is instead, e.g. "a primary".
        found: String,
    },

    /// A condition we poll for (a standby streaming, a row replicated) did not hold in time.
    #[error(
        "waited {secs} s for {what} on 127.0.0.1:{port}, in vain; last seen: {last}; \
         last lines of its log:\n{tail}"
    )]
    WaitTimeout {
        /// The condition, phrased to follow "waited for".
        what: String,
        /// The port of the server polled.
        port: u16,
        /// How long we waited.
        secs: u64,
        /// What the last poll saw (a value or an error).
        last: String,
        /// The end of that server's log.
        tail: String,
    },

    /// psql ran and reported an error.
    #[error("psql on database {db} failed ({status}): {stderr}")]
    Psql {
        /// The database psql connected to.
        db: String,
        /// How psql exited.
        status: ExitStatus,
        /// psql's stderr (the server's error message).
        stderr: String,
    },

    /// A role has no stored password (or does not exist).
    #[error("role {user} does not exist or has no password; create it with create_user first")]
    NoStoredSecret {
        /// The role asked about.
        user: String,
    },

    /// `certs::generate` was given no names to put in the certificate.
    #[error(
        "a TLS certificate needs at least one DNS name or IP address; pass e.g. \"localhost\""
    )]
    NoCertNames,

    /// rcgen could not build a certificate.
    #[error("could not generate TLS certificates: {0}")]
    Tls(#[from] rcgen::Error),
}

impl LocalPgError {
    /// Wraps an I/O error with what we were doing when it happened.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> LocalPgError {
        let action = action.into();
        move |source| LocalPgError::Io { action, source }
    }
}

//! Starts a throwaway PostgreSQL server from the installed binaries in a temp dir.
//!
//! Used by `tollgate quickstart`, the end-to-end tests and the benchmark harness. Works as
//! root too: the server then runs as `nobody` (see [`as_server_user`]). A cluster started
//! with `ClusterOptions::replication` can have synchronous streaming replicas
//! ([`Cluster::start_replica`]) to promote ([`Cluster::promote`]) in failover tests.

mod basebackup;
mod binaries;
pub mod certs;
mod cluster;
mod conf;
mod error;
mod initdb;
mod layout;
mod options;
mod poll;
mod port;
mod postmaster;
mod privilege;
mod psql;
mod readiness;
mod replica;
mod roles;
mod server_log;

pub use binaries::{find_bin, BINDIR_ENV};
pub use cluster::Cluster;
pub use error::LocalPgError;
pub use options::ClusterOptions;
pub use privilege::{as_server_user, is_root};

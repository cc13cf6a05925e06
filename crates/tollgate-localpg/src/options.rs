//! What a caller may choose about a throwaway cluster.

/// Settings for [`crate::Cluster::start`]; `ClusterOptions::default()` suits most tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Turn on `ssl` with a generated CA and server certificate (see `Cluster::ca_cert_path`).
    pub tls: bool,
    /// The server's `max_connections`.
    pub max_connections: u32,
    /// Password of the `postgres` superuser.
    pub superuser_password: String,
    /// Extra `postgresql.conf` settings, appended last so they win; values are quoted for you.
    pub extra_conf: Vec<(String, String)>,
    /// Let this cluster be a primary for [`crate::Cluster::start_replica`]: WAL senders on and
    /// a `replication` line in pg_hba.conf. Once a replica is started, every commit waits
    /// until each replica has flushed it, so a promoted replica has every acknowledged commit.
    pub replication: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            tls: false,
            max_connections: 100,
            superuser_password: "postgres".to_owned(),
            extra_conf: Vec::new(),
            replication: false,
        }
    }
}

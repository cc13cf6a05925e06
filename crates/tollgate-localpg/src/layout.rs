//! The cluster's temp directory and the files we put in it.
//!
//! ```text
//! tollgate-pg-XXXXXX/   owned by the server user when we are root
//!   data/               the data directory (initdb, or pg_basebackup for a replica), also
//!                       the unix socket directory
//!   postgres.log        the server's stdout and stderr
//!   ca.crt              CA that signed data/server.crt (tls only)
//!   pwfile              superuser password for initdb; deleted once initdb is done
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::certs;
use crate::conf::{self, SERVER_CERT_FILE, SERVER_KEY_FILE};
use crate::error::LocalPgError;
use crate::options::ClusterOptions;
use crate::privilege::{base_temp_dir, hand_to_server_user};

/// Names the server certificate covers; clients connect to 127.0.0.1 or "localhost".
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A cluster's temp directory; removed on drop (or earlier by [`ClusterDir::remove`]).
#[derive(Debug)]
pub(crate) struct ClusterDir {
    /// Owns the directory; its own drop removes it if `remove` was not called.
    temp: TempDir,
    /// `<root>/data`.
    data: PathBuf,
    /// `<root>/postgres.log`.
    log: PathBuf,
}

impl ClusterDir {
    /// Creates the temp dir, reachable and owned by the server user when we are root.
    pub(crate) fn create() -> Result<ClusterDir, LocalPgError> {
        let base = base_temp_dir()?;
        let temp = tempfile::Builder::new()
            .prefix("tollgate-pg-")
            .tempdir_in(&base)
            .map_err(LocalPgError::io(format!(
                "create a temp directory in {}",
                base.display()
            )))?;
        let root = temp.path();
        // 0755 so other local users (a proxy under test, say) can read ca.crt; data/ stays
        // 0700 as initdb makes it, and the pwfile is 0600.
        set_mode(root, 0o755)?;
        hand_to_server_user(root)?;
        Ok(ClusterDir {
            data: root.join("data"),
            log: root.join("postgres.log"),
            temp,
        })
    }

    /// The temp dir itself.
    pub(crate) fn root(&self) -> &Path {
        self.temp.path()
    }

    /// The data directory.
    pub(crate) fn data(&self) -> &Path {
        &self.data
    }

    /// The server log.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Writes the superuser password where initdb (running as the server user) can read it.
    pub(crate) fn write_pwfile(&self, password: &str) -> Result<PathBuf, LocalPgError> {
        let path = self.root().join("pwfile");
        write_file(&path, format!("{password}\n").as_bytes(), 0o600)?;
        Ok(path)
    }

    /// Appends our settings to `postgresql.conf` and replaces `pg_hba.conf`.
    pub(crate) fn configure(&self, opts: &ClusterOptions) -> Result<(), LocalPgError> {
        let conf_path = self.data.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf::postgresql_conf(opts, &self.data).as_bytes()))
            .map_err(LocalPgError::io(format!(
                "append to {}",
                conf_path.display()
            )))?;
        // Overwriting an existing file keeps its owner (the server user).
        let hba_path = self.data.join("pg_hba.conf");
        fs::write(&hba_path, conf::pg_hba_conf(opts.replication))
            .map_err(LocalPgError::io(format!("write {}", hba_path.display())))
    }

    /// Makes the data dir pg_basebackup filled a standby: appends `settings` to
    /// `postgresql.auto.conf` and creates `standby.signal` ("Hot Standby" in the docs).
    pub(crate) fn configure_standby(&self, settings: &str) -> Result<(), LocalPgError> {
        // pg_basebackup copies postgresql.auto.conf, owned by the server user, so appending
        // keeps it theirs.
        let auto_conf = self.data.join("postgresql.auto.conf");
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&auto_conf)
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(LocalPgError::io(format!(
                "append to {}",
                auto_conf.display()
            )))?;
        hand_to_server_user(&auto_conf)?;
        write_file(&self.data.join("standby.signal"), b"", 0o600)
    }

    /// Copies the primary's CA certificate here, so a replica's outlives its primary.
    pub(crate) fn copy_ca(&self, from: &Path) -> Result<PathBuf, LocalPgError> {
        let ca = self.root().join("ca.crt");
        let pem = fs::read(from).map_err(LocalPgError::io(format!("read {}", from.display())))?;
        write_file(&ca, &pem, 0o644)?;
        Ok(ca)
    }

    /// Generates a CA and server certificate, installs them for `ssl = on`, returns the CA path.
    pub(crate) fn install_tls(&self) -> Result<PathBuf, LocalPgError> {
        let tls = certs::generate(&SERVER_NAMES)?;
        // The server refuses a key readable by group or others, or owned by someone else.
        write_file(
            &self.data.join(SERVER_KEY_FILE),
            tls.key_pem.as_bytes(),
            0o600,
        )?;
        write_file(
            &self.data.join(SERVER_CERT_FILE),
            tls.cert_pem.as_bytes(),
            0o644,
        )?;
        let ca = self.root().join("ca.crt");
        write_file(&ca, tls.ca_pem.as_bytes(), 0o644)?;
        Ok(ca)
    }

    /// Deletes the temp dir now, reporting failure (dropping would ignore it).
    pub(crate) fn remove(&self) -> Result<(), LocalPgError> {
        match fs::remove_dir_all(self.root()) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(LocalPgError::Io {
                action: format!("remove {}; delete it by hand", self.root().display()),
                source: err,
            }),
            _ => Ok(()),
        }
    }
}

/// Writes `contents` to `path` with `mode`, owned by the server user.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), LocalPgError> {
    fs::write(path, contents).map_err(LocalPgError::io(format!("write {}", path.display())))?;
    set_mode(path, mode)?;
    hand_to_server_user(path)
}

/// chmod.
fn set_mode(path: &Path, mode: u32) -> Result<(), LocalPgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(LocalPgError::io(format!(
        "set mode {mode:o} on {}",
        path.display()
    )))
}

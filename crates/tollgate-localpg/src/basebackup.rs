//! Copying a running primary's data dir with `pg_basebackup`, the start of every replica.

use std::path::Path;
use std::process::Command;

use crate::error::LocalPgError;
use crate::privilege::as_server_user;

/// Where to copy from and to.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    /// The pg_basebackup binary.
    pub(crate) pg_basebackup: &'a Path,
    /// The primary's port on 127.0.0.1.
    pub(crate) port: u16,
    /// The `postgres` superuser's password.
    pub(crate) password: &'a str,
}

/// Copies the primary into `data` (which must not exist yet).
///
/// Runs as the server user so the copy is theirs, mode 0700 like the primary's. `-X stream`
/// streams the WAL written meanwhile so the copy is consistent on its own; `-c fast` asks for
/// an immediate checkpoint instead of waiting for a spread one; `-N` skips fsync (the cluster
/// is throwaway). No `-R`: the replica's standby settings are written by the caller, which
/// also has to override other settings the copy inherits from the primary.
pub(crate) fn run(source: &Source<'_>, data: &Path, cwd: &Path) -> Result<(), LocalPgError> {
    let mut cmd = Command::new(source.pg_basebackup);
    cmd.arg("-D")
        .arg(data)
        .args(["-X", "stream", "-c", "fast", "-N", "-w"])
        .args(["-h", "127.0.0.1", "-p"])
        .arg(source.port.to_string())
        .args(["-U", "postgres"])
        .env("PGPASSWORD", source.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .current_dir(cwd);
    as_server_user(&mut cmd);
    let out = cmd.output().map_err(LocalPgError::io(format!(
        "run {}",
        source.pg_basebackup.display()
    )))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(LocalPgError::Basebackup {
        port: source.port,
        status: out.status,
        output,
    })
}

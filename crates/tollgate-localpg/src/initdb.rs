//! Creating a fresh data directory with `initdb`.

use std::path::Path;
use std::process::Command;

use crate::error::LocalPgError;
use crate::privilege::as_server_user;

/// Runs `initdb` for a superuser `postgres` whose password is in `pwfile`.
///
/// `-N` skips fsync (the cluster is throwaway); `--locale=C -E UTF8` makes the result the same
/// on every machine whatever its `LANG`.
pub(crate) fn run(
    initdb: &Path,
    data: &Path,
    pwfile: &Path,
    cwd: &Path,
) -> Result<(), LocalPgError> {
    let mut cmd = Command::new(initdb);
    cmd.arg("-D")
        .arg(data)
        .args([
            "-N",
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(cwd);
    as_server_user(&mut cmd);
    let out = cmd
        .output()
        .map_err(LocalPgError::io(format!("run {}", initdb.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(LocalPgError::Initdb {
        status: out.status,
        output,
    })
}

//! Running the server as an unprivileged user when we are root.
//!
//! `initdb` and `postgres` refuse to run as root, and CI containers usually are root. So when the
//! effective uid is 0 we hand the cluster's files to `nobody` and start those programs as it.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::LocalPgError;

/// The account the server runs as when we are root.
const SERVER_USER: &str = "nobody";

/// uid and gid of `nobody` on Debian, used when the passwd database has no such user.
const NOBODY_ID: u32 = 65534;

/// True when this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid a cluster's server processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerUser {
    /// Numeric user id.
    pub(crate) uid: u32,
    /// Numeric primary group id.
    pub(crate) gid: u32,
}

/// The user to switch to: `nobody` when we are root, `None` (stay as we are) otherwise.
pub(crate) fn server_user() -> Option<ServerUser> {
    is_root().then(|| {
        lookup_user(SERVER_USER).unwrap_or(ServerUser {
            uid: NOBODY_ID,
            gid: NOBODY_ID,
        })
    })
}

/// Looks a user up in the passwd database (thread-safe `getpwnam_r`).
fn lookup_user(name: &str) -> Option<ServerUser> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; an all-zero value is valid and getpwnam_r overwrites it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned by this frame, and
    // `buf.len()` is the true length of `buf`.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(ServerUser {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Makes `cmd` run as the unprivileged server user when we are root; otherwise leaves it alone.
///
/// Only `initdb` and `postgres` need this; `psql` and `pgbench` are happy to run as root.
pub fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some(user) = server_user() {
        // std clears supplementary groups (setgroups(0)) before setuid when it is root.
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

/// Gives `path` to the server user when we are root, so the server can read and write it.
pub(crate) fn hand_to_server_user(path: &Path) -> Result<(), LocalPgError> {
    if let Some(user) = server_user() {
        chown(path, Some(user.uid), Some(user.gid)).map_err(LocalPgError::io(format!(
            "give {} to the unprivileged user {SERVER_USER} (uid {})",
            path.display(),
            user.uid
        )))?;
    }
    Ok(())
}

/// The directory to create the cluster's temp dir in.
///
/// `std::env::temp_dir()` unless we are root and the server user could not reach it (say
/// `TMPDIR=/root/tmp`), in which case `/tmp`.
pub(crate) fn base_temp_dir() -> Result<PathBuf, LocalPgError> {
    let preferred = std::env::temp_dir();
    if !is_root() || traversable_by_others(&preferred)? {
        return Ok(preferred);
    }
    let fallback = PathBuf::from("/tmp");
    if traversable_by_others(&fallback)? {
        tracing::warn!(
            preferred = %preferred.display(),
            "temp dir is not reachable by the unprivileged server user; using /tmp"
        );
        return Ok(fallback);
    }
    Err(LocalPgError::Io {
        action: format!(
            "find a temp directory the unprivileged user {SERVER_USER} can reach ({} and /tmp \
             both have an ancestor without o+x); set TMPDIR to one that does",
            preferred.display()
        ),
        source: io::Error::from(io::ErrorKind::PermissionDenied),
    })
}

/// True when every directory from `/` down to `dir` has the "others may search" bit.
fn traversable_by_others(dir: &Path) -> Result<bool, LocalPgError> {
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        let meta = fs::metadata(ancestor)
            .map_err(LocalPgError::io(format!("inspect {}", ancestor.display())))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_resolves_and_unknown_users_do_not() {
        assert!(lookup_user("nobody").is_some());
        assert_eq!(lookup_user("no-such-user-tollgate"), None);
        assert_eq!(lookup_user("bad\0name"), None);
    }

    #[test]
    fn root_is_traversable_but_a_private_temp_dir_is_not() {
        assert!(traversable_by_others(Path::new("/")).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!traversable_by_others(tmp.path()).unwrap());
    }

    #[test]
    fn wrapped_commands_still_run() {
        let mut cmd = Command::new("true");
        as_server_user(&mut cmd);
        assert!(cmd.status().unwrap().success());
    }
}

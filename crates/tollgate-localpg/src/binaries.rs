//! Finds the installed PostgreSQL programs (`initdb`, `postgres`, `psql`, `pgbench`, ...).

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::LocalPgError;

/// Environment variable naming the one bin directory to use instead of searching.
pub const BINDIR_ENV: &str = "TOLLGATE_PG_BINDIR";

/// Where Debian and Ubuntu install each PostgreSQL major version (`<root>/<ver>/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Finds a PostgreSQL program: `$TOLLGATE_PG_BINDIR` if set, else the newest
/// `/usr/lib/postgresql/<ver>/bin`, else `PATH`.
pub fn find_bin(name: &str) -> Result<PathBuf, LocalPgError> {
    if let Some(dir) = env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let candidate = dir.join(name);
        return if is_executable(&candidate) {
            Ok(candidate)
        } else {
            Err(LocalPgError::BinDirOverride {
                dir,
                name: name.to_owned(),
            })
        };
    }
    let path = env::var_os("PATH").unwrap_or_default();
    search(name, Path::new(DEBIAN_ROOT), &path).ok_or_else(|| LocalPgError::BinaryNotFound {
        name: name.to_owned(),
        searched: format!("{DEBIAN_ROOT}/*/bin and PATH"),
    })
}

/// The program `name` from the same install as `of` when it has one there, else [`find_bin`].
///
/// Programs of one cluster must share a major version (`initdb` and `postgres`, a server
/// and the `pg_basebackup` that copies it), and the search could pick another install.
pub(crate) fn find_sibling(of: &Path, name: &str) -> Result<PathBuf, LocalPgError> {
    let sibling = of.with_file_name(name);
    if is_executable(&sibling) {
        Ok(sibling)
    } else {
        find_bin(name)
    }
}

/// Looks in `<debian_root>/<ver>/bin`, newest version first, then in each `PATH` entry.
fn search(name: &str, debian_root: &Path, path: &OsStr) -> Option<PathBuf> {
    versioned_bin_dirs(debian_root)
        .into_iter()
        .chain(env::split_paths(path))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The `<root>/<ver>/bin` directories, newest major version first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Parses a Debian version directory name such as `16` or `9.6` into comparable parts.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// True for a regular file with at least one execute bit.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn make_exe(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn newest_debian_version_wins_over_older_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pg");
        make_exe(&root.join("9.6/bin/initdb"));
        make_exe(&root.join("16/bin/initdb"));
        make_exe(&root.join("15/bin/initdb"));
        make_exe(&tmp.path().join("path/initdb"));
        let path = OsString::from(tmp.path().join("path"));
        assert_eq!(
            search("initdb", &root, &path),
            Some(root.join("16/bin/initdb"))
        );
    }

    #[test]
    fn falls_back_to_path_and_skips_non_executables() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pg");
        fs::create_dir_all(root.join("17/bin")).unwrap();
        fs::write(root.join("17/bin/psql"), "not executable").unwrap();
        make_exe(&tmp.path().join("b/psql"));
        let path = env::join_paths([tmp.path().join("a"), tmp.path().join("b")]).unwrap();
        assert_eq!(
            search("psql", &root, &path),
            Some(tmp.path().join("b/psql"))
        );
        assert_eq!(search("pgbench", &root, &path), None);
    }

    #[test]
    fn version_directories_sort_numerically() {
        assert!(parse_version("10") > parse_version("9.6"));
        assert_eq!(parse_version("main"), None);
    }

    #[test]
    fn missing_binary_error_says_what_to_install() {
        let err = LocalPgError::BinaryNotFound {
            name: "initdb".into(),
            searched: "/usr/lib/postgresql/*/bin and PATH".into(),
        };
        let msg = err.to_string();
        assert!(msg.contains("looked for initdb in /usr/lib/postgresql/*/bin and PATH"));
        assert!(msg.contains("install the Debian package postgresql"));
    }
}

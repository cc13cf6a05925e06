//! The files every pooler reads: one auth file and one TLS certificate and key, so they are
//! compared on equal terms.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempDir;
use tollgate_localpg::certs::{self, GeneratedTls};

/// A temp dir with `userlist.txt`, `server.crt` and `server.key`, readable by the unprivileged
/// user PgBouncer runs as when the harness is root (they are throwaway secrets).
#[derive(Debug)]
pub struct PoolerFiles {
    /// Removed on drop.
    dir: TempDir,
    /// PgBouncer-format auth file.
    pub auth_file: PathBuf,
    /// PEM certificate the poolers show clients.
    pub cert: PathBuf,
    /// PEM key of that certificate.
    pub key: PathBuf,
    /// The generated CA, leaf and key (the idle TLS clients trust the CA).
    pub tls: GeneratedTls,
}

impl PoolerFiles {
    /// Writes the auth file (`"user" "secret"` per line) and a fresh ECDSA P-256 certificate.
    pub fn create(users: &[(&str, &str)]) -> Result<PoolerFiles> {
        // /tmp rather than $TMPDIR: every ancestor must be searchable by the unprivileged user.
        let base = if tollgate_localpg::is_root() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("tollgate-bench-")
            .tempdir_in(&base)
            .with_context(|| format!("create a temp dir in {}", base.display()))?;
        set_mode(dir.path(), 0o755)?;

        let auth_file = dir.path().join("userlist.txt");
        write_readable(&auth_file, &auth_file_text(users))?;
        let tls = certs::generate(&["localhost", "127.0.0.1"])
            .context("generate the poolers' TLS certificate")?;
        let cert = dir.path().join("server.crt");
        write_readable(&cert, &tls.cert_pem)?;
        let key = dir.path().join("server.key");
        write_readable(&key, &tls.key_pem)?;
        Ok(PoolerFiles {
            dir,
            auth_file,
            cert,
            key,
            tls,
        })
    }

    /// The temp dir (PgBouncer's config goes here too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The auth file text: `"user" "secret"` lines, `"` doubled inside values as PgBouncer expects.
pub fn auth_file_text(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(user, secret)| {
            format!(
                "\"{}\" \"{}\"\n",
                user.replace('"', "\"\""),
                secret.replace('"', "\"\"")
            )
        })
        .collect()
}

/// Writes a file with mode 0644.
pub fn write_readable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    set_mode(path, 0o644)
}

/// chmod.
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_file_quotes_each_user_and_secret() {
        let text = auth_file_text(&[("bench", "SCRAM-SHA-256$4096:abc"), ("we\"ird", "md5x")]);
        assert_eq!(
            text,
            "\"bench\" \"SCRAM-SHA-256$4096:abc\"\n\"we\"\"ird\" \"md5x\"\n"
        );
    }
}

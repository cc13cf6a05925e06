//! Roles, databases and stored password secrets, created through psql as the superuser.

use crate::cluster::Cluster;
use crate::error::LocalPgError;
use crate::psql::{quote_ident, quote_literal};

impl Cluster {
    /// Creates a login role with a password stored as SCRAM, or as md5 when `md5` is set; it
    /// then logs in with that same mechanism. Pair with [`Cluster::create_database`] for a
    /// database the role owns.
    pub fn create_user(&self, user: &str, password: &str, md5: bool) -> Result<(), LocalPgError> {
        let encryption = if md5 { "md5" } else { "scram-sha-256" };
        let sql = format!(
            "SET password_encryption = {};\nCREATE ROLE {} LOGIN PASSWORD {};\n",
            quote_literal(encryption),
            quote_ident(user),
            quote_literal(password),
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// Creates a database owned by `owner`.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), LocalPgError> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {};\n",
            quote_ident(name),
            quote_ident(owner)
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// The server's stored SCRAM verifier or md5 hash for a role (from pg_authid), for writing
    /// an auth file.
    pub fn stored_secret(&self, user: &str) -> Result<String, LocalPgError> {
        let sql = format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = {} AND rolpassword IS NOT NULL;\n",
            quote_literal(user)
        );
        let secret = self.psql("postgres", &sql)?;
        if secret.is_empty() {
            return Err(LocalPgError::NoStoredSecret {
                user: user.to_owned(),
            });
        }
        Ok(secret)
    }
}

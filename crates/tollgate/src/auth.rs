//! Client authentication policy: given a user, how to check them, and what Tollgate then
//! presents to the database on their behalf. The session drives the exchange
//! (`session/authenticate.rs`); this decides it. New verifiers (IAM tokens) are new `Plan`s.

use crate::backend::Credential;
use crate::sync::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use tokio::sync::Semaphore;
use tollgate_auth::{
    ct_eq, md5_stored, AuthFileError, ScramCredential, ScramServer, ScramVerifier, Secret, UserList,
};

/// Iterations for verifiers Tollgate derives from plaintext auth-file passwords (PostgreSQL's default).
pub(crate) const SCRAM_ITERATIONS: u32 = 4096;

/// PBKDF2 derivations running at once, for clients' cleartext passwords and Tollgate's own
/// SCRAM logins to the database alike: each costs milliseconds of a core (more when a server
/// asks for more iterations), and both can be asked for before anyone proved anything, so
/// more than the machine has cores would only let a flood of logins starve everything else.
static PBKDF2_SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Runs a PBKDF2 derivation `f` on the blocking pool, once one of [`PBKDF2_SLOTS`] is free;
/// `None` if the task failed (it cannot, short of a panic in the hash code).
pub(crate) async fn pbkdf2<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = PBKDF2_SLOTS.acquire().await;
    tokio::task::spawn_blocking(f).await.ok()
}

/// How to check one client.
pub enum Plan {
    /// SCRAM-SHA-256 against a verifier (stored, or derived from a plaintext password).
    Scram {
        server: Box<ScramServer>,
        secret: Secret,
    },
    /// md5 challenge against a stored md5 hash.
    Md5 { secret: Secret },
    /// The user is not in the auth file: run a SCRAM exchange that always fails, so a prober
    /// cannot tell unknown users from wrong passwords.
    Unknown { server: Box<ScramServer> },
}

/// The auth file and the verifiers derived from it.
pub struct Authenticator {
    path: PathBuf,
    users: RwLock<Arc<UserList>>,
    derived: Mutex<HashMap<String, ScramVerifier>>,
}

impl Authenticator {
    /// Loads the auth file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let users = UserList::load(path)?;
        if users.is_empty() {
            tracing::warn!(path = %path.display(), "the auth file lists no users; every login will fail");
        }
        Ok(Authenticator {
            path: path.to_path_buf(),
            users: RwLock::new(Arc::new(users)),
            derived: Mutex::new(HashMap::new()),
        })
    }

    /// Re-reads the auth file (reload); on error the old list stays.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let users = UserList::load(&self.path)?;
        let n = users.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        lock(&self.derived).clear();
        Ok(n)
    }

    /// How many users the auth file lists now (readiness: none means every login fails).
    pub fn user_count(&self) -> usize {
        self.users().len()
    }

    /// The auth file's secret for `user`, if it lists the user.
    pub fn secret(&self, user: &str) -> Option<Secret> {
        self.users().get(user).cloned()
    }

    fn users(&self) -> Arc<UserList> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decides how to check `user`.
    pub fn plan(&self, user: &str) -> Plan {
        let users = self.users();
        match users.get(user) {
            None => Plan::Unknown {
                server: Box::new(ScramServer::mock(user)),
            },
            Some(secret @ Secret::Md5(_)) => Plan::Md5 {
                secret: secret.clone(),
            },
            Some(secret @ Secret::Scram(v)) => Plan::Scram {
                server: Box::new(ScramServer::new(v.clone())),
                secret: secret.clone(),
            },
            Some(secret @ Secret::Plain(p)) => {
                let verifier = {
                    let mut derived = lock(&self.derived);
                    derived
                        .entry(user.to_string())
                        .or_insert_with(|| {
                            let salt: [u8; 16] = rand::random();
                            ScramVerifier::from_password(p, &salt, SCRAM_ITERATIONS)
                        })
                        .clone()
                };
                Plan::Scram {
                    server: Box::new(ScramServer::new(verifier)),
                    secret: secret.clone(),
                }
            }
        }
    }
}

/// Whether `password`, sent in cleartext (under `iam_auth = enabled`, over TLS), is the one
/// behind `secret`. Constant-time compares (plain passwords by their SHA-256, so not even the
/// length shows); a SCRAM verifier is recomputed from the password with its own salt and
/// iteration count (PBKDF2: run it off the async threads).
pub fn check_cleartext(secret: &Secret, user: &str, password: &str) -> bool {
    use sha2::{Digest, Sha256};
    match secret {
        Secret::Plain(p) => ct_eq(
            &Sha256::digest(p.as_bytes()),
            &Sha256::digest(password.as_bytes()),
        ),
        Secret::Md5(stored) => ct_eq(stored.as_bytes(), md5_stored(password, user).as_bytes()),
        Secret::Scram(v) => {
            let derived = ScramVerifier::from_password(password, &v.salt, v.iterations);
            ct_eq(&derived.stored_key, &v.stored_key)
        }
    }
}

/// What Tollgate logs in to the database with for a user who proved itself with an IAM auth
/// token, from the auth file's entry: a SCRAM verifier alone cannot log in (the ClientKey
/// behind it comes only from a client's own SCRAM proof), so it gives `None`.
pub fn stored_credential(secret: &Secret) -> Option<Credential> {
    match secret {
        Secret::Plain(p) => Some(Credential::Password(p.clone())),
        Secret::Md5(h) => Some(Credential::Md5(h.clone())),
        Secret::Scram(_) => None,
    }
}

/// What to log in to the database with, after a client proved itself against `secret`.
pub fn backend_credential(secret: &Secret, scram_client_key: Option<[u8; 32]>) -> Credential {
    match (secret, scram_client_key) {
        (Secret::Plain(p), _) => Credential::Password(p.clone()),
        (Secret::Md5(h), _) => Credential::Md5(h.clone()),
        (Secret::Scram(v), Some(client_key)) => Credential::Scram(ScramCredential::Keys {
            client_key,
            verifier: v.clone(),
        }),
        // A SCRAM verifier without a SCRAM login cannot happen (plan() pairs them); keep the
        // verifier-only credential, which the server will refuse with a clear error.
        (Secret::Scram(v), None) => Credential::Scram(ScramCredential::Keys {
            client_key: [0; 32],
            verifier: v.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_passwords_check_against_every_stored_form() {
        let plain = Secret::parse("s3cret").unwrap();
        let md5 = Secret::parse(&md5_stored("s3cret", "app")).unwrap();
        let scram = Secret::Scram(ScramVerifier::from_password("s3cret", b"saltsalt", 16));
        for secret in [&plain, &md5, &scram] {
            assert!(check_cleartext(secret, "app", "s3cret"), "{secret:?}");
            assert!(!check_cleartext(secret, "app", "s3cre"), "{secret:?}");
            assert!(!check_cleartext(secret, "app", ""), "{secret:?}");
        }
        // md5 hashes salt with the user name.
        assert!(!check_cleartext(&md5, "other", "s3cret"));
    }

    #[test]
    fn only_plain_and_md5_entries_can_log_in_for_an_iam_user() {
        assert!(matches!(
            stored_credential(&Secret::parse("pw").unwrap()),
            Some(Credential::Password(p)) if p == "pw"
        ));
        assert!(matches!(
            stored_credential(&Secret::parse(&md5_stored("pw", "u")).unwrap()),
            Some(Credential::Md5(_))
        ));
        let scram = Secret::Scram(ScramVerifier::from_password("pw", b"salt", 16));
        assert!(stored_credential(&scram).is_none());
    }
}

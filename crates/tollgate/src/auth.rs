//! Client authentication policy: given a user, how to check them, and what Tollgate then
//! presents to the database on their behalf. The session drives the exchange
//! (`session/authenticate.rs`); this decides it. New verifiers (IAM tokens) are new `Plan`s.

use crate::backend::Credential;
use crate::pool::global::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tollgate_auth::{AuthFileError, ScramCredential, ScramServer, ScramVerifier, Secret, UserList};

/// Iterations for verifiers Tollgate derives from plaintext auth-file passwords (PostgreSQL's default).
const SCRAM_ITERATIONS: u32 = 4096;

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

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
    /// The user is not in the auth file, which holds mostly md5 entries: an md5 challenge
    /// that always fails, for the same reason.
    UnknownMd5,
}

/// How unknown users are answered: as most of the auth file's users are, so that neither the
/// method nor the SCRAM iteration count tells a prober which names exist. (PostgreSQL answers
/// a missing role by its `password_encryption`; the auth file is Tollgate's equivalent.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MockLogin {
    /// SCRAM advertising this iteration count.
    Scram { iterations: u32 },
    /// An md5 challenge.
    Md5,
}

impl MockLogin {
    /// The look of most entries: md5 if md5 entries outnumber the SCRAM ones (verifiers, and
    /// plaintext passwords, which Tollgate checks by SCRAM at [`SCRAM_ITERATIONS`]), else SCRAM
    /// with the most common count (ties to the smaller count).
    pub(crate) fn for_users(users: &UserList) -> Self {
        let mut md5 = 0usize;
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for name in users.users() {
            match users.get(name) {
                Some(Secret::Md5(_)) => md5 += 1,
                Some(Secret::Scram(v)) => *counts.entry(v.iterations).or_default() += 1,
                Some(Secret::Plain(_)) => *counts.entry(SCRAM_ITERATIONS).or_default() += 1,
                None => {}
            }
        }
        let scram: usize = counts.values().sum();
        if md5 > scram {
            return MockLogin::Md5;
        }
        let iterations = counts
            .into_iter()
            .max_by(|(ia, na), (ib, nb)| na.cmp(nb).then(ib.cmp(ia)))
            .map_or(SCRAM_ITERATIONS, |(i, _)| i);
        MockLogin::Scram { iterations }
    }
}

/// The auth file and the verifiers derived from it.
pub struct Authenticator {
    path: Option<PathBuf>,
    /// Users whose credentials come from Secrets Manager (auth_secret), set once at start.
    secrets: std::sync::OnceLock<Arc<crate::secrets::SecretStore>>,
    /// The SCRAM salt each secret user is offered.
    secret_salts: Mutex<HashMap<String, [u8; 16]>>,
    /// Verifiers derived from secret passwords, by "user\0version id".
    secret_derived: Mutex<HashMap<String, ScramVerifier>>,
    users: RwLock<Arc<UserList>>,
    derived: Mutex<HashMap<String, ScramVerifier>>,
    /// How unknown users are answered, decided when the file is read.
    mock: Mutex<MockLogin>,
}

impl Authenticator {
    /// Loads the auth file (none: no file users, with auth_secret only).
    pub fn load(path: Option<&Path>) -> Result<Self, AuthFileError> {
        let users = match path {
            Some(path) => UserList::load(path)?,
            None => UserList::default(),
        };
        if users.is_empty() && path.is_some() {
            tracing::warn!(path = ?path, "the auth file lists no users; only auth_secret users can log in");
        }
        Ok(Authenticator {
            path: path.map(Path::to_path_buf),
            mock: Mutex::new(MockLogin::for_users(&users)),
            users: RwLock::new(Arc::new(users)),
            derived: Mutex::new(HashMap::new()),
            secrets: std::sync::OnceLock::new(),
            secret_salts: Mutex::new(HashMap::new()),
            secret_derived: Mutex::new(HashMap::new()),
        })
    }

    /// Re-reads the auth file (reload); on error the old list stays.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let users = UserList::load(path)?;
        let n = users.len();
        *lock(&self.mock) = MockLogin::for_users(&users);
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        lock(&self.derived).clear();
        Ok(n)
    }

    /// Puts the Secrets Manager users in force (once, at start).
    pub fn set_secrets(&self, store: Arc<crate::secrets::SecretStore>) {
        let _ = self.secrets.set(store);
    }

    /// The Secrets Manager users, if auth_secret is set.
    pub fn secrets(&self) -> Option<&Arc<crate::secrets::SecretStore>> {
        self.secrets.get()
    }

    /// SCRAM verifiers for a secret user's accepted passwords (AWSCURRENT first), one salt
    /// per user for the life of the process so a verifier learnt after a re-read can check a
    /// proof made against the salt already sent. PBKDF2 runs once per secret version, off the
    /// async threads; the cache holds derived keys only, no password.
    pub async fn secret_verifiers(
        &self,
        user: &str,
        accepted: Vec<(String, zeroize::Zeroizing<String>)>,
    ) -> Vec<ScramVerifier> {
        let salt = {
            let mut salts = lock(&self.secret_salts);
            *salts
                .entry(user.to_string())
                .or_insert_with(rand::random::<[u8; 16]>)
        };
        let mut out = Vec::with_capacity(accepted.len());
        for (version, password) in accepted {
            let key = format!("{user}\0{version}");
            if let Some(v) = lock(&self.secret_derived).get(&key).cloned() {
                out.push(v);
                continue;
            }
            let derived =
                pbkdf2(move || ScramVerifier::from_password(&password, &salt, SCRAM_ITERATIONS))
                    .await;
            if let Some(v) = derived {
                let mut cache = lock(&self.secret_derived);
                if cache.len() >= 4096 {
                    cache.clear();
                }
                cache.insert(key, v.clone());
                out.push(v);
            }
        }
        out
    }

    /// How many users the auth file lists now (readiness: none means every login fails).
    pub fn user_count(&self) -> usize {
        self.users().len() + self.secrets().map_or(0, |s| s.users().count())
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
            None => match *lock(&self.mock) {
                MockLogin::Scram { iterations } => Plan::Unknown {
                    server: Box::new(ScramServer::mock_with(user, iterations)),
                },
                MockLogin::Md5 => Plan::UnknownMd5,
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

    fn users(text: &str) -> UserList {
        UserList::parse(text).unwrap()
    }

    #[test]
    fn unknown_users_are_answered_like_most_of_the_auth_file() {
        let scram = |pw: &str, i: u32| {
            ScramVerifier::from_password(pw, b"0123456789abcdef", i).to_stored_string()
        };
        let md5 = |pw: &str, u: &str| md5_stored(pw, u);
        let (a, b, c) = (scram("a", 16), scram("b", 16), scram("c", 32));
        // Verifiers: the most common count.
        assert_eq!(
            MockLogin::for_users(&users(&format!(
                "\"a\" \"{a}\"\n\"b\" \"{b}\"\n\"c\" \"{c}\"\n"
            ))),
            MockLogin::Scram { iterations: 16 }
        );
        // Plaintext entries are checked by SCRAM at 4096, and count so.
        assert_eq!(
            MockLogin::for_users(&users(&format!(
                "\"a\" \"{a}\"\n\"p\" \"pw\"\n\"q\" \"pw\"\n"
            ))),
            MockLogin::Scram {
                iterations: SCRAM_ITERATIONS
            }
        );
        // Mostly md5: unknown users get an md5 challenge.
        let (m1, m2) = (md5("x", "m1"), md5("y", "m2"));
        assert_eq!(
            MockLogin::for_users(&users(&format!(
                "\"a\" \"{a}\"\n\"m1\" \"{m1}\"\n\"m2\" \"{m2}\"\n"
            ))),
            MockLogin::Md5
        );
        // Nothing to imitate: PostgreSQL's defaults.
        assert_eq!(
            MockLogin::for_users(&UserList::default()),
            MockLogin::Scram {
                iterations: SCRAM_ITERATIONS
            }
        );
    }

    #[test]
    fn the_plan_for_an_unknown_user_follows_the_auth_file_and_its_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        let v = ScramVerifier::from_password("pw", b"0123456789abcdef", 10_000).to_stored_string();
        std::fs::write(&path, format!("\"real\" \"{v}\"\n")).unwrap();
        let auth = Authenticator::load(Some(&path)).unwrap();
        let first = |plan: Plan| match plan {
            Plan::Unknown { mut server } => {
                String::from_utf8(server.client_first(b"n,,n=,r=abc").unwrap()).unwrap()
            }
            Plan::UnknownMd5 => "md5".into(),
            _ => panic!("not a mock"),
        };
        let ghost = first(auth.plan("ghost"));
        assert!(ghost.ends_with(",i=10000"), "{ghost}");
        // The same salt on every probe of one name, as a real user's.
        let salt = |m: &str| m.split(',').nth(1).unwrap().to_string();
        assert_eq!(salt(&first(auth.plan("ghost"))), salt(&ghost));

        let m = md5_stored("pw", "m");
        std::fs::write(&path, format!("\"m\" \"{m}\"\n")).unwrap();
        auth.reload().unwrap();
        assert_eq!(first(auth.plan("ghost")), "md5");
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

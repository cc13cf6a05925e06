//! The trusted keys file: access keys whose tokens this proxy verifies locally.
//!
//! RDS checks a token's signature with the signer's secret, which AWS holds. Tollgate verifying
//! locally needs those secrets too, so each key that may sign is listed with the users it may
//! log in as:
//!
//! ```toml
//! [[key]]
//! access_key_id = "AKIAIOSFODNN7EXAMPLE"
//! secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
//! principal = "arn:aws:iam::123456789012:user/app"   # optional, for policy Principal matching
//! allow = ["app", "report_*"]                        # `*` any run, `?` one character
//! ```
//!
//! Errors name the entry and the problem, never a secret or the text of a line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::iam::error::KeysFileError;
use crate::iam::wildcard;

/// One trusted signing key.
#[derive(Clone)]
pub struct TrustedKey {
    access_key_id: String,
    secret_access_key: String,
    principal: Option<String>,
    allow: Vec<String>,
}

impl TrustedKey {
    /// The access key id (not secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The principal name policies may use for this key, if one is configured.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The user patterns this key may log in as.
    pub fn allow(&self) -> &[String] {
        &self.allow
    }

    /// Whether `user` matches one of the key's `allow` patterns.
    pub fn allows_user(&self, user: &str) -> bool {
        self.allow.iter().any(|p| wildcard::matches(p, user))
    }

    /// The secret access key, for recomputing signatures.
    pub(crate) fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("principal", &self.principal)
            .field("allow", &self.allow)
            .finish()
    }
}

/// The trusted keys, by access key id.
#[derive(Clone, Default)]
pub struct KeyStore {
    keys: BTreeMap<String, TrustedKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    access_key_id: String,
    // Taken as any value and type-checked here: serde's "invalid type" message would quote a
    // mistyped secret (say, a bare number) back into the error.
    secret_access_key: toml::Value,
    #[serde(default)]
    principal: Option<String>,
    allow: Vec<String>,
}

impl KeyStore {
    /// Parses the keys file's TOML text.
    pub fn parse(text: &str) -> Result<Self, KeysFileError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| KeysFileError::Syntax {
            line: e.span().map(|span| {
                text.get(..span.start)
                    .map_or(0, |s| s.matches('\n').count())
                    + 1
            }),
            // `message()` is the bare message; `Display` would quote the offending line.
            why: e.message().to_owned(),
        })?;
        let mut keys = BTreeMap::new();
        for (index, raw) in raw.key.into_iter().enumerate() {
            let invalid = |why: String| KeysFileError::Invalid {
                entry: index + 1,
                why,
            };
            let key = validate(raw).map_err(|why| invalid(why.to_owned()))?;
            if keys.contains_key(&key.access_key_id) {
                return Err(invalid(format!(
                    "access key id {:?} is listed twice",
                    key.access_key_id
                )));
            }
            keys.insert(key.access_key_id.clone(), key);
        }
        Ok(Self { keys })
    }

    /// Reads and parses the keys file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The key with this access key id, if it is trusted.
    pub fn get(&self, access_key_id: &str) -> Option<&TrustedKey> {
        self.keys.get(access_key_id)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted access key ids, in sorted order.
    pub fn access_key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.values()).finish()
    }
}

fn validate(raw: RawKey) -> Result<TrustedKey, &'static str> {
    let id = &raw.access_key_id;
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("access_key_id must be 1 to 128 ASCII letters and digits");
    }
    let toml::Value::String(secret) = raw.secret_access_key else {
        return Err("secret_access_key must be a string");
    };
    if secret.is_empty() {
        return Err("secret_access_key is empty");
    }
    if raw.principal.as_deref() == Some("") {
        return Err("principal is empty; leave it out instead");
    }
    if raw.allow.is_empty() {
        return Err("allow lists no users; list patterns, or [\"*\"] for any user");
    }
    if raw.allow.iter().any(String::is_empty) {
        return Err("allow has an empty pattern");
    }
    Ok(TrustedKey {
        access_key_id: raw.access_key_id,
        secret_access_key: secret,
        principal: raw.principal,
        allow: raw.allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
# Keys trusted to sign IAM tokens.
[[key]]
access_key_id = "AKIAAPP"
secret_access_key = "app-secret/with+chars="
principal = "arn:aws:iam::123456789012:user/app"
allow = ["app", "report_*"]

[[key]]
access_key_id = "AKIAOPS"
secret_access_key = "ops-secret"
allow = ["*"]
"#;

    fn invalid(text: &str) -> (usize, String) {
        match KeyStore::parse(text) {
            Err(KeysFileError::Invalid { entry, why }) => (entry, why),
            other => panic!("expected an invalid entry, got {other:?}"),
        }
    }

    #[test]
    fn parses_keys_principals_and_allow_patterns() {
        let store = KeyStore::parse(FILE).unwrap();
        assert_eq!(store.len(), 2);
        assert!(!store.is_empty());
        assert_eq!(
            store.access_key_ids().collect::<Vec<_>>(),
            ["AKIAAPP", "AKIAOPS"]
        );
        let app = store.get("AKIAAPP").unwrap();
        assert_eq!(app.access_key_id(), "AKIAAPP");
        assert_eq!(app.secret_access_key(), "app-secret/with+chars=");
        assert_eq!(app.principal(), Some("arn:aws:iam::123456789012:user/app"));
        assert_eq!(app.allow(), ["app", "report_*"]);
        assert!(app.allows_user("app"));
        assert!(app.allows_user("report_daily"));
        assert!(!app.allows_user("admin"));
        assert!(!app.allows_user("apps"));
        let ops = store.get("AKIAOPS").unwrap();
        assert_eq!(ops.principal(), None);
        assert!(ops.allows_user("anyone"));
        assert!(store.get("AKIAOTHER").is_none());
        assert!(KeyStore::parse("").unwrap().is_empty());
        assert!(KeyStore::default().is_empty());
    }

    #[test]
    fn refuses_bad_entries_naming_the_entry() {
        let entry = |body: &str| {
            format!("[[key]]\naccess_key_id = \"A1\"\nsecret_access_key = \"s\"\nallow = [\"*\"]\n[[key]]\n{body}")
        };
        let cases = [
            ("access_key_id = \"\"\nsecret_access_key = \"s\"\nallow = [\"a\"]", "access_key_id"),
            ("access_key_id = \"AK/1\"\nsecret_access_key = \"s\"\nallow = [\"a\"]", "access_key_id"),
            ("access_key_id = \"A2\"\nsecret_access_key = \"\"\nallow = [\"a\"]", "secret_access_key is empty"),
            ("access_key_id = \"A2\"\nsecret_access_key = 12345\nallow = [\"a\"]", "must be a string"),
            ("access_key_id = \"A2\"\nsecret_access_key = \"s\"\nallow = []", "allow lists no users"),
            ("access_key_id = \"A2\"\nsecret_access_key = \"s\"\nallow = [\"\"]", "empty pattern"),
            ("access_key_id = \"A2\"\nsecret_access_key = \"s\"\nprincipal = \"\"\nallow = [\"a\"]", "principal is empty"),
            ("access_key_id = \"A1\"\nsecret_access_key = \"s2\"\nallow = [\"a\"]", "listed twice"),
        ];
        for (body, why) in cases {
            let (entry_no, got) = invalid(&entry(body));
            assert_eq!(entry_no, 2, "{body}");
            assert!(got.contains(why), "{body}: {got}");
            assert!(!got.contains("12345"), "{got}");
        }
    }

    #[test]
    fn syntax_errors_give_the_line_but_never_its_text() {
        let text = "[[key]]\naccess_key_id = \"A1\"\nsecret_access_key = \"hunter2\" oops\nallow = [\"*\"]\n";
        match KeyStore::parse(text) {
            Err(e @ KeysFileError::Syntax { line: Some(3), .. }) => {
                let msg = e.to_string();
                assert!(!msg.contains("hunter2"), "{msg}");
                assert!(msg.contains("line 3"), "{msg}");
            }
            other => panic!("expected a syntax error on line 3, got {other:?}"),
        }
        for text in [
            "[[key]]\naccess_key_id = \"A1\"\nallow = [\"*\"]\n",
            "[[key]]\naccess_key_id = \"A1\"\nsecret_access_key = \"hunter2\"\n",
            "[[key]]\naccess_key_id = \"A1\"\nsecret_access_key = \"hunter2\"\nallow = [\"*\"]\nsecret = \"x\"\n",
            "[[key]]\naccess_key_id = \"A1\"\nsecret_access_key = \"hunter2\"\nallow = \"app\"\n",
            "keys = 1\n",
        ] {
            match KeyStore::parse(text) {
                Err(e @ KeysFileError::Syntax { .. }) => {
                    assert!(!e.to_string().contains("hunter2"), "{e}");
                }
                other => panic!("expected a syntax error for {text:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let store = KeyStore::parse(FILE).unwrap();
        let debug = format!("{store:?}");
        assert!(
            debug.contains("AKIAAPP") && debug.contains("report_*"),
            "{debug}"
        );
        assert!(!debug.contains("app-secret"), "{debug}");
        assert!(!debug.contains("ops-secret"), "{debug}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_on_error() {
        let dir = std::env::temp_dir().join(format!("tollgate-iam-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(&path, FILE).unwrap();
        assert_eq!(KeyStore::load(&path).unwrap().len(), 2);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        match KeyStore::load(&path) {
            Err(KeysFileError::Io { path: p, .. }) => assert_eq!(p, path.display().to_string()),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}

//! The auth file, in PgBouncer's `auth_file` format.
//!
//! Each line is `"user" "secret"`; fields after the second are ignored. Inside quotes, `""`
//! stands for one `"`. Blank lines and lines starting with `;` or `#` are skipped. A user named
//! twice keeps the later secret, as PgBouncer does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::error::{AuthFileError, ScramError};
use crate::scram_verifier::ScramVerifier;

/// A user's secret from the auth file, in whichever form it was stored.
#[derive(Clone)]
pub enum Secret {
    /// A plaintext password.
    Plain(String),
    /// PostgreSQL's md5 form: `"md5"` + 32 lowercase hex digits.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramVerifier),
}

impl Secret {
    /// Classifies a stored secret: md5 form, SCRAM verifier (must be well formed), else plain.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        if is_md5_form(s) {
            Ok(Self::Md5(s.to_owned()))
        } else if s.starts_with("SCRAM-SHA-256$") {
            ScramVerifier::parse(s).map(Self::Scram)
        } else {
            Ok(Self::Plain(s.to_owned()))
        }
    }
}

fn is_md5_form(s: &str) -> bool {
    s.strip_prefix("md5").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Md5(_) => f.write_str("Md5(<redacted>)"),
            Self::Scram(v) => f.debug_tuple("Scram").field(v).finish(),
        }
    }
}

/// The users the pooler accepts and their secrets, as read from the auth file.
#[derive(Clone, Default)]
pub struct UserList {
    users: BTreeMap<String, Secret>,
}

impl UserList {
    /// Parses auth file text; errors name the 1-based line but never quote it.
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let syntax = |why: String| AuthFileError::Syntax {
                line: index + 1,
                why,
            };
            let Some((user, secret)) = parse_line(line).map_err(|why| syntax(why.to_owned()))?
            else {
                continue;
            };
            let secret = Secret::parse(&secret)
                .map_err(|e| syntax(format!("bad SCRAM verifier for user {user:?}: {e}")))?;
            users.insert(user, secret);
        }
        Ok(Self { users })
    }

    /// Reads and parses the auth file at `path`.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The secret stored for `user`, if the user is listed.
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// How many users are listed.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no users are listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The listed user names, in sorted order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl fmt::Debug for UserList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(&self.users).finish()
    }
}

/// Parses one line into (user, secret), or `None` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<(String, String)>, &'static str> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
        return Ok(None);
    }
    let (user, rest) = quoted(line).map_err(|e| match e {
        Quoted::Missing => "expected a quoted user name",
        Quoted::Unterminated => "unterminated quoted user name",
    })?;
    if user.is_empty() {
        return Err("empty user name");
    }
    if !rest.starts_with(char::is_whitespace) {
        return Err(if rest.is_empty() {
            "missing password after the user name"
        } else {
            "expected whitespace after the user name"
        });
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err("missing password after the user name");
    }
    // Anything after the password (PgBouncer allows more fields) is ignored.
    let (secret, _) = quoted(rest).map_err(|e| match e {
        Quoted::Missing => "expected a quoted password",
        Quoted::Unterminated => "unterminated quoted password",
    })?;
    Ok(Some((user, secret)))
}

enum Quoted {
    Missing,
    Unterminated,
}

/// Reads a `"..."` string with `""` as an escaped quote; returns it and what follows.
fn quoted(s: &str) -> Result<(String, &str), Quoted> {
    let body = s.strip_prefix('"').ok_or(Quoted::Missing)?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let after = chars.as_str();
        match after.strip_prefix('"') {
            Some(more) => {
                out.push('"');
                chars = more.chars();
            }
            None => return Ok((out, after)),
        }
    }
    Err(Quoted::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_error(text: &str) -> (usize, String) {
        match UserList::parse(text) {
            Err(AuthFileError::Syntax { line, why }) => (line, why),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    fn plain(list: &UserList, user: &str) -> String {
        match list.get(user) {
            Some(Secret::Plain(p)) => p.clone(),
            other => panic!("expected a plain secret for {user}, got {other:?}"),
        }
    }

    #[test]
    fn parses_users_comments_and_blank_lines() {
        let text = "\
; a comment
# another comment

  \"alice\" \"wonderland\"
\"bob\"\t\"builder\" \"extra\" field
\t
  ; indented comment
\"carol\"   \"c\" trailing\r
";
        let list = UserList::parse(text).unwrap();
        assert_eq!(list.len(), 3);
        assert!(!list.is_empty());
        assert_eq!(plain(&list, "alice"), "wonderland");
        assert_eq!(plain(&list, "bob"), "builder");
        assert_eq!(plain(&list, "carol"), "c");
        assert!(list.get("dave").is_none());
        assert_eq!(list.users().collect::<Vec<_>>(), ["alice", "bob", "carol"]);
    }

    #[test]
    fn doubled_quotes_are_literal_quotes() {
        let list = UserList::parse(r#""we""ird" "pa""ss""" "#).unwrap();
        assert_eq!(plain(&list, r#"we"ird"#), r#"pa"ss""#);
        let list = UserList::parse(r#""u" """""#).unwrap();
        assert_eq!(plain(&list, "u"), r#"""#);
        let list = UserList::parse(r#""u" """#).unwrap();
        assert_eq!(plain(&list, "u"), "");
        let list = UserList::parse("\"ünï cödé\" \"p w ;#\"").unwrap();
        assert_eq!(plain(&list, "ünï cödé"), "p w ;#");
    }

    #[test]
    fn later_duplicate_wins() {
        let list = UserList::parse("\"u\" \"one\"\n\"u\" \"two\"\n").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(plain(&list, "u"), "two");
    }

    #[test]
    fn empty_text_gives_an_empty_list() {
        let list = UserList::parse("").unwrap();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        assert!(UserList::default().is_empty());
    }

    #[test]
    fn detects_md5_and_scram_secrets() {
        let md5 = crate::md5_stored("pw", "m");
        let scram = ScramVerifier::from_password("pw", b"salty", 4096);
        let text = format!(
            "\"m\" \"{md5}\"\n\"s\" \"{}\"\n\"upper\" \"{}\"\n\"short\" \"md5abc\"\n",
            scram.to_stored_string(),
            md5.to_uppercase().replacen("MD5", "md5", 1),
        );
        let list = UserList::parse(&text).unwrap();
        assert!(matches!(list.get("m"), Some(Secret::Md5(s)) if *s == md5));
        assert!(matches!(list.get("s"), Some(Secret::Scram(v)) if *v == scram));
        // Only lowercase hex counts as md5; anything else is a plaintext password.
        assert!(matches!(list.get("upper"), Some(Secret::Plain(_))));
        assert!(matches!(list.get("short"), Some(Secret::Plain(_))));
    }

    #[test]
    fn bad_lines_report_their_line_number() {
        let cases = [
            ("alice \"pw\"", 1, "expected a quoted user name"),
            ("\n\n\"alice\" pw", 3, "expected a quoted password"),
            ("; c\n\"alice\"", 2, "missing password after the user name"),
            ("\"alice\"   ", 1, "missing password after the user name"),
            (
                "\"alice\"x \"pw\"",
                1,
                "expected whitespace after the user name",
            ),
            (
                "\"alice \"pw\"",
                1,
                "expected whitespace after the user name",
            ),
            ("\"alice", 1, "unterminated quoted user name"),
            (
                "\"a\" \"b\"\n\"alice\" \"pw",
                2,
                "unterminated quoted password",
            ),
            ("\"\" \"pw\"", 1, "empty user name"),
        ];
        for (text, line, why) in cases {
            assert_eq!(syntax_error(text), (line, why.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn malformed_scram_verifier_is_an_error_that_hides_the_secret() {
        let text = "\"a\" \"x\"\n\"s\" \"SCRAM-SHA-256$4096:c2FsdA==$bm90LWEta2V5:QUFBQQ==\"\n";
        let (line, why) = syntax_error(text);
        assert_eq!(line, 2);
        assert!(why.contains("SCRAM"), "{why}");
        assert!(!why.contains("bm90LWEta2V5"), "{why}");
        let err = UserList::parse(text).err().unwrap().to_string();
        assert!(err.starts_with("auth file line 2: "), "{err}");
        assert!(!err.contains("c2FsdA=="), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let md5 = crate::md5_stored("pw", "m");
        let text = format!("\"p\" \"hunter2\"\n\"m\" \"{md5}\"\n");
        let list = UserList::parse(&text).unwrap();
        let debug = format!("{list:?}");
        assert!(
            debug.contains("\"p\"") && debug.contains("\"m\""),
            "{debug}"
        );
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(&md5), "{debug}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_on_error() {
        let dir = std::env::temp_dir().join(format!("tollgate-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("userlist.txt");
        std::fs::write(&path, "\"u\" \"p\"\n").unwrap();
        let list = UserList::load(&path).unwrap();
        assert_eq!(plain(&list, "u"), "p");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();

        match UserList::load(&path) {
            Err(AuthFileError::Io { path: p, .. }) => assert_eq!(p, path.display().to_string()),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}

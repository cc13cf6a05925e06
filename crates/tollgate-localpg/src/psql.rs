//! Running SQL through `psql`, and quoting values into SQL text.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

use crate::error::LocalPgError;

/// Where and as whom psql connects.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    /// The psql binary.
    pub(crate) psql: &'a Path,
    /// Server port on 127.0.0.1.
    pub(crate) port: u16,
    /// Role to log in as.
    pub(crate) user: &'a str,
    /// That role's password.
    pub(crate) password: &'a str,
    /// Database to connect to.
    pub(crate) db: &'a str,
}

/// Runs `sql` (fed on stdin, so it may hold several statements) and returns psql's stdout
/// without its trailing newlines.
///
/// `-X` ignores `~/.psqlrc`, `ON_ERROR_STOP` turns the first error into a failed exit, `-At`
/// prints bare unaligned rows.
pub(crate) fn run(target: &Target<'_>, sql: &str) -> Result<String, LocalPgError> {
    let mut child = Command::new(target.psql)
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(target.port.to_string())
        .args(["-U", target.user, "-d", target.db, "-f", "-"])
        .env("PGPASSWORD", target.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(LocalPgError::io(format!("run {}", target.psql.display())))?;
    // Feed stdin from another thread: psql may fill its stdout pipe before reading all of it.
    let writer = child.stdin.take().map(|mut stdin| {
        let sql = sql.to_owned();
        thread::spawn(move || stdin.write_all(sql.as_bytes()))
    });
    let out = child
        .wait_with_output()
        .map_err(LocalPgError::io("wait for psql"))?;
    // A write error here is psql exiting early; its stderr below says why.
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    if !out.status.success() {
        return Err(LocalPgError::Psql {
            db: target.db.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.trim_end_matches('\n').to_owned())
}

/// Quotes an identifier for SQL text (`my"role` → `"my""role"`).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL text (`it's` → `'it''s'`), with standard_conforming_strings.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("my\"role"), "\"my\"\"role\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("back\\slash"), "'back\\slash'");
    }
}

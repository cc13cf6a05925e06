//! Run-time parameters as a client sees them (ParameterStatus) and as a backend holds them, and
//! the SET / RESET statements that make a backend match a client in transaction mode.
//!
//! Why: in transaction mode a client lands on whichever backend is free; PostgreSQL reports
//! GUC_REPORT settings ("Asynchronous Operations" in the protocol docs), so the proxy records
//! them per client and per backend and re-applies the difference on each borrow.

use std::collections::BTreeMap;

/// Settings a client may change that are re-applied across backends instead of pinning.
pub const TRACKED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "standard_conforming_strings",
    "timezone",
];

/// Stands for "this backend's value is unknown" (after a client's RESET): never equal to a real
/// value, so the next diff sets or resets the setting explicitly.
pub const UNKNOWN: &str = "\u{0}unknown";

/// Whether `name` (any case) is a tracked setting.
pub fn is_tracked(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    TRACKED.contains(&lower.as_str())
}

/// Settings by lower-cased name, keeping the server's spelling for display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet {
    map: BTreeMap<String, (String, String)>,
}

impl ParamSet {
    /// Records a value (from ParameterStatus, a startup packet or our own SET).
    pub fn set(&mut self, name: &str, value: &str) {
        let key = name.to_ascii_lowercase();
        match self.map.get_mut(&key) {
            Some(entry) => {
                if entry.1 != value {
                    entry.1 = value.to_string();
                }
            }
            None => {
                self.map.insert(key, (name.to_string(), value.to_string()));
            }
        }
    }

    /// Marks every name in `names` as unknown on this backend.
    pub fn mark_unknown<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            self.set(n, UNKNOWN);
        }
    }

    /// Forgets a value (after RESET of a setting the server does not report).
    pub fn remove(&mut self, name: &str) {
        self.map.remove(&name.to_ascii_lowercase());
    }

    /// Keeps only the settings whose lower-cased name passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    /// The value of `name`, any case.
    pub fn get(&self, name: &str) -> Option<&str> {
        // The relay asks per statement, with lowercase names: no allocation then.
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.map.get(&name.to_ascii_lowercase())
        } else {
            self.map.get(name)
        };
        found.map(|(_, v)| v.as_str())
    }

    /// (display name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.values().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of settings held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Statements that turn a backend holding `have` into one matching `self` for every tracked
    /// setting and every extra startup setting either side carries (`extras`). Empty when equal.
    ///
    /// Values go through `pg_catalog.set_config(name, value, false)`, which reads a value as
    /// the configuration file and startup options do (`search_path=a,b` is two schemas; `SET
    /// search_path TO 'a,b'` would be one), schema-qualified so no function a client created
    /// can stand in for it.
    pub fn diff_sql(&self, have: &ParamSet, extras: &[String]) -> Option<String> {
        // Runs on every borrow in transaction mode: no allocation unless there is a difference.
        let mut sql = String::new();
        // client_encoding goes last: the statement is read in the backend's current encoding,
        // so every other value must be sent before the encoding changes.
        let keys = TRACKED
            .iter()
            .copied()
            .filter(|k| *k != "client_encoding")
            .chain(extras.iter().map(String::as_str))
            .chain(std::iter::once("client_encoding"));
        let mut non_ascii = false;
        let mut sets_encoding = false;
        for key in keys {
            match (self.map.get(key), have.map.get(key)) {
                (Some((_, w)), Some((_, g))) if w == g => {}
                (Some((name, w)), _) => {
                    non_ascii |= !w.is_ascii();
                    sets_encoding |= key == "client_encoding";
                    push_set(&mut sql, name, w);
                }
                (None, Some((name, _))) => {
                    sql.push_str(&format!("RESET {};", quote_ident(name)));
                }
                (None, None) => {}
            }
        }
        if sql.is_empty() {
            return None;
        }
        // The values are UTF-8; a backend left in another encoding by its last client would
        // read their bytes as that encoding, so switch it to UTF-8 first (the client's own
        // encoding comes back at the end).
        let backend_utf8 = have
            .get("client_encoding")
            .is_none_or(|e| e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("unicode"));
        if non_ascii && !backend_utf8 {
            sql.insert_str(0, "SET client_encoding TO 'UTF8';");
            if !sets_encoding {
                if let Some((name, w)) = self.map.get("client_encoding") {
                    push_set(&mut sql, name, w);
                }
            }
        }
        Some(sql)
    }
}

/// Appends a session-level `set_config` of `name` to `value`.
fn push_set(sql: &mut String, name: &str, value: &str) {
    sql.push_str(&format!(
        "SELECT pg_catalog.set_config({}, {}, false);",
        quote_literal(name),
        quote_literal(value)
    ));
}

/// Quotes a setting name so any name a client sent cannot break out of the statement.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a value as an escape string literal (`E'...'`, every backslash and quote doubled).
///
/// Why not a plain `'...'`: its meaning depends on the backend's `standard_conforming_strings`,
/// which the previous client may have turned off; then `\'` ends nothing and a value such as
/// `x\';DROP TABLE t;--` escapes the literal. An `E''` literal is read the same way whatever
/// that setting says.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Whether a client-sent setting name is a plausible GUC name (letters, digits, `_`, `.`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Splits libpq's `options` startup value (`-c name=value`, `--name=value`) into settings.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut words = split_options(options).into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words
                .next()
                .ok_or("`-c` at the end of options has no name=value")?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(format!("unsupported startup option {word:?}; only -c name=value and --name=value pass through Tollgate"));
        };
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("startup option {assignment:?} is not name=value"))?;
        let name = name.replace('-', "_");
        if !valid_name(&name) {
            return Err(format!(
                "startup option name {name:?} is not a valid setting name"
            ));
        }
        out.push((name, value.to_string()));
    }
    Ok(out)
}

/// libpq's options are space-separated with backslash escapes.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_sets_tracked_and_resets_extras() {
        let mut want = ParamSet::default();
        want.set("TimeZone", "UTC");
        want.set("application_name", "it's");
        let mut have = ParamSet::default();
        have.set("TimeZone", "Europe/Paris");
        have.set("application_name", "it's");
        have.set("search_path", "x");
        let sql = want.diff_sql(&have, &["search_path".into()]).unwrap();
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config(E'TimeZone', E'UTC', false);RESET \"search_path\";"
        );
        have.set("timezone", "UTC");
        have.remove("search_path");
        assert_eq!(want.diff_sql(&have, &["search_path".into()]), None);
    }

    #[test]
    fn literals_cannot_be_escaped_from() {
        assert_eq!(
            quote_literal("x\\';DROP TABLE t;--"),
            "E'x\\\\'';DROP TABLE t;--'"
        );
        assert_eq!(quote_literal("it's"), "E'it''s'");
    }

    #[test]
    fn encoding_changes_last_and_non_ascii_values_go_as_utf8() {
        let mut want = ParamSet::default();
        want.set("client_encoding", "SJIS");
        want.set("application_name", "caf\u{e9}");
        let mut have = ParamSet::default();
        have.set("client_encoding", "LATIN1");
        let sql = want.diff_sql(&have, &[]).unwrap();
        assert_eq!(
            sql,
            "SET client_encoding TO 'UTF8';\
             SELECT pg_catalog.set_config(E'application_name', E'caf\u{e9}', false);\
             SELECT pg_catalog.set_config(E'client_encoding', E'SJIS', false);"
        );
    }

    #[test]
    fn options_parse_like_libpq() {
        let got =
            parse_options("-c search_path=a\\ b --statement-timeout=5s -cwork_mem=4MB").unwrap();
        assert_eq!(
            got,
            vec![
                ("search_path".into(), "a b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "4MB".into())
            ]
        );
        assert!(parse_options("-X").is_err());
        assert!(parse_options("-c \"x;drop\"=1").is_err());
    }
}

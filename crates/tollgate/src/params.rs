//! Run-time parameters as a client sees them (ParameterStatus) and as a backend holds them, and
//! the SET / RESET statements that make a backend match a client in transaction mode.
//!
//! Why: in transaction mode a client lands on whichever backend is free; PostgreSQL reports
//! GUC_REPORT settings ("Asynchronous Operations" in the protocol docs), so the proxy records
//! them per client and per backend and re-applies the difference on each borrow.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Settings a client may change that are re-applied across backends instead of pinning
/// (lower-case, in name order).
pub const TRACKED: [&str; 6] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "standard_conforming_strings",
    "timezone",
];

/// The server's spelling of each [`TRACKED`] setting (what its ParameterStatus says).
const TRACKED_DISPLAY: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "standard_conforming_strings",
    "TimeZone",
];

/// Position of `client_encoding` in [`TRACKED`].
const CLIENT_ENCODING: usize = 1;
/// Position of `standard_conforming_strings` in [`TRACKED`].
const STANDARD_CONFORMING_STRINGS: usize = 4;

/// Stands for "this backend's value is unknown" (after a client's RESET): never equal to a real
/// value, so the next diff sets or resets the setting explicitly.
pub const UNKNOWN: &str = "\u{0}unknown";

/// Position of `name` (any case) in [`TRACKED`].
fn tracked_index(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

/// Whether `name` (any case) is a tracked setting.
pub fn is_tracked(name: &str) -> bool {
    tracked_index(name).is_some()
}

/// Every other setting, by lower-cased name: (display name, value).
type OtherMap = BTreeMap<String, (String, String)>;

/// Settings by lower-cased name, keeping the server's spelling for display.
///
/// Why this shape: a client's settings are compared with its backend's on every borrow in
/// transaction mode, and every idle client keeps its own set. The tracked settings sit in a
/// fixed array of shared strings, so a client's set cloned from its pool's baseline costs no
/// allocation, and a comparison is six pointer checks once the two sides share their values
/// ([`Self::share_equal_from`]); a string compare only when they do not. Everything else is
/// rarely read, so it stays in a map that clones share until one side changes it.
#[derive(Debug, Clone, Default)]
pub struct ParamSet {
    tracked: [Option<Arc<str>>; TRACKED.len()],
    other: Option<Arc<OtherMap>>,
}

/// Whether two values of one setting are the same, cheaply when they are shared.
fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

impl PartialEq for ParamSet {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for ParamSet {}

impl ParamSet {
    /// Where a tracked setting's value is kept, by name (any case).
    fn tracked_slot(&mut self, name: &str) -> Option<&mut Option<Arc<str>>> {
        self.tracked.get_mut(tracked_index(name)?)
    }

    /// Records a value (from ParameterStatus, a startup packet or our own SET).
    pub fn set(&mut self, name: &str, value: &str) {
        if let Some(slot) = self.tracked_slot(name) {
            if slot.as_deref() != Some(value) {
                *slot = Some(Arc::from(value));
            }
            return;
        }
        let key = name.to_ascii_lowercase();
        let other = Arc::make_mut(self.other.get_or_insert_with(Default::default));
        match other.get_mut(&key) {
            Some(entry) => {
                if entry.1 != value {
                    entry.1 = value.to_string();
                }
            }
            None => {
                other.insert(key, (name.to_string(), value.to_string()));
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
        if let Some(slot) = self.tracked_slot(name) {
            *slot = None;
            return;
        }
        let key = name.to_ascii_lowercase();
        if let Some(other) = &mut self.other {
            if other.contains_key(&key) {
                Arc::make_mut(other).remove(&key);
            }
        }
    }

    /// Keeps only the settings whose lower-cased name passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        for (value, name) in self.tracked.iter_mut().zip(TRACKED) {
            if value.is_some() && !keep(name) {
                *value = None;
            }
        }
        let Some(other) = &mut self.other else { return };
        if other.keys().all(|k| keep(k)) {
            return;
        }
        if other.keys().any(|k| keep(k)) {
            Arc::make_mut(other).retain(|k, _| keep(k));
        } else {
            // Nothing left: drop this set's share rather than copy a map to empty it.
            self.other = None;
        }
    }

    /// The value of `name`, any case.
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(i) = tracked_index(name) {
            return self.tracked.get(i)?.as_deref();
        }
        let other = self.other.as_deref()?;
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            other.get(&name.to_ascii_lowercase())
        } else {
            other.get(name)
        };
        found.map(|(_, v)| v.as_str())
    }

    /// `client_encoding`, read per statement by the relay (no name lookup).
    pub fn client_encoding(&self) -> Option<&str> {
        self.tracked[CLIENT_ENCODING].as_deref()
    }

    /// `standard_conforming_strings`, read per statement by the relay (no name lookup).
    pub fn standard_conforming_strings(&self) -> Option<&str> {
        self.tracked[STANDARD_CONFORMING_STRINGS].as_deref()
    }

    /// (display name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut tracked = TRACKED
            .iter()
            .zip(TRACKED_DISPLAY)
            .zip(&self.tracked)
            .filter_map(|((k, n), v)| Some((*k, n, v.as_deref()?)))
            .peekable();
        let mut other = self
            .other
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, (n, v))| (k.as_str(), n.as_str(), v.as_str()))
            .peekable();
        // Both are in lower-cased name order: merge them.
        std::iter::from_fn(move || {
            let take_tracked = match (tracked.peek(), other.peek()) {
                (Some(t), Some(o)) => t.0 <= o.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            let next = if take_tracked {
                tracked.next()
            } else {
                other.next()
            };
            next.map(|(_, n, v)| (n, v))
        })
    }

    /// Number of settings held.
    pub fn len(&self) -> usize {
        self.tracked.iter().flatten().count() + self.other.as_ref().map_or(0, |m| m.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every tracked value `from` holds (sharing it), as this set's own.
    pub fn take_tracked_from(&mut self, from: &ParamSet) {
        for (mine, theirs) in self.tracked.iter_mut().zip(&from.tracked) {
            if let Some(theirs) = theirs {
                *mine = Some(theirs.clone());
            }
        }
    }

    /// Where a tracked value equals `from`'s, shares `from`'s copy, so the next comparison of
    /// the two is a pointer check.
    pub fn share_equal_from(&mut self, from: &ParamSet) {
        for (mine, theirs) in self.tracked.iter_mut().zip(&from.tracked) {
            if let (Some(m), Some(t)) = (mine.as_ref(), theirs) {
                if !Arc::ptr_eq(m, t) && **m == **t {
                    *mine = Some(t.clone());
                }
            }
        }
    }

    /// The display name and value of a setting that is not tracked, by lower-cased name.
    fn other_entry(&self, key: &str) -> Option<&(String, String)> {
        self.other.as_deref()?.get(key)
    }

    /// Whether `have` already matches this set for every tracked setting and every extra
    /// startup setting in `extras`: [`Self::diff_sql`] would be `None`. Allocates nothing.
    pub fn matches(&self, have: &ParamSet, extras: &[String]) -> bool {
        let tracked = self
            .tracked
            .iter()
            .zip(&have.tracked)
            .all(|(w, g)| match (w, g) {
                (Some(w), Some(g)) => same(w, g),
                (None, None) => true,
                _ => false,
            });
        tracked
            && extras
                .iter()
                .all(|k| match (self.other_entry(k), have.other_entry(k)) {
                    (Some((_, w)), Some((_, g))) => w == g,
                    (None, None) => true,
                    _ => false,
                })
    }

    /// Statements that turn a backend holding `have` into one matching `self` for every tracked
    /// setting and every extra startup setting either side carries (`extras`). Empty when equal.
    ///
    /// Values go through `pg_catalog.set_config(name, value, false)`, which reads a value as
    /// the configuration file and startup options do (`search_path=a,b` is two schemas; `SET
    /// search_path TO 'a,b'` would be one), schema-qualified so no function a client created
    /// can stand in for it.
    pub fn diff_sql(&self, have: &ParamSet, extras: &[String]) -> Option<String> {
        if self.matches(have, extras) {
            return None;
        }
        let mut sql = String::new();
        let mut non_ascii = false;
        let mut sets_encoding = false;
        let mut step =
            |sql: &mut String, want: Option<(&str, &str)>, got: Option<(&str, &str)>| match (
                want, got,
            ) {
                (Some((_, w)), Some((_, g))) if w == g => {}
                (Some((name, w)), _) => {
                    non_ascii |= !w.is_ascii();
                    push_set(sql, name, w);
                }
                (None, Some((name, _))) => {
                    sql.push_str(&format!("RESET {};", quote_ident(name)));
                }
                (None, None) => {}
            };
        fn tracked(set: &ParamSet, i: usize) -> Option<(&'static str, &str)> {
            let value = set.tracked.get(i)?.as_deref()?;
            Some((TRACKED_DISPLAY.get(i)?, value))
        }
        fn other<'a>(set: &'a ParamSet, k: &str) -> Option<(&'a str, &'a str)> {
            set.other_entry(k).map(|(n, v)| (n.as_str(), v.as_str()))
        }
        // client_encoding goes last: the statement is read in the backend's current encoding,
        // so every other value must be sent before the encoding changes.
        for i in (0..TRACKED.len()).filter(|i| *i != CLIENT_ENCODING) {
            step(&mut sql, tracked(self, i), tracked(have, i));
        }
        for k in extras {
            step(&mut sql, other(self, k), other(have, k));
        }
        let before_encoding = sql.len();
        step(
            &mut sql,
            tracked(self, CLIENT_ENCODING),
            tracked(have, CLIENT_ENCODING),
        );
        sets_encoding |= sql.len() != before_encoding && self.client_encoding().is_some();
        if sql.is_empty() {
            return None;
        }
        // The values are UTF-8; a backend left in another encoding by its last client would
        // read their bytes as that encoding, so switch it to UTF-8 first (the client's own
        // encoding comes back at the end).
        let backend_utf8 = have
            .client_encoding()
            .is_none_or(|e| e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("unicode"));
        if non_ascii && !backend_utf8 {
            sql.insert_str(0, "SET client_encoding TO 'UTF8';");
            if !sets_encoding {
                if let Some(w) = self.client_encoding() {
                    push_set(&mut sql, TRACKED_DISPLAY[CLIENT_ENCODING], w);
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
    fn settings_iterate_in_name_order_with_the_servers_spelling() {
        let mut set = ParamSet::default();
        for (k, v) in [
            ("TimeZone", "UTC"),
            ("server_version", "15.1"),
            ("datestyle", "ISO, MDY"),
            ("application_name", "a"),
            ("IntegEr_datetimes", "on"),
        ] {
            set.set(k, v);
        }
        let got: Vec<_> = set.iter().collect();
        assert_eq!(
            got,
            vec![
                ("application_name", "a"),
                ("DateStyle", "ISO, MDY"),
                ("IntegEr_datetimes", "on"),
                ("server_version", "15.1"),
                ("TimeZone", "UTC"),
            ]
        );
        assert_eq!(set.len(), 5);
        set.retain(is_tracked);
        assert_eq!(set.len(), 3);
        assert_eq!(set.get("TIMEZONE"), Some("UTC"));
        assert_eq!(set.get("server_version"), None);
    }

    #[test]
    fn a_clone_shares_its_values_until_one_side_changes() {
        let mut baseline = ParamSet::default();
        baseline.set("TimeZone", "UTC");
        baseline.set("search_path", "x");
        let mut client = baseline.clone();
        client.set("search_path", "y");
        client.set("TimeZone", "Europe/Paris");
        assert_eq!(baseline.get("search_path"), Some("x"));
        assert_eq!(baseline.get("timezone"), Some("UTC"));
        // Equal values held apart compare equal, and sharing makes them one copy.
        let mut backend = ParamSet::default();
        backend.set("TimeZone", "Europe/Paris");
        assert!(client.matches(&backend, &[]));
        backend.share_equal_from(&client);
        let (Some(a), Some(b)) = (&client.tracked[5], &backend.tracked[5]) else {
            panic!("timezone is held by both")
        };
        assert!(Arc::ptr_eq(a, b));
    }

    /// One step of a random edit to a set.
    #[derive(Debug, Clone)]
    enum Edit {
        Set(&'static str, &'static str),
        Remove(&'static str),
        RetainTracked,
        Unknown(&'static str),
        TakeTracked,
        Share,
    }

    fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
        use proptest::prelude::*;
        let name = prop::sample::select(vec![
            "TimeZone",
            "timezone",
            "client_encoding",
            "DateStyle",
            "application_name",
            "standard_conforming_strings",
            "IntervalStyle",
            "search_path",
            "work_mem",
            "Search_Path",
        ]);
        let value = prop::sample::select(vec!["a", "b", "UTF8", "SJIS", "caf\u{e9}", ""]);
        prop_oneof![
            (name.clone(), value).prop_map(|(n, v)| Edit::Set(n, v)),
            name.clone().prop_map(Edit::Remove),
            Just(Edit::RetainTracked),
            name.prop_map(Edit::Unknown),
            Just(Edit::TakeTracked),
            Just(Edit::Share),
        ]
    }

    /// The plain map the set must behave as: lower-cased name → value.
    fn model(set: &ParamSet) -> BTreeMap<String, String> {
        set.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    proptest::proptest! {
        /// Whatever two sets went through, `matches` agrees with `diff_sql`, and both agree
        /// with comparing the settings one by one; iteration stays in name order.
        #[test]
        fn matching_agrees_with_the_diff_and_a_plain_comparison(
            a_edits in proptest::collection::vec(edit(), 0..12),
            b_edits in proptest::collection::vec(edit(), 0..12),
            extras in proptest::sample::subsequence(vec!["search_path", "work_mem"], 0..=2),
        ) {
            let mut a = ParamSet::default();
            let mut b = ParamSet::default();
            for (i, e) in a_edits.iter().chain(&b_edits).enumerate() {
                let (me, them) = if i < a_edits.len() { (&mut a, &b) } else { (&mut b, &a) };
                match e {
                    Edit::Set(n, v) => me.set(n, v),
                    Edit::Remove(n) => me.remove(n),
                    Edit::RetainTracked => me.retain(is_tracked),
                    Edit::Unknown(n) => me.mark_unknown([&n.to_string()]),
                    Edit::TakeTracked => me.take_tracked_from(them),
                    Edit::Share => me.share_equal_from(them),
                }
            }
            let extras: Vec<String> = extras.into_iter().map(String::from).collect();
            let (ma, mb) = (model(&a), model(&b));
            let keys = TRACKED.iter().map(|k| k.to_string()).chain(extras.iter().cloned());
            let equal = keys.into_iter().all(|k| ma.get(&k) == mb.get(&k));
            proptest::prop_assert_eq!(a.matches(&b, &extras), equal);
            proptest::prop_assert_eq!(a.diff_sql(&b, &extras).is_none(), equal);
            let names: Vec<String> = a.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            proptest::prop_assert_eq!(names, sorted);
            proptest::prop_assert_eq!(a.len(), ma.len());
        }
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

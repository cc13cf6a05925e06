//! `RELOAD`: the same reload as SIGHUP (see `admin/reload.rs`), answered with what changed:
//! one row per setting that differs (applied, or refused because it needs a restart), one
//! for the auth file, and any notes.

use super::result::{Reply, ResultSet};
use super::CommandError;
use crate::admin::reload::reload;
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Result<Reply, CommandError> {
    // F0000: config_file_error. Nothing was changed.
    let report = reload(shared, "RELOAD").map_err(|e| CommandError::new("F0000", e.to_string()))?;
    let mut rs = ResultSet::new(&["setting", "old_value", "new_value", "result"]);
    rs.tag = Some("RELOAD");
    for c in &report.changes {
        rs.push(vec![
            c.key.to_string(),
            c.old.clone(),
            c.new.clone(),
            match c.refused {
                None => "applied".to_string(),
                Some(why) => format!("needs a restart: {why}"),
            },
        ]);
    }
    if report.config_file.is_none() {
        rs.push_nullable(vec![
            Some("config file".into()),
            None,
            None,
            Some("none given at start: settings unchanged".into()),
        ]);
    }
    rs.push_nullable(vec![
        Some("auth_file (contents)".into()),
        None,
        Some(format!("{} users", report.auth_users)),
        Some("re-read".into()),
    ]);
    for note in &report.notes {
        rs.push_nullable(vec![Some("note".into()), None, None, Some(note.clone())]);
    }
    Ok(Reply::Rows(rs))
}

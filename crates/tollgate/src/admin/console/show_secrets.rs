//! `SHOW SECRETS`: the auth_secret secrets, the user each holds, the version in force, when it
//! was last read and whether the last read failed — never a value.

use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&[
        "secret",
        "user",
        "version_id",
        "previous",
        "age_s",
        "refreshed_ok",
        "refresh_failed",
        "state",
        "last_error",
    ]);
    for v in shared.auth.secrets().map(|s| s.views()).unwrap_or_default() {
        rs.push(vec![
            v.name,
            v.user,
            v.version_id,
            if v.has_previous { "yes" } else { "no" }.into(),
            v.age.as_secs().to_string(),
            v.ok.to_string(),
            v.failed.to_string(),
            if v.last_error.is_some() {
                "stale"
            } else {
                "ok"
            }
            .into(),
            v.last_error.unwrap_or_default(),
        ]);
    }
    Reply::Rows(rs)
}

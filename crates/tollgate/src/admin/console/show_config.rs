//! `SHOW CONFIG`: every setting with the value in force (after any reloads) and whether a
//! reload can change it (`no`: it needs a restart).

use super::format::yes_no;
use super::result::{Reply, ResultSet};
use crate::admin::reload::reloadable;
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&["key", "value", "reloadable"]);
    for (key, value) in shared.live().entries() {
        rs.push(vec![key.to_string(), value, yes_no(reloadable(key))]);
    }
    Reply::Rows(rs)
}

//! `SHOW TARGETS`: the database servers behind Tollgate and their roles. One writer for now
//! (the upstream); Aurora topology adds readers here.

use super::format::yes_no;
use super::result::{Reply, ResultSet};
use crate::shared::Shared;

/// Runs the command.
pub fn run(shared: &Shared) -> Reply {
    let mut rs = ResultSet::new(&["host", "port", "role", "available", "sslmode"]);
    let up = &shared.config.upstream;
    rs.push(vec![
        up.host.clone(),
        up.port.to_string(),
        "writer".into(),
        // Whether the last connection attempt succeeded.
        yes_no(shared.pools.global().available()),
        up.sslmode.as_str().to_string(),
    ]);
    Reply::Rows(rs)
}

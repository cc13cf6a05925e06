//! What a console command answers: a result set psql prints as a table, a bare command tag,
//! or nothing (empty query).

use bytes::BytesMut;
use tollgate_wire::build;

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Rows under named text columns.
    Rows(ResultSet),
    /// Just a CommandComplete tag ("RELOAD", "PAUSE").
    Done(String),
    /// The empty query.
    Empty,
}

/// Text columns and rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names.
    pub columns: Vec<&'static str>,
    /// Values (None = NULL), each row as long as `columns`.
    pub rows: Vec<Vec<Option<String>>>,
    /// The CommandComplete tag; `SHOW <rows>` when unset.
    pub tag: Option<&'static str>,
}

impl ResultSet {
    /// An empty set with these columns.
    pub fn new(columns: &[&'static str]) -> Self {
        ResultSet {
            columns: columns.to_vec(),
            rows: Vec::new(),
            tag: None,
        }
    }

    /// Adds a row whose values may be NULL.
    pub fn push_nullable(&mut self, row: Vec<Option<String>>) {
        self.rows.push(row);
    }

    /// Adds a row of displayable values.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row.into_iter().map(Some).collect());
    }
}

impl Reply {
    /// Writes the protocol messages (without ReadyForQuery).
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Reply::Rows(rs) => {
                build::row_description(out, &rs.columns);
                for row in &rs.rows {
                    let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                    build::data_row(out, &values);
                }
                match rs.tag {
                    Some(tag) => build::command_complete(out, tag),
                    None => build::command_complete(out, &format!("SHOW {}", rs.rows.len())),
                }
            }
            Reply::Done(tag) => build::command_complete(out, tag),
            Reply::Empty => build::empty_query_response(out),
        }
    }
}

//! Connections from Tollgate to the database: opening and logging in (`connect`), and the
//! connection object the pool lends to sessions (`conn`).

pub mod conn;
pub mod connect;
pub mod error;

pub use conn::{CancelTarget, ServerConn};
pub use connect::{Connector, Credential};
pub use error::BackendError;

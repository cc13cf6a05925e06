//! Connections from Tollgate to the database: opening and logging in (`connect`, with IAM
//! auth tokens from `iam` when `backend_iam` is on), and the connection object the pool lends
//! to sessions (`conn`).

pub mod conn;
pub mod connect;
pub mod error;
pub mod iam;

pub use conn::{CancelTarget, ServerConn, ServerConnData};
pub use connect::{Connector, Credential, LoginProof};
pub use error::BackendError;
pub use iam::IamTokenSource;

//! Tollgate: a PostgreSQL connection pooler in the shape of Amazon RDS Proxy.
//!
//! A connection's path through this crate: [`server`] accepts → [`session::startup`] (TLS,
//! cancel) → [`session::authenticate`] (policy in [`auth`], IAM tokens in [`iam`]) → [`pool`] lends a
//! [`backend::ServerConn`] → [`session::relay`] moves messages (consulting [`pin`] and
//! [`params`]) → back to the pool. The state they all share is [`shared::Shared`], in a
//! module below `server`, `session` and `admin`. See ARCHITECTURE.md.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod clients;
pub mod config;
pub mod iam;
pub mod logging;
pub mod message_memory;
pub mod params;
pub mod pin;
pub mod pool;
pub mod quickstart;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod session;
pub mod shared;
pub mod status;
pub mod topology;

pub mod metrics;
pub mod stream;
mod sync;
pub mod tls;

pub use config::Config;
pub use server::{Server, ShutdownHandle};

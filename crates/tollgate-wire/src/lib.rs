//! The PostgreSQL v3 wire protocol with no I/O: framing, startup packets, the messages a pooler
//! must read, and builders for the ones it writes.
//!
//! Everything here takes bytes and returns typed values or a [`WireError`]; nothing touches a
//! socket and nothing panics on any input, so every entry point can be fuzzed (`tests/fuzz.rs`).
//! Message layouts are those of the PostgreSQL documentation, "Frontend/Backend Protocol":
//! "Message Formats" for bytes, "Message Flow" for order.

#![warn(missing_docs)]

pub mod backend;
pub mod build;
pub mod error;
pub mod flow;
pub mod frame;
pub mod frontend;
mod reader;
pub mod scanner;
pub mod startup;

pub use backend::TxStatus;
pub use error::WireError;

//! The operator's side: the admin console (PostgreSQL protocol, virtual database `tollgate`),
//! the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`) and live reload.

pub mod console;
pub mod http;
pub mod prometheus;
pub mod reload;

//! TLS setup for both sides: the certificate we show clients, and how we check the database's.

pub mod client;
pub mod server;

/// A TLS setup problem, with the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {why}")]
    Pem { path: String, why: String },
    /// rustls refused the material.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every TLS config uses (ring: small and quick to build).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

//! The TLS server config for client connections, from PEM files, and the slot that holds it so
//! a reload can put a renewed certificate in force without dropping anyone: connections
//! already up keep the session they negotiated, new handshakes use the new certificate.

use super::{provider, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The acceptor in force for new client handshakes.
pub struct ClientTls {
    current: RwLock<tokio_rustls::TlsAcceptor>,
}

impl ClientTls {
    /// Holds `acceptor` until replaced.
    pub fn new(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        ClientTls {
            current: RwLock::new(acceptor),
        }
    }

    /// The acceptor for a handshake starting now (a cheap clone of an `Arc`).
    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `acceptor` in force for handshakes from now on.
    pub fn replace(&self, acceptor: tokio_rustls::TlsAcceptor) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
    }
}

/// Builds the acceptor clients' SSLRequests are answered with.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let pem_err = |path: &Path, why: String| TlsError::Pem {
        path: path.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(cert, "holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_err(key, format!("no usable private key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

//! Throwaway TLS material: a fresh CA and one server certificate it signed.
//!
//! The cluster uses it for `ssl = on`; the proxy's quickstart reuses it for its own listener.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::error::LocalPgError;

/// PEM text of a generated CA certificate, a leaf certificate it signed, and the leaf's key.
#[derive(Clone)]
pub struct GeneratedTls {
    /// The CA certificate clients should trust.
    pub ca_pem: String,
    /// The server (leaf) certificate.
    pub cert_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedTls")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates an ECDSA P-256 CA and a leaf whose SANs are `names` (IP literals become IP SANs).
pub fn generate(names: &[&str]) -> Result<GeneratedTls, LocalPgError> {
    let first = names.first().ok_or(LocalPgError::NoCertNames)?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tollgate throwaway CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key)?;

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut leaf_params = CertificateParams::new(owned)?;
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, *first);
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;

    Ok(GeneratedTls {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_ca_leaf_and_key() {
        let tls = generate(&["localhost", "127.0.0.1"]).unwrap();
        assert!(tls.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(tls.ca_pem, tls.cert_pem);
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn no_names_is_an_error() {
        assert!(matches!(generate(&[]), Err(LocalPgError::NoCertNames)));
    }
}

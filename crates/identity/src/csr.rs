//! Key and CSR generation on the workload side: a fresh ECDSA P-256 key for every request, kept in memory.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SpiffeId;

/// A private key that never leaves the process, and the CSR that carries its public half.
pub(crate) struct KeyAndCsr {
    pub(crate) key_der: PrivateKeyDer<'static>,
    pub(crate) csr_pem: String,
}

/// Why a CSR could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build a CSR for {identity}: {source}")]
pub struct CsrError {
    identity: String,
    source: rcgen::Error,
}

/// Makes a new key and a CSR whose only SAN is `identity` (the CA replaces SANs anyway).
pub(crate) fn new_key_and_csr(identity: &SpiffeId) -> Result<KeyAndCsr, CsrError> {
    let (key, csr_pem) = key_and_csr(identity)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(KeyAndCsr { key_der, csr_pem })
}

/// A CSR for an arbitrary identity and its key as PKCS#8 PEM; for tools, benches and tests that play a
/// client (possibly a misbehaving one that asks for someone else's identity).
pub fn csr_for(identity: &SpiffeId) -> Result<(String, String), CsrError> {
    let (key, csr_pem) = key_and_csr(identity)?;
    Ok((csr_pem, key.serialize_pem()))
}

fn key_and_csr(identity: &SpiffeId) -> Result<(KeyPair, String), CsrError> {
    let wrap = |source| CsrError {
        identity: identity.to_string(),
        source,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(wrap)?;
    let mut params = CertificateParams::default();
    // Empty subject, URI SAN only: the shape Istio and ztunnel send.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().map_err(wrap)?)];
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(wrap)?;
    Ok((key, csr_pem))
}

//! SPIFFE identities, the certificate authority, pod credentials, rustls configs and verifiers, rotation.
//!
//! Control-plane side: [`CertificateAuthority`] (root, plug-in CA, root rotation, CSR signing).
//! Proxy side: [`WorkloadCertificates`] (key + CSR per renewal, rotation, rustls configs that follow
//! rotations), fed by any [`CertificateSigner`] ([`LocalSigner`] in-process).
//! Call [`install_crypto_provider`] once at the top of every binary (idempotent).

mod ca;
mod ca_client;
pub mod ca_service;
mod credential;
mod csr;
mod fsutil;
mod pem;
mod signer;
mod spiffe;
mod tls;
mod workload;

/// Generated types of Istio's CA protocol (`istio.v1.auth`), for Istio-compatible clients and servers.
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}

pub use ca::{
    CaError, CaOptions, CertificateAuthority, DEFAULT_WORKLOAD_TTL, MAX_WORKLOAD_TTL, ROOT_TTL,
};
pub use ca_client::CaClient;
pub use credential::{
    CA_AUDIENCE, CredentialAuthority, CredentialError, PodClaims, write_token_file,
};
pub use csr::{CsrError, csr_for};
pub use signer::{BoxFuture, CertificateSigner, LocalSigner, SignError, SignedChain};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use tls::{TrustBundleError, install_crypto_provider, peer_identity};
pub use workload::{CertInfo, INBOUND_ALPN, InstallError, RotationOptions, WorkloadCertificates};

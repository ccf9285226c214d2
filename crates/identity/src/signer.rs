//! The seam between the proxy's certificate manager and whoever signs its CSRs (the CA over gRPC, or an
//! in-process CA in tests and in the control plane itself).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::SpiffeId;
use crate::ca::CertificateAuthority;

/// A boxed, sendable future; lets the trait stay object-safe without the async-trait crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a signer returns: the chain leaf first, root last, plus every root the mesh trusts right now
/// (several during a root rotation; empty when the signer does not know, then the chain's root is used).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignedChain {
    pub chain_pem: Vec<String>,
    pub trust_bundle_pem: Vec<String>,
}

/// Signs a PEM CSR for the caller's identity.
pub trait CertificateSigner: Send + Sync + 'static {
    /// Sends `csr_pem` and asks for a certificate valid for `ttl`; the chain comes back leaf first.
    fn sign(&self, csr_pem: String, ttl: Duration)
    -> BoxFuture<'_, Result<SignedChain, SignError>>;
}

/// Why a signing request failed. Every variant is retried by the certificate manager with backoff.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    #[error("cannot reach the CA at {endpoint}: {reason}; check that the control plane is running")]
    Unreachable { endpoint: String, reason: String },
    #[error("the CA refused our credential: {0}; check the token file the proxy was given")]
    Unauthenticated(String),
    #[error("the CA refused the request: {0}")]
    Refused(String),
    #[error("cannot read the credential file {path}: {reason}")]
    Credential { path: String, reason: String },
    #[error("the CA answered with an unusable chain: {0}")]
    BadResponse(String),
}

/// Signs directly with an in-process CA for a fixed identity: used by the control plane for its own
/// certificates and by tests that do not need the gRPC hop.
pub struct LocalSigner {
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
}

impl LocalSigner {
    pub fn new(ca: Arc<CertificateAuthority>, identity: SpiffeId) -> Self {
        LocalSigner { ca, identity }
    }
}

impl CertificateSigner for LocalSigner {
    fn sign(
        &self,
        csr_pem: String,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<SignedChain, SignError>> {
        Box::pin(async move {
            let chain_pem = self
                .ca
                .sign_workload(&csr_pem, &self.identity, ttl)
                .map_err(|e| SignError::Refused(e.to_string()))?;
            Ok(SignedChain {
                chain_pem,
                trust_bundle_pem: self.ca.trust_bundle_pems(),
            })
        })
    }
}

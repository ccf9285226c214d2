//! Who a bearer token belongs to: the one seam between the proxies' gRPC services (the CA and the
//! configuration stream) and how a token is checked. On the local runtime the control plane's own pod
//! credentials are verified in-process ([`LocalAuthenticator`]); on Kubernetes the pod's projected
//! service-account token is sent to the API server's TokenReview (`ironmesh-kube`). Both answer with the
//! pod the token is bound to, so both services treat a token the same way whatever checked it.

use std::sync::Arc;
use std::time::SystemTime;

use crate::credential::{
    CA_AUDIENCE, CredentialAuthority, PodClaims, PodLookup, check_pod_binding,
};
use crate::signer::BoxFuture;

/// Why a token was not accepted; the text is returned to the proxy, so it says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The token is not valid for this mesh (forged, expired, wrong audience, its pod is gone).
    #[error("{0}")]
    Refused(String),
    /// The token could not be checked right now (the API server is unreachable); retrying may work.
    #[error("{0}")]
    Unavailable(String),
}

/// Checks a bearer token and tells which pod it belongs to.
pub trait TokenAuthenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<PodClaims, AuthFailure>>;
}

/// The local runtime's check: the control plane's own HS256 pod credentials (audience
/// [`CA_AUDIENCE`]), and, when bound to pods, the pod they name must still exist with their uid.
#[derive(Clone)]
pub struct LocalAuthenticator {
    credentials: Arc<CredentialAuthority>,
    pods: Option<Arc<dyn PodLookup>>,
}

impl std::fmt::Debug for LocalAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAuthenticator")
            .field("credentials", &self.credentials)
            .field("bound_to_pods", &self.pods.is_some())
            .finish()
    }
}

impl LocalAuthenticator {
    /// Trusts every valid credential until it expires (tests, benches, standalone use).
    pub fn new(credentials: Arc<CredentialAuthority>) -> Self {
        LocalAuthenticator {
            credentials,
            pods: None,
        }
    }

    /// Refuses credentials whose pod no longer exists, or exists with another uid.
    pub fn bound_to_pods(mut self, pods: Arc<dyn PodLookup>) -> Self {
        self.pods = Some(pods);
        self
    }

    /// The check itself, synchronous (nothing in it waits).
    pub fn check(&self, token: &str) -> Result<PodClaims, AuthFailure> {
        let claims = self
            .credentials
            .verify(token, CA_AUDIENCE, SystemTime::now())
            .map_err(|e| AuthFailure::Refused(e.to_string()))?;
        if let Some(pods) = &self.pods {
            check_pod_binding(&claims, pods.as_ref())
                .map_err(|e| AuthFailure::Refused(e.to_string()))?;
        }
        Ok(claims)
    }
}

impl TokenAuthenticator for LocalAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<PodClaims, AuthFailure>> {
        let checked = self.check(token);
        Box::pin(async move { checked })
    }
}

//! The CA's gRPC face: Istio's `istio.v1.auth.IstioCertificateService/CreateCertificate`, authenticated by
//! the pod credential in `authorization: Bearer <token>`. The issued identity comes from the credential only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::SpiffeId;
use crate::auth::{AuthFailure, LocalAuthenticator, TokenAuthenticator};
use crate::ca::{CaError, CertificateAuthority};
use crate::credential::{CredentialAuthority, CredentialError, PodLookup};
use crate::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};

/// Response metadata carrying every trusted root (binary, concatenated PEM). Istio agents ignore it;
/// our proxies use it to learn new roots during a root rotation.
pub const TRUST_BUNDLE_METADATA: &str = "ironmesh-trust-bundle-bin";

/// The request metadata key with which a node agent asks for a certificate of another identity (Istio's
/// `security.ImpersonatedIdentity`, istio/istio `pkg/security/security.go`).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Signs CSRs for authenticated pods.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    auth: Arc<dyn TokenAuthenticator>,
    /// The local credentials' check, kept so [`CaService::bound_to_pods`] can bind it.
    local: Option<LocalAuthenticator>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.ca)
            .field("local", &self.local)
            .finish()
    }
}

impl CaService {
    /// A CA service that trusts every valid local credential until it expires (tests, benches,
    /// standalone use); the local control plane adds [`CaService::bound_to_pods`].
    pub fn new(ca: Arc<CertificateAuthority>, credentials: Arc<CredentialAuthority>) -> Self {
        let local = LocalAuthenticator::new(credentials);
        CaService {
            ca,
            auth: Arc::new(local.clone()),
            local: Some(local),
        }
    }

    /// A CA service whose callers are checked by `auth` (on Kubernetes: TokenReview).
    pub fn with_authenticator(
        ca: Arc<CertificateAuthority>,
        auth: Arc<dyn TokenAuthenticator>,
    ) -> Self {
        CaService {
            ca,
            auth,
            local: None,
        }
    }

    /// Refuses local credentials whose pod no longer exists, or exists with another uid (no effect on a
    /// service built [`with_authenticator`](Self::with_authenticator): that one decides).
    pub fn bound_to_pods(mut self, pods: Arc<dyn PodLookup>) -> Self {
        if let Some(local) = self.local.take() {
            let local = local.bound_to_pods(pods);
            self.auth = Arc::new(local.clone());
            self.local = Some(local);
        }
        self
    }

    /// The tonic service, ready for `Server::builder().add_service(..)` next to other services.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }

    async fn authenticate(
        &self,
        request: &Request<IstioCertificateRequest>,
    ) -> Result<SpiffeId, Status> {
        let token = match request.metadata().get("authorization") {
            None => Err(CredentialError::Missing),
            Some(value) => match value.to_str().ok().and_then(bearer_token) {
                Some(token) => Ok(token),
                None => Err(CredentialError::Malformed(
                    "the authorization header is not `Bearer <token>`".into(),
                )),
            },
        }
        .map_err(|error| {
            tracing::warn!(%error, "CA refused a certificate request: bad credential");
            Status::unauthenticated(error.to_string())
        })?;
        let claims = self.auth.authenticate(token).await.map_err(|error| {
            tracing::warn!(%error, "CA refused a certificate request: bad credential");
            match error {
                AuthFailure::Refused(reason) => Status::unauthenticated(reason),
                AuthFailure::Unavailable(reason) => Status::unavailable(reason),
            }
        })?;
        SpiffeId::new(
            self.ca.options().trust_domain.clone(),
            claims.namespace.clone(),
            claims.service_account.clone(),
        )
        .map_err(|error| {
            tracing::warn!(%error, pod = %claims.pod, "CA refused a certificate request: the credential names no valid identity");
            Status::permission_denied(format!("the credential names no valid identity: {error}"))
        })
    }
}

/// The identity a request asks to impersonate: like istiod, only a non-empty string value counts
/// (`crMetadata[security.ImpersonatedIdentity].GetStringValue() != ""`).
fn impersonated_identity(request: &IstioCertificateRequest) -> Option<&str> {
    match request
        .metadata
        .as_ref()?
        .fields
        .get(IMPERSONATED_IDENTITY)?
        .kind
        .as_ref()?
    {
        prost_types::value::Kind::StringValue(identity) if !identity.is_empty() => Some(identity),
        _ => None,
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme is case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let identity = self.authenticate(&request).await?;
        let body = request.into_inner();
        if let Some(wanted) = impersonated_identity(&body) {
            tracing::warn!(caller = %identity, impersonated = %wanted, "CA refused a certificate request: impersonation");
            return Err(Status::unauthenticated(format!(
                "request impersonation authentication failure: the caller {identity} asked for a certificate of {wanted} \
                 ({IMPERSONATED_IDENTITY} metadata), and ironmesh trusts no caller to impersonate another identity \
                 (Istio's CA_TRUSTED_NODE_ACCOUNTS is empty); send the request without {IMPERSONATED_IDENTITY} to get \
                 the credential's own identity"
            )));
        }
        let ttl = Duration::from_secs(body.validity_duration.max(0) as u64);
        let cert_chain = self
            .ca
            .sign_workload(&body.csr, &identity, ttl)
            .map_err(|error| {
                tracing::warn!(%error, %identity, "CA refused a certificate request");
                match error {
                    CaError::BadCsr(_) | CaError::TtlTooLong { .. } => {
                        Status::invalid_argument(error.to_string())
                    }
                    CaError::WrongTrustDomain { .. } => {
                        Status::permission_denied(error.to_string())
                    }
                    _ => Status::internal(error.to_string()),
                }
            })?;
        tracing::debug!(%identity, ?ttl, "issued a workload certificate");
        let mut response = Response::new(IstioCertificateResponse { cert_chain });
        let bundle = self.ca.trust_bundle_pem();
        response.metadata_mut().insert_bin(
            TRUST_BUNDLE_METADATA,
            MetadataValue::from_bytes(bundle.as_bytes()),
        );
        Ok(response)
    }
}

/// Why the Unix-socket server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bind(#[from] ironmesh_home::HomeError),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves only the CA on a Unix socket until `shutdown` completes (the control plane mounts the service
/// on its own router; this is for tests, benches and standalone use). Replaces a stale socket, refuses a
/// live one ([`ironmesh_home::bind_unix`]).
/// Stock gRPC clients are served whatever `:authority` they send ([`crate::any_authority`]).
pub async fn serve_unix(
    path: &Path,
    service: CaService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener =
        tokio::net::UnixListener::from_std(ironmesh_home::bind_unix(path)?).map_err(|source| {
            ironmesh_home::HomeError::Io {
                action: "listen on",
                path: path.to_path_buf(),
                source,
            }
        })?;
    let incoming = crate::any_authority::incoming(listener);
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_metadata(fields: &[(&str, prost_types::value::Kind)]) -> IstioCertificateRequest {
        IstioCertificateRequest {
            csr: String::new(),
            validity_duration: 60,
            metadata: Some(prost_types::Struct {
                fields: fields
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            prost_types::Value {
                                kind: Some(v.clone()),
                            },
                        )
                    })
                    .collect(),
            }),
        }
    }

    #[test]
    fn impersonation_is_a_non_empty_string_under_istios_key() {
        use prost_types::value::Kind;
        let id = "spiffe://cluster.local/ns/kube-system/sa/admin";
        type Case<'a> = (&'a [(&'a str, Kind)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[(IMPERSONATED_IDENTITY, Kind::StringValue(id.into()))],
                Some(id),
            ),
            // istiod reads GetStringValue(): empty or non-string values ask for nothing.
            (
                &[(IMPERSONATED_IDENTITY, Kind::StringValue(String::new()))],
                None,
            ),
            (&[(IMPERSONATED_IDENTITY, Kind::BoolValue(true))], None),
            // Keys are case-sensitive, and CertSigner is another request.
            (
                &[("impersonatedidentity", Kind::StringValue(id.into()))],
                None,
            ),
            (&[("CertSigner", Kind::StringValue("signer".into()))], None),
        ];
        for (fields, want) in cases {
            assert_eq!(
                impersonated_identity(&with_metadata(fields)),
                *want,
                "{fields:?}"
            );
        }
        let none = IstioCertificateRequest {
            csr: String::new(),
            validity_duration: 60,
            metadata: None,
        };
        assert_eq!(impersonated_identity(&none), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_not_tokens() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}

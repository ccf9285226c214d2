//! The proxy's CA client: Istio's CreateCertificate over gRPC (Unix socket or TCP), authenticated with the
//! pod token read from its file at every call (the runtime may refresh it).

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Channel;

use crate::ca_service::TRUST_BUNDLE_METADATA;
use crate::endpoint::{ControlPlaneAddress, lazy_channel};
use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::signer::{BoxFuture, CertificateSigner, SignError, SignedChain};

/// Signs CSRs through the control plane's CA service.
#[derive(Clone, Debug)]
pub struct CaClient {
    endpoint: String,
    token_file: PathBuf,
    channel: Channel,
}

impl CaClient {
    /// `endpoint` is `unix:///path/xds.sock`, `http://127.0.0.1:15012` or `https://host:15012` (the
    /// root in [`crate::DEFAULT_ROOT_FILE`]). Connects lazily.
    pub fn new(endpoint: &str, token_file: impl Into<PathBuf>) -> Result<Self, SignError> {
        let address: ControlPlaneAddress =
            endpoint
                .parse()
                .map_err(|e: crate::EndpointError| SignError::Unreachable {
                    endpoint: endpoint.to_owned(),
                    reason: e.to_string(),
                })?;
        Self::for_address(&address, token_file)
    }

    /// The client of a parsed address (an `https` one with its root file). Connects lazily.
    pub fn for_address(
        address: &ControlPlaneAddress,
        token_file: impl Into<PathBuf>,
    ) -> Result<Self, SignError> {
        let channel =
            lazy_channel(address, Duration::from_secs(5)).map_err(|e| SignError::Unreachable {
                endpoint: address.to_string(),
                reason: e.to_string(),
            })?;
        Ok(CaClient {
            endpoint: address.to_string(),
            token_file: token_file.into(),
            channel,
        })
    }

    async fn create(&self, csr_pem: String, ttl: Duration) -> Result<SignedChain, SignError> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| SignError::Credential {
                path: self.token_file.display().to_string(),
                reason: e.to_string(),
            })?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            validity_duration: ttl.as_secs() as i64,
            metadata: None,
        });
        let bearer =
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| SignError::Credential {
                    path: self.token_file.display().to_string(),
                    reason: "the token holds characters not allowed in a header".into(),
                })?;
        request.metadata_mut().insert("authorization", bearer);
        request.set_timeout(Duration::from_secs(10));
        let mut client = IstioCertificateServiceClient::new(self.channel.clone());
        let response = client
            .create_certificate(request)
            .await
            .map_err(|status| self.status_error(status))?;
        let bundle = response
            .metadata()
            .get_bin(TRUST_BUNDLE_METADATA)
            .and_then(|v| v.to_bytes().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map(|pem| crate::pem::split_certs(&pem).unwrap_or_default())
            .unwrap_or_default();
        let chain_pem = response.into_inner().cert_chain;
        if chain_pem.len() < 2 {
            return Err(SignError::BadResponse(format!(
                "{} certificate(s) in the chain; expected leaf .. root",
                chain_pem.len()
            )));
        }
        Ok(SignedChain {
            chain_pem,
            trust_bundle_pem: bundle,
        })
    }

    fn status_error(&self, status: tonic::Status) -> SignError {
        use tonic::Code;
        match status.code() {
            Code::Unauthenticated => SignError::Unauthenticated(status.message().to_owned()),
            Code::PermissionDenied | Code::InvalidArgument => {
                SignError::Refused(status.message().to_owned())
            }
            _ => SignError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: format!("{:?}: {}", status.code(), status.message()),
            },
        }
    }
}

impl CertificateSigner for CaClient {
    fn sign(
        &self,
        csr_pem: String,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<SignedChain, SignError>> {
        Box::pin(self.create(csr_pem, ttl))
    }
}

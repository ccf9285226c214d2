//! SPIFFE identities, the certificate authority, pod credentials, rustls configs and verifiers, rotation.
//!
//! # Control-plane side
//! - [`CertificateAuthority::load_or_create`]`(ca_dir, CaOptions::new(td))`: self-signed ECDSA P-256 root
//!   (10 years, key 0600 written atomically), reused on later starts; or
//!   [`CertificateAuthority::plug_in`]`(ca_dir, opts, cert_pem, key_pem, chain_pem)` (Istio `cacerts`).
//!   [`CertificateAuthority::rotate_root`] / [`CertificateAuthority::retire_root`],
//!   [`CertificateAuthority::trust_bundle_pem`], [`CertificateAuthority::watch_trust_bundle`] (what the
//!   control plane pushes to proxies), [`CertificateAuthority::root_fingerprint`],
//!   [`CertificateAuthority::sign_workload`]`(csr_pem, &SpiffeId, ttl) -> Vec<String>` (leaf first, root last;
//!   the CSR only contributes its public key).
//! - [`CredentialAuthority`]: pod tokens (HS256, key `ca_dir/token-key` 0600), [`CredentialAuthority::issue`],
//!   [`CredentialAuthority::verify`], [`write_token_file`] (0600). Credentials are bound to the pod's uid:
//!   [`check_pod_binding`] with a [`PodLookup`] refuses them once the pod is gone or replaced.
//! - [`ca_service::CaService`]: `istio.v1.auth.IstioCertificateService/CreateCertificate`; mount
//!   `CaService::new(ca, creds).into_server()` on the control plane's tonic router, or use
//!   [`ca_service::serve_unix`]; `.bound_to_pods(lookup)` ties credentials to live pods. Requests with
//!   `ImpersonatedIdentity` metadata are refused (UNAUTHENTICATED). The trust bundle rides along in the `ironmesh-trust-bundle-bin` response
//!   metadata.
//! - [`TokenAuthenticator`]: who a bearer token belongs to ([`PodClaims`]); [`LocalAuthenticator`] checks
//!   the local runtime's credentials, `ironmesh-kube` asks Kubernetes' TokenReview. `CaService` and the
//!   configuration hub take either.
//! - [`serving`]: the control plane's TLS listener on TCP (istiod's 15012): a serving certificate from the
//!   CA renewed in place, TLS 1.3, ALPN h2, connection and handshake limits.
//!
//! # Proxy side
//! - [`CaClient::new`]`("unix:///…/xds.sock" | "http://127.0.0.1:15012" | "https://istiod.istio-system.svc:15012", token_file)` implements
//!   [`CertificateSigner`]; [`LocalSigner`] signs in-process (tests, the control plane itself).
//! - [`WorkloadCertificates::spawn`]`(id, signer, RotationOptions)` (inside a tokio runtime): new key per CSR,
//!   renewal at half life with jitter, capped jittered backoff on failure while the valid certificate stays
//!   in use. [`WorkloadCertificates::ready`], [`WorkloadCertificates::server_config`],
//!   [`WorkloadCertificates::client_config`]`(&expected_ids, alpn)`, [`WorkloadCertificates::snapshot`],
//!   [`WorkloadCertificates::subscribe`], [`WorkloadCertificates::set_trust_bundle`] (the bundle pushed with
//!   the configuration; a new current root renews the certificate at once).
//!   Configs are built once and follow rotations (cert resolver and trust bundle behind `ArcSwap`), so keep
//!   and reuse them; cloning a config to change its ALPN keeps that property.
//! - [`peer_identity`]`(&rustls::CommonState)` gives the peer's SPIFFE ID after a handshake.
//! - [`ControlPlaneAddress`], [`connect_channel`] / [`lazy_channel`]: the one way to open a gRPC channel
//!   to the control plane (Unix socket or TCP), shared by the CA client and the configuration stream.
//!
//! Call [`install_crypto_provider`] once at the top of every binary (idempotent; ring only).

pub mod any_authority;
mod auth;
mod ca;
mod ca_client;
pub mod ca_service;
mod credential;
mod csr;
mod endpoint;
mod fsutil;
mod pem;
pub mod rewritten;
pub mod serving;
mod signer;
mod spiffe;
mod tls;
mod verified;
mod workload;

/// Generated types of Istio's CA protocol (`istio.v1.auth`), for Istio-compatible clients and servers.
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}

pub use auth::{AuthFailure, LocalAuthenticator, TokenAuthenticator};
pub use ca::{
    CaError, CaOptions, CertificateAuthority, DEFAULT_WORKLOAD_TTL, MAX_WORKLOAD_TTL, ROOT_TTL,
};
pub use ca_client::CaClient;
pub use credential::{
    BindingError, CA_AUDIENCE, CredentialAuthority, CredentialError, PodClaims, PodLookup,
    check_pod_binding, proxy_id, write_token_file,
};
pub use csr::{CsrError, csr_for};
pub use endpoint::{
    ControlPlaneAddress, DEFAULT_ROOT_FILE, EndpointError, connect_channel, lazy_channel,
};
pub use signer::{BoxFuture, CertificateSigner, LocalSigner, SignError, SignedChain};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use tls::{
    TrustBundleError, check_trust_bundle, install_crypto_provider, mesh_provider, peer_identity,
};
pub use workload::{CertInfo, INBOUND_ALPN, InstallError, RotationOptions, WorkloadCertificates};

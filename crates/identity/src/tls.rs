//! rustls plumbing for the mesh: the ring provider (TLS 1.3 only), the trust bundle behind an `ArcSwap`,
//! the SPIFFE verifiers (server side: chain + our trust domain; client side: chain + secure naming) and the
//! certificate resolver that makes rotation invisible to existing configs.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::SpiffeId;

/// Installs ring as the process-wide rustls provider. Safe to call any number of times, from any thread.
pub fn install_crypto_provider() {
    // An `Err` means a provider is already installed (by us or by the binary), which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider every mesh config is built from: ring, regardless of what the process default is.
pub(crate) fn mesh_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The set of trusted roots, parsed once per change and swapped atomically so live configs see updates.
#[derive(Debug)]
pub(crate) struct TrustBundle {
    pub(crate) pems: Vec<String>,
    pub(crate) anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Parses PEM roots; refuses an empty bundle because it would make every handshake fail.
    pub(crate) fn from_pems(pems: &[String]) -> Result<Self, TrustBundleError> {
        let mut anchors = Vec::new();
        let mut ders = Vec::new();
        for pem in pems {
            ders.extend(crate::pem::certs_from_pem(pem).map_err(TrustBundleError::Pem)?);
        }
        if ders.is_empty() {
            return Err(TrustBundleError::Empty);
        }
        for der in &ders {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|e| TrustBundleError::NotARoot(format!("{e:?}")))?
                .to_owned();
            anchors.push(anchor);
        }
        let pems = ders.iter().map(crate::pem::cert_to_pem).collect();
        Ok(TrustBundle { pems, anchors })
    }
}

/// Why a trust bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    #[error("the trust bundle holds no certificate; pass the CA's root PEM (ironmesh ca root)")]
    Empty,
    #[error("the trust bundle is not valid PEM: {0}")]
    Pem(String),
    #[error(
        "a trust bundle certificate cannot be used as a trust anchor ({0}); pass root CA certificates"
    )]
    NotARoot(String),
}

pub(crate) type SharedTrust = Arc<ArcSwap<TrustBundle>>;

/// Validates `end_entity` up to one of the current roots for `usage`, then returns its SPIFFE URI SANs.
fn verify_chain(
    trust: &SharedTrust,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<Vec<SpiffeId>, rustls::Error> {
    let bundle = trust.load();
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &bundle.anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(pki_error)?;
    Ok(spiffe_ids_of(end_entity))
}

/// The SPIFFE identities carried as URI SANs of a DER certificate (ignores URIs that are not SPIFFE IDs).
pub(crate) fn spiffe_ids_of(der: &[u8]) -> Vec<SpiffeId> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.parse().ok(),
            _ => None,
        })
        .collect()
}

fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let cert_error = match error {
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        other => CertificateError::Other(rustls::OtherError(Arc::new(DebugAsError(format!(
            "{other:?}"
        ))))),
    };
    cert_error.into()
}

fn identity_error(message: String) -> rustls::Error {
    // ApplicationVerificationFailure makes the peer see `access_denied`, which is what a policy refusal is.
    tracing::warn!(%message, "mTLS peer refused");
    CertificateError::ApplicationVerificationFailure.into()
}

#[derive(Debug)]
struct DebugAsError(String);
impl fmt::Display for DebugAsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DebugAsError {}

/// Server side: the client must present a certificate that chains to the bundle and carries a SPIFFE ID of
/// our trust domain. Which identity may call what is decided later by authorization, not here.
#[derive(Debug)]
pub(crate) struct TrustDomainClientVerifier {
    pub(crate) trust: SharedTrust,
    pub(crate) trust_domain: String,
    pub(crate) provider: Arc<CryptoProvider>,
    // rustls wants a borrowed slice of hints; mesh peers do not need them, so we send none.
    pub(crate) no_hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for TrustDomainClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.no_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ids = verify_chain(
            &self.trust,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        if ids.iter().any(|id| id.trust_domain() == self.trust_domain) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(identity_error(format!(
                "client certificate identities {ids:?} are not in trust domain {}",
                self.trust_domain
            )))
        }
    }

    // Unreachable with our TLS 1.3-only configs; delegate anyway rather than invent an error.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client side: the server's chain must lead to the bundle and its URI SAN must be one of the identities
/// the destination is expected to run as (secure naming). The DNS server name is ignored on purpose.
#[derive(Debug)]
pub(crate) struct SecureNamingServerVerifier {
    pub(crate) trust: SharedTrust,
    pub(crate) expected: Vec<SpiffeId>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SecureNamingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ids = verify_chain(
            &self.trust,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        if ids.iter().any(|id| self.expected.contains(id)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(identity_error(format!(
                "server identities {ids:?} are none of the expected {:?} (secure naming)",
                self.expected
            )))
        }
    }

    // Unreachable with our TLS 1.3-only configs; delegate anyway rather than invent an error.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Hands out whatever certificate is current; rotation swaps the inner value, configs never change.
#[derive(Debug)]
pub(crate) struct CurrentCertResolver {
    pub(crate) current: Arc<ArcSwap<Option<Arc<CertifiedKey>>>>,
}

impl rustls::server::ResolvesServerCert for CurrentCertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None (before the first certificate) aborts the handshake: fail closed.
        self.current.load().as_ref().clone()
    }
}

impl rustls::client::ResolvesClientCert for CurrentCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().clone()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// The SPIFFE identity the peer of a finished handshake proved (first SPIFFE URI SAN of its leaf).
pub fn peer_identity(state: &rustls::CommonState) -> Option<SpiffeId> {
    let leaf = state.peer_certificates()?.first()?;
    spiffe_ids_of(leaf).into_iter().next()
}

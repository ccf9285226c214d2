//! rustls plumbing for the mesh: the ring provider (TLS 1.3 only), the trust bundle behind an `ArcSwap`,
//! the SPIFFE verifiers (server side: chain + our trust domain; client side: chain + secure naming) and the
//! certificate resolver that makes rotation invisible to existing configs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use crate::SpiffeId;
use crate::verified::{self, VerifiedChains};

/// Installs ring as the process-wide rustls provider. Safe to call any number of times, from any thread.
pub fn install_crypto_provider() {
    // An `Err` means a provider is already installed (by us or by the binary), which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider every mesh config is built from: ring, regardless of what the process default is, with
/// the TLS 1.3 suites in the order Envoy's BoringSSL prefers them: AES-128-GCM first.
///
/// rustls's default puts AES-256-GCM first. Inside the mesh it buys no strength: the handshake's X25519 or
/// P-256 key exchange and P-256 certificates give ~128-bit security either way. It costs more: ring seals
/// AES-128-GCM 12% cheaper per byte on the machine of BENCHMARKS.md ("Issue 15: the crypto provider").
/// Peers that prefer another suite (openssl's `s_client` puts AES-256 first) still get it: the server
/// follows the client's order, and every sidecar's client side offers this one.
pub fn mesh_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// The set of trusted roots, parsed once per change and swapped atomically so live configs see updates.
/// Chains are checked by rustls's own verifiers built from it; the mesh adds only the SPIFFE ID checks.
#[derive(Debug)]
pub(crate) struct TrustBundle {
    pub(crate) pems: Vec<String>,
    roots: Arc<RootCertStore>,
    /// rustls's client-chain verifier over `roots`; `None` before the first bundle (nothing verifies).
    client_chains: Option<Arc<dyn ClientCertVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Chains this bundle already accepted, per purpose (an EKU fit for one is not for the other).
    verified_clients: VerifiedChains,
    verified_servers: VerifiedChains,
}

impl TrustBundle {
    /// No roots yet: every chain is refused until the first certificate brings the CA's bundle.
    pub(crate) fn empty() -> Self {
        TrustBundle {
            pems: Vec::new(),
            roots: Arc::new(RootCertStore::empty()),
            client_chains: None,
            algorithms: mesh_provider().signature_verification_algorithms,
            verified_clients: VerifiedChains::new(0),
            verified_servers: VerifiedChains::new(0),
        }
    }

    /// Parses PEM roots; refuses an empty bundle because it would make every handshake fail.
    pub(crate) fn from_pems(pems: &[String]) -> Result<Self, TrustBundleError> {
        let mut ders = Vec::new();
        for pem in pems {
            ders.extend(crate::pem::certs_from_pem(pem).map_err(TrustBundleError::Pem)?);
        }
        if ders.is_empty() {
            return Err(TrustBundleError::Empty);
        }
        let mut roots = RootCertStore::empty();
        for der in &ders {
            roots
                .add(der.clone())
                .map_err(|e| TrustBundleError::NotARoot(e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let provider = mesh_provider();
        let client_chains =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TrustBundleError::NotARoot(e.to_string()))?;
        let pems = ders.iter().map(crate::pem::cert_to_pem).collect();
        Ok(TrustBundle {
            pems,
            roots,
            client_chains: Some(client_chains),
            algorithms: provider.signature_verification_algorithms,
            verified_clients: VerifiedChains::new(verified::CAPACITY),
            verified_servers: VerifiedChains::new(verified::CAPACITY),
        })
    }

    /// Checks that `end_entity` chains to one of the roots for client authentication.
    pub(crate) fn verify_client_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let Some(verifier) = &self.client_chains else {
            return Err(CertificateError::UnknownIssuer.into());
        };
        remembered(
            &self.verified_clients,
            end_entity,
            intermediates,
            now,
            || {
                verifier
                    .verify_client_cert(end_entity, intermediates, now)
                    .map(|_| ())
            },
        )
    }

    /// Checks that `end_entity` chains to one of the roots for server authentication (the name is the
    /// caller's business: the mesh checks SPIFFE IDs, not DNS names).
    pub(crate) fn verify_server_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        remembered(
            &self.verified_servers,
            end_entity,
            intermediates,
            now,
            || {
                let cert = ParsedCertificate::try_from(end_entity)?;
                verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                )
            },
        )
    }
}

/// `verify`'s answer for a chain `chains` does not already hold as valid at `now`; an accepted chain is
/// remembered with its validity window (see [`crate::verified`]). Refusals are never remembered.
fn remembered(
    chains: &VerifiedChains,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    verify: impl FnOnce() -> Result<(), rustls::Error>,
) -> Result<(), rustls::Error> {
    let digest = verified::chain_digest(end_entity, intermediates);
    if chains.contains(&digest, now.as_secs()) {
        return Ok(());
    }
    verify()?;
    if let Some(validity) = verified::validity_of(end_entity, intermediates) {
        chains.remember(digest, validity, now.as_secs());
    }
    Ok(())
}

/// Checks that `pems` would be accepted by [`crate::WorkloadCertificates::set_trust_bundle`].
pub fn check_trust_bundle(pems: &[String]) -> Result<(), TrustBundleError> {
    TrustBundle::from_pems(pems).map(drop)
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

fn identity_error(message: String) -> rustls::Error {
    // ApplicationVerificationFailure makes the peer see `access_denied`, which is what a policy refusal is.
    tracing::warn!(%message, "mTLS peer refused");
    CertificateError::ApplicationVerificationFailure.into()
}

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
        self.trust
            .load()
            .verify_client_chain(end_entity, intermediates, now)?;
        let ids = spiffe_ids_of(end_entity);
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
        self.trust
            .load()
            .verify_server_chain(end_entity, intermediates, now)?;
        let ids = spiffe_ids_of(end_entity);
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;
    use crate::verified::tests::{DAY, JAN_1_2026, cert};

    fn at(unix_seconds: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(unix_seconds))
    }

    #[test]
    fn only_accepted_chains_are_remembered_and_only_while_valid() {
        let leaf = cert((2026, 1, 1), (2026, 1, 2), "leaf");
        let chains = VerifiedChains::new(verified::CAPACITY);
        let full_verifications = Cell::new(0);
        let verify = |answer: Result<(), rustls::Error>| {
            || {
                full_verifications.set(full_verifications.get() + 1);
                answer
            }
        };
        let refused = || Err(CertificateError::UnknownIssuer.into());
        // (time, what a full verification would answer, expected result, full verifications so far)
        let steps: [(u64, Result<(), rustls::Error>, bool, u32); 5] = [
            (JAN_1_2026 + 60, refused(), false, 1),
            (JAN_1_2026 + 60, refused(), false, 2), // a refusal is not remembered
            (JAN_1_2026 + 60, Ok(()), true, 3),
            (JAN_1_2026 + 3600, refused(), true, 3), // remembered: no full verification
            (JAN_1_2026 + DAY + 1, refused(), false, 4), // past notAfter: verified again
        ];
        for (step, (now, answer, accepted, verifications)) in steps.into_iter().enumerate() {
            let result = remembered(&chains, &leaf, &[], at(now), verify(answer));
            assert_eq!(result.is_ok(), accepted, "step {step}");
            assert_eq!(full_verifications.get(), verifications, "step {step}");
        }
    }

    #[test]
    fn a_new_trust_bundle_remembers_nothing_of_the_previous_one() {
        let (root_a, leaf_a) = root_and_client_leaf("a.example");
        let (root_b, _) = root_and_client_leaf("b.example");
        let now = UnixTime::now();
        let bundle_a = TrustBundle::from_pems(&[root_a]).unwrap();
        bundle_a.verify_client_chain(&leaf_a, &[], now).unwrap();
        bundle_a.verify_client_chain(&leaf_a, &[], now).unwrap();
        assert_eq!(bundle_a.verified_clients.len(), 1);
        let bundle_b = TrustBundle::from_pems(&[root_b]).unwrap();
        assert!(bundle_b.verify_client_chain(&leaf_a, &[], now).is_err());
        assert_eq!(bundle_b.verified_clients.len(), 0);
        // Accepted for client authentication says nothing of server authentication.
        assert_eq!(bundle_a.verified_servers.len(), 0);
    }

    /// A self-signed CA and a client-auth leaf it signed, as PEM root and DER leaf.
    fn root_and_client_leaf(name: &str) -> (String, CertificateDer<'static>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("root {name}"));
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        (ca.pem(), leaf.der().clone())
    }
}

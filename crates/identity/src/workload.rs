//! The proxy's certificate manager: obtains the workload certificate, renews it at half its life with
//! jitter, backs off on failure while the valid certificate stays in use, and serves rustls configs whose
//! certificate and trust bundle are swapped underneath them, so a rotation never drops a connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::SpiffeId;
use crate::csr::new_key_and_csr;
use crate::signer::{CertificateSigner, SignError, SignedChain};
use crate::tls::{
    CurrentCertResolver, SecureNamingServerVerifier, SharedTrust, TrustBundle, TrustBundleError,
    TrustDomainClientVerifier, mesh_provider,
};

/// ALPN protocols the inbound mTLS listener accepts (Istio's, then plain HTTP ones).
pub const INBOUND_ALPN: &[&[u8]] = &[
    b"istio-peer-exchange",
    b"istio",
    b"istio-http/1.0",
    b"istio-http/1.1",
    b"istio-h2",
    b"h2",
    b"http/1.1",
];

/// When and how hard to renew.
#[derive(Clone, Debug)]
pub struct RotationOptions {
    /// Lifetime asked of the CA (0 lets the CA choose its default).
    pub ttl: Duration,
    /// Renew when this fraction of the lifetime has passed (Istio: 0.5).
    pub renew_fraction: f64,
    /// Random spread around the renewal point, as a fraction of the lifetime.
    pub jitter_fraction: f64,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RotationOptions {
    fn default() -> Self {
        RotationOptions {
            ttl: Duration::from_secs(24 * 3600),
            renew_fraction: 0.5,
            jitter_fraction: 0.02,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A snapshot of the certificate in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub spiffe_id: SpiffeId,
    /// Leaf first, root last.
    pub chain_pem: Vec<String>,
    pub trust_bundle_pem: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub next_rotation: SystemTime,
    /// How many certificates have been installed so far (1 after the first).
    pub generation: u64,
}

/// Why a signed chain was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Csr(#[from] crate::csr::CsrError),
    #[error(transparent)]
    Trust(#[from] TrustBundleError),
    #[error("the CA returned an unusable certificate: {0}")]
    BadCertificate(String),
}

struct Shared {
    identity: SpiffeId,
    current: Arc<ArcSwap<Option<Arc<CertifiedKey>>>>,
    trust: SharedTrust,
    info: watch::Sender<Option<CertInfo>>,
    server_config: Arc<ServerConfig>,
    /// Wakes the rotation task for a renewal now (a new root was pushed).
    renew: Notify,
}

struct Inner {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Cheap-to-clone handle to the workload's certificate; the rotation task stops when the last clone drops.
#[derive(Clone)]
pub struct WorkloadCertificates {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkloadCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificates")
            .field("identity", &self.inner.shared.identity)
            .finish()
    }
}

impl WorkloadCertificates {
    /// Starts the rotation task on the current tokio runtime. Handshakes fail closed until `ready()`.
    pub fn spawn(
        identity: SpiffeId,
        signer: Arc<dyn CertificateSigner>,
        options: RotationOptions,
    ) -> Self {
        let provider = mesh_provider();
        let current = Arc::new(ArcSwap::from_pointee(None));
        let trust: SharedTrust = Arc::new(ArcSwap::from_pointee(TrustBundle::empty()));
        let client_verifier = Arc::new(TrustDomainClientVerifier {
            trust: trust.clone(),
            trust_domain: identity.trust_domain().to_owned(),
            provider: provider.clone(),
            no_hints: Vec::new(),
        });
        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(CurrentCertResolver {
                current: current.clone(),
            }));
        server_config.alpn_protocols = INBOUND_ALPN.iter().map(|p| p.to_vec()).collect();
        // A resumed session skips the client-certificate check; every connection must present a cert
        // that is valid against the trust bundle of that moment (root retirement, expiry).
        server_config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server_config.send_tls13_tickets = 0;
        let (info, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            identity,
            current,
            trust,
            info,
            server_config: Arc::new(server_config),
            renew: Notify::new(),
        });
        let task = tokio::spawn(rotate_forever(shared.clone(), signer, options));
        WorkloadCertificates {
            inner: Arc::new(Inner { shared, task }),
        }
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.inner.shared.identity
    }

    /// Waits for the first certificate.
    pub async fn ready(&self) -> CertInfo {
        let mut rx = self.subscribe();
        let info = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as this handle");
        info.clone().expect("waited for Some")
    }

    /// The certificate in use, if any.
    pub fn snapshot(&self) -> Option<CertInfo> {
        self.inner.shared.info.borrow().clone()
    }

    /// A receiver that sees every installed certificate (and trust bundle change).
    pub fn subscribe(&self) -> watch::Receiver<Option<CertInfo>> {
        self.inner.shared.info.subscribe()
    }

    /// The inbound config: TLS 1.3 only, client certificate required (chain to the bundle, SPIFFE ID of
    /// our trust domain), Istio's ALPN values. The same `Arc` stays valid across rotations.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.shared.server_config.clone()
    }

    /// An outbound config that presents our certificate and accepts only a server whose URI SAN is one
    /// of `expected` (secure naming). The `ServerName` given at connect time is never checked: a DNS name is
    /// sent as SNI (sidecars send Envoy's `outbound_.<port>_._.<service FQDN>`, which the server side
    /// matches with `connection.sni`); an IP address sends none. Build once per destination and reuse: it
    /// follows rotations.
    pub fn client_config(&self, expected: &[SpiffeId], alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
        let provider = mesh_provider();
        let verifier = Arc::new(SecureNamingServerVerifier {
            trust: self.inner.shared.trust.clone(),
            expected: expected.to_vec(),
            provider: provider.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(CurrentCertResolver {
                current: self.inner.shared.current.clone(),
            }));
        config.alpn_protocols = alpn;
        // Session tickets would let a resumed session skip our verifier after a root retirement.
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = true;
        Arc::new(config)
    }

    /// Replaces the trust bundle (the control plane pushes it with the configuration). When the bundle's
    /// first root (the CA's current one) is not the root our certificate chains to, the certificate is
    /// renewed at once: a root rotation moves every workload to the new root while the old one is still
    /// trusted, instead of waiting for the next scheduled renewal.
    pub fn set_trust_bundle(&self, roots_pem: &[String]) -> Result<(), TrustBundleError> {
        let shared = &self.inner.shared;
        let bundle = TrustBundle::from_pems(roots_pem)?;
        let current_root = bundle.pems.first().cloned();
        shared.trust.store(Arc::new(bundle));
        let pems = shared.trust.load().pems.clone();
        let mut renew = false;
        shared.info.send_modify(|info| {
            if let Some(info) = info {
                info.trust_bundle_pem = pems;
                renew = info.chain_pem.last() != current_root.as_ref();
            }
        });
        if renew {
            tracing::info!(identity = %shared.identity, "a new CA root was pushed; renewing the certificate now");
            shared.renew.notify_one();
        }
        Ok(())
    }
}

async fn rotate_forever(
    shared: Arc<Shared>,
    signer: Arc<dyn CertificateSigner>,
    options: RotationOptions,
) {
    let mut backoff = options.initial_backoff;
    let mut generation = 0u64;
    loop {
        let delay = match renew_once(&shared, signer.as_ref(), &options, generation + 1).await {
            Ok(info) => {
                generation = info.generation;
                backoff = options.initial_backoff;
                tracing::info!(identity = %info.spiffe_id, generation, "workload certificate installed");
                info.next_rotation
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            }
            Err(error) => {
                let delay = jittered(backoff, 0.2);
                tracing::warn!(identity = %shared.identity, %error, retry_in = ?delay, "workload certificate renewal failed; keeping the current certificate");
                backoff = (backoff * 2).min(options.max_backoff);
                // Never sleep past the expiry of the certificate still in use.
                match shared.info.borrow().as_ref().map(|i| i.not_after) {
                    Some(not_after) => {
                        let left = not_after
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        delay.min(left / 2).max(Duration::from_millis(50))
                    }
                    None => delay,
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.renew.notified() => {}
        }
    }
}

async fn renew_once(
    shared: &Shared,
    signer: &dyn CertificateSigner,
    options: &RotationOptions,
    generation: u64,
) -> Result<CertInfo, InstallError> {
    let request = new_key_and_csr(&shared.identity)?;
    let SignedChain {
        chain_pem,
        trust_bundle_pem,
    } = signer.sign(request.csr_pem, options.ttl).await?;
    let chain_der: Vec<CertificateDer<'static>> = chain_pem
        .iter()
        .map(|pem| crate::pem::certs_from_pem(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(InstallError::BadCertificate)?
        .into_iter()
        .flatten()
        .collect();
    if chain_der.len() < 2 {
        return Err(InstallError::BadCertificate(format!(
            "the chain has {} certificate(s); expected the leaf and at least the root",
            chain_der.len()
        )));
    }
    // The bundle from the CA wins; otherwise keep the current one and add the chain's root to it.
    let bundle_pems = if trust_bundle_pem.is_empty() {
        let mut pems = shared.trust.load().pems.clone();
        let root = chain_pem.last().cloned().unwrap_or_default();
        if !pems.contains(&root) {
            pems.push(root);
        }
        pems
    } else {
        trust_bundle_pem
    };
    let bundle = TrustBundle::from_pems(&bundle_pems)?;
    let leaf = &chain_der[0];
    let (not_before, not_after) = validity_of(leaf)?;
    check_issued_chain(leaf, &chain_der[1..], &bundle, &shared.identity)?;

    let key = rustls::crypto::ring::sign::any_ecdsa_type(&request.key_der)
        .map_err(|e| InstallError::BadCertificate(e.to_string()))?;
    // The root is left out of what we present: peers have it, and it only costs bytes on the wire.
    let presented: Vec<CertificateDer<'static>> = chain_der[..chain_der.len() - 1].to_vec();
    let certified = Arc::new(CertifiedKey::new(presented, key));

    // X.509 times have whole seconds, so not_before can lie up to 1 s in the past; measure the life we
    // actually got from now, or short test TTLs would renew almost at once.
    let received = SystemTime::now().max(not_before);
    let lifetime = not_after.duration_since(received).unwrap_or_default();
    let renew_after = lifetime.mul_f64(options.renew_fraction);
    let spread = lifetime.mul_f64(options.jitter_fraction);
    let renew_after = jittered_by(renew_after, spread);
    let info = CertInfo {
        spiffe_id: shared.identity.clone(),
        chain_pem: chain_der.iter().map(crate::pem::cert_to_pem).collect(),
        trust_bundle_pem: bundle.pems.clone(),
        not_before,
        not_after,
        next_rotation: received + renew_after,
        generation,
    };
    // Trust first, then the certificate: a peer's new certificate is never checked against an old bundle
    // by us after we already present ours.
    shared.trust.store(Arc::new(bundle));
    shared.current.store(Arc::new(Some(certified)));
    shared.info.send_replace(Some(info.clone()));
    Ok(info)
}

fn validity_of(leaf: &[u8]) -> Result<(SystemTime, SystemTime), InstallError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| InstallError::BadCertificate(format!("the leaf does not parse: {e}")))?;
    let to_system = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok((
        to_system(cert.validity().not_before),
        to_system(cert.validity().not_after),
    ))
}

/// Refuses a chain that would not pass our own verifiers (linkerd checks before publishing, so do we).
fn check_issued_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    bundle: &TrustBundle,
    identity: &SpiffeId,
) -> Result<(), InstallError> {
    let ids = crate::tls::spiffe_ids_of(leaf);
    if ids.as_slice() != std::slice::from_ref(identity) {
        return Err(InstallError::BadCertificate(format!(
            "the certificate names {ids:?}, but we asked for {identity}"
        )));
    }
    // A mesh certificate serves both ends of a connection: check it for both, as peers will.
    let now = rustls::pki_types::UnixTime::now();
    bundle
        .verify_server_chain(leaf, intermediates, now)
        .and_then(|()| bundle.verify_client_chain(leaf, intermediates, now))
        .map_err(|e| {
            InstallError::BadCertificate(format!(
                "the chain does not verify against the trust bundle: {e}"
            ))
        })
}

fn jittered(base: Duration, fraction: f64) -> Duration {
    jittered_by(base, base.mul_f64(fraction))
}

/// `base` moved by a uniformly random amount in `[-spread, +spread]`.
fn jittered_by(base: Duration, spread: Duration) -> Duration {
    let offset = spread.mul_f64(rand::random::<f64>() * 2.0);
    (base + offset).saturating_sub(spread)
}

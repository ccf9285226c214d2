//! The certificate authority of the control plane: its root (self-signed or plugged in), root rotation with
//! an overlap, the trust bundle, and signing of workload CSRs for an authenticated SPIFFE identity.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::SpiffeId;
use crate::fsutil::write_atomic;
use crate::pem::{certs_from_pem, split_certs};

/// Istio's `DEFAULT_WORKLOAD_CERT_TTL`: used when a request asks for no particular lifetime.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's `MAX_WORKLOAD_CERT_TTL`: longer requests are refused.
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a self-signed root (Istio: 3650 days).
pub const ROOT_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);

const ROOT_CERT: &str = "root-cert.pem";
const ROOT_KEY: &str = "root-key.pem";
const TRUST_BUNDLE: &str = "trust-bundle.pem";
/// The new root re-issued by the previous root's key, presented during a root rotation overlap.
const CROSS_SIGNED_ROOT: &str = "cross-signed-root.pem";
const PLUGIN_CERT: &str = "ca-cert.pem";
const PLUGIN_KEY: &str = "ca-key.pem";
const PLUGIN_CHAIN: &str = "cert-chain.pem";
/// The plug-in CA's trusted roots (Istio's `root-cert.pem` of `cacerts`): one or more certificates,
/// every one of them trusted, so that a root migration can trust the old and the new root at once.
const PLUGIN_ROOTS: &str = "plug-in-roots.pem";

/// How the CA is set up.
#[derive(Clone, Debug)]
pub struct CaOptions {
    pub trust_domain: String,
    /// Lifetime used when a CSR asks for 0 seconds.
    pub default_workload_ttl: Duration,
    /// Longest lifetime a CSR may ask for.
    pub max_workload_ttl: Duration,
}

impl CaOptions {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        CaOptions {
            trust_domain: trust_domain.into(),
            default_workload_ttl: DEFAULT_WORKLOAD_TTL,
            max_workload_ttl: MAX_WORKLOAD_TTL,
        }
    }
}

/// What went wrong in the CA; messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "cannot {action} {path}: {source}; check that the directory exists and is writable by this user"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the CA material in {path} is unusable: {reason}; fix or remove the file (a new root is created only when none exists)"
    )]
    BadMaterial { path: PathBuf, reason: String },
    #[error("the plug-in CA is unusable: {0}")]
    BadPlugIn(String),
    #[error(
        "the CSR cannot be used: {0}; send a PEM PKCS#10 request signed by its key (only SAN, key usage and basic constraints extensions are understood)"
    )]
    BadCsr(String),
    #[error(
        "the requested lifetime of {requested:?} exceeds the maximum of {max:?}; ask for a shorter validity_duration"
    )]
    TtlTooLong { requested: Duration, max: Duration },
    #[error("identity {identity} is not in the CA's trust domain {trust_domain}")]
    WrongTrustDomain {
        identity: SpiffeId,
        trust_domain: String,
    },
    #[error("no old root to retire: the trust bundle holds only the current root")]
    NothingToRetire,
    #[error("root rotation needs a self-signed CA; to rotate a plug-in CA, plug in the new one")]
    RotatePlugIn,
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The key and certificate that sign workload certificates right now.
struct SigningCa {
    issuer: Issuer<'static, KeyPair>,
    /// The certificate of `issuer`'s key (the root itself for a self-signed CA).
    signing_cert_pem: String,
    /// The signing certificate followed by any intermediates and the root (leaf excluded).
    chain_after_leaf: Vec<String>,
}

struct CaState {
    signing: SigningCa,
    trust_bundle: Vec<String>,
    plugged_in: bool,
}

/// The mesh CA. Cheap to share behind an `Arc`; signing never blocks on rotation.
pub struct CertificateAuthority {
    dir: PathBuf,
    options: CaOptions,
    state: ArcSwap<CaState>,
    /// The trust bundle as last installed, for the control plane to push to every proxy.
    bundle: watch::Sender<Vec<String>>,
    // Serialises changes (rotate, retire) so two of them never interleave their file writes.
    change: Mutex<()>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .field("trust_domain", &self.options.trust_domain)
            .finish()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `ca_dir` (plug-in files first, then the self-signed root) or creates a new
    /// self-signed ECDSA P-256 root there. The same directory always gives the same root.
    pub fn load_or_create(ca_dir: &Path, options: CaOptions) -> Result<Self, CaError> {
        std::fs::create_dir_all(ca_dir).map_err(|source| CaError::Io {
            action: "create",
            path: ca_dir.to_owned(),
            source,
        })?;
        let state = if ca_dir.join(PLUGIN_CERT).exists() {
            load_plug_in(ca_dir)?
        } else if ca_dir.join(ROOT_CERT).exists() {
            load_self_signed(ca_dir)?
        } else {
            let state = new_self_signed(&options.trust_domain, Vec::new(), None)?;
            write_root(ca_dir, &state)?;
            state
        };
        Ok(CertificateAuthority {
            dir: ca_dir.to_owned(),
            options,
            bundle: watch::Sender::new(state.trust_bundle.clone()),
            state: ArcSwap::from_pointee(state),
            change: Mutex::new(()),
        })
    }

    /// Installs the user's own CA (like Istio's `cacerts`): `cert_pem`/`key_pem` sign workload certificates,
    /// `chain_pem` holds the certificates above it up to the root (may be empty when `cert_pem` is a root),
    /// and `roots_pem` (Istio's `root-cert.pem`) the roots every proxy trusts: empty means the top of the
    /// chain alone; several certificates are all trusted (a root migration), and the chain must lead to
    /// one of them. The key must be PKCS#8 (`openssl pkcs8 -topk8 -nocrypt` converts others).
    pub fn plug_in(
        ca_dir: &Path,
        options: CaOptions,
        cert_pem: &str,
        key_pem: &str,
        chain_pem: &str,
        roots_pem: &str,
    ) -> Result<Self, CaError> {
        // Validate before touching the directory so a bad plug-in never replaces a working CA.
        parse_plug_in(cert_pem, key_pem, chain_pem, roots_pem)?;
        for (name, contents, mode) in [
            (PLUGIN_CERT, cert_pem, 0o644),
            (PLUGIN_KEY, key_pem, 0o600),
            (PLUGIN_CHAIN, chain_pem, 0o644),
            (PLUGIN_ROOTS, roots_pem, 0o644),
        ] {
            let path = ca_dir.join(name);
            write_atomic(&path, contents.as_bytes(), mode).map_err(|source| CaError::Io {
                action: "write",
                path,
                source,
            })?;
        }
        Self::load_or_create(ca_dir, options)
    }

    /// A new self-signed root for `trust_domain` as PEM (certificate, PKCS#8 key), not yet kept anywhere:
    /// for a control plane that stores its root elsewhere first (on Kubernetes, the `istio-ca-secret`
    /// Secret) and then loads it with [`from_root_pem`](Self::from_root_pem).
    pub fn generate_root_pem(trust_domain: &str) -> Result<(String, String), CaError> {
        let state = new_self_signed(trust_domain, Vec::new(), None)?;
        Ok((
            state.signing.signing_cert_pem.clone(),
            state.signing.issuer.key().serialize_pem(),
        ))
    }

    /// Loads a self-signed root kept elsewhere (certificate and PKCS#8 key PEM): written into `ca_dir`
    /// (key 0600), replacing what was there, then loaded as [`load_or_create`](Self::load_or_create)
    /// loads its own.
    pub fn from_root_pem(
        ca_dir: &Path,
        options: CaOptions,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            CaError::BadPlugIn(format!("the root key is not a PKCS#8 PEM key: {e}"))
        })?;
        Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| CaError::BadPlugIn(format!("the root certificate is unusable: {e}")))?;
        std::fs::create_dir_all(ca_dir).map_err(|source| CaError::Io {
            action: "create",
            path: ca_dir.to_owned(),
            source,
        })?;
        for name in [
            PLUGIN_CERT,
            PLUGIN_KEY,
            PLUGIN_CHAIN,
            PLUGIN_ROOTS,
            TRUST_BUNDLE,
            CROSS_SIGNED_ROOT,
        ] {
            let path = ca_dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CaError::Io {
                        action: "remove",
                        path,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        for (name, contents, mode) in [(ROOT_KEY, key_pem, 0o600), (ROOT_CERT, cert_pem, 0o644)] {
            let path = ca_dir.join(name);
            write_atomic(&path, contents.as_bytes(), mode).map_err(|source| CaError::Io {
                action: "write",
                path,
                source,
            })?;
        }
        Self::load_or_create(ca_dir, options)
    }

    /// A server certificate for `dns_names` (DNS names or IP addresses) signed by the current signing
    /// key, valid for `ttl`, with a new ECDSA P-256 key: the control plane's own serving certificate
    /// (istiod's for `istiod.istio-system.svc`). Returns the chain (leaf first, root last) and the
    /// PKCS#8 key PEM.
    pub fn issue_server_certificate(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<(Vec<String>, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("0 ns is valid");
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let state = self.state.load();
        let leaf = params.signed_by(&key, &state.signing.issuer)?;
        let mut chain = vec![leaf.pem()];
        chain.extend(state.signing.chain_after_leaf.iter().cloned());
        Ok((chain, key.serialize_pem()))
    }

    /// Reads the trust bundle a CA keeps in `ca_dir` without loading any key (for `ironmesh ca root`
    /// and other readers that must not touch key material).
    pub fn read_trust_bundle(ca_dir: &Path) -> Result<String, CaError> {
        // Same precedence as `load_or_create`: a plug-in CA wins over an older self-signed root.
        if !ca_dir.join(PLUGIN_CERT).exists() {
            return match read(ca_dir, TRUST_BUNDLE) {
                Err(_) => read(ca_dir, ROOT_CERT),
                bundle => bundle,
            };
        }
        let optional = |name: &str| {
            if ca_dir.join(name).exists() {
                read(ca_dir, name)
            } else {
                Ok(String::new())
            }
        };
        let mut chain = plug_in_chain(&read(ca_dir, PLUGIN_CERT)?, &optional(PLUGIN_CHAIN)?)?;
        Ok(trusted_roots(&mut chain, &optional(PLUGIN_ROOTS)?)?.concat())
    }

    pub fn options(&self) -> &CaOptions {
        &self.options
    }

    /// Every trusted root as one PEM string per root (the current one first).
    pub fn trust_bundle_pems(&self) -> Vec<String> {
        self.state.load().trust_bundle.clone()
    }

    /// Every change of the trust bundle (rotation, retirement), current value first: what the control plane
    /// pushes to the proxies with their configuration.
    pub fn watch_trust_bundle(&self) -> watch::Receiver<Vec<String>> {
        self.bundle.subscribe()
    }

    /// Makes `state` the CA's and tells the bundle's watchers when the bundle changed.
    fn install(&self, state: impl Into<Arc<CaState>>) {
        let state = state.into();
        let bundle = state.trust_bundle.clone();
        self.state.store(state);
        self.bundle.send_if_modified(|current| {
            let changed = *current != bundle;
            *current = bundle;
            changed
        });
    }

    /// Moves this CA to the keys and trust bundle of `fresh`, a CA loaded from new material (on
    /// Kubernetes, a changed `cacerts` Secret): certificates signed from now on come from `fresh`'s
    /// key, and the bundle's watchers (the proxies' configuration, the roots' ConfigMaps, the serving
    /// certificate's renewal) hear of a changed bundle. `fresh` was checked when it was loaded, so a
    /// malformed update never reaches this CA.
    pub fn take_over(&self, fresh: CertificateAuthority) {
        let _guard = self.change.lock().unwrap_or_else(|e| e.into_inner());
        self.install(fresh.state.load_full());
    }

    /// The certificate of the key that signs workload certificates now (the root itself for a
    /// self-signed CA, the plugged-in CA certificate otherwise).
    pub fn signing_certificate_pem(&self) -> String {
        self.state.load().signing.signing_cert_pem.clone()
    }

    /// The trust bundle as one PEM text (what `ironmesh ca root` prints).
    pub fn trust_bundle_pem(&self) -> String {
        self.trust_bundle_pems().concat()
    }

    /// The root that new workload certificates chain to.
    pub fn current_root_pem(&self) -> String {
        let state = self.state.load();
        state
            .signing
            .chain_after_leaf
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// SHA-256 fingerprint of the current root, as uppercase hex pairs joined by `:` (openssl's format).
    pub fn root_fingerprint(&self) -> String {
        fingerprint(&self.current_root_pem())
    }

    /// Adds a new self-signed root: both roots are trusted, new certificates come from the new one.
    /// Until [`retire_root`](Self::retire_root), chains also carry the new root cross-signed by the old
    /// one, so peers that have not learned the new root yet still accept the new certificates.
    pub fn rotate_root(&self) -> Result<(), CaError> {
        let _guard = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.state.load();
        if old.plugged_in {
            return Err(CaError::RotatePlugIn);
        }
        let state = new_self_signed(
            &self.options.trust_domain,
            old.trust_bundle.clone(),
            Some(&old.signing),
        )?;
        write_root(&self.dir, &state)?;
        tracing::info!(fingerprint = %fingerprint(&state.trust_bundle[0]), "CA root rotated; old root still trusted");
        self.install(state);
        Ok(())
    }

    /// Drops every root but the current one from the trust bundle. Call it once all workloads renewed.
    pub fn retire_root(&self) -> Result<(), CaError> {
        let _guard = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.state.load();
        if old.trust_bundle.len() < 2 {
            return Err(CaError::NothingToRetire);
        }
        let current = self.current_root_pem();
        let state = CaState {
            signing: SigningCa {
                issuer: clone_issuer(&old.signing)?,
                signing_cert_pem: old.signing.signing_cert_pem.clone(),
                // The cross-signed root only served peers that trust the old root: drop it with the root.
                chain_after_leaf: vec![current.clone()],
            },
            trust_bundle: vec![current],
            plugged_in: old.plugged_in,
        };
        write_bundle(&self.dir, &state.trust_bundle)?;
        remove_cross_signed(&self.dir)?;
        tracing::info!("old CA roots retired; trust bundle holds the current root only");
        self.install(state);
        Ok(())
    }

    /// Signs `csr_pem` for exactly `identity`: the CSR contributes only its public key (its SANs, subject,
    /// CA flag and key usages are ignored). Returns the chain leaf first, root last.
    pub fn sign_workload(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        if identity.trust_domain() != self.options.trust_domain {
            return Err(CaError::WrongTrustDomain {
                identity: identity.clone(),
                trust_domain: self.options.trust_domain.clone(),
            });
        }
        let ttl = if ttl.is_zero() {
            self.options.default_workload_ttl
        } else {
            ttl
        };
        if ttl > self.options.max_workload_ttl {
            return Err(CaError::TtlTooLong {
                requested: ttl,
                max: self.options.max_workload_ttl,
            });
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        csr.params = workload_params(identity, ttl)?;
        let state = self.state.load();
        let leaf = csr.signed_by(&state.signing.issuer)?;
        let mut chain = Vec::with_capacity(1 + state.signing.chain_after_leaf.len());
        chain.push(leaf.pem());
        chain.extend(state.signing.chain_after_leaf.iter().cloned());
        Ok(chain)
    }
}

/// The only certificate shape we issue to workloads, built from the authenticated identity alone.
fn workload_params(identity: &SpiffeId, ttl: Duration) -> Result<CertificateParams, CaError> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    let mut params = CertificateParams::default();
    // An empty subject makes rcgen mark the SAN critical, as SPIFFE requires.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now;
    params.not_after = now + ttl;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 16 random bytes, top bit clear so the DER integer stays positive and short.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn new_self_signed(
    trust_domain: &str,
    older_roots: Vec<String>,
    previous: Option<&SigningCa>,
) -> Result<CaState, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    // A distinct name per root keeps path building unambiguous while two roots overlap.
    let suffix: [u8; 6] = rand::random();
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    dn.push(DnType::CommonName, format!("ironmesh root CA {suffix}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::from_secs(60);
    params.not_after = now + ROOT_TTL;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let cert = params.self_signed(&key)?;
    let root_pem = cert.pem();
    let mut trust_bundle = vec![root_pem.clone()];
    trust_bundle.extend(older_roots.into_iter().filter(|r| *r != root_pem));
    let mut chain_after_leaf = vec![root_pem.clone()];
    if let Some(previous) = previous {
        // Same subject, key and key id as the new root, issued by the previous root: a path
        // leaf -> cross-signed root -> previous root exists for verifiers that only know the previous one.
        let cross = params.signed_by(&key, &previous.issuer)?;
        chain_after_leaf.insert(0, cross.pem());
    }
    Ok(CaState {
        signing: SigningCa {
            issuer: Issuer::new(params, key),
            signing_cert_pem: root_pem,
            chain_after_leaf,
        },
        trust_bundle,
        plugged_in: false,
    })
}

fn write_root(dir: &Path, state: &CaState) -> Result<(), CaError> {
    let key_pem = state.signing.issuer.key().serialize_pem();
    let key_path = dir.join(ROOT_KEY);
    write_atomic(&key_path, key_pem.as_bytes(), 0o600).map_err(|source| CaError::Io {
        action: "write",
        path: key_path,
        source,
    })?;
    let cert_path = dir.join(ROOT_CERT);
    write_atomic(&cert_path, state.signing.signing_cert_pem.as_bytes(), 0o644).map_err(
        |source| CaError::Io {
            action: "write",
            path: cert_path,
            source,
        },
    )?;
    write_bundle(dir, &state.trust_bundle)?;
    match state.signing.chain_after_leaf.as_slice() {
        [cross, _root] => {
            let path = dir.join(CROSS_SIGNED_ROOT);
            write_atomic(&path, cross.as_bytes(), 0o644).map_err(|source| CaError::Io {
                action: "write",
                path,
                source,
            })
        }
        _ => remove_cross_signed(dir),
    }
}

fn remove_cross_signed(dir: &Path) -> Result<(), CaError> {
    let path = dir.join(CROSS_SIGNED_ROOT);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CaError::Io {
            action: "remove",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write_bundle(dir: &Path, bundle: &[String]) -> Result<(), CaError> {
    let path = dir.join(TRUST_BUNDLE);
    write_atomic(&path, bundle.concat().as_bytes(), 0o644).map_err(|source| CaError::Io {
        action: "write",
        path,
        source,
    })
}

fn read(dir: &Path, name: &str) -> Result<String, CaError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| CaError::Io {
        action: "read",
        path,
        source,
    })
}

fn bad(dir: &Path, name: &str, reason: impl ToString) -> CaError {
    CaError::BadMaterial {
        path: dir.join(name),
        reason: reason.to_string(),
    }
}

fn load_self_signed(dir: &Path) -> Result<CaState, CaError> {
    let cert_pem = read(dir, ROOT_CERT)?;
    let key_pem = read(dir, ROOT_KEY)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(dir, ROOT_KEY, e))?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| bad(dir, ROOT_CERT, e))?;
    let root = split_certs(&cert_pem)
        .map_err(|e| bad(dir, ROOT_CERT, e))?
        .into_iter()
        .next()
        .ok_or_else(|| bad(dir, ROOT_CERT, "no certificate in the file"))?;
    let trust_bundle = load_bundle(dir, &root)?;
    let mut chain_after_leaf = vec![root.clone()];
    if trust_bundle.len() > 1 && dir.join(CROSS_SIGNED_ROOT).exists() {
        let cross = read(dir, CROSS_SIGNED_ROOT)?;
        chain_after_leaf.insert(0, cross);
    }
    Ok(CaState {
        signing: SigningCa {
            issuer,
            signing_cert_pem: root,
            chain_after_leaf,
        },
        trust_bundle,
        plugged_in: false,
    })
}

/// The saved bundle, with the current root first even if the file lost it.
fn load_bundle(dir: &Path, current_root: &str) -> Result<Vec<String>, CaError> {
    let mut bundle = vec![current_root.to_owned()];
    if dir.join(TRUST_BUNDLE).exists() {
        let saved = read(dir, TRUST_BUNDLE)?;
        let saved = split_certs(&saved).map_err(|e| bad(dir, TRUST_BUNDLE, e))?;
        bundle.extend(saved.into_iter().filter(|r| r != current_root));
    }
    Ok(bundle)
}

/// A plug-in CA as its files hold it, checked.
struct PlugIn {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, then the chain above it up to the root.
    chain: Vec<String>,
    /// Every trusted root, the one the chain ends at first.
    roots: Vec<String>,
}

fn parse_plug_in(
    cert_pem: &str,
    key_pem: &str,
    chain_pem: &str,
    roots_pem: &str,
) -> Result<PlugIn, CaError> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| CaError::BadPlugIn(format!("the key is not a PKCS#8 PEM key: {e}")))?;
    let mut chain = plug_in_chain(cert_pem, chain_pem)?;
    let cert = chain[0].clone();
    let cert_der = &certs_from_pem(&cert).map_err(CaError::BadPlugIn)?[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CaError::BadPlugIn(format!("the CA certificate does not parse: {e}")))?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CaError::BadPlugIn(
            "the key does not belong to the CA certificate".into(),
        ));
    }
    if !parsed.is_ca() {
        return Err(CaError::BadPlugIn(
            "the certificate is not a CA (basicConstraints CA:TRUE missing)".into(),
        ));
    }
    let issuer = Issuer::from_ca_cert_pem(&cert, key)
        .map_err(|e| CaError::BadPlugIn(format!("the CA certificate is unusable: {e}")))?;
    let roots = trusted_roots(&mut chain, roots_pem)?;
    Ok(PlugIn {
        issuer,
        chain,
        roots,
    })
}

/// The CA certificate (the first of `cert_pem`), then the certificates of `chain_pem` above it.
fn plug_in_chain(cert_pem: &str, chain_pem: &str) -> Result<Vec<String>, CaError> {
    let cert = split_certs(cert_pem)
        .map_err(CaError::BadPlugIn)?
        .into_iter()
        .next()
        .ok_or_else(|| CaError::BadPlugIn("the CA certificate file holds no certificate".into()))?;
    // Istio's cert-chain.pem often repeats the CA certificate first; keep it once.
    let mut chain = vec![cert.clone()];
    chain.extend(
        split_certs(chain_pem)
            .map_err(CaError::BadPlugIn)?
            .into_iter()
            .filter(|c| *c != cert),
    );
    Ok(chain)
}

/// The roots of `roots_pem`, the one `chain` ends at first; `chain` gains that root when it stopped
/// at a certificate the root issued. Istio checks the same (`security/pkg/pki/util/keycertbundle.go`,
/// `verify`: the CA certificate must verify against the pool of `root-cert.pem` through `cert-chain.pem`).
fn trusted_roots(chain: &mut Vec<String>, roots_pem: &str) -> Result<Vec<String>, CaError> {
    let top = chain
        .last()
        .cloned()
        .expect("the chain holds the CA certificate");
    if roots_pem.trim().is_empty() {
        return Ok(vec![top]);
    }
    let roots = split_certs(roots_pem).map_err(|e| {
        CaError::BadPlugIn(format!(
            "root-cert.pem does not parse as PEM certificates: {e}"
        ))
    })?;
    if roots.is_empty() {
        return Err(CaError::BadPlugIn(
            "root-cert.pem holds no certificate; give the PEM of the root(s) the CA chains to"
                .into(),
        ));
    }
    let der = |pem: &str| -> Result<Vec<u8>, CaError> {
        Ok(certs_from_pem(pem)
            .map_err(CaError::BadPlugIn)?
            .first()
            .map(|der| der.to_vec())
            .unwrap_or_default())
    };
    for pair in chain.windows(2) {
        if !issued_by(&der(&pair[0])?, &der(&pair[1])?) {
            return Err(CaError::BadPlugIn(format!(
                "cert-chain.pem is not a chain: {} is not signed by the certificate after it ({}); \
                 list the CA certificate first, then each issuer up to the root",
                subject_of(&der(&pair[0])?),
                subject_of(&der(&pair[1])?)
            )));
        }
    }
    let top_der = der(&top)?;
    let mut anchor = None;
    for (index, root) in roots.iter().enumerate() {
        if der(root)? == top_der {
            anchor = Some(index);
            break;
        }
    }
    if anchor.is_none() {
        for (index, root) in roots.iter().enumerate() {
            if issued_by(&top_der, &der(root)?) {
                chain.push(root.clone());
                anchor = Some(index);
                break;
            }
        }
    }
    let Some(anchor) = anchor else {
        return Err(CaError::BadPlugIn(format!(
            "the CA's chain ends at {}, which is neither one of the {} certificate(s) of root-cert.pem \
             nor signed by one of them; put the root that issued the chain into root-cert.pem",
            subject_of(&top_der),
            roots.len()
        )));
    };
    let mut ordered = vec![roots[anchor].clone()];
    for root in roots {
        if !ordered.contains(&root) {
            ordered.push(root);
        }
    }
    Ok(ordered)
}

/// Whether `issuer_der`'s key signed `cert_der` (names match and the signature verifies).
fn issued_by(cert_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        x509_parser::parse_x509_certificate(cert_der),
        x509_parser::parse_x509_certificate(issuer_der),
    ) else {
        return false;
    };
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn subject_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| format!("\"{}\"", cert.subject()))
        .unwrap_or_else(|_| "a certificate that does not parse".into())
}

fn load_plug_in(dir: &Path) -> Result<CaState, CaError> {
    let roots_pem = if dir.join(PLUGIN_ROOTS).exists() {
        read(dir, PLUGIN_ROOTS)?
    } else {
        String::new()
    };
    let cert_pem = read(dir, PLUGIN_CERT)?;
    let key_pem = read(dir, PLUGIN_KEY)?;
    let chain_pem = if dir.join(PLUGIN_CHAIN).exists() {
        read(dir, PLUGIN_CHAIN)?
    } else {
        String::new()
    };
    let plug_in = parse_plug_in(&cert_pem, &key_pem, &chain_pem, &roots_pem)?;
    Ok(CaState {
        signing: SigningCa {
            issuer: plug_in.issuer,
            signing_cert_pem: plug_in.chain[0].clone(),
            chain_after_leaf: plug_in.chain,
        },
        trust_bundle: plug_in.roots,
        plugged_in: true,
    })
}

/// Issuers are not `Clone`; rebuild one from the same certificate and key.
fn clone_issuer(signing: &SigningCa) -> Result<Issuer<'static, KeyPair>, CaError> {
    let key = KeyPair::from_pem(&signing.issuer.key().serialize_pem())?;
    Ok(Issuer::from_ca_cert_pem(&signing.signing_cert_pem, key)?)
}

fn fingerprint(pem: &str) -> String {
    let Ok(ders) = certs_from_pem(pem) else {
        return String::new();
    };
    let Some(der) = ders.first() else {
        return String::new();
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

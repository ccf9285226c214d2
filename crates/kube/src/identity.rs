//! Identity on Kubernetes, as istiod does it:
//!
//! - [`TokenReviewer`]: a proxy proves who it is with its pod's projected service-account token
//!   (audience `istio-ca`), which the API server checks (TokenReview, audiences `[istio-ca]`). Only a
//!   token bound to a pod is accepted (the review's user extra names the pod and its uid), so the
//!   identity is the pod's, and a deleted pod's token stops working: the API server refuses bound
//!   tokens of deleted pods, though it remembers a success for a few seconds, so the pod is also
//!   checked: in the watch, or with one read when the watch does not know it. A positive review is
//!   remembered briefly, and only while the watched pod still exists with the reviewed uid.
//! - [`load_ca`]: the CA's keys live in a Secret in `istio-system`: the plug-in `cacerts` when present
//!   (Istio's keys `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`), else the self-signed
//!   root in `istio-ca-secret`, created once by whichever replica comes first and read by the others.
//! - [`keep_root_configmaps`]: every namespace gets the ConfigMap `istio-ca-root-cert` (key
//!   `root-cert.pem`) holding the mesh's roots, which proxies verify the control plane with; rewritten
//!   when the roots change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use ironmesh_identity::{
    AuthFailure, BindingError, BoxFuture, CaError, CaOptions, CertificateAuthority, PodClaims,
    TokenAuthenticator,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::KubeSource;
use crate::install::NAMESPACE;

/// The audience of the token a proxy sends (Istio's).
pub const CA_TOKEN_AUDIENCE: &str = "istio-ca";
/// The plug-in CA Secret (Istio's).
pub const PLUGIN_SECRET: &str = "cacerts";
/// The self-signed CA's Secret (Istio's), and its type.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";
pub const SELF_SIGNED_SECRET_TYPE: &str = "istio.io/ca-root";
/// The per-namespace ConfigMap holding the mesh's roots (Istio's), and its key.
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_CONFIGMAP_KEY: &str = "root-cert.pem";
/// Istio's keys of both Secrets.
const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";
const CERT_CHAIN: &str = "cert-chain.pem";
const ROOT_CERT: &str = "root-cert.pem";
/// Where the API server puts a bound token's pod in the review's user extra.
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// How long a positive review is reused (while its pod is still watched with the same uid).
pub const REVIEW_CACHE_TTL: Duration = Duration::from_secs(30);
/// At most this many remembered reviews; the cache starts over beyond.
const REVIEW_CACHE_MAX: usize = 10_000;

struct Reviewed {
    claims: PodClaims,
    until: Instant,
}

/// Checks proxies' tokens with the API server's TokenReview.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    pods: Arc<dyn ironmesh_identity::PodLookup>,
    cache: Mutex<HashMap<String, Reviewed>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish()
    }
}

impl TokenReviewer {
    /// Reviews tokens for [`CA_TOKEN_AUDIENCE`]; `pods` (the control plane's pod watch) decides whether
    /// a remembered review still holds.
    pub fn new(client: kube::Client, pods: Arc<dyn ironmesh_identity::PodLookup>) -> Self {
        TokenReviewer {
            client,
            audience: CA_TOKEN_AUDIENCE.into(),
            pods,
            cache: Mutex::default(),
        }
    }

    fn cached(&self, token: &str) -> Option<PodClaims> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(token)?;
        let alive = entry.until > Instant::now()
            && matches!(
                self.pods.pod_uid(&entry.claims.namespace, &entry.claims.pod),
                Ok(Some(uid)) if uid == entry.claims.pod_uid
            );
        if alive {
            Some(entry.claims.clone())
        } else {
            // Expired, or the pod is gone (or not watched yet): ask the API server again.
            cache.remove(token);
            None
        }
    }

    fn remember(&self, token: &str, claims: &PodClaims) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REVIEW_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, entry| entry.until > now);
            if cache.len() >= REVIEW_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            token.to_owned(),
            Reviewed {
                claims: claims.clone(),
                until: Instant::now() + REVIEW_CACHE_TTL,
            },
        );
    }

    /// One TokenReview, uncached.
    pub async fn review(&self, token: &str) -> Result<PodClaims, AuthFailure> {
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            status: None,
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                AuthFailure::Unavailable(format!(
                    "cannot have the token reviewed by the Kubernetes API server (TokenReview): {e}; \
                     check that the control plane reaches it and that its service account is bound to \
                     system:auth-delegator (ironmesh install binds it)"
                ))
            })?;
        claims_of(&self.audience, reviewed.status.unwrap_or_default())
    }
}

/// The pod a successful review names, or why the token is refused.
fn claims_of(
    audience: &str,
    status: k8s_openapi::api::authentication::v1::TokenReviewStatus,
) -> Result<PodClaims, AuthFailure> {
    let refused = AuthFailure::Refused;
    if status.authenticated != Some(true) {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".into());
        return Err(refused(format!(
            "Kubernetes refused the token ({why}); send the pod's projected service-account token for \
             audience {audience} (a forged, expired or other-audience token, or one of a deleted pod, is refused)"
        )));
    }
    if !status
        .audiences
        .unwrap_or_default()
        .iter()
        .any(|a| a == audience)
    {
        return Err(refused(format!(
            "the token is not for audience {audience}; project the service-account token with audience {audience}"
        )));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Err(refused(format!(
            "the token is {username:?}'s, not a service account's; send the pod's service-account token"
        )));
    };
    let extra = user.extra.unwrap_or_default();
    let one = |key: &str| {
        extra
            .get(key)
            .and_then(|values| values.first())
            .filter(|value| !value.is_empty())
            .cloned()
    };
    let (Some(pod), Some(pod_uid)) = (one(EXTRA_POD_NAME), one(EXTRA_POD_UID)) else {
        return Err(refused(format!(
            "the token of {username} is not bound to a pod; send the pod's projected token (a volume \
             of kind serviceAccountToken, audience {audience}), not a long-lived or unbound one"
        )));
    };
    Ok(PodClaims {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod,
        pod_uid,
    })
}

impl TokenReviewer {
    /// Whether the reviewed token's pod exists now with the token's uid. The API server remembers a
    /// successful authentication for a few seconds (kube-apiserver's token cache, 10 s), so a token of a
    /// pod deleted a moment ago can still pass the review: the watch answers first, and when it does not
    /// know the pod (deleted, or too new to be watched yet) one read of the pod decides.
    async fn check_pod(&self, claims: &PodClaims) -> Result<(), AuthFailure> {
        let current = match self.pods.pod_uid(&claims.namespace, &claims.pod) {
            Ok(Some(uid)) => Some(uid),
            _ => {
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &claims.namespace);
                let pod = pods.get_opt(&claims.pod).await.map_err(|e| {
                    AuthFailure::Unavailable(format!(
                        "cannot check that pod {}/{} exists: {e}; retry",
                        claims.namespace, claims.pod
                    ))
                })?;
                pod.and_then(|pod| pod.metadata.uid)
            }
        };
        let binding = match current {
            Some(uid) if uid == claims.pod_uid => return Ok(()),
            Some(current) => BindingError::PodReplaced {
                namespace: claims.namespace.clone(),
                pod: claims.pod.clone(),
                claimed: claims.pod_uid.clone(),
                current,
            },
            None => BindingError::PodGone {
                namespace: claims.namespace.clone(),
                pod: claims.pod.clone(),
            },
        };
        Err(AuthFailure::Refused(binding.to_string()))
    }
}

impl TokenAuthenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<PodClaims, AuthFailure>> {
        Box::pin(async move {
            if let Some(claims) = self.cached(token) {
                return Ok(claims);
            }
            let claims = self.review(token).await?;
            self.check_pod(&claims).await?;
            self.remember(token, &claims);
            Ok(claims)
        })
    }
}

/// Why the CA's Secret could not be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error(
        "cannot {action} Secret {NAMESPACE}/{name}: {source}; check that the control plane's service \
         account may get and create Secrets in {NAMESPACE} (ironmesh install grants it)"
    )]
    Api {
        action: &'static str,
        name: &'static str,
        source: kube::Error,
    },
    #[error("Secret {NAMESPACE}/{name} has no {key}; {hint}")]
    MissingKey {
        name: &'static str,
        key: &'static str,
        hint: &'static str,
    },
    #[error("Secret {NAMESPACE}/{name} does not hold a usable CA: {source}")]
    Unusable { name: &'static str, source: CaError },
    #[error(
        "Secret {NAMESPACE}/{SELF_SIGNED_SECRET} kept changing while this control plane tried to create \
         or read it; retry"
    )]
    Contended,
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .filter(|text| !text.trim().is_empty())
}

/// The CA's keys as a Secret of `istio-system` holds them, checked for their keys but not yet loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CaMaterial {
    /// `cacerts`: Istio's plug-in CA; `roots` is its `root-cert.pem`, every certificate of which
    /// proxies trust (two during a root migration).
    PlugIn {
        cert: String,
        key: String,
        chain: String,
        roots: String,
    },
    /// `istio-ca-secret`: the self-signed root.
    SelfSigned { cert: String, key: String },
}

impl CaMaterial {
    fn plug_in(secret: &Secret) -> Result<CaMaterial, CaSecretError> {
        let need = |key: &'static str| {
            text(secret, key).ok_or(CaSecretError::MissingKey {
                name: PLUGIN_SECRET,
                key,
                hint: "a plug-in CA needs ca-cert.pem and ca-key.pem (and cert-chain.pem, root-cert.pem \
                       up to the root), as Istio's `kubectl create secret generic cacerts --from-file=...`",
            })
        };
        Ok(CaMaterial::PlugIn {
            cert: need(CA_CERT)?,
            key: need(CA_KEY)?,
            chain: text(secret, CERT_CHAIN).unwrap_or_default(),
            roots: text(secret, ROOT_CERT).unwrap_or_default(),
        })
    }

    fn self_signed(secret: &Secret) -> Result<CaMaterial, CaSecretError> {
        let need = |key: &'static str| {
            text(secret, key).ok_or(CaSecretError::MissingKey {
                name: SELF_SIGNED_SECRET,
                key,
                hint: "delete the Secret to have a new root made (every workload certificate changes)",
            })
        };
        Ok(CaMaterial::SelfSigned {
            cert: need(CA_CERT)?,
            key: need(CA_KEY)?,
        })
    }

    fn secret(&self) -> &'static str {
        match self {
            CaMaterial::PlugIn { .. } => PLUGIN_SECRET,
            CaMaterial::SelfSigned { .. } => SELF_SIGNED_SECRET,
        }
    }

    fn cert(&self) -> &str {
        match self {
            CaMaterial::PlugIn { cert, .. } | CaMaterial::SelfSigned { cert, .. } => cert,
        }
    }

    /// The CA of this material, kept in `ca_dir`; a key that does not fit its certificate, a
    /// certificate that is no CA, and unreadable PEM are refused here, before anything uses them.
    fn load(
        &self,
        ca_dir: &Path,
        options: CaOptions,
    ) -> Result<CertificateAuthority, CaSecretError> {
        let loaded = match self {
            CaMaterial::PlugIn {
                cert,
                key,
                chain,
                roots,
            } => CertificateAuthority::plug_in(ca_dir, options, cert, key, chain, roots),
            CaMaterial::SelfSigned { cert, key } => {
                CertificateAuthority::from_root_pem(ca_dir, options, cert, key)
            }
        };
        let ca = loaded.map_err(|source| CaSecretError::Unusable {
            name: self.secret(),
            source,
        })?;
        tracing::info!(root = %ca.root_fingerprint(), "CA: the keys of Secret {NAMESPACE}/{}", self.secret());
        Ok(ca)
    }
}

/// Loads the mesh CA from `istio-system`'s Secrets into `ca_dir` (a scratch copy; the Secret is the
/// truth): `cacerts` when present (as Istio's plug-in CA), else `istio-ca-secret`, which the first
/// control plane creates with a new self-signed root and every later one (replica or restart) reads.
/// [`keep_ca_current`] follows later changes of either.
pub async fn load_ca(
    client: &kube::Client,
    ca_dir: &Path,
    options: CaOptions,
) -> Result<CertificateAuthority, CaSecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    if let Some(plugin) = get_secret(&secrets, PLUGIN_SECRET).await? {
        return CaMaterial::plug_in(&plugin)?.load(ca_dir, options);
    }
    let mut contended = 0;
    while contended < 5 {
        let material = match get_secret(&secrets, SELF_SIGNED_SECRET).await? {
            Some(secret) => CaMaterial::self_signed(&secret)?,
            None => {
                let (cert, key) = CertificateAuthority::generate_root_pem(&options.trust_domain)
                    .map_err(|source| CaSecretError::Unusable {
                        name: SELF_SIGNED_SECRET,
                        source,
                    })?;
                let data: BTreeMap<String, ByteString> = [
                    (CA_CERT, cert.as_str()),
                    (CA_KEY, key.as_str()),
                    (CERT_CHAIN, ""),
                    (ROOT_CERT, cert.as_str()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect();
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(SELF_SIGNED_SECRET.into()),
                        namespace: Some(NAMESPACE.into()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/part-of".to_owned(),
                            "ironmesh".to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some(SELF_SIGNED_SECRET_TYPE.into()),
                    data: Some(data),
                    ..Secret::default()
                };
                match secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        tracing::info!(
                            "CA: created a self-signed root in {NAMESPACE}/{SELF_SIGNED_SECRET}"
                        );
                        CaMaterial::SelfSigned { cert, key }
                    }
                    // Another replica was first: use its root.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        contended += 1;
                        continue;
                    }
                    // A control plane outside the cluster may start before `ironmesh install`.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        tracing::warn!(
                            "namespace {NAMESPACE} does not exist yet; waiting for it to keep \
                            the CA's root there (`ironmesh install` creates it)"
                        );
                        tokio::time::sleep(NAMESPACE_WAIT).await;
                        continue;
                    }
                    Err(source) => {
                        return Err(CaSecretError::Api {
                            action: "create",
                            name: SELF_SIGNED_SECRET,
                            source,
                        });
                    }
                }
            }
        };
        return material.load(ca_dir, options);
    }
    Err(CaSecretError::Contended)
}

async fn get_secret(
    secrets: &Api<Secret>,
    name: &'static str,
) -> Result<Option<Secret>, CaSecretError> {
    secrets
        .get_opt(name)
        .await
        .map_err(|source| CaSecretError::Api {
            action: "read",
            name,
            source,
        })
}

/// What the CA's Secrets say now: `cacerts` when it exists, else `istio-ca-secret`; `None` when
/// neither does (the CA keeps its keys: a restart would make a new root).
async fn current_material(secrets: &Api<Secret>) -> Result<Option<CaMaterial>, CaSecretError> {
    if let Some(plugin) = get_secret(secrets, PLUGIN_SECRET).await? {
        return CaMaterial::plug_in(&plugin).map(Some);
    }
    match get_secret(secrets, SELF_SIGNED_SECRET).await? {
        Some(secret) => CaMaterial::self_signed(&secret).map(Some),
        None => Ok(None),
    }
}

/// Keeps `ca` on the keys of `istio-system`'s CA Secrets until `shutdown`, as istiod reloads a
/// plugged-in CA whose files changed: it watches `cacerts` and `istio-ca-secret`, and when the keys
/// they give differ from the CA's (a new or changed `cacerts`, a replaced `istio-ca-secret`), loads
/// them into `ca_dir` and moves `ca` to them ([`CertificateAuthority::take_over`]), so new certificates
/// come from the new key and a changed trust bundle reaches the proxies with their configuration and
/// every namespace's `istio-ca-root-cert`. An update that cannot be used (a missing key, a key that
/// does not fit its certificate, a certificate that is no CA) is refused with a warning that says
/// what is wrong, and the CA keeps its last good keys; so does a deleted `cacerts` (a restart would
/// fall back to `istio-ca-secret`).
pub async fn keep_ca_current(
    client: kube::Client,
    ca: Arc<CertificateAuthority>,
    ca_dir: PathBuf,
    shutdown: CancellationToken,
) {
    use kube::runtime::{WatchStreamExt as _, watcher};
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let watch = |name: &str| {
        watcher(
            secrets.clone(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff()
    };
    let events = futures::stream::select(watch(PLUGIN_SECRET), watch(SELF_SIGNED_SECRET));
    let mut events = std::pin::pin!(events);
    // The material the CA runs on, once known; at first, the Secrets' material if the CA's
    // signing certificate is theirs (what `load_ca` loaded).
    let mut applied: Option<CaMaterial> = None;
    // The refused material, so that a watch's relist does not repeat the warning.
    let mut refused: Option<CaMaterial> = None;
    let mut refused_message: Option<String> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot watch the CA's Secrets in {NAMESPACE}; retrying");
                continue;
            }
            // Mid-relist: decide once the list is complete.
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
            Some(Ok(_)) => {}
        }
        let material = match current_material(&secrets).await {
            Ok(Some(material)) => material,
            Ok(None) => continue,
            Err(error @ CaSecretError::Api { .. }) => {
                tracing::warn!(%error, "cannot read the CA's Secrets; the CA keeps its keys");
                continue;
            }
            Err(error) => {
                let message =
                    format!("CA update refused; the CA keeps its last good keys: {error}");
                if refused_message.as_deref() != Some(message.as_str()) {
                    tracing::warn!("{message}");
                    let secret = match &error {
                        CaSecretError::MissingKey { name, .. }
                        | CaSecretError::Unusable { name, .. } => name,
                        _ => PLUGIN_SECRET,
                    };
                    record_event(&secrets, secret, "Warning", CA_REFUSED, &message).await;
                    refused_message = Some(message);
                }
                continue;
            }
        };
        refused_message = None;
        if applied.is_none() && material.cert().trim() == ca.signing_certificate_pem().trim() {
            applied = Some(material.clone());
        }
        if applied.as_ref() == Some(&material) || refused.as_ref() == Some(&material) {
            continue;
        }
        match material.load(&ca_dir, ca.options().clone()) {
            Ok(fresh) => {
                ca.take_over(fresh);
                let message = format!(
                    "CA reloaded from Secret {NAMESPACE}/{}: new certificates come from its key \
                     (root {}), and the proxies get its trust bundle",
                    material.secret(),
                    ca.root_fingerprint()
                );
                tracing::info!("{message}");
                record_event(&secrets, material.secret(), "Normal", CA_RELOADED, &message).await;
                applied = Some(material);
                refused = None;
            }
            Err(error) => {
                let message =
                    format!("CA update refused; the CA keeps its last good keys: {error}");
                tracing::warn!("{message}");
                record_event(&secrets, material.secret(), "Warning", CA_REFUSED, &message).await;
                refused = Some(material);
            }
        }
    }
}

/// The reason of the Event on a CA Secret whose keys the CA took.
pub const CA_RELOADED: &str = "CAReloaded";
/// The reason of the Event on a CA Secret whose keys were refused (the CA kept its last good keys).
pub const CA_REFUSED: &str = "CAUpdateRefused";

/// Who the CA's Events say reported them.
const EVENT_COMPONENT: &str = "ironmesh-control-plane";

/// An Event on Secret `secret` of [`NAMESPACE`] (what `kubectl describe secret` and `kubectl get
/// events` show); one that cannot be written is only logged: the log says the same.
async fn record_event(
    secrets: &Api<Secret>,
    secret: &str,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{secret}."), "namespace": NAMESPACE},
        "involvedObject": {"apiVersion": "v1", "kind": "Secret", "namespace": NAMESPACE, "name": secret},
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let event: k8s_openapi::api::core::v1::Event = match serde_json::from_value(event) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "cannot build the Event for Secret {NAMESPACE}/{secret}");
            return;
        }
    };
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(secrets.clone().into_client(), NAMESPACE);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, "cannot record an Event on Secret {NAMESPACE}/{secret}; check that the \
            control plane may create events in {NAMESPACE} (ironmesh install grants it)");
    }
}

/// How often a control plane started before its namespace exists looks again.
const NAMESPACE_WAIT: Duration = Duration::from_secs(1);

/// How often every namespace's ConfigMap is written again even without a change (one edited or
/// deleted by hand comes back).
const ROOT_RESYNC: Duration = Duration::from_secs(300);

/// Keeps `istio-ca-root-cert` (the mesh's roots, `bundle`) in every namespace `source` watches, until
/// `shutdown`: new namespaces get it, and all are rewritten when the roots change.
pub async fn keep_root_configmaps(
    client: kube::Client,
    mut bundle: watch::Receiver<Vec<String>>,
    source: Arc<KubeSource>,
    shutdown: CancellationToken,
) {
    let mut changes = source.changes();
    // namespace → the roots last written there.
    let mut written: HashMap<String, String> = HashMap::new();
    let mut resync = tokio::time::interval(ROOT_RESYNC);
    resync.tick().await;
    let params = PatchParams::apply(crate::install::FIELD_MANAGER).force();
    loop {
        let roots = bundle.borrow_and_update().concat();
        let namespaces = source.namespaces();
        written.retain(|namespace, _| namespaces.contains(namespace));
        for namespace in namespaces {
            if written.get(&namespace) == Some(&roots) {
                continue;
            }
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let configmap = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": ROOT_CONFIGMAP, "namespace": namespace,
                             "labels": {"istio.io/config": "true", "app.kubernetes.io/part-of": "ironmesh"}},
                "data": {ROOT_CONFIGMAP_KEY: roots},
            });
            match api
                .patch(ROOT_CONFIGMAP, &params, &Patch::Apply(&configmap))
                .await
            {
                Ok(_) => {
                    tracing::debug!(%namespace, "wrote {ROOT_CONFIGMAP}");
                    written.insert(namespace, roots.clone());
                }
                // A namespace being deleted refuses new objects; it is retried at the next change.
                Err(error) => {
                    tracing::warn!(%namespace, %error, "cannot write ConfigMap {ROOT_CONFIGMAP}; retrying at the next change")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = bundle.changed() => if changed.is_err() { return },
            next = changes.next() => if next.is_none() { return },
            _ = resync.tick() => written.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    fn status(extra: &[(&str, &str)], audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:foo:sleep".into()),
                uid: Some("sa-uid".into()),
                groups: None,
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                        .collect(),
                ),
            }),
            error: None,
        }
    }

    #[test]
    fn a_cacerts_secret_whose_root_cert_pem_holds_two_roots_trusts_both() {
        ironmesh_identity::install_crypto_provider();
        let (cert, key) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
        let (next_root, _) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
        let data = |entries: &[(&str, &str)]| Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let roots = format!("{cert}{next_root}");
        let material = CaMaterial::plug_in(&data(&[
            (CA_CERT, &cert),
            (CA_KEY, &key),
            (ROOT_CERT, &roots),
        ]))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = material
            .load(dir.path(), CaOptions::new("cluster.local"))
            .unwrap();
        assert_eq!(
            ca.trust_bundle_pems(),
            vec![cert.clone(), next_root.clone()]
        );
        // A root-cert.pem the CA does not chain to is refused, naming the Secret.
        let stranger = CaMaterial::plug_in(&data(&[
            (CA_CERT, &cert),
            (CA_KEY, &key),
            (ROOT_CERT, &next_root),
        ]))
        .unwrap()
        .load(&dir.path().join("other"), CaOptions::new("cluster.local"))
        .unwrap_err()
        .to_string();
        assert!(stranger.contains(PLUGIN_SECRET), "{stranger}");
        assert!(stranger.contains("root-cert.pem"), "{stranger}");
    }

    #[test]
    fn a_bound_review_names_the_pod_and_its_service_account() {
        let claims = claims_of(
            CA_TOKEN_AUDIENCE,
            status(
                &[(EXTRA_POD_NAME, "sleep-1"), (EXTRA_POD_UID, "u1")],
                &[CA_TOKEN_AUDIENCE],
            ),
        )
        .unwrap();
        assert_eq!(
            claims,
            PodClaims {
                namespace: "foo".into(),
                service_account: "sleep".into(),
                pod: "sleep-1".into(),
                pod_uid: "u1".into(),
            }
        );
    }

    #[test]
    fn unbound_other_audience_and_unauthenticated_reviews_are_refused() {
        let unbound = claims_of(CA_TOKEN_AUDIENCE, status(&[], &[CA_TOKEN_AUDIENCE])).unwrap_err();
        assert!(
            unbound.to_string().contains("not bound to a pod"),
            "{unbound}"
        );
        let bound = [(EXTRA_POD_NAME, "sleep-1"), (EXTRA_POD_UID, "u1")];
        let audience = claims_of(CA_TOKEN_AUDIENCE, status(&bound, &["api"])).unwrap_err();
        assert!(
            audience.to_string().contains("audience istio-ca"),
            "{audience}"
        );
        let mut refused = status(&bound, &[CA_TOKEN_AUDIENCE]);
        refused.authenticated = Some(false);
        refused.error = Some("token has been invalidated".into());
        let refused = claims_of(CA_TOKEN_AUDIENCE, refused).unwrap_err();
        assert!(
            refused.to_string().contains("token has been invalidated"),
            "{refused}"
        );
    }
}

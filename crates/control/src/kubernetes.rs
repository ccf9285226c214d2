//! The control plane on Kubernetes: the same controllers' loop, policy engine and per-sidecar
//! configuration as on the local runtime, reading from a Kubernetes API server ([`KubeSource`]) instead
//! of the embedded store, and serving the validating webhook and the seed's `extensions/v1beta1`
//! Deployments as an aggregated API ([`ironmesh_kube::extensions`]). Kubernetes runs the pods, allocates Service
//! addresses and rolls out Deployments, so the local runtime's kubelet, Service and Deployment
//! controllers do not run here. The same HTTPS server answers the API server's admission reviews: the
//! validating webhook and the sidecar injector (`ironmesh_kube::inject`). Stored Istio resources get an `Accepted` condition saying whether they are
//! valid (those stored before the webhook was in place may not be).
//!
//! Identity as istiod's: the CA's keys come from `istio-system`'s Secrets (`cacerts`, else
//! `istio-ca-secret`, shared by replicas and restarts), the CA and the configuration stream are served
//! over TLS on TCP 15012 with a serving certificate of that CA for the control plane's names, proxies
//! prove who they are with their pod's projected service-account token (audience `istio-ca`, checked by
//! TokenReview, bound to the pod), and every namespace gets the roots in the ConfigMap
//! `istio-ca-root-cert` to verify the control plane with (`ironmesh_kube::identity`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use ironmesh_home::Home;
use ironmesh_identity::CredentialAuthority;
use ironmesh_identity::serving::ServingCertificate;
use ironmesh_kube::KubeSource;
use ironmesh_kube::identity::{self, TokenReviewer};
use ironmesh_kube::webhook;
use ironmesh_store::StoreError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::source::{ResourceSource, Snapshot, SourcePods};
use crate::{ControlError, controller, grpc, options, sync};

impl ResourceSource for KubeSource {
    fn list(&self) -> Result<Snapshot, StoreError> {
        let (version, objects) = KubeSource::list(self);
        Ok(Snapshot { version, objects })
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        KubeSource::changes(self)
    }

    /// One read of the watched pods instead of a whole listing.
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(KubeSource::pod_uid(self, namespace, name))
    }
}

/// How often the wait for the first listing of every kind says what it still waits for.
const SYNC_REPORT: Duration = Duration::from_secs(10);

/// How the control plane runs against a cluster.
#[derive(Clone, Debug)]
pub struct KubernetesOptions {
    /// The admin's kubeconfig; `None` in a pod (its service account).
    pub kubeconfig: Option<PathBuf>,
    /// Where the webhook listens (istiod's 15017 on every address by default).
    pub webhook_address: SocketAddr,
    /// Where proxies get certificates and configuration over TLS (istiod's 15012 on every address).
    pub xds_address: SocketAddr,
    /// The names the API server and the proxies reach the control plane by (DNS names or IPs of both
    /// serving certificates: the webhook's and the 15012 listener's).
    pub webhook_names: Vec<String>,
    /// Where the `extensions/v1beta1` aggregated API listens (0.0.0.0:15018 by default).
    pub extensions_address: SocketAddr,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        KubernetesOptions {
            kubeconfig: None,
            webhook_address: SocketAddr::from(([0, 0, 0, 0], ironmesh_kube::install::WEBHOOK_PORT)),
            xds_address: SocketAddr::from(([0, 0, 0, 0], ironmesh_kube::install::XDS_TLS_PORT)),
            webhook_names: vec![
                "istiod.istio-system.svc".into(),
                "istiod.istio-system.svc.cluster.local".into(),
            ],
            extensions_address: SocketAddr::from(([0, 0, 0, 0], ironmesh_kube::extensions::PORT)),
        }
    }
}

/// Why the control plane could not run on the cluster; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Client(#[from] ironmesh_kube::ClientError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error(transparent)]
    Extensions(#[from] ironmesh_kube::extensions::ExtensionsError),
    #[error(
        "cannot listen for the extensions/v1beta1 API on {address}: {source}; pick a free port with \
         --extensions-address"
    )]
    ListenExtensions {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen for the webhook on {address}: {source}; pick a free port with --webhook-address"
    )]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen for proxies on {address}: {source}; pick a free port with --xds-address"
    )]
    ListenXds {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    CaSecret(#[from] ironmesh_kube::identity::CaSecretError),
}

/// Runs the control plane against the cluster until `shutdown`: watches, per-sidecar configuration
/// pushed through the hub, and the validating and injecting webhooks.
pub async fn run(
    home: &Path,
    options: &KubernetesOptions,
    shutdown: CancellationToken,
) -> Result<(), KubernetesError> {
    ironmesh_identity::install_crypto_provider();
    let layout = Home::new(home);
    layout.create_dirs().map_err(ControlError::from)?;
    let mesh = options::load(&layout).map_err(ControlError::from)?;
    let client = ironmesh_kube::client(options.kubeconfig.as_deref()).await?;

    let extensions_server = spawn_extensions(&client, options, &shutdown).await?;

    let kube_source = Arc::new(KubeSource::start(client.clone()));
    let ca =
        Arc::new(identity::load_ca(&client, &layout.ca_dir(), crate::ca_options(&mesh)).await?);
    // Only for the controllers' context: on Kubernetes no pod credential is issued (pods have their
    // service-account tokens).
    let credentials = Arc::new(
        CredentialAuthority::load_or_create(&layout.ca_dir()).map_err(ControlError::from)?,
    );
    // One serving certificate of the mesh CA for the proxies' endpoint (15012) and the webhooks: every
    // replica reads that CA from istio-system, so every replica publishes the same caBundle (the mesh
    // root) into the webhook configurations instead of each its own, which left the API server
    // distrusting all but the last replica to start.
    let serving = ServingCertificate::issue(ca.clone(), options.webhook_names.clone())
        .map_err(ControlError::from)?;
    let renewer = tokio::spawn(
        serving
            .clone()
            .keep_renewed(shutdown.clone().cancelled_owned()),
    );
    let mut webhook_tls = serving.server_config();
    // The webhooks are served over HTTP/1.1 (the API server's admission client speaks either).
    webhook_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind(options.webhook_address)
        .await
        .map_err(|source| KubernetesError::Listen {
            address: options.webhook_address,
            source,
        })?;
    let webhook_server = tokio::spawn(webhook::serve(
        listener,
        Arc::new(webhook_tls),
        shutdown.clone(),
    ));
    // Serving before publishing: once the configuration says Fail, the API server needs us up.
    let publisher = tokio::spawn(keep_webhook_ca_bundle(
        client.clone(),
        ca.watch_trust_bundle(),
        shutdown.clone(),
    ));
    // A changed `cacerts` (or `istio-ca-secret`) moves the CA to its keys without a restart; the
    // trust bundle's watchers above and below follow.
    let ca_keeper = tokio::spawn(identity::keep_ca_current(
        client.clone(),
        ca.clone(),
        layout.ca_dir(),
        shutdown.clone(),
    ));

    let xds_listener = tokio::net::TcpListener::bind(options.xds_address)
        .await
        .map_err(|source| KubernetesError::ListenXds {
            address: options.xds_address,
            source,
        })?;
    // The controllers read the cluster through the resource source, and the reviewer looks pods up
    // through it too, as the local runtime's credential checks do.
    let source: Arc<dyn ResourceSource> = kube_source.clone();
    let reviewer = Arc::new(TokenReviewer::new(
        client.clone(),
        Arc::new(SourcePods(source.clone())),
    ));
    let (hub, grpc_server) = grpc::spawn_tls(
        xds_listener,
        ca.clone(),
        serving,
        reviewer,
        shutdown.clone(),
    );
    let root_configmaps = tokio::spawn(identity::keep_root_configmaps(
        client.clone(),
        ca.watch_trust_bundle(),
        kube_source.clone(),
        shutdown.clone(),
    ));
    // No configuration before every kind is listed once: a sidecar configured while the
    // AuthorizationPolicies were still unknown would allow what they deny.
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            synced = tokio::time::timeout(SYNC_REPORT, kube_source.wait_synced()) => match synced {
                Ok(()) => break,
                Err(_) => tracing::warn!(
                    waiting_for = ?kube_source.unsynced(),
                    "not all kinds are listed yet, so no sidecar is configured; for Istio's kinds run \
                     `ironmesh install` (their CRDs), else check the control plane's RBAC"
                ),
            },
        }
    }
    tracing::info!(webhook = %options.webhook_address, xds = %options.xds_address, root = %ca.root_fingerprint(),
        "control plane on Kubernetes: watching the cluster");
    let statuses = {
        let (source, shutdown) = (kube_source.clone(), shutdown.clone());
        tokio::spawn(async move { ironmesh_kube::status::report(client, &source, shutdown).await })
    };
    // The same loop as on the local runtime; without a store or a cluster it only computes and pushes
    // the sidecars' configuration.
    controller::run(controller::Context {
        home: home.to_path_buf(),
        source,
        store: None,
        cluster: None,
        credentials,
        hub,
        mesh,
        shutdown: shutdown.clone(),
        sync: Arc::new(sync::ConfigSync::default()),
        trust_bundle: ca.watch_trust_bundle(),
    })
    .await;
    shutdown.cancel();
    let _ = webhook_server.await;
    let _ = publisher.await;
    let _ = ca_keeper.await;
    if let Some((server, keeper)) = extensions_server {
        let _ = server.await;
        let _ = keeper.await;
    }
    let _ = statuses.await;
    let _ = root_configmaps.await;
    let _ = renewer.await;
    match grpc_server.await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ControlError::Grpc(e.to_string()).into()),
    }
}

/// Keeps the mesh's roots (`bundle`) in the webhook configurations' `caBundle` until `shutdown`, again
/// whenever they change (a reloaded CA): the webhooks' serving certificate is renewed from the new key,
/// which the API server trusts only through the new bundle.
async fn keep_webhook_ca_bundle(
    client: ironmesh_kube::kube::Client,
    mut bundle: tokio::sync::watch::Receiver<Vec<String>>,
    shutdown: CancellationToken,
) {
    loop {
        let roots = bundle.borrow_and_update().concat();
        let current = shutdown.child_token();
        let publisher = tokio::spawn(webhook::keep_ca_bundle(
            client.clone(),
            roots,
            current.clone(),
        ));
        let changed = tokio::select! {
            _ = shutdown.cancelled() => false,
            changed = bundle.changed() => changed.is_ok(),
        };
        current.cancel();
        let _ = publisher.await;
        if !changed {
            return;
        }
    }
}

/// Serves the `extensions/v1beta1` aggregated API and keeps its CA in the APIService. An API server
/// without the aggregation layer only loses that API: warned, not fatal.
async fn spawn_extensions(
    client: &ironmesh_kube::kube::Client,
    options: &KubernetesOptions,
    shutdown: &CancellationToken,
) -> Result<Option<(JoinHandle<()>, JoinHandle<()>)>, KubernetesError> {
    use ironmesh_kube::extensions::{self, FrontProxy};
    let front = match FrontProxy::load(client).await {
        Ok(front) => front,
        Err(error) => {
            tracing::warn!(%error, "extensions/v1beta1 Deployments are not served");
            return Ok(None);
        }
    };
    let cert = extensions::serving_cert()?;
    let tls = front.server_config(&cert)?;
    let listener = tokio::net::TcpListener::bind(options.extensions_address)
        .await
        .map_err(|source| KubernetesError::ListenExtensions {
            address: options.extensions_address,
            source,
        })?;
    let server = tokio::spawn(extensions::serve(
        listener,
        tls,
        front,
        client.clone(),
        shutdown.clone(),
    ));
    let keeper = tokio::spawn(extensions::keep_ca_bundle(
        client.clone(),
        cert.ca_pem,
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    Ok(Some((server, keeper)))
}

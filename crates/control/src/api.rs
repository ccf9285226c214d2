//! The control plane's routes on the CLI API socket ([`ironmesh_store::Routes`]): what it owns and the
//! CLI only asks for. The CA's files are written here alone, so a CLI far from the cluster (or without
//! access to `ca/`) rotates roots the same way as one next to it.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use ironmesh_api::mesh::MeshOptions;
use ironmesh_identity::CertificateAuthority;
use ironmesh_proto::ConfigHub;
use ironmesh_runtime::Cluster;
use ironmesh_store::wire::{AuthzQuery, CaRoots, Explanation, LogsQuery, PodQuery, TlsCheckQuery};
use ironmesh_store::{ObjectKey, Reason, Reply, RouteError, Routes, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::explain;
use crate::source::ResourceSource;
use crate::sync::ConfigSync;

/// What the routes answer from: the running control plane's own parts.
pub(crate) struct ControlRoutes {
    pub home: ironmesh_home::Home,
    /// What the explanations compute from: the controllers' own source.
    pub source: Arc<dyn ResourceSource>,
    pub store: Arc<Store>,
    /// The local runtime (`None` with `IRONMESH_NO_RUNTIME`): the sidecars to ask.
    pub cluster: Option<Arc<Cluster>>,
    pub ca: Arc<CertificateAuthority>,
    pub mesh: MeshOptions,
    pub hub: ConfigHub,
    pub sync: Arc<ConfigSync>,
}

type Answer = BoxFuture<'static, Result<Reply, RouteError>>;

impl Routes for ControlRoutes {
    fn route(&self, path: &str, body: Bytes) -> Option<Answer> {
        Some(match path {
            "/v1/proxy-status" => ready(json(&self.sync.report(&self.hub))),
            "/v1/mesh" => ready(json(&self.mesh)),
            "/v1/ca/root" => ready(json(&self.roots())),
            "/v1/ca/rotate-root" => self.change_ca(CertificateAuthority::rotate_root),
            "/v1/ca/retire-root" => self.change_ca(CertificateAuthority::retire_root),
            "/v1/explain/authz" => self.explain(body, |objects, mesh, query: AuthzQuery| {
                explain::authz(objects, mesh, &query).map(|text| Explanation { text, note: None })
            }),
            "/v1/explain/tls-check" => self.explain(body, |objects, mesh, query: TlsCheckQuery| {
                explain::tls_check(objects, mesh, &query)
            }),
            "/v1/proxy-config/cluster" => self.explain(body, |objects, mesh, query: PodQuery| {
                explain::proxy_clusters(objects, mesh, &query)
            }),
            "/v1/proxy-config/secret" => self.proxy_secret(body),
            "/v1/logs" => self.logs(body),
            _ => return None,
        })
    }
}

impl ControlRoutes {
    fn roots(&self) -> CaRoots {
        CaRoots {
            current_root_fingerprint: self.ca.root_fingerprint(),
            trust_bundle: self.ca.trust_bundle_pems(),
            workload_cert_ttl_seconds: self.mesh.workload_cert_ttl().as_secs(),
        }
    }

    /// Runs a change of the CA's roots (key generation and file writes) off the async workers, then
    /// answers the roots it left.
    fn change_ca(
        &self,
        change: fn(&CertificateAuthority) -> Result<(), ironmesh_identity::CaError>,
    ) -> Answer {
        let ca = self.ca.clone();
        let ttl = self.mesh.workload_cert_ttl().as_secs();
        async move {
            let changed = tokio::task::spawn_blocking(move || change(&ca).map(|()| ca))
                .await
                .map_err(|e| RouteError::new(Reason::InternalError, e.to_string()))?;
            // The CA's own message says what to do (a plug-in CA rotates at its source; nothing to
            // retire); it is the caller's request that cannot be done.
            let ca = changed.map_err(|e| RouteError::new(Reason::BadRequest, e.to_string()))?;
            json(&CaRoots {
                current_root_fingerprint: ca.root_fingerprint(),
                trust_bundle: ca.trust_bundle_pems(),
                workload_cert_ttl_seconds: ttl,
            })
        }
        .boxed()
    }

    /// Parses the query, then computes the explanation from every stored object off the async workers
    /// (the store's reads block).
    fn explain<Q, T>(
        &self,
        body: Bytes,
        compute: impl FnOnce(&[ironmesh_api::Object], &MeshOptions, Q) -> Result<T, RouteError>
        + Send
        + 'static,
    ) -> Answer
    where
        Q: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let (source, mesh) = (self.source.clone(), self.mesh.clone());
        async move {
            let query: Q = parse(&body)?;
            let explanation = tokio::task::spawn_blocking(move || {
                let objects = source
                    .list()
                    .map_err(|e| RouteError::new(e.reason(), e.to_string()))?
                    .objects;
                compute(&objects, &mesh, query)
            })
            .await
            .map_err(|e| RouteError::new(Reason::InternalError, e.to_string()))??;
            json(&explanation)
        }
        .boxed()
    }

    /// Asks the pod's sidecar (in the pod's network namespace) for the certificates it holds.
    fn proxy_secret(&self, body: Bytes) -> Answer {
        let (store, cluster) = (self.store.clone(), self.cluster.clone());
        async move {
            let query: PodQuery = parse(&body)?;
            let secret = tokio::task::spawn_blocking(move || {
                let key = ObjectKey::new("pods", Some(&query.namespace), &query.pod);
                let pod = match store.get(&key) {
                    Ok(pod) => Some(pod),
                    Err(e) if e.reason() == Reason::NotFound => None,
                    Err(e) => return Err(RouteError::new(e.reason(), e.to_string())),
                };
                explain::proxy_secret(cluster.as_deref(), pod, &query)
            })
            .await
            .map_err(|e| RouteError::new(Reason::InternalError, e.to_string()))??;
            json(&secret)
        }
        .boxed()
    }

    /// A container's log as it is written; followed on a thread of its own (a follow lasts as long as the
    /// client stays), which stops once the client went away.
    fn logs(&self, body: Bytes) -> Answer {
        let home = self.home.clone();
        async move {
            let query: LogsQuery = parse(&body)?;
            let dir = home.pod_dir(&query.namespace, &query.pod);
            let path = ironmesh_runtime::log_path(&dir, &query.container);
            // Refused now, while the answer can still be an error.
            if let Err(source) = std::fs::metadata(&path) {
                let error = ironmesh_runtime::RuntimeError::Io {
                    action: "open the log",
                    path,
                    source,
                };
                return Err(RouteError::new(Reason::BadRequest, error.to_string()));
            }
            let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
            std::thread::spawn(move || {
                let mut out = ChannelWriter(sender.clone());
                let keep_following = || !sender.is_closed();
                if let Err(error) = ironmesh_runtime::logs(
                    &dir,
                    &query.container,
                    query.follow,
                    &mut out,
                    &keep_following,
                ) {
                    tracing::debug!(%error, "log copy ended");
                }
            });
            Ok(Reply::Stream(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(receiver),
            )))
        }
        .boxed()
    }
}

/// Writes into the channel a streamed answer reads from; fails once the client went away.
struct ChannelWriter(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn parse<Q: DeserializeOwned>(body: &[u8]) -> Result<Q, RouteError> {
    serde_json::from_slice(body)
        .map_err(|e| RouteError::new(Reason::BadRequest, format!("bad request body: {e}")))
}

fn json<T: Serialize>(value: &T) -> Result<Reply, RouteError> {
    serde_json::to_value(value)
        .map(Reply::Json)
        .map_err(|e| RouteError::new(Reason::InternalError, e.to_string()))
}

fn ready(answer: Result<Reply, RouteError>) -> Answer {
    futures::future::ready(answer).boxed()
}

//! The controllers' loop: on every change of the resources (debounced), read one snapshot of all objects
//! from the [`ResourceSource`] and converge everything to it, in dependency order: Service addresses, Deployment pods, running pods, NAT and names,
//! sidecar configurations. Level-triggered: each pass looks at the whole state, so a missed event or a
//! restart never leaves anything behind.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ironmesh_api::Object;
use ironmesh_identity::CredentialAuthority;
use ironmesh_proto::{ConfigHub, content_version};
use ironmesh_runtime::Cluster;
use ironmesh_store::{ApplyItem, ApplyOptions, ObjectKey, Store, WriteMode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kubelet::Kubelet;
use crate::objects::PodView;
use crate::options::MeshOptions;
use crate::proxy_config::ClusterSnapshot;
use crate::source::ResourceSource;
use crate::sync::ConfigSync;
use crate::{deployments, services};

/// Wait after a change so that a burst (an apply of many documents, status updates) is one pass.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// Pod credentials are rewritten this often.
const TOKEN_REFRESH: Duration = Duration::from_secs(3600);

/// What the controllers work with.
pub struct Context {
    pub home: PathBuf,
    /// Where the resources the controllers compute from are read.
    pub source: Arc<dyn ResourceSource>,
    /// Where the controllers write what they own (Service addresses, Deployment pods); `None` on
    /// Kubernetes, whose own controllers do that (then only the sidecars' configuration is computed).
    pub store: Option<Arc<Store>>,
    /// `None` when the local runtime is off (no pods run).
    pub cluster: Option<Arc<Cluster>>,
    pub credentials: Arc<CredentialAuthority>,
    pub hub: ConfigHub,
    pub mesh: MeshOptions,
    pub shutdown: CancellationToken,
    /// What each pass published, for `ironmesh wait`.
    pub sync: Arc<ConfigSync>,
    /// The CA's trust bundle ([`ironmesh_identity::CertificateAuthority::watch_trust_bundle`]), pushed with
    /// every configuration; a change is a pass of its own, so a root rotation reaches the proxies at once.
    pub trust_bundle: watch::Receiver<Vec<String>>,
}

fn snapshot(source: &dyn ResourceSource) -> Vec<Object> {
    snapshot_at(source).1
}

/// Runs store calls on the blocking pool: redb fsyncs on every commit and reads the file, which must not
/// stall the async workers that serve the proxies' streams.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    call: impl FnOnce(&Store) -> T + Send + 'static,
) -> T {
    let store = store.clone();
    on_blocking_pool(move || call(&store)).await
}

/// Runs `call` on the blocking pool (the source's reads may block as the store's do).
async fn on_blocking_pool<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call)
        .await
        // A panic in the call is the controllers' own bug: surface it where it would have happened.
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
}

/// The objects and the version they were read at (`None` when the source could not be read).
fn snapshot_at(source: &dyn ResourceSource) -> (Option<u64>, Vec<Object>) {
    match source.list() {
        Ok(snapshot) => (Some(snapshot.version), snapshot.objects),
        Err(error) => {
            tracing::error!(%error, "cannot read the resources; retrying on the next change");
            (None, Vec::new())
        }
    }
}

fn write(store: &Store, object: &Object, mode: WriteMode, why: &str) {
    let item = ApplyItem {
        object: object.to_value(),
        origin: why.to_owned(),
    };
    if let Err(error) = store.apply(
        &[item],
        &ApplyOptions {
            namespace: None,
            mode,
        },
    ) {
        tracing::warn!(object = %crate::objects::key(object), %error, "{why}: write refused");
    }
}

struct Loop {
    ctx: Context,
    kubelet: Option<Kubelet>,
    applied_network: Option<services::Desired>,
    configured_proxies: BTreeSet<String>,
}

impl Loop {
    /// The local runtime's controllers that write: Service addresses and the pods of Deployments.
    async fn own_resources(store: &Arc<Store>, objects: &[Object]) {
        let addresses = services::allocate_vips(objects);
        let plan = deployments::plan(objects, rand::random::<u64>);
        blocking(store, move |store| {
            for (service, ip) in addresses {
                tracing::info!(service = %crate::objects::key(&service), %ip, "virtual IP assigned");
                write(store, &service, WriteMode::Apply, "service address");
            }
            for pod in &plan.create {
                write(store, pod, WriteMode::Create, "deployment controller");
            }
            for (namespace, name) in &plan.delete {
                if let Err(error) = store.delete(&ObjectKey::new("pods", Some(namespace), name)) {
                    tracing::debug!(pod = %name, %error, "pod already gone");
                }
            }
        })
        .await;
    }

    /// One pass; what it writes to the store comes back as events and triggers the next pass.
    async fn converge(&mut self) {
        let source = self.ctx.source.clone();
        let (read_at, objects) = on_blocking_pool(move || snapshot_at(source.as_ref())).await;

        if let Some(store) = &self.ctx.store {
            Self::own_resources(store, &objects).await;
        }

        if let Some(kubelet) = &mut self.kubelet {
            kubelet.reconcile(&objects).await;
        }

        let desired = services::desired(&objects);
        if let Some(cluster) = &self.ctx.cluster {
            let applied = self.applied_network.take().unwrap_or_default();
            // Endpoints change whenever a pod starts or stops; names only when Services do, and every
            // rewrite of the pods' hosts files races with their resolvers, so each is synced on its own.
            let (nat, names) = (
                (applied.nat != desired.nat).then(|| desired.nat.clone()),
                (applied.names != desired.names).then(|| desired.names.clone()),
            );
            let cluster = cluster.clone();
            let result = tokio::task::spawn_blocking(move || {
                if let Some(nat) = nat {
                    cluster.sync_services(&nat)?;
                }
                if let Some(names) = names {
                    cluster.sync_names(&names)?;
                }
                Ok::<(), ironmesh_runtime::RuntimeError>(())
            })
            .await;
            match result {
                Ok(Ok(())) => self.applied_network = Some(desired),
                Ok(Err(error)) => {
                    tracing::error!(%error, "cannot apply service NAT rules and names")
                }
                Err(error) => tracing::error!(%error, "service sync task failed"),
            }
        }

        let snapshot = ClusterSnapshot::new(&objects, &self.ctx.mesh);
        let trust_bundle = self.ctx.trust_bundle.borrow().clone();
        let mut proxies = BTreeSet::new();
        let mut published = Vec::new();
        for pod in objects.iter().filter(|o| o.kind == "Pod").map(PodView::of) {
            if pod.has_sidecar() {
                let id = ironmesh_identity::proxy_id(&pod.name, &pod.namespace);
                let mut config = snapshot.proxy_config(&pod);
                config.trust_bundle_pem = trust_bundle.clone();
                if config.version.is_empty() {
                    config.version = content_version(&config);
                }
                published.push((id.clone(), config.version.clone()));
                self.ctx.hub.publish(&id, config);
                proxies.insert(id);
            }
        }
        if let Some(read_at) = read_at {
            self.ctx.sync.record(read_at, published);
        }
        for gone in self.configured_proxies.difference(&proxies) {
            self.ctx.hub.remove(gone);
        }
        self.configured_proxies = proxies;
    }
}

/// Runs the controllers until `ctx.shutdown`, then stops every pod.
pub async fn run(ctx: Context) {
    let mut changes = ctx.source.changes();
    let kubelet = ctx
        .cluster
        .clone()
        .zip(ctx.store.clone())
        .map(|(cluster, store)| {
            Kubelet::new(
                &ctx.home,
                cluster,
                store,
                ctx.credentials.clone(),
                ctx.mesh.clone(),
            )
        });
    let shutdown = ctx.shutdown.clone();
    let mut roots = ctx.trust_bundle.clone();
    let mut state = Loop {
        ctx,
        kubelet,
        applied_network: None,
        configured_proxies: BTreeSet::new(),
    };
    let mut token_refresh = tokio::time::interval(TOKEN_REFRESH);
    token_refresh.tick().await;
    loop {
        state.converge().await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = token_refresh.tick() => {
                let source = state.ctx.source.clone();
                let objects = on_blocking_pool(move || snapshot(source.as_ref())).await;
                if let Some(kubelet) = &state.kubelet {
                    kubelet.refresh_tokens(&objects);
                }
                continue;
            }
            change = changes.next() => {
                if change.is_none() {
                    break;
                }
            }
            Ok(()) = roots.changed() => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        // Everything that arrived meanwhile is covered by the next pass's fresh snapshot.
        while let Some(Some(())) = changes.next().now_or_never() {}
    }
    if let Some(kubelet) = &mut state.kubelet {
        kubelet.stop_all().await;
    }
}

#[cfg(test)]
mod tests {
    use ironmesh_proto::{AuthError, HubOptions};
    use serde_json::json;

    use super::*;

    fn deployment(template_labels: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bar}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: sleep, namespace: bar}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: sleep}}}}\n  template:\n    metadata: {{labels: {{{template_labels}}}}}\n    \
             spec:\n      containers:\n      - {{name: sleep, image: pstauffer/curl, command: [/bin/sleep, 3650d]}}\n"
        )
    }

    /// The controllers' loop on a real store in a temp dir, without the runtime (no kubelet).
    fn controllers(dir: &std::path::Path) -> Loop {
        let store = Arc::new(Store::open(&dir.join("store.redb")).unwrap());
        Loop {
            ctx: Context {
                home: dir.to_path_buf(),
                source: store.clone(),
                store: Some(store),
                cluster: None,
                credentials: Arc::new(CredentialAuthority::from_secret(&[1; 32])),
                hub: ConfigHub::new(
                    Arc::new(|_: &str, _: &str| Err(AuthError("no proxies here".into()))),
                    HubOptions::default(),
                ),
                mesh: MeshOptions::default(),
                shutdown: CancellationToken::new(),
                sync: Arc::default(),
                trust_bundle: watch::channel(vec!["a root".to_owned()]).1,
            },
            kubelet: None,
            applied_network: None,
            configured_proxies: BTreeSet::new(),
        }
    }

    fn apply(store: &Store, yaml: &str) {
        let items = ironmesh_api::load_documents("t.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|l| ApplyItem {
                object: l.object.to_value(),
                origin: format!("t.yaml:{}", l.line),
            })
            .collect::<Vec<_>>();
        store.apply(&items, &ApplyOptions::default()).unwrap();
    }

    /// `(pod-template-hash, name, ready)` of every pod, sorted.
    fn pods(store: &Store) -> Vec<(String, String, bool)> {
        let mut pods: Vec<(String, String, bool)> = snapshot(store)
            .into_iter()
            .filter(|o| o.kind == "Pod")
            .map(|p| {
                let ready = p.body.get("status").is_some();
                (
                    p.metadata.labels[deployments::TEMPLATE_HASH_LABEL].clone(),
                    p.metadata.name.clone(),
                    ready,
                )
            })
            .collect();
        pods.sort();
        pods
    }

    /// What the kubelet writes once a pod's containers run (here at once, for every pod).
    fn kubelet_starts_every_pod(store: &Store) {
        for (_, name, ready) in pods(store) {
            if !ready {
                let status = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
                store
                    .update_status(&ObjectKey::new("pods", Some("bar"), &name), status)
                    .unwrap();
            }
        }
    }

    /// Runs passes (each followed by the kubelet's reports) until the pods stop changing; returns the
    /// pod count after every pass, so a test sees each step of a rollout.
    async fn settle(controllers: &mut Loop) -> Vec<usize> {
        let store = controllers.ctx.store.clone().unwrap();
        let mut counts = Vec::new();
        for _ in 0..20 {
            let before = pods(&store);
            controllers.converge().await;
            counts.push(pods(&store).len());
            kubelet_starts_every_pod(&store);
            if pods(&store) == before {
                return counts;
            }
        }
        panic!("the controllers did not settle in 20 passes: {counts:?}");
    }

    #[tokio::test]
    async fn relabelling_a_template_and_back_keeps_one_replica() {
        let dir = tempfile::tempdir().unwrap();
        let mut controllers = controllers(dir.path());
        let store = controllers.ctx.store.clone().unwrap();

        apply(&store, &deployment("app: sleep"));
        assert_eq!(settle(&mut controllers).await.last(), Some(&1));
        let first = pods(&store);

        apply(&store, &deployment("app: sleep, version: v2"));
        let counts = settle(&mut controllers).await;
        assert!(counts.iter().all(|&n| n <= 2), "maxSurge 1: {counts:?}");
        assert!(
            counts.contains(&2),
            "the old pod serves until the new one is ready: {counts:?}"
        );
        let second = pods(&store);
        assert_eq!(second.len(), 1, "{second:?}");
        assert_ne!(second[0].0, first[0].0, "a pod of the new template");

        apply(&store, &deployment("app: sleep"));
        let counts = settle(&mut controllers).await;
        assert!(counts.iter().all(|&n| n <= 2), "{counts:?}");
        let third = pods(&store);
        assert_eq!(third.len(), 1, "no extra replica stays: {third:?}");
        assert_eq!(third[0].0, first[0].0, "the first template's hash again");
        let pod = store
            .get(&ObjectKey::new("pods", Some("bar"), &third[0].1))
            .unwrap();
        assert_eq!(pod["metadata"]["labels"].get("version"), None);
    }

    #[tokio::test]
    async fn a_new_trust_bundle_is_published_to_every_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let mut controllers = controllers(dir.path());
        let (roots, receiver) = watch::channel(vec!["old root".to_owned()]);
        controllers.ctx.trust_bundle = receiver;
        let store = controllers.ctx.store.clone().unwrap();
        let with_sidecar = deployment("app: sleep").replace(
            "command: [/bin/sleep, 3650d]}\n",
            "command: [/bin/sleep, 3650d]}\n      - {name: ironmesh-proxy, image: ironmesh-proxy}\n",
        );
        apply(&store, &with_sidecar);
        settle(&mut controllers).await;
        let proxies = controllers.configured_proxies.clone();
        assert_eq!(proxies.len(), 1, "one pod with a sidecar");
        let id = proxies.first().unwrap();
        let before = controllers.ctx.hub.status(id).unwrap().published_version;

        roots.send_replace(vec!["new root".to_owned(), "old root".to_owned()]);
        controllers.converge().await;
        let after = controllers.ctx.hub.status(id).unwrap().published_version;
        assert_ne!(before, after, "the new bundle is a new configuration");
    }
}

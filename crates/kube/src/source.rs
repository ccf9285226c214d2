//! The resources of a Kubernetes cluster, kept current by watches: [`KubeSource`] runs one kube-runtime
//! reflector per kind the controllers read (Namespaces, Pods, Services, EndpointSlices, ServiceAccounts
//! and Istio's kinds from their CRDs) and hands out every cached object as an [`ironmesh_api::Object`].
//!
//! Objects are watched as [`DynamicObject`]s and converted by serde: Kubernetes objects are JSON-shaped,
//! like ours, so no field our engine reads is lost and no type of the api crate is duplicated here. The
//! translation is small: list items come without `apiVersion`/`kind` (filled from the watched kind) and
//! `metadata.managedFields` is dropped (bookkeeping of server-side apply that nothing reads). Endpoints
//! need none: the controllers derive a Service's endpoints from the running Pods it selects (with
//! `status.podIP`, the field the kubelet reports), as Kubernetes' EndpointSlice controller does; the
//! EndpointSlices are listed too, for whoever reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::stream::BoxStream;
use ironmesh_api::{KindInfo, Object};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::crds;

/// One watched kind: `(group, version, kind, plural)`.
type Watched = (&'static str, &'static str, &'static str, &'static str);

/// The built-in kinds the controllers read.
const BUILT_IN: &[Watched] = &[
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
];

/// Every kind a [`KubeSource`] watches, as kube-rs describes it. Istio's kinds are watched at their
/// storage version; the API server converts objects created under another version (their schemas are
/// the same), and the engine does not depend on the version.
pub fn watched_resources() -> Vec<ApiResource> {
    let istio = crds::istio_kinds().map(|kind: &KindInfo| {
        (
            kind.group,
            crds::storage_version(kind),
            kind.kind,
            kind.plural,
        )
    });
    BUILT_IN
        .iter()
        .copied()
        .chain(istio)
        .map(|(group, version, kind, plural)| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
        })
        .collect()
}

/// The cluster's resources, cached by watches. Dropping it stops the watches.
pub struct KubeSource {
    kinds: Vec<(ApiResource, Store<DynamicObject>)>,
    /// Bumped on every watch event: the version of what [`KubeSource::list`] returns.
    version: Arc<AtomicU64>,
    changes: broadcast::Sender<()>,
    watches: Vec<JoinHandle<()>>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

impl KubeSource {
    /// Starts a watch of every [`watched_resources`] kind across all namespaces. Must be called inside
    /// a tokio runtime. A kind whose CRD is missing is retried with backoff (and logged) until it exists.
    pub fn start(client: kube::Client) -> KubeSource {
        let version = Arc::new(AtomicU64::new(0));
        let (changes, _) = broadcast::channel(64);
        let mut kinds = Vec::new();
        let mut watches = Vec::new();
        for resource in watched_resources() {
            let writer = reflector::store::Writer::new(resource.clone());
            let reader = writer.as_reader();
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let events = reflector::reflector(
                writer,
                watcher(api, watcher::Config::default()).default_backoff(),
            );
            let (version, changes) = (version.clone(), changes.clone());
            let kind = resource.kind.clone();
            watches.push(tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                let mut failing = false;
                while let Some(event) = events.next().await {
                    match event {
                        Ok(_) => {
                            failing = false;
                            version.fetch_add(1, Ordering::SeqCst);
                            // Nobody listening is fine: the next list sees the change anyway.
                            let _ = changes.send(());
                        }
                        // One line per outage, not one per retry.
                        Err(error) if !failing => {
                            failing = true;
                            tracing::warn!(%kind, %error, "cannot watch {kind}; retrying (for Istio's kinds, \
                                run `ironmesh install` to create their CRDs)");
                        }
                        Err(_) => {}
                    }
                }
            }));
            kinds.push((resource, reader));
        }
        KubeSource {
            kinds,
            version,
            changes,
            watches,
        }
    }

    /// Waits until every watch has listed its kind once (a missing CRD keeps this waiting).
    pub async fn wait_synced(&self) {
        for (_, reader) in &self.kinds {
            // Err only when the writer is gone, i.e. the source is being dropped.
            let _ = reader.wait_until_ready().await;
        }
    }

    /// The kinds that have not been listed yet (a missing CRD, an API server that refuses the watch).
    pub fn unsynced(&self) -> Vec<String> {
        self.kinds
            .iter()
            .filter(|(_, reader)| reader.wait_until_ready().now_or_never().is_none())
            .map(|(resource, _)| format!("{}/{}", resource.api_version, resource.kind))
            .collect()
    }

    /// Every cached object and the version of the cache it was read at.
    pub fn list(&self) -> (u64, Vec<Object>) {
        let version = self.version.load(Ordering::SeqCst);
        let objects = self
            .kinds
            .iter()
            .flat_map(|(resource, reader)| {
                reader
                    .state()
                    .into_iter()
                    .filter_map(move |object| to_object(resource, &object))
            })
            .collect();
        (version, objects)
    }

    /// The cached objects of the kinds `wanted` picks, as [`KubeSource::list`] gives them; the other
    /// kinds' objects are not converted.
    pub fn list_kinds(&self, wanted: impl Fn(&ApiResource) -> bool) -> Vec<Object> {
        self.kinds
            .iter()
            .filter(|(resource, _)| wanted(resource))
            .flat_map(|(resource, reader)| {
                reader
                    .state()
                    .into_iter()
                    .filter_map(move |object| to_object(resource, &object))
            })
            .collect()
    }

    /// One item per watch event; subscribe before listing.
    pub fn changes(&self) -> BoxStream<'static, ()> {
        let receiver = self.changes.subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                // A lagged receiver missed events, which is a change too: the next list covers it.
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some(((), receiver)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    /// The names of the namespaces as last seen by the watch.
    pub fn namespaces(&self) -> Vec<String> {
        self.kinds
            .iter()
            .filter(|(r, _)| r.kind == "Namespace" && r.group.is_empty())
            .flat_map(|(_, reader)| reader.state())
            .filter_map(|namespace| namespace.metadata.name.clone())
            .collect()
    }

    /// The uid of a pod as last seen by the watch (`None`: no such pod), for the checks that bind a
    /// credential to its pod.
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        let (resource, pods) = self
            .kinds
            .iter()
            .find(|(r, _)| r.kind == "Pod" && r.group.is_empty())?;
        let key = ObjectRef::new_with(name, resource.clone()).within(namespace);
        pods.get(&key)?.metadata.uid.clone()
    }
}

use futures::FutureExt as _;

/// A watched object as the controllers read it.
pub fn to_object(resource: &ApiResource, object: &DynamicObject) -> Option<Object> {
    let mut value = serde_json::to_value(object).ok()?;
    let map = value.as_object_mut()?;
    map.entry("apiVersion")
        .or_insert_with(|| Value::String(resource.api_version.clone()));
    map.entry("kind")
        .or_insert_with(|| Value::String(resource.kind.clone()));
    if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_source_watches_the_kinds_the_controllers_read_and_istios_at_their_storage_version() {
        let watched: Vec<String> = watched_resources()
            .iter()
            .map(|r| format!("{} {} {}", r.api_version, r.kind, r.plural))
            .collect();
        assert_eq!(
            watched,
            [
                "v1 Namespace namespaces",
                "v1 Pod pods",
                "v1 Service services",
                "v1 ServiceAccount serviceaccounts",
                "discovery.k8s.io/v1 EndpointSlice endpointslices",
                "authentication.istio.io/v1alpha1 MeshPolicy meshpolicies",
                "authentication.istio.io/v1alpha1 Policy policies",
                "security.istio.io/v1beta1 PeerAuthentication peerauthentications",
                "security.istio.io/v1beta1 AuthorizationPolicy authorizationpolicies",
                "networking.istio.io/v1alpha3 DestinationRule destinationrules",
                "networking.istio.io/v1alpha3 Sidecar sidecars",
            ]
        );
    }

    #[test]
    fn a_list_item_gets_its_envelope_and_loses_managed_fields() {
        let pods = &watched_resources()[1];
        // As a list response carries it: no apiVersion or kind on the item.
        let item: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "sleep-1", "namespace": "foo", "uid": "u1",
                "labels": {"app": "sleep"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"containers": [{"name": "sleep", "image": "curl"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5"}
        }))
        .unwrap();
        let object = to_object(pods, &item).unwrap();
        assert_eq!(
            (object.api_version.as_str(), object.kind.as_str()),
            ("v1", "Pod")
        );
        assert_eq!(object.metadata.namespace.as_deref(), Some("foo"));
        assert_eq!(object.metadata.uid.as_deref(), Some("u1"));
        assert!(!object.metadata.extra.contains_key("managedFields"));
        assert_eq!(object.body["status"]["podIP"], "10.244.1.5");
    }
}

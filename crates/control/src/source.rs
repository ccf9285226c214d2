//! The one seam through which the controllers read the world: namespaces, pods, services, endpoints,
//! service accounts and Istio's kinds come from a [`ResourceSource`]. Today that is the embedded store
//! ([`Store`]); a Kubernetes API server is the next source, added without touching the policy engine or
//! the push, which only ever see a [`Snapshot`]. The credential checks of the CA and the configuration
//! stream look pods up through it too ([`SourcePods`]).

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use ironmesh_api::Object;
use ironmesh_identity::PodLookup;
use ironmesh_store::{LabelSelector, ObjectKey, Store, StoreError};

/// Every resource at one version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The source's version of this state (the store's resourceVersion).
    pub version: u64,
    pub objects: Vec<Object>,
}

/// Where the controllers read resources from. Level-triggered: `changes` only says that something
/// changed; the controllers then list again and converge to the whole new state.
pub trait ResourceSource: Send + Sync {
    /// Every resource, typed (documents that are not objects are skipped).
    fn list(&self) -> Result<Snapshot, StoreError>;

    /// One item per change (or burst of changes); ends when the source closes. A change made before
    /// the call may or may not be seen: subscribe first, then list.
    fn changes(&self) -> BoxStream<'static, ()>;

    /// The uid of the pod `namespace/name` as it is now (`Ok(None)`: there is none), for the credential
    /// checks of every CA and configuration request; a source that can look one pod up without listing
    /// everything does.
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, StoreError> {
        let pod = self.list()?.objects.into_iter().find(|object| {
            object.kind == "Pod"
                && object.metadata.namespace.as_deref() == Some(namespace)
                && object.metadata.name == name
        });
        Ok(pod.and_then(|pod| pod.metadata.uid))
    }
}

/// The pods of a source, as the credential checks ask for them (identity's [`PodLookup`]).
pub(crate) struct SourcePods(pub Arc<dyn ResourceSource>);

impl PodLookup for SourcePods {
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, String> {
        self.0
            .pod_uid(namespace, name)
            .map_err(|error| error.to_string())
    }
}

impl ResourceSource for Store {
    fn list(&self) -> Result<Snapshot, StoreError> {
        let list = Store::list(self, None, None, &LabelSelector::default())?;
        Ok(Snapshot {
            version: list.resource_version,
            objects: list
                .items
                .into_iter()
                .filter_map(|value| serde_json::from_value(value).ok())
                .collect(),
        })
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        // A lagged receiver missed events, which is a change too: the next list covers it.
        tokio_stream::wrappers::BroadcastStream::new(self.subscribe())
            .map(|_| ())
            .boxed()
    }

    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, StoreError> {
        // One read transaction of redb (no fsync): short enough for the request path.
        match self.get(&ObjectKey::new("pods", Some(namespace), name)) {
            Ok(pod) => Ok(pod["metadata"]["uid"].as_str().map(str::to_owned)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use ironmesh_store::{ApplyItem, ApplyOptions};

    use super::*;

    #[tokio::test]
    async fn the_store_lists_typed_objects_and_signals_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let source: &dyn ResourceSource = &store;
        let mut changes = source.changes();
        let before = source.list().unwrap();
        let named = |snapshot: &Snapshot, name: &str| {
            snapshot
                .objects
                .iter()
                .any(|o| o.kind == "Namespace" && o.metadata.name == name)
        };
        assert!(!named(&before, "foo"));

        let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}});
        store
            .apply(
                &[ApplyItem {
                    object: namespace,
                    origin: "test".into(),
                }],
                &ApplyOptions::default(),
            )
            .unwrap();
        assert_eq!(changes.next().await, Some(()));
        let after = source.list().unwrap();
        assert!(after.version > before.version);
        assert_eq!(after.objects.len(), before.objects.len() + 1);
        assert!(named(&after, "foo"), "{:?}", after.objects);
    }

    /// A source that only lists, as a new one may start: its pod lookup is the trait's scan.
    struct ListOnly(Store);

    impl ResourceSource for ListOnly {
        fn list(&self) -> Result<Snapshot, StoreError> {
            ResourceSource::list(&self.0)
        }

        fn changes(&self) -> BoxStream<'static, ()> {
            ResourceSource::changes(&self.0)
        }
    }

    #[test]
    fn pods_are_looked_up_by_namespace_and_name_with_their_uid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let objects = [
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleep-1", "namespace": "foo"}, "spec": {"containers": [{"name": "sleep", "image": "curl"}]}}),
        ];
        let items = objects.map(|object| ApplyItem {
            object,
            origin: "test".into(),
        });
        let uid = |source: &dyn ResourceSource| {
            let applied = match source.list() {
                Ok(snapshot) => snapshot.objects,
                Err(error) => panic!("{error}"),
            };
            applied
                .into_iter()
                .find(|o| o.kind == "Pod")
                .and_then(|pod| pod.metadata.uid)
        };
        store.apply(&items, &ApplyOptions::default()).unwrap();
        let list_only = ListOnly(Store::open(&dir.path().join("other.redb")).unwrap());
        list_only.0.apply(&items, &ApplyOptions::default()).unwrap();
        let sources: [Arc<dyn ResourceSource>; 2] = [Arc::new(store), Arc::new(list_only)];
        for source in sources {
            let expected = uid(source.as_ref());
            assert!(expected.is_some());
            let pods = SourcePods(source);
            assert_eq!(pods.pod_uid("foo", "sleep-1"), Ok(expected));
            assert_eq!(pods.pod_uid("bar", "sleep-1"), Ok(None));
            assert_eq!(
                pods.pod_uid("foo", "foo"),
                Ok(None),
                "a namespace is not a pod"
            );
        }
    }
}

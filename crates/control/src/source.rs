//! The one seam through which the controllers read the world: namespaces, pods, services, endpoints,
//! service accounts and Istio's kinds come from a [`ResourceSource`]. Today that is the embedded store
//! ([`Store`]); a Kubernetes API server is the next source, added without touching the policy engine or
//! the push, which only ever see a [`Snapshot`].

use futures::StreamExt;
use futures::stream::BoxStream;
use ironmesh_api::Object;
use ironmesh_store::{LabelSelector, Store, StoreError};

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
}

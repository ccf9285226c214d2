//! How far each sidecar's configuration has gone, for `ironmesh wait` (`/v1/proxy-status`).
//!
//! The controller records, after each pass, the store resourceVersion its snapshot was read at and the
//! content version it published for every sidecar; the hub knows which version each sidecar ACKed. A change
//! committed at resourceVersion N has reached the sidecars once the controller has configured from a
//! snapshot at or past N and every sidecar whose configuration changed at or after N has ACKed it: a sidecar
//! whose configuration the change did not alter is not waited for (Istio's `istioctl x wait` likewise waits
//! for the proxies that a resource's generation was distributed to).

use std::collections::BTreeMap;
use std::sync::Mutex;

use ironmesh_proto::ConfigHub;
use ironmesh_store::wire::{ProxySync, ProxySyncReport};

#[derive(Debug, Default)]
struct State {
    configured_resource_version: u64,
    /// proxy id → (published content version, resourceVersion at which it first appeared).
    published: BTreeMap<String, (String, u64)>,
}

/// Shared between the controller (writer) and the API server (reader).
#[derive(Debug, Default)]
pub struct ConfigSync {
    state: Mutex<State>,
}

impl ConfigSync {
    /// After a pass over the snapshot read at `resource_version`: the version published for each sidecar
    /// (id, content version). Sidecars not listed are gone.
    pub fn record(
        &self,
        resource_version: u64,
        published: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut state = self.lock();
        let mut next = BTreeMap::new();
        for (id, version) in published {
            let changed_at = match state.published.get(&id) {
                Some((previous, at)) if *previous == version => *at,
                _ => resource_version,
            };
            next.insert(id, (version, changed_at));
        }
        state.published = next;
        state.configured_resource_version = resource_version;
    }

    /// The report, with each sidecar's ACK and NACK state from `hub`.
    pub fn report(&self, hub: &ConfigHub) -> ProxySyncReport {
        let state = self.lock();
        let proxies = state
            .published
            .iter()
            .map(|(id, (version, changed_at))| {
                let status = hub.status(id).unwrap_or_default();
                let rejected = status
                    .last_nack
                    .filter(|(nacked, _, _)| nacked == version)
                    .map(|(_, resource, reason)| format!("{resource}: {reason}"));
                ProxySync {
                    id: id.clone(),
                    version: version.clone(),
                    changed_at: *changed_at,
                    acked_version: status.acked_version,
                    connected: status.streams > 0,
                    rejected,
                }
            })
            .collect();
        ProxySyncReport {
            configured_resource_version: state.configured_resource_version,
            proxies,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: a panic elsewhere while holding the lock leaves nothing half-done that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ironmesh_proto::HubOptions;

    use super::*;

    fn hub() -> ConfigHub {
        ConfigHub::new(Arc::new(|_: &str, _: &str| Ok(())), HubOptions::default())
    }

    fn ids(report: &ProxySyncReport) -> Vec<(&str, &str, u64)> {
        report
            .proxies
            .iter()
            .map(|p| (p.id.as_str(), p.version.as_str(), p.changed_at))
            .collect()
    }

    /// (resourceVersion of the pass, what it published, expected (id, version, changed_at)).
    type Pass = (
        u64,
        Vec<(String, String)>,
        Vec<(&'static str, &'static str, u64)>,
    );

    #[test]
    fn changed_at_moves_only_when_a_sidecars_version_changes() {
        let sync = ConfigSync::default();
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(id, v)| (id.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let passes: [Pass; 4] = [
            (
                5,
                pairs(&[("a.foo", "v1"), ("b.foo", "v1")]),
                vec![("a.foo", "v1", 5), ("b.foo", "v1", 5)],
            ),
            (
                9,
                pairs(&[("a.foo", "v2"), ("b.foo", "v1")]),
                vec![("a.foo", "v2", 9), ("b.foo", "v1", 5)],
            ),
            (12, pairs(&[("a.foo", "v2")]), vec![("a.foo", "v2", 9)]),
            (
                15,
                pairs(&[("a.foo", "v2"), ("b.foo", "v1")]),
                vec![("a.foo", "v2", 9), ("b.foo", "v1", 15)],
            ),
        ];
        let hub = hub();
        for (rv, published, expected) in passes {
            sync.record(rv, published);
            let report = sync.report(&hub);
            assert_eq!(report.configured_resource_version, rv);
            assert_eq!(ids(&report), expected, "after the pass at {rv}");
        }
    }

    #[test]
    fn a_sidecar_never_connected_is_reported_so() {
        let sync = ConfigSync::default();
        let hub = hub();
        sync.record(3, [("a.foo".to_string(), "v1".to_string())]);
        let report = sync.report(&hub);
        assert_eq!(
            report.proxies,
            [ProxySync {
                id: "a.foo".into(),
                version: "v1".into(),
                changed_at: 3,
                acked_version: None,
                connected: false,
                rejected: None,
            }]
        );
    }
}

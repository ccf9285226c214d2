//! Turns stored objects into the engine's pre-sorted tables: policies by namespace and target, rules
//! by namespace and host, services and workload templates by namespace. Every list is oldest first, so
//! lookups implement "the oldest wins" by taking the first match.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use super::client::RuleTables;
use super::resources::{LegacyPolicy, PeerAuthn, Rule, Service, WorkloadTemplate};
use crate::object::Object;

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) peer_authns: HashMap<String, Vec<PeerAuthn>>,
    /// Policies with targets, by (namespace, target service name); a policy with several targets
    /// appears under each.
    pub(crate) targeted: HashMap<(String, String), Vec<Arc<LegacyPolicy>>>,
    /// The oldest target-less Policy per namespace.
    pub(crate) namespace_policy: HashMap<String, LegacyPolicy>,
    /// The MeshPolicy named `default`, the only one Pilot reads (docs/SEMANTICS.md#legacy-kinds).
    pub(crate) mesh_policy: Option<LegacyPolicy>,
    pub(crate) rules: RuleTables,
    pub(crate) services: HashMap<String, Vec<Service>>,
    pub(crate) workloads: HashMap<String, Vec<WorkloadTemplate>>,
}

impl Index {
    pub(crate) fn build(objects: &[Object]) -> Index {
        let mut index = Index::default();
        let mut rules = Vec::new();
        let mut targeted = Vec::new();
        for obj in objects {
            match obj.kind.as_str() {
                "PeerAuthentication" => {
                    let pa = PeerAuthn::parse(obj);
                    let namespace = pa.meta.namespace.clone();
                    index.peer_authns.entry(namespace).or_default().push(pa);
                }
                "MeshPolicy" => {
                    let policy = LegacyPolicy::parse(obj);
                    if policy.meta.name == "default" {
                        index.mesh_policy = Some(policy);
                    }
                }
                "Policy" => {
                    let policy = LegacyPolicy::parse(obj);
                    if !policy.targets.is_empty() {
                        targeted.push(policy);
                        continue;
                    }
                    match index.namespace_policy.entry(policy.meta.namespace.clone()) {
                        Entry::Occupied(mut existing) => {
                            if policy.meta.age_order(&existing.get().meta).is_lt() {
                                existing.insert(policy);
                            }
                        }
                        Entry::Vacant(empty) => {
                            empty.insert(policy);
                        }
                    }
                }
                "DestinationRule" => rules.extend(Rule::parse(obj)),
                "Service" => {
                    let service = Service::parse(obj);
                    let namespace = service.meta.namespace.clone();
                    index.services.entry(namespace).or_default().push(service);
                }
                "Deployment" | "Pod" => {
                    let workload = WorkloadTemplate::parse(obj);
                    let namespace = workload.meta.namespace.clone();
                    index.workloads.entry(namespace).or_default().push(workload);
                }
                _ => {}
            }
        }
        targeted.sort_by(|a, b| a.meta.age_order(&b.meta));
        for policy in targeted.into_iter().map(Arc::new) {
            let mut services: Vec<&String> = policy.targets.iter().map(|t| &t.service).collect();
            services.sort();
            services.dedup();
            for service in services {
                index
                    .targeted
                    .entry((policy.meta.namespace.clone(), service.clone()))
                    .or_default()
                    .push(policy.clone());
            }
        }
        for list in index.peer_authns.values_mut() {
            list.sort_by(|a, b| a.meta.age_order(&b.meta));
        }
        for list in index.services.values_mut() {
            list.sort_by(|a, b| a.meta.age_order(&b.meta));
        }
        for list in index.workloads.values_mut() {
            list.sort_by(|a, b| a.meta.age_order(&b.meta));
        }
        index.rules = RuleTables::build(rules);
        index
    }
}

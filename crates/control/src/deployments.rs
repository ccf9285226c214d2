//! The Deployment controller's decisions (pure): which Pods a Deployment should have, named as Kubernetes
//! names them (`sleep-7dc47f96b6-7dfld`), with rolling replacement when the pod template changes and
//! garbage collection of Pods whose Deployment is gone.

use std::collections::{BTreeMap, BTreeSet};

use ironmesh_api::Object;
use serde_json::{Value, json};

use crate::objects::namespace;

/// Label Kubernetes puts on a Deployment's pods to tell template generations apart.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// What to do to converge.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create (complete objects).
    pub create: Vec<Object>,
    /// `(namespace, name)` of pods to delete.
    pub delete: Vec<(String, String)>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(mut value: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = NAME_ALPHABET[(value % NAME_ALPHABET.len() as u64) as usize];
            value /= NAME_ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// The `pod-template-hash` of a template: stable for the same template, different when it changes.
pub fn template_hash(template: &Value) -> String {
    encode(fnv1a(template.to_string().as_bytes()), 10)
}

/// The Deployment that owns `pod`, if any (from `metadata.ownerReferences`).
pub fn owner_deployment(pod: &Object) -> Option<String> {
    pod.metadata
        .extra
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("Deployment"))
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn replicas(deployment: &Object) -> usize {
    deployment
        .spec()
        .get("replicas")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.min(100) as usize)
}

/// A new pod for `deployment` from its template; `random` feeds the name suffix.
pub fn new_pod(deployment: &Object, hash: &str, random: u64) -> Object {
    let template = deployment
        .spec()
        .get("template")
        .cloned()
        .unwrap_or(Value::Null);
    let template_meta = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut labels = template_meta
        .get("labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(map) = labels.as_object_mut() {
        map.insert(TEMPLATE_HASH_LABEL.into(), json!(hash));
    }
    let name = format!("{}-{hash}-{}", deployment.metadata.name, encode(random, 5));
    let mut metadata = json!({
        "name": name,
        "namespace": namespace(deployment),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment.metadata.name,
            "uid": deployment.metadata.uid.clone().unwrap_or_default(),
            "controller": true,
        }],
    });
    if let Some(annotations) = template_meta.get("annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["nodeName"] = json!("ironmesh-node");
    if spec.get("serviceAccountName").is_none() {
        spec["serviceAccountName"] = json!("default");
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
    }))
    .expect("a pod built from a template is a valid object")
}

fn is_running(pod: &Object) -> bool {
    pod.body
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        == Some("Running")
}

/// Decides the pod changes for every Deployment in `objects`, calling `random` for name suffixes.
pub fn plan(objects: &[Object], mut random: impl FnMut() -> u64) -> Plan {
    let mut plan = Plan::default();
    let deployments: BTreeMap<(String, String), &Object> = objects
        .iter()
        .filter(|o| o.kind == "Deployment")
        .map(|d| ((namespace(d).to_owned(), d.metadata.name.clone()), d))
        .collect();
    let mut owned: BTreeMap<(String, String), Vec<&Object>> = BTreeMap::new();
    for pod in objects.iter().filter(|o| o.kind == "Pod") {
        let Some(owner) = owner_deployment(pod) else {
            continue;
        };
        let key = (namespace(pod).to_owned(), owner);
        if deployments.contains_key(&key) {
            owned.entry(key).or_default().push(pod);
        } else {
            // The Deployment is gone: its pods go too (garbage collection).
            plan.delete.push((key.0, pod.metadata.name.clone()));
        }
    }
    for (key, deployment) in &deployments {
        let template = deployment
            .spec()
            .get("template")
            .cloned()
            .unwrap_or(Value::Null);
        let hash = template_hash(&template);
        let pods = owned.remove(key).unwrap_or_default();
        let (current, old): (Vec<&Object>, Vec<&Object>) = pods
            .into_iter()
            .partition(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash));
        let want = replicas(deployment);
        for _ in current.len()..want {
            plan.create.push(new_pod(deployment, &hash, random()));
        }
        // Surplus pods of the current template: the newest go first.
        let mut surplus: Vec<&Object> = current.clone();
        surplus.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        });
        for pod in surplus.iter().take(current.len().saturating_sub(want)) {
            plan.delete.push((key.0.clone(), pod.metadata.name.clone()));
        }
        // Rolling replacement: old pods go once enough new ones run (or at once when none are wanted).
        let running_new = current.iter().filter(|p| is_running(p)).count();
        if running_new >= want {
            let doomed: BTreeSet<String> = old.iter().map(|p| p.metadata.name.clone()).collect();
            plan.delete
                .extend(doomed.into_iter().map(|name| (key.0.clone(), name)));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        ironmesh_api::load_documents("t.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|l| l.object)
            .collect()
    }

    const SLEEP: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: sleep, namespace: bar, uid: u1}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: sleep}}\n  template:\n    metadata: {labels: {app: sleep}}\n    spec:\n      containers:\n      - {name: sleep, image: pstauffer/curl, command: [/bin/sleep, 3650d]}\n";

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 7919;
            n
        }
    }

    #[test]
    fn a_new_deployment_gets_one_pod_named_like_kubernetes() {
        let plan = plan(&objects(SLEEP), counter());
        assert_eq!(plan.create.len(), 1);
        assert!(plan.delete.is_empty());
        let pod = &plan.create[0];
        let parts: Vec<&str> = pod.metadata.name.split('-').collect();
        assert_eq!(parts[0], "sleep");
        assert_eq!(parts[1].len(), 10);
        assert_eq!(parts[2].len(), 5);
        assert!(
            pod.metadata
                .name
                .bytes()
                .all(|b| b == b'-' || NAME_ALPHABET.contains(&b) || b.is_ascii_lowercase())
        );
        assert_eq!(pod.metadata.labels["app"], "sleep");
        assert_eq!(pod.metadata.labels[TEMPLATE_HASH_LABEL], parts[1]);
        assert_eq!(pod.metadata.namespace.as_deref(), Some("bar"));
        assert_eq!(owner_deployment(pod).as_deref(), Some("sleep"));
        assert_eq!(pod.spec()["containers"][0]["command"][1], "3650d");
    }

    #[test]
    fn existing_pods_of_the_same_template_are_kept() {
        let mut all = objects(SLEEP);
        let first = plan(&all, counter()).create;
        all.extend(first);
        assert_eq!(plan(&all, counter()), Plan::default());
    }

    #[test]
    fn a_changed_template_replaces_pods_only_once_the_new_one_runs() {
        let mut all = objects(SLEEP);
        all.extend(plan(&all, counter()).create);
        let old_name = all[1].metadata.name.clone();
        all[0] = objects(&SLEEP.replace("3650d", "3651d")).remove(0);
        let step = plan(&all, counter());
        assert_eq!(step.create.len(), 1, "a new pod for the new template");
        assert!(
            step.delete.is_empty(),
            "the old pod stays until the new one runs"
        );
        let mut new_pod = step.create[0].clone();
        new_pod
            .body
            .insert("status".into(), json!({"phase": "Running"}));
        all.push(new_pod);
        let step = plan(&all, counter());
        assert!(step.create.is_empty());
        assert_eq!(step.delete, vec![("bar".to_owned(), old_name)]);
    }

    #[test]
    fn pods_of_a_deleted_deployment_are_collected() {
        let mut all = objects(SLEEP);
        all.extend(plan(&all, counter()).create);
        let pod_name = all[1].metadata.name.clone();
        all.remove(0);
        assert_eq!(
            plan(&all, counter()).delete,
            vec![("bar".to_owned(), pod_name)]
        );
    }

    #[test]
    fn scaling_down_deletes_the_surplus() {
        let three = SLEEP.replace("replicas: 1", "replicas: 3");
        let mut all = objects(&three);
        all.extend(plan(&all, counter()).create);
        assert_eq!(all.len(), 4);
        all[0] = objects(SLEEP).remove(0);
        assert_eq!(plan(&all, counter()).delete.len(), 2);
    }

    #[test]
    fn the_template_hash_is_stable_and_sensitive() {
        let a = json!({"spec": {"containers": [{"name": "a"}]}});
        let b = json!({"spec": {"containers": [{"name": "b"}]}});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
    }
}

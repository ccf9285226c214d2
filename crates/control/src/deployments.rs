//! The Deployment controller's decisions (pure): which Pods a Deployment should have, named as Kubernetes
//! names them (`sleep-7dc47f96b6-7dfld`), with Kubernetes' rolling update when the pod template changes
//! (`maxSurge`/`maxUnavailable`, default 25 %: one extra pod at most for one replica, and the old pod goes
//! once the new one is ready), `Recreate`, and garbage collection of Pods whose Deployment is gone.

use std::collections::BTreeMap;

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

/// Whether a pod counts as available: its `Ready` condition is true (Kubernetes' `IsPodAvailable` with
/// `minReadySeconds: 0`).
fn is_available(pod: &Object) -> bool {
    pod.body
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// How a Deployment replaces its pods (`spec.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// All old pods go before any new one is created.
    Recreate,
    /// At most `replicas + max_surge` pods, at least `replicas - max_unavailable` available.
    RollingUpdate {
        max_surge: usize,
        max_unavailable: usize,
    },
}

/// An `IntOrString` of `rollingUpdate` resolved against `replicas`: percentages round up for the surge and
/// down for unavailability (Kubernetes' `deploymentutil.ResolveFenceposts`). `None` when absent or invalid.
fn resolve(value: Option<&Value>, replicas: usize, round_up: bool) -> Option<usize> {
    match value? {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(text) => {
            let percent: usize = text.strip_suffix('%')?.parse().ok()?;
            let scaled = percent * replicas;
            Some(if round_up {
                scaled.div_ceil(100)
            } else {
                scaled / 100
            })
        }
        _ => None,
    }
}

fn strategy(deployment: &Object, replicas: usize) -> Strategy {
    let strategy = deployment.spec().get("strategy");
    if strategy.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("Recreate") {
        return Strategy::Recreate;
    }
    let rolling = strategy.and_then(|s| s.get("rollingUpdate"));
    let field = |name: &str| rolling.and_then(|r| r.get(name));
    // Defaults 25% / 25% (apps/v1 `SetDefaults_Deployment`).
    let max_surge =
        resolve(field("maxSurge"), replicas, true).unwrap_or_else(|| (25 * replicas).div_ceil(100));
    let mut max_unavailable =
        resolve(field("maxUnavailable"), replicas, false).unwrap_or(25 * replicas / 100);
    // Both zero would never make progress: Kubernetes then allows one unavailable pod.
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Strategy::RollingUpdate {
        max_surge,
        max_unavailable: max_unavailable.min(replicas),
    }
}

/// The pods of one template generation (one `pod-template-hash`): what Kubernetes keeps in a ReplicaSet.
struct Generation<'a> {
    pods: Vec<&'a Object>,
}

impl<'a> Generation<'a> {
    fn available(&self) -> usize {
        self.pods.iter().filter(|p| is_available(p)).count()
    }

    fn oldest(&self) -> Option<&str> {
        self.pods
            .iter()
            .filter_map(|p| p.metadata.creation_timestamp.as_deref())
            .min()
    }

    /// Takes `count` pods out in the order a ReplicaSet deletes them: unavailable before available, then the
    /// newest first (Kubernetes' `controller.ActivePods` ranking).
    fn remove(&mut self, count: usize, only_unavailable: bool) -> Vec<&'a Object> {
        self.pods.sort_by(|a, b| {
            is_available(a).cmp(&is_available(b)).then_with(|| {
                b.metadata
                    .creation_timestamp
                    .cmp(&a.metadata.creation_timestamp)
            })
        });
        let eligible = self
            .pods
            .iter()
            .take_while(|p| !only_unavailable || !is_available(p))
            .count();
        let count = count.min(eligible);
        self.pods.drain(..count).collect()
    }
}

/// One Deployment's step: how many pods of the current template to create, which pods to delete.
#[derive(Default)]
struct Step<'a> {
    create: usize,
    delete: Vec<&'a Object>,
}

/// One Deployment's step towards its template and replica count, as Kubernetes' Deployment controller
/// takes it (`pkg/controller/deployment/rolling.go` and `recreate.go`), with each generation's pods
/// standing for its ReplicaSet. Going back to an earlier template finds its generation again by hash.
fn roll<'a>(
    deployment: &Object,
    hash: &str,
    mut generations: BTreeMap<String, Vec<&'a Object>>,
) -> Step<'a> {
    let want = replicas(deployment);
    let mut step = Step::default();
    let mut new = Generation {
        pods: generations.remove(hash).unwrap_or_default(),
    };
    let mut old: Vec<Generation> = generations
        .into_values()
        .map(|pods| Generation { pods })
        .collect();
    old.sort_by(|a, b| a.oldest().cmp(&b.oldest()));
    let old_count: usize = old.iter().map(|g| g.pods.len()).sum();

    let (max_surge, max_unavailable) = match strategy(deployment, want) {
        Strategy::Recreate => {
            if old_count > 0 {
                for mut generation in old {
                    let all = generation.pods.len();
                    step.delete.extend(generation.remove(all, false));
                }
                return step;
            }
            (0, want)
        }
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => (max_surge, max_unavailable),
    };

    // reconcileNewReplicaSet: scale the current generation towards `replicas`, within the surge.
    if new.pods.len() > want {
        let surplus = new.pods.len() - want;
        step.delete.extend(new.remove(surplus, false));
        return step;
    }
    if new.pods.len() < want {
        let max_total = want + max_surge;
        let all = new.pods.len() + old_count;
        step.create = max_total.saturating_sub(all).min(want - new.pods.len());
        if step.create > 0 {
            return step;
        }
    }

    // reconcileOldReplicaSets: scale old generations down without going under the minimum available.
    if old_count == 0 {
        return step;
    }
    let all = (new.pods.len() + old_count) as i64;
    let min_available = want.saturating_sub(max_unavailable) as i64;
    let new_unavailable = (new.pods.len() - new.available()) as i64;
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return step;
    }
    // Unhealthy old pods go first: removing them costs no availability.
    let mut budget = max_scaled_down as usize;
    for generation in &mut old {
        if budget == 0 {
            break;
        }
        let gone = generation.remove(budget, true);
        budget -= gone.len();
        step.delete.extend(gone);
    }
    let available = (new.available() + old.iter().map(Generation::available).sum::<usize>()) as i64;
    if available <= min_available {
        return step;
    }
    let mut scale_down = (available - min_available) as usize;
    for generation in &mut old {
        if scale_down == 0 {
            break;
        }
        let gone = generation.remove(scale_down, false);
        scale_down -= gone.len();
        step.delete.extend(gone);
    }
    step
}

/// Decides the pod changes for every Deployment in `objects`, calling `random` for name suffixes.
pub fn plan(objects: &[Object], mut random: impl FnMut() -> u64) -> Plan {
    let mut plan = Plan::default();
    let deployments: BTreeMap<(String, String), &Object> = objects
        .iter()
        .filter(|o| o.kind == "Deployment")
        .map(|d| ((namespace(d).to_owned(), d.metadata.name.clone()), d))
        .collect();
    let mut owned: BTreeMap<(String, String), BTreeMap<String, Vec<&Object>>> = BTreeMap::new();
    for pod in objects.iter().filter(|o| o.kind == "Pod") {
        let Some(owner) = owner_deployment(pod) else {
            continue;
        };
        let key = (namespace(pod).to_owned(), owner);
        if deployments.contains_key(&key) {
            let generation = pod
                .metadata
                .labels
                .get(TEMPLATE_HASH_LABEL)
                .cloned()
                .unwrap_or_default();
            owned
                .entry(key)
                .or_default()
                .entry(generation)
                .or_default()
                .push(pod);
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
        let step = roll(deployment, &hash, owned.remove(key).unwrap_or_default());
        plan.create
            .extend((0..step.create).map(|_| new_pod(deployment, &hash, random())));
        plan.delete.extend(
            step.delete
                .into_iter()
                .map(|pod| (key.0.clone(), pod.metadata.name.clone())),
        );
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

    fn ready(mut pod: Object) -> Object {
        pod.body.insert(
            "status".into(),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        pod
    }

    #[test]
    fn a_changed_template_replaces_pods_only_once_the_new_one_runs() {
        let mut all = objects(SLEEP);
        all.extend(plan(&all, counter()).create.into_iter().map(ready));
        let old_name = all[1].metadata.name.clone();
        all[0] = objects(&SLEEP.replace("3650d", "3651d")).remove(0);
        let step = plan(&all, counter());
        assert_eq!(step.create.len(), 1, "a new pod for the new template");
        assert!(
            step.delete.is_empty(),
            "the old pod stays until the new one runs"
        );
        assert_eq!(
            plan(&[all.clone(), step.create.clone()].concat(), counter()),
            Plan::default(),
            "nothing more while the new pod is not ready (maxSurge 1, maxUnavailable 0)"
        );
        all.push(ready(step.create[0].clone()));
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

    /// Applies plans to `all` until nothing changes, as the controllers' passes do; new pods become ready
    /// when `kubelet_runs` (the kubelet would mark them), and get increasing creation times.
    fn converge(all: &mut Vec<Object>, kubelet_runs: bool, clock: &mut u32) {
        // Name suffixes differ from one call to the next, as random ones do.
        let mut n = u64::from(*clock) * 1_000_003;
        let mut random = move || {
            n += 7919;
            n
        };
        for _ in 0..20 {
            let step = plan(all, &mut random);
            if step == Plan::default() {
                return;
            }
            all.retain(|o| {
                !step.delete.iter().any(|(ns, name)| {
                    o.kind == "Pod" && &o.metadata.name == name && namespace(o) == ns
                })
            });
            for mut pod in step.create {
                *clock += 1;
                pod.metadata.creation_timestamp = Some(format!("2026-01-01T00:00:{:02}Z", clock));
                all.push(if kubelet_runs { ready(pod) } else { pod });
            }
        }
        panic!("no fixed point after 20 passes");
    }

    fn pods(all: &[Object]) -> Vec<(String, String)> {
        let mut pods: Vec<(String, String)> = all
            .iter()
            .filter(|o| o.kind == "Pod")
            .map(|p| {
                (
                    p.metadata.labels[TEMPLATE_HASH_LABEL].clone(),
                    p.metadata.name.clone(),
                )
            })
            .collect();
        pods.sort();
        pods
    }

    const RELABELLED: &str = "metadata: {labels: {app: sleep, version: v2}}";

    #[test]
    fn relabelling_the_template_and_back_leaves_one_pod_of_the_current_template() {
        let mut clock = 0;
        let mut all = objects(SLEEP);
        converge(&mut all, true, &mut clock);
        let first = pods(&all);
        assert_eq!(first.len(), 1);

        all[0] = objects(&SLEEP.replace("metadata: {labels: {app: sleep}}", RELABELLED)).remove(0);
        let hash_v2 = template_hash(&all[0].spec()["template"]);
        converge(&mut all, true, &mut clock);
        let second = pods(&all);
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(second[0].0, hash_v2);
        assert_eq!(
            all.iter()
                .find(|o| o.kind == "Pod")
                .unwrap()
                .metadata
                .labels["version"],
            "v2"
        );

        all[0] = objects(SLEEP).remove(0);
        converge(&mut all, true, &mut clock);
        let third = pods(&all);
        assert_eq!(third.len(), 1, "{third:?}");
        assert_eq!(
            third[0].0, first[0].0,
            "the first template's hash is used again"
        );
        assert_ne!(
            third[0].1, first[0].1,
            "by a new pod: the first one is gone"
        );
    }

    #[test]
    fn reverting_before_the_new_pod_is_ready_removes_the_new_pod() {
        let mut clock = 0;
        let mut all = objects(SLEEP);
        converge(&mut all, true, &mut clock);
        let first = pods(&all);
        // The new template's pod never gets ready (say its image is wrong).
        all[0] = objects(&SLEEP.replace("metadata: {labels: {app: sleep}}", RELABELLED)).remove(0);
        converge(&mut all, false, &mut clock);
        assert_eq!(pods(&all).len(), 2, "surge: the old pod serves meanwhile");
        all[0] = objects(SLEEP).remove(0);
        converge(&mut all, false, &mut clock);
        assert_eq!(
            pods(&all),
            first,
            "back to the one ready pod of the first template"
        );
    }

    #[test]
    fn rollout_bounds_follow_max_surge_and_max_unavailable() {
        // (replicas, strategy, expected (max_surge, max_unavailable)); Kubernetes' defaults and rounding.
        let cases = [
            (
                1,
                "",
                Strategy::RollingUpdate {
                    max_surge: 1,
                    max_unavailable: 0,
                },
            ),
            (
                4,
                "",
                Strategy::RollingUpdate {
                    max_surge: 1,
                    max_unavailable: 1,
                },
            ),
            (
                10,
                "",
                Strategy::RollingUpdate {
                    max_surge: 3,
                    max_unavailable: 2,
                },
            ),
            (
                3,
                "strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}",
                Strategy::RollingUpdate {
                    max_surge: 0,
                    max_unavailable: 1,
                },
            ),
            (
                3,
                "strategy: {rollingUpdate: {maxSurge: \"50%\", maxUnavailable: 5}}",
                Strategy::RollingUpdate {
                    max_surge: 2,
                    max_unavailable: 3,
                },
            ),
            (2, "strategy: {type: Recreate}", Strategy::Recreate),
        ];
        for (replicas, extra, want) in cases {
            let yaml = SLEEP
                .replace("replicas: 1", &format!("replicas: {replicas}"))
                .replace("  selector:", &format!("  {extra}\n  selector:"));
            let deployment = objects(&yaml).remove(0);
            assert_eq!(strategy(&deployment, replicas), want, "{extra}");
        }
    }

    #[test]
    fn a_rolling_update_of_four_keeps_three_available_and_five_at_most() {
        let four = SLEEP.replace("replicas: 1", "replicas: 4");
        let mut clock = 0;
        let mut all = objects(&four);
        converge(&mut all, true, &mut clock);
        all[0] = objects(&four.replace("3650d", "3651d")).remove(0);
        let mut random = counter();
        for _ in 0..20 {
            let step = plan(&all, &mut random);
            if step == Plan::default() {
                break;
            }
            all.retain(|o| !step.delete.iter().any(|(_, name)| &o.metadata.name == name));
            for pod in step.create {
                all.push(ready(pod));
            }
            let live: Vec<&Object> = all.iter().filter(|o| o.kind == "Pod").collect();
            assert!(live.len() <= 5, "maxSurge 1: {} pods", live.len());
            assert!(
                live.iter().filter(|p| is_available(p)).count() >= 3,
                "maxUnavailable 1"
            );
        }
        let hash = template_hash(&all[0].spec()["template"]);
        let after = pods(&all);
        assert_eq!(after.len(), 4);
        assert!(after.iter().all(|(h, _)| *h == hash), "{after:?}");
    }

    #[test]
    fn recreate_deletes_every_old_pod_before_creating_new_ones() {
        let recreate = SLEEP.replace("  selector:", "  strategy: {type: Recreate}\n  selector:");
        let mut clock = 0;
        let mut all = objects(&recreate);
        converge(&mut all, true, &mut clock);
        let old = pods(&all);
        all[0] = objects(&recreate.replace("3650d", "3651d")).remove(0);
        let step = plan(&all, counter());
        assert!(step.create.is_empty());
        assert_eq!(step.delete, vec![("bar".to_owned(), old[0].1.clone())]);
        converge(&mut all, true, &mut clock);
        assert_eq!(pods(&all).len(), 1);
    }
}

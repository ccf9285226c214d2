//! Status conditions on stored Istio resources: an object the webhook never saw (stored before the
//! install, while the control plane was down and the webhook configuration said `Ignore`, or with
//! `kubectl apply --validate=false` of a CRD-only cluster) may be invalid. The control plane reports that
//! where `kubectl describe` and `kubectl get -o yaml` show it: a condition `Accepted` (`False`, reason
//! `Invalid`, our field errors as the message; `True` once it is valid), with `observedGeneration`.
//! [`desired`] is the pure decision; [`report`] writes it through the status subresource.

use std::collections::HashMap;

use futures::StreamExt;
use ironmesh_api::Object;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::KubeSource;
use crate::crds::ISTIO_GROUPS;

/// The condition's type.
pub const CONDITION: &str = "Accepted";

/// The `status` to merge into `object` when its condition is missing or stale; `None` when it says
/// what it should already (or the object is not an Istio resource). `now` is RFC 3339, the transition
/// time of a condition whose status changes.
pub fn desired(object: &Object, now: &str) -> Option<Value> {
    if !ISTIO_GROUPS.contains(&object.group()) {
        return None;
    }
    // Validate what the user wrote: the status is ours.
    let mut written = object.clone();
    written.body.remove("status");
    let (state, reason, message) = match ironmesh_api::validate_object(&written) {
        Ok(()) => (
            "True",
            "Accepted",
            "valid; in use by the control plane".to_owned(),
        ),
        Err(errors) => (
            "False",
            "Invalid",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let status = object.body.get("status");
    let current = status
        .and_then(|s| s["conditions"].as_array())
        .into_iter()
        .flatten()
        .find(|c| c["type"] == CONDITION);
    let generation = object.metadata.generation;
    let observed = status.and_then(|s| s["observedGeneration"].as_i64());
    let same = current.is_some_and(|c| {
        c["status"] == state && c["reason"] == reason && c["message"] == message.as_str()
    });
    if same && observed == generation {
        return None;
    }
    let transition = match current {
        Some(c) if c["status"] == state => c["lastTransitionTime"].clone(),
        _ => Value::String(now.to_owned()),
    };
    // Other controllers' conditions stay; ours is replaced (a merge patch replaces the whole list).
    let mut conditions: Vec<Value> = status
        .and_then(|s| s["conditions"].as_array())
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != CONDITION)
        .cloned()
        .collect();
    conditions.push(json!({
        "type": CONDITION,
        "status": state,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }));
    Some(json!({"observedGeneration": generation, "conditions": conditions}))
}

/// The version (`metadata.resourceVersion`) of each Istio resource whose status was last decided, by
/// uid: an event of any other object, or of another Istio resource, leaves it undecided again.
#[derive(Debug, Default)]
pub struct Checked {
    versions: HashMap<String, String>,
}

impl Checked {
    /// Of `objects` (every current one), those not decided at their current version; records them as
    /// decided and forgets the objects that are gone. An object without uid or version (not from an
    /// API server) is always returned.
    pub fn take_changed(&mut self, objects: Vec<Object>) -> Vec<Object> {
        let mut versions = HashMap::with_capacity(objects.len());
        let mut changed = Vec::new();
        for object in objects {
            match (&object.metadata.uid, &object.metadata.resource_version) {
                (Some(uid), Some(version)) => {
                    if self.versions.get(uid) != Some(version) {
                        changed.push(object.clone());
                    }
                    versions.insert(uid.clone(), version.clone());
                }
                _ => changed.push(object),
            }
        }
        self.versions = versions;
        changed
    }

    /// Decides `object` again at the next round (its status could not be written).
    pub fn retry(&mut self, object: &Object) {
        if let Some(uid) = &object.metadata.uid {
            self.versions.remove(uid);
        }
    }
}

/// Keeps every Istio resource's condition current until `shutdown`: after each change of the
/// source, decides the Istio resources created or changed since the last round ([`Checked`]) and writes
/// the statuses that differ (each write comes back as a change that needs none). A cluster's pods and
/// endpoints change all the time; they cost no validation here.
pub async fn report(client: kube::Client, source: &KubeSource, shutdown: CancellationToken) {
    let mut changes = source.changes();
    let mut checked = Checked::default();
    loop {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let istio = source.list_kinds(|r| ISTIO_GROUPS.contains(&r.group.as_str()));
        for object in checked.take_changed(istio) {
            let Some(status) = desired(&object, &now) else {
                continue;
            };
            let Some(resource) = crate::source::watched_resources()
                .into_iter()
                .find(|r| r.kind == object.kind && r.group == object.group())
            else {
                continue;
            };
            let api: Api<kube::api::DynamicObject> = match &object.metadata.namespace {
                Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let patch = json!({"status": status});
            if let Err(error) = api
                .patch_status(
                    &object.metadata.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(kind = %object.kind, name = %object.metadata.name, %error,
                    "cannot report the resource's status; check the control plane's RBAC");
                checked.retry(&object);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.next() => if change.is_none() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(yaml_action: &str, status: Value) -> Object {
        let mut object: Object = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "foo", "generation": 2},
            "spec": {"action": yaml_action},
        }))
        .unwrap();
        if !status.is_null() {
            object.body.insert("status".into(), status);
        }
        object
    }

    #[test]
    fn an_invalid_resource_gets_accepted_false_with_our_field_errors() {
        let status = desired(&object("ALLOWED", Value::Null), "2026-12-02T03:00:00Z").unwrap();
        let condition = &status["conditions"][0];
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(
            (
                &condition["type"],
                &condition["status"],
                &condition["reason"]
            ),
            (&json!("Accepted"), &json!("False"), &json!("Invalid"))
        );
        assert!(
            condition["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.action: "),
            "{condition}"
        );
        assert_eq!(condition["lastTransitionTime"], "2026-12-02T03:00:00Z");
    }

    #[test]
    fn a_current_condition_is_not_rewritten_and_a_fix_flips_it_keeping_others() {
        let invalid = desired(&object("ALLOWED", Value::Null), "t1").unwrap();
        assert_eq!(
            desired(&object("ALLOWED", invalid.clone()), "t2"),
            None,
            "nothing to write"
        );

        let mut with_other = invalid.clone();
        with_other["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Reconciled", "status": "True"}));
        let fixed = desired(&object("ALLOW", with_other), "t3").unwrap();
        let conditions = fixed["conditions"].as_array().unwrap();
        assert_eq!(
            conditions[0]["type"], "Reconciled",
            "another controller's condition stays"
        );
        assert_eq!(conditions[1]["status"], "True");
        assert_eq!(conditions[1]["lastTransitionTime"], "t3");
    }

    #[test]
    fn only_resources_new_or_changed_since_the_last_round_are_decided_again() {
        let versioned = |name: &str, uid: &str, version: &str| {
            let mut object = object("ALLOW", Value::Null);
            object.metadata.name = name.into();
            object.metadata.uid = Some(uid.into());
            object.metadata.resource_version = Some(version.into());
            object
        };
        let names = |objects: Vec<Object>| -> Vec<String> {
            objects.into_iter().map(|o| o.metadata.name).collect()
        };
        let mut checked = Checked::default();
        let round = vec![versioned("a", "u1", "10"), versioned("b", "u2", "11")];
        assert_eq!(names(checked.take_changed(round.clone())), ["a", "b"]);
        assert!(checked.take_changed(round).is_empty(), "nothing changed");
        // b changed (our own status write, say), c is new, a is gone.
        let round = vec![versioned("b", "u2", "12"), versioned("c", "u3", "13")];
        assert_eq!(names(checked.take_changed(round.clone())), ["b", "c"]);
        // A failed write is retried at the next round.
        checked.retry(&round[1]);
        assert_eq!(names(checked.take_changed(round.clone())), ["c"]);
        // a, back under the same uid and version after being forgotten, is decided again.
        let round = vec![versioned("a", "u1", "10")];
        assert_eq!(names(checked.take_changed(round)), ["a"]);
        // Without uid or version it cannot be remembered.
        assert_eq!(
            names(checked.take_changed(vec![object("ALLOW", Value::Null)])),
            ["p"]
        );
    }

    #[test]
    fn kubernetes_own_kinds_get_no_condition() {
        let pod: Object = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "foo"}}))
        .unwrap();
        assert_eq!(desired(&pod, "t"), None);
    }
}

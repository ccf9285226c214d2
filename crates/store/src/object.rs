//! The stored object's shape: keys, system metadata, and what counts as a change (for generation and
//! `unchanged`). Objects are kept as JSON values so the store round-trips every field it is given.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Identifies one stored object: `<plural>/<namespace>/<name>`, namespace empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub plural: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(plural: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            plural: plural.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        format!("{}/{}/{}", self.plural, self.namespace, self.name)
    }

    pub(crate) fn decode(key: &str) -> Option<Self> {
        let mut parts = key.splitn(3, '/');
        Some(ObjectKey {
            plural: parts.next()?.to_string(),
            namespace: parts.next()?.to_string(),
            name: parts.next()?.to_string(),
        })
    }

    /// The key of a stored object value (reads `metadata.name` and `metadata.namespace`).
    pub fn of(plural: &str, object: &Value) -> Self {
        ObjectKey::new(
            plural,
            namespace_of(object),
            name_of(object).unwrap_or_default(),
        )
    }
}

pub(crate) fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// `metadata.name`, if any.
pub fn name_of(object: &Value) -> Option<&str> {
    metadata(object)?.get("name")?.as_str()
}

/// `metadata.namespace`, if any and not empty.
pub fn namespace_of(object: &Value) -> Option<&str> {
    metadata(object)?
        .get("namespace")?
        .as_str()
        .filter(|ns| !ns.is_empty())
}

/// `metadata.resourceVersion` as a number (0 when absent).
pub fn resource_version_of(object: &Value) -> u64 {
    metadata(object)
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

/// What the user owns in an object: everything except `metadata` and `status`. A difference here bumps
/// `generation`.
fn user_content(object: &Value) -> Map<String, Value> {
    let mut content = object.as_object().cloned().unwrap_or_default();
    content.remove("metadata");
    content.remove("status");
    content
}

fn user_meta_field<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    metadata(object)?
        .get(field)
        .filter(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
}

/// The system fields the store stamps on a write.
pub(crate) struct Stamp<'a> {
    pub uid: String,
    pub resource_version: u64,
    pub generation: u64,
    pub creation_timestamp: String,
    pub self_link: &'a str,
}

/// Builds the stored form of `incoming`: user content and user metadata from `incoming`, system metadata
/// from `stamp`, and `status` carried over from the previous version.
pub(crate) fn stored_form(incoming: &Value, previous: Option<&Value>, stamp: Stamp<'_>) -> Value {
    let mut out = Map::new();
    let content = user_content(incoming);
    for key in ["apiVersion", "kind"] {
        if let Some(v) = content.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    let mut meta = Map::new();
    if let Some(name) = name_of(incoming) {
        meta.insert("name".into(), Value::from(name));
    }
    if let Some(ns) = namespace_of(incoming) {
        meta.insert("namespace".into(), Value::from(ns));
    }
    // ownerReferences tie a Deployment's pods to it (garbage collection, `describe`).
    for field in ["labels", "annotations", "ownerReferences"] {
        if let Some(v) = user_meta_field(incoming, field) {
            meta.insert(field.into(), v.clone());
        }
    }
    meta.insert("uid".into(), Value::from(stamp.uid));
    meta.insert(
        "resourceVersion".into(),
        Value::from(stamp.resource_version.to_string()),
    );
    meta.insert("generation".into(), Value::from(stamp.generation));
    meta.insert(
        "creationTimestamp".into(),
        Value::from(stamp.creation_timestamp),
    );
    meta.insert("selfLink".into(), Value::from(stamp.self_link));
    out.insert("metadata".into(), Value::Object(meta));
    for (key, value) in content {
        if key != "apiVersion" && key != "kind" {
            out.insert(key, value);
        }
    }
    if let Some(status) = previous.and_then(|p| p.get("status")) {
        out.insert("status".into(), status.clone());
    }
    Value::Object(out)
}

/// How `incoming` differs from what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    MetadataOnly,
    Content,
}

pub(crate) fn change_between(stored: &Value, incoming: &Value) -> Change {
    if user_content(stored) != user_content(incoming) {
        return Change::Content;
    }
    let same_meta = ["labels", "annotations"]
        .iter()
        .all(|f| user_meta_field(stored, f) == user_meta_field(incoming, f));
    if same_meta {
        Change::None
    } else {
        Change::MetadataOnly
    }
}

/// `spec` fields the control plane assigns; an apply that leaves them out keeps them, as Kubernetes keeps
/// a Service's `clusterIP`.
const SERVER_ASSIGNED_SPEC: &[(&str, &[&str])] = &[("services", &["clusterIP", "clusterIPs"])];

/// Copies server-assigned `spec` fields of `stored` into `incoming` where `incoming` has none.
pub(crate) fn keep_server_assigned(plural: &str, stored: &Value, incoming: &mut Value) {
    let Some((_, fields)) = SERVER_ASSIGNED_SPEC.iter().find(|(p, _)| *p == plural) else {
        return;
    };
    let Some(stored_spec) = stored.get("spec").and_then(Value::as_object) else {
        return;
    };
    let Some(spec) = incoming.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in *fields {
        if let Some(value) = stored_spec.get(*field)
            && !spec.contains_key(*field)
        {
            spec.insert((*field).to_string(), value.clone());
        }
    }
}

pub(crate) fn uid_of(object: &Value) -> Option<String> {
    Some(metadata(object)?.get("uid")?.as_str()?.to_string())
}

pub(crate) fn generation_of(object: &Value) -> u64 {
    metadata(object)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

pub(crate) fn creation_timestamp_of(object: &Value) -> Option<String> {
    Some(
        metadata(object)?
            .get("creationTimestamp")?
            .as_str()?
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_round_trip_and_cluster_scope_has_empty_namespace() {
        let key = ObjectKey::new("namespaces", None, "foo");
        assert_eq!(key.encode(), "namespaces//foo");
        assert_eq!(ObjectKey::decode(&key.encode()), Some(key));
        let key = ObjectKey::new("services", Some("foo"), "httpbin");
        assert_eq!(ObjectKey::decode("services/foo/httpbin"), Some(key));
    }

    #[test]
    fn changes_are_classified() {
        let stored = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "uid": "x", "labels": {"app": "a"}},
            "spec": {"ports": [{"port": 80}]}, "status": {"x": 1}});
        let same = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "labels": {"app": "a"}}, "spec": {"ports": [{"port": 80}]}});
        assert_eq!(change_between(&stored, &same), Change::None);
        let relabelled = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "labels": {"app": "b"}}, "spec": {"ports": [{"port": 80}]}});
        assert_eq!(change_between(&stored, &relabelled), Change::MetadataOnly);
        let respec = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "labels": {"app": "a"}}, "spec": {"ports": [{"port": 81}]}});
        assert_eq!(change_between(&stored, &respec), Change::Content);
    }
}

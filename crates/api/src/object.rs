//! The generic resource envelope every kind shares: `apiVersion`, `kind`, `metadata` and an open body.
//!
//! Objects stay JSON-shaped (Kubernetes objects carry many fields we do not model); validation and the
//! policy engine read the fields they need from the body.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One resource: the Kubernetes object envelope plus its body (`spec`, `data`, `status`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Everything besides the envelope, e.g. `spec`, `data`, `status`.
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

/// `metadata` of an object. Empty maps and unset options are skipped when serialising.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339, set by the store; the policy engine's "oldest wins" compares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Metadata fields we do not model (`ownerReferences`, `finalizers`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Object {
    /// A fresh object with the given envelope and an empty body.
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Object {
        Object {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            metadata: ObjectMeta {
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
                ..ObjectMeta::default()
            },
            body: Map::new(),
        }
    }

    /// The group part of `apiVersion` (`""` for the core group `v1`).
    pub fn group(&self) -> &str {
        split_api_version(&self.api_version).0
    }

    /// `spec`, or `Value::Null` when absent.
    pub fn spec(&self) -> &Value {
        self.body.get("spec").unwrap_or(&Value::Null)
    }

    /// The object as a JSON value (what `-o json` prints).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The object as YAML (what `-o yaml` prints).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_default()
    }
}

/// Splits `group/version` into its parts; the core group `v1` gives `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_metadata_fields_are_not_serialised_and_extra_fields_round_trip() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "ownerReferences": [{"name": "x"}]},
            "spec": {"containers": []}
        });
        let obj: Object = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(obj.metadata.extra.len(), 1);
        assert!(obj.body.contains_key("spec"));
        assert_eq!(obj.to_value(), json);
    }

    #[test]
    fn yaml_output_quotes_yaml11_booleans_and_reloads_identically() {
        let mut obj = Object::new("v1", "Namespace", None, "no");
        obj.metadata.labels.insert("on".into(), "yes".into());
        let yaml = obj.to_yaml();
        assert!(yaml.contains("\"yes\""), "{yaml}");
        let loaded = crate::load_documents("out.yaml", &yaml).unwrap();
        assert_eq!(loaded[0].object, obj);
    }

    #[test]
    fn api_version_splits_core_and_grouped() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(
            split_api_version("networking.istio.io/v1alpha3"),
            ("networking.istio.io", "v1alpha3")
        );
    }
}

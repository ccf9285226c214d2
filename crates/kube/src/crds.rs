//! Istio's kinds as CustomResourceDefinitions (`apiextensions.k8s.io/v1`), built from ironmesh-api's kind
//! table so the names, versions and scopes kubectl sees are the ones `ironmesh apply` serves.
//!
//! The schemas are structural but open: `spec` and `status` keep unknown fields, because the webhook
//! ([`crate::webhook`]) validates Istio kinds with our own field errors, which say more than an OpenAPI
//! schema could. Storage versions, categories and short names follow Istio's own CRDs: the oldest served
//! version stores (`v1alpha3` for networking, `v1beta1` for security, `v1alpha1` for authentication).

use ironmesh_api::KindInfo;
use serde_json::{Value, json};

/// The groups whose kinds are Istio's (and so come from CRDs on Kubernetes).
pub const ISTIO_GROUPS: &[&str] = &[
    "authentication.istio.io",
    "networking.istio.io",
    "security.istio.io",
];

/// Istio's kinds among those ironmesh serves.
pub fn istio_kinds() -> impl Iterator<Item = &'static KindInfo> {
    ironmesh_api::all_kinds()
        .iter()
        .filter(|kind| ISTIO_GROUPS.contains(&kind.group))
}

/// `meshpolicies.authentication.istio.io`: a CRD's name.
pub fn crd_name(kind: &KindInfo) -> String {
    format!("{}.{}", kind.plural, kind.group)
}

/// The version the API server stores: the oldest one, as in Istio's CRDs (the table lists it first).
pub fn storage_version(kind: &KindInfo) -> &'static str {
    kind.versions[0]
}

/// Columns `kubectl get` prints besides the name, as Istio's CRDs declare them.
fn printer_columns(kind: &KindInfo) -> Value {
    let age = json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."});
    match kind.kind {
        "DestinationRule" => json!([
            {"name": "Host", "type": "string", "jsonPath": ".spec.host", "description": "The name of a service from the service registry"},
            age
        ]),
        "AuthorizationPolicy" => json!([
            {"name": "Action", "type": "string", "jsonPath": ".spec.action", "description": "The operation to take."},
            age
        ]),
        "PeerAuthentication" => json!([
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mtls.mode", "description": "Defines the mTLS mode used for peer authentication."},
            age
        ]),
        _ => json!([age]),
    }
}

/// The CRD of one Istio kind.
pub fn crd(kind: &KindInfo) -> Value {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let schema = json!({"openAPIV3Schema": {
        "type": "object",
        "properties": {"spec": open, "status": open},
    }});
    let versions: Vec<Value> = kind
        .versions
        .iter()
        .map(|version| {
            json!({
                "name": version,
                "served": true,
                "storage": *version == storage_version(kind),
                "schema": schema,
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer_columns(kind),
            })
        })
        .collect();
    let group_category = kind.group.replace('.', "-");
    let mut names = json!({
        "kind": kind.kind,
        "listKind": format!("{}List", kind.kind),
        "plural": kind.plural,
        "singular": kind.singular,
        "categories": ["istio-io", group_category],
    });
    if !kind.short_names.is_empty() {
        names["shortNames"] = json!(kind.short_names);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd_name(kind),
            "labels": {"app.kubernetes.io/part-of": "ironmesh"},
        },
        "spec": {
            "group": kind.group,
            "names": names,
            "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
            "versions": versions,
        },
    })
}

/// Every Istio kind's CRD, in the kind table's order.
pub fn crds() -> Vec<Value> {
    istio_kinds().map(crd).collect()
}

/// Why a schema is not structural (Kubernetes' rule, the part our CRDs could break): every node states a
/// `type`, except where it keeps unknown fields; `None` when it is structural.
pub fn structural_problem(schema: &Value, path: &str) -> Option<String> {
    let preserves = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    if schema.get("type").and_then(Value::as_str).is_none() && !preserves {
        return Some(format!("{path}: no type"));
    }
    let children = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, child)| (format!("{path}.properties.{name}"), child))
        .chain(
            schema
                .get("items")
                .map(|items| (format!("{path}.items"), items)),
        );
    for (child_path, child) in children {
        if let Some(problem) = structural_problem(child, &child_path) {
            return Some(problem);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    use super::*;

    #[test]
    fn every_istio_kind_has_a_structural_crd_that_kubernetes_types_accept() {
        let crds = crds();
        let names: Vec<String> = crds
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "meshpolicies.authentication.istio.io",
                "policies.authentication.istio.io",
                "peerauthentications.security.istio.io",
                "authorizationpolicies.security.istio.io",
                "destinationrules.networking.istio.io",
                "sidecars.networking.istio.io",
            ]
        );
        for crd in &crds {
            let typed: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
            let storage: Vec<&str> = typed
                .spec
                .versions
                .iter()
                .filter(|v| v.storage)
                .map(|v| v.name.as_str())
                .collect();
            assert_eq!(storage.len(), 1, "{names:?}: exactly one storage version");
            for version in &crd["spec"]["versions"].as_array().unwrap()[..] {
                let schema = &version["schema"]["openAPIV3Schema"];
                assert_eq!(structural_problem(schema, "openAPIV3Schema"), None);
            }
        }
    }

    #[test]
    fn names_scopes_and_storage_follow_istio() {
        let by_name = |name: &str| {
            crds()
                .into_iter()
                .find(|c| c["metadata"]["name"] == name)
                .unwrap()
        };
        let mesh = by_name("meshpolicies.authentication.istio.io");
        assert_eq!(mesh["spec"]["scope"], "Cluster");
        assert_eq!(
            mesh["spec"]["names"]["categories"],
            json!(["istio-io", "authentication-istio-io"])
        );
        let rule = by_name("destinationrules.networking.istio.io");
        assert_eq!(rule["spec"]["names"]["shortNames"], json!(["dr"]));
        let versions: Vec<(&str, bool)> = rule["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v["storage"].as_bool().unwrap()))
            .collect();
        assert_eq!(
            versions,
            [("v1alpha3", true), ("v1beta1", false), ("v1", false)]
        );
        let authz = by_name("authorizationpolicies.security.istio.io");
        assert_eq!(authz["spec"]["versions"][0]["name"], "v1beta1");
        assert_eq!(authz["spec"]["versions"][0]["storage"], true);
        assert_eq!(authz["spec"]["names"]["shortNames"], json!(["ap"]));
    }

    #[test]
    fn a_schema_node_without_a_type_is_not_structural() {
        let schema = json!({"type": "object", "properties": {"spec": {"properties": {}}}});
        assert_eq!(
            structural_problem(&schema, "s").as_deref(),
            Some("s.properties.spec: no type")
        );
    }
}

//! Shared helpers for the policy tests: load YAML into objects with creation times in document order.

#![allow(dead_code)]

use std::collections::BTreeMap;

use ironmesh_api::policy::{MeshConfig, PolicyIndex, Workload};
use ironmesh_api::{Object, load_documents};

/// Loads `yaml`, giving every object without a `creationTimestamp` one in document order (the first
/// document is the oldest).
pub fn objects(yaml: &str) -> Vec<Object> {
    let loaded =
        load_documents("case.yaml", yaml).unwrap_or_else(|e| panic!("test YAML invalid:\n{e}"));
    loaded
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut object = l.object;
            if object.metadata.creation_timestamp.is_none() {
                object.metadata.creation_timestamp =
                    Some(format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60));
            }
            object
        })
        .collect()
}

pub fn index(yaml: &str, auto_mtls: bool) -> PolicyIndex {
    PolicyIndex::new(
        &objects(yaml),
        MeshConfig {
            auto_mtls,
            ..MeshConfig::default()
        },
    )
}

pub fn workload(namespace: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: namespace.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        service_account: "default".to_string(),
    }
}

/// The walkthrough's three namespaces with httpbin and sleep in each; foo and bar are injected.
pub fn walkthrough_apps() -> String {
    let mut out = String::new();
    for ns in ["foo", "bar", "legacy"] {
        let sidecar = if ns == "legacy" {
            String::new()
        } else {
            "        security.istio.io/tlsMode: istio\n".to_string()
        };
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n\
---\napiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 8000\n  selector:\n    app: httpbin\n\
---\napiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: httpbin\n  namespace: {ns}\nspec:\n  template:\n    metadata:\n      labels:\n        app: httpbin\n{sidecar}    spec:\n      containers:\n      - name: httpbin\n        image: httpbin\n        ports:\n        - containerPort: 8000\n\
---\napiVersion: v1\nkind: Service\nmetadata:\n  name: sleep\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 80\n  selector:\n    app: sleep\n\
---\napiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: sleep\n  namespace: {ns}\nspec:\n  template:\n    metadata:\n      labels:\n        app: sleep\n{sidecar}    spec:\n      serviceAccountName: sleep\n      containers:\n      - name: sleep\n        image: curl\n"
        ));
    }
    out
}

pub const PERMISSIVE_MESH_POLICY: &str = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata:\n  name: default\nspec:\n  peers:\n  - mtls:\n      mode: PERMISSIVE\n";
pub const STRICT_MESH_POLICY: &str = "---\napiVersion: \"authentication.istio.io/v1alpha1\"\nkind: \"MeshPolicy\"\nmetadata:\n  name: \"default\"\nspec:\n  peers:\n  - mtls: {}\n";
pub const ALL_INTERNAL_TRAFFIC: &str = "---\napiVersion: \"networking.istio.io/v1alpha3\"\nkind: \"DestinationRule\"\nmetadata:\n  name: \"default\"\n  namespace: \"default\"\nspec:\n  host: \"*.local\"\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n";

/// One YAML document; `spec` is the text after `spec:` (flow `" {..}"` or an indented block).
pub fn doc(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    spec: &str,
) -> String {
    let namespace = namespace
        .map(|ns| format!("  namespace: {ns}\n"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n{namespace}spec:{spec}\n"
    )
}

pub fn mesh_policy(spec: &str) -> String {
    doc(
        "authentication.istio.io/v1alpha1",
        "MeshPolicy",
        None,
        "default",
        spec,
    )
}

pub fn policy(namespace: &str, name: &str, spec: &str) -> String {
    doc(
        "authentication.istio.io/v1alpha1",
        "Policy",
        Some(namespace),
        name,
        spec,
    )
}

pub fn peer_authn(namespace: &str, name: &str, spec: &str) -> String {
    doc(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        Some(namespace),
        name,
        spec,
    )
}

pub fn rule(namespace: &str, name: &str, spec: &str) -> String {
    doc(
        "networking.istio.io/v1alpha3",
        "DestinationRule",
        Some(namespace),
        name,
        spec,
    )
}

pub fn service(namespace: &str, name: &str, spec: &str) -> String {
    doc("v1", "Service", Some(namespace), name, spec)
}

/// `Kind namespace/name`, or `-` when nothing decided.
pub fn who(decided_by: &Option<ironmesh_api::policy::PolicyRef>) -> String {
    decided_by
        .as_ref()
        .map_or("-".to_string(), |r| format!("{} {r}", r.kind))
}

/// Fails listing every failing case of a table, so one run shows all that disagree.
pub fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! Sidecar injection, one function for every path a pod takes into the mesh: `ironmesh kube-inject`,
//! `ironmesh apply` in a namespace labelled for injection, and the control plane's mutating admission
//! webhook on Kubernetes (which turns the difference into a JSON patch). A pure transform of objects: adds
//! the `ironmesh-init` init container, the `ironmesh-proxy` container, the `security.istio.io/tlsMode:
//! istio` label and the `sidecar.istio.io/status` annotation to every pod template (Deployment) and Pod.
//! Idempotent; honours `sidecar.istio.io/inject: "false"`.
//!
//! One injected form runs on both engines. On Kubernetes the proxy gets what Istio's template gives
//! `istio-proxy`: its pod's projected service-account token for audience `istio-ca` (volume
//! `istio-token`), the namespace's `istio-ca-root-cert` ConfigMap (volume `istiod-ca-cert`), the pod's
//! name, namespace, service account and address from the downward API, and the control plane's address
//! (`https://istiod.istio-system.svc:15012`). The local runtime's kubelet resolves the same downward-API
//! variables and gives the proxy its own credential and socket in place of the Kubernetes ones.

use crate::Object;
use serde_json::{Map, Value, json};

pub const PROXY_CONTAINER: &str = "ironmesh-proxy";
pub const INIT_CONTAINER: &str = "ironmesh-init";
/// The sidecar's image, tagged with this release as Istio's template tags its proxy (`hub/proxyv2:tag`), so a
/// pod runs the proxy of the CLI that injected it. images/build.sh builds it under this name (docker.io/ is
/// what a short name means to containerd).
pub const PROXY_IMAGE: &str = concat!("ironmesh/proxy:", env!("CARGO_PKG_VERSION"));
/// Istio's template pulls `Always` unless `global.imagePullPolicy` says otherwise: its images live in a
/// registry. Ours are imported into each node (scripts/k8s-env.sh, no registry reachable): a pull would
/// fail, so the kubelet must use the image it has.
pub const PROXY_IMAGE_PULL_POLICY: &str = "IfNotPresent";
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
pub const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";
/// Where the proxy reaches the control plane on Kubernetes: istiod's Service and TLS port, as
/// `ironmesh install` creates them.
pub const CONTROL_PLANE_URL: &str = "https://istiod.istio-system.svc:15012";
/// The projected token volume (Istio's name, audience, lifetime and path).
pub const TOKEN_VOLUME: &str = "istio-token";
pub const TOKEN_AUDIENCE: &str = "istio-ca";
pub const TOKEN_EXPIRATION_SECONDS: u64 = 43_200;
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The mesh roots' volume: the namespace's ConfigMap the control plane writes (Istio's names).
pub const ROOT_VOLUME: &str = "istiod-ca-cert";
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_DIR: &str = "/var/run/secrets/istio";
/// Namespace labels that turn automatic injection on (either one, value `enabled`).
pub const NAMESPACE_INJECTION_LABELS: [&str; 2] = ["ironmesh-injection", "istio-injection"];

/// Injects every Deployment and Pod of `objects`; other objects pass through unchanged.
pub fn inject_objects(objects: Vec<Object>) -> Vec<Object> {
    objects
        .into_iter()
        .map(|mut object| {
            inject_object(&mut object);
            object
        })
        .collect()
}

/// Whether a namespace's labels ask for automatic injection.
pub fn namespace_wants_injection(labels: Option<&Value>) -> bool {
    NAMESPACE_INJECTION_LABELS
        .iter()
        .any(|key| labels.and_then(|l| l.get(*key)).and_then(Value::as_str) == Some("enabled"))
}

/// Injects one object in place; `true` when the sidecar was added (false: not a workload, opted out, or
/// already injected).
pub fn inject_object(object: &mut Object) -> bool {
    match object.kind.as_str() {
        "Deployment" => {
            let Some(template) = object
                .body
                .get_mut("spec")
                .and_then(|s| s.get_mut("template"))
                .and_then(Value::as_object_mut)
            else {
                return false;
            };
            let mut metadata = template
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
                return false;
            };
            let injected = inject_pod(&mut metadata, spec);
            if injected {
                // Replacing an existing key keeps its position in the template.
                template.insert("metadata".into(), Value::Object(metadata));
            }
            injected
        }
        "Pod" => {
            let mut metadata = Map::new();
            for (key, value) in &object.metadata.labels {
                let labels = metadata.entry("labels").or_insert_with(|| json!({}));
                labels[key] = Value::from(value.as_str());
            }
            for (key, value) in &object.metadata.annotations {
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                annotations[key] = Value::from(value.as_str());
            }
            let Some(spec) = object.body.get_mut("spec").and_then(Value::as_object_mut) else {
                return false;
            };
            let injected = inject_pod(&mut metadata, spec);
            if injected {
                object
                    .metadata
                    .labels
                    .insert(TLS_MODE_LABEL.into(), "istio".into());
                object
                    .metadata
                    .annotations
                    .insert(STATUS_ANNOTATION.into(), status_annotation());
            }
            injected
        }
        _ => false,
    }
}

/// Rewrites a Deployment of a removed version (`extensions/v1beta1`, `apps/v1beta1`, `apps/v1beta2`) as
/// `apps/v1`, with the selector those versions defaulted from the template's labels when it has none.
/// Returns the old version when it changed something.
pub fn to_apps_v1(object: &mut Object) -> Option<String> {
    const REMOVED: [&str; 3] = ["extensions/v1beta1", "apps/v1beta1", "apps/v1beta2"];
    if object.kind != "Deployment" || !REMOVED.contains(&object.api_version.as_str()) {
        return None;
    }
    let old = std::mem::replace(&mut object.api_version, "apps/v1".into());
    if let Some(spec) = object.body.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("rollbackTo");
        spec.remove("templateGeneration");
        let labels = spec
            .get("template")
            .and_then(|t| t.pointer("/metadata/labels"))
            // The sidecar's tlsMode label is ours, not the user's: selecting on it would tie the
            // Deployment to injection.
            .map(|labels| {
                let mut labels = labels.clone();
                if let Some(map) = labels.as_object_mut() {
                    map.remove(TLS_MODE_LABEL);
                }
                labels
            });
        if !spec.contains_key("selector")
            && let Some(labels) = labels
        {
            spec.insert("selector".into(), json!({"matchLabels": labels}));
        }
    }
    Some(old)
}

/// Injects a Pod as the Kubernetes API sends it (JSON, `metadata` and `spec`), in place: the same
/// transform as [`inject_object`] on a pod template. `true` when the sidecar was added.
pub fn inject_pod_json(pod: &mut Value) -> bool {
    let Some(pod) = pod.as_object_mut() else {
        return false;
    };
    let mut metadata = pod
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return false;
    };
    let injected = inject_pod(&mut metadata, spec);
    if injected {
        pod.insert("metadata".into(), Value::Object(metadata));
    }
    injected
}

/// What a pod says about its own injection (`sidecar.istio.io/inject`), as Istio reads it: the label
/// first (what the webhook's objectSelector sees), else the annotation; YAML's booleans in any case.
/// `None` when neither says (the namespace decides), or the value is not a boolean.
pub fn pod_injection_choice(metadata: &Map<String, Value>) -> Option<bool> {
    let value = |field: &str| {
        metadata
            .get(field)
            .and_then(|m| m.get(INJECT_ANNOTATION))
            .and_then(Value::as_str)
    };
    let value = value("labels").or_else(|| value("annotations"))?;
    match value.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Some(true),
        "n" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn status_annotation() -> String {
    json!({
        "version": concat!("ironmesh-", env!("CARGO_PKG_VERSION")),
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [TOKEN_VOLUME, ROOT_VOLUME],
        "imagePullSecrets": null,
    })
    .to_string()
}

/// An environment variable from the downward API.
fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

fn has_container(spec: &Map<String, Value>, list: &str, name: &str) -> bool {
    spec.get(list)
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(name))
        })
}

fn inject_pod(metadata: &mut Map<String, Value>, spec: &mut Map<String, Value>) -> bool {
    let opted_out = pod_injection_choice(metadata) == Some(false);
    if opted_out || has_container(spec, "containers", PROXY_CONTAINER) {
        return false;
    }
    let push = |spec: &mut Map<String, Value>, list: &str, container: Value| {
        let items = spec.entry(list).or_insert_with(|| json!([]));
        if let Some(items) = items.as_array_mut() {
            items.push(container);
        }
    };
    if !has_container(spec, "initContainers", INIT_CONTAINER) {
        push(
            spec,
            "initContainers",
            json!({
                "name": INIT_CONTAINER,
                "image": PROXY_IMAGE,
                "imagePullPolicy": PROXY_IMAGE_PULL_POLICY,
                // Exempt the proxy by uid only: SO_MARK needs just CAP_NET_RAW on Linux >= 5.17.
                "command": ["ironmesh-proxy", "iptables", "--apply", "--proxy-mark", "0"],
                // Istio's istio-init: only what iptables needs (docs/SECURITY.md).
                "securityContext": {
                    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                    "runAsUser": 0,
                    "runAsGroup": 0,
                    "runAsNonRoot": false,
                    "privileged": false,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": false,
                },
            }),
        );
    }
    push(
        spec,
        "containers",
        json!({
            "name": PROXY_CONTAINER,
            "image": PROXY_IMAGE,
            "imagePullPolicy": PROXY_IMAGE_PULL_POLICY,
            "command": ["ironmesh-proxy", "run"],
            "ports": [
                {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"},
                {"containerPort": 15021, "name": "health", "protocol": "TCP"},
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
            "env": [
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                field_env("POD_IP", "status.podIP"),
                {"name": "IRONMESH_CONTROL_PLANE", "value": CONTROL_PLANE_URL},
                {"name": "IRONMESH_CONTROL_PLANE_ROOT", "value": format!("{ROOT_DIR}/root-cert.pem")},
                {"name": "IRONMESH_TOKEN_FILE", "value": format!("{TOKEN_DIR}/{TOKEN_VOLUME}")},
            ],
            "volumeMounts": [
                {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
                {"name": ROOT_VOLUME, "mountPath": ROOT_DIR, "readOnly": true},
            ],
            // Istio's istio-proxy: uid/gid 1337 (the interception rules exempt it), no capabilities.
            "securityContext": {
                "runAsUser": 1337,
                "runAsGroup": 1337,
                "runAsNonRoot": true,
                "privileged": false,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
            },
        }),
    );
    for volume in [
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": TOKEN_VOLUME}}]}}),
        json!({"name": ROOT_VOLUME, "configMap": {"name": ROOT_CONFIGMAP}}),
    ] {
        let name = volume["name"].as_str().unwrap_or_default().to_owned();
        if !has_container(spec, "volumes", &name) {
            push(spec, "volumes", volume);
        }
    }
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    labels[TLS_MODE_LABEL] = Value::from("istio");
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    annotations[STATUS_ANNOTATION] = Value::from(status_annotation());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Vec<Object> {
        crate::load_documents("test.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|l| l.object)
            .collect()
    }

    const SLEEP: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: sleep
  labels:
    app: sleep
spec:
  ports:
  - port: 80
    name: http
  selector:
    app: sleep
---
apiVersion: extensions/v1beta1
kind: Deployment
metadata:
  name: sleep
spec:
  replicas: 1
  template:
    metadata:
      labels:
        app: sleep
    spec:
      containers:
      - name: sleep
        image: pstauffer/curl
        command: ["/bin/sleep", "3650d"]
        imagePullPolicy: IfNotPresent
"#;

    fn names(spec: &Value, list: &str) -> Vec<String> {
        spec[list]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn deployments_get_the_sidecar_and_services_stay_unchanged() {
        let original = load(SLEEP);
        let injected = inject_objects(original.clone());
        assert_eq!(injected[0], original[0], "the Service is untouched");
        let template = &injected[1].body["spec"]["template"];
        assert_eq!(
            names(&template["spec"], "containers"),
            ["sleep", "ironmesh-proxy"]
        );
        assert_eq!(
            names(&template["spec"], "initContainers"),
            ["ironmesh-init"]
        );
        let proxy = &template["spec"]["containers"][1];
        assert_eq!(proxy["command"], json!(["ironmesh-proxy", "run"]));
        let ports: Vec<_> = proxy["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].clone())
            .collect();
        assert_eq!(ports, [json!(15090), json!(15021)]);
        assert_eq!(
            template["spec"]["initContainers"][0]["command"],
            json!(["ironmesh-proxy", "iptables", "--apply", "--proxy-mark", "0"])
        );
        let init_security = &template["spec"]["initContainers"][0]["securityContext"];
        assert_eq!(
            init_security["capabilities"],
            json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
        );
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        assert_eq!(
            proxy["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(template["metadata"]["labels"][TLS_MODE_LABEL], "istio");
        assert_eq!(template["metadata"]["labels"]["app"], "sleep");
        let status: Value = serde_json::from_str(
            template["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["containers"], json!(["ironmesh-proxy"]));
        // The injected object is still valid for the API.
        crate::validate_object(&injected[1]).unwrap();
    }

    #[test]
    fn the_injected_containers_use_the_imported_image_without_pulling() {
        let injected = inject_objects(load(SLEEP));
        let spec = &injected[1].body["spec"]["template"]["spec"];
        for container in [&spec["initContainers"][0], &spec["containers"][1]] {
            // A release tag, never `latest` (which the kubelet would pull on every start), and a policy
            // that takes the image the node has: the test cluster has no registry.
            let image = container["image"].as_str().unwrap();
            let (repository, tag) = image.rsplit_once(':').unwrap();
            assert_eq!(repository, "ironmesh/proxy");
            assert_eq!(tag, env!("CARGO_PKG_VERSION"));
            assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        }
    }

    #[test]
    fn removed_deployment_versions_become_apps_v1_with_the_template_labels_as_selector() {
        let mut injected = inject_objects(load(SLEEP));
        assert_eq!(to_apps_v1(&mut injected[0]), None, "a Service stays");
        assert_eq!(
            to_apps_v1(&mut injected[1]).as_deref(),
            Some("extensions/v1beta1")
        );
        assert_eq!(injected[1].api_version, "apps/v1");
        assert_eq!(
            injected[1].body["spec"]["selector"],
            json!({"matchLabels": {"app": "sleep"}})
        );
        crate::validate_object(&injected[1]).unwrap();
        assert_eq!(to_apps_v1(&mut injected[1]), None, "apps/v1 stays as it is");
    }

    #[test]
    fn the_proxy_gets_its_token_the_mesh_root_and_the_control_planes_address() {
        let injected = inject_objects(load(SLEEP));
        let spec = &injected[1].body["spec"]["template"]["spec"];
        let proxy = &spec["containers"][1];
        let env = |name: &str| {
            proxy["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(
            env("IRONMESH_CONTROL_PLANE")["value"],
            "https://istiod.istio-system.svc:15012"
        );
        assert_eq!(
            env("IRONMESH_TOKEN_FILE")["value"],
            "/var/run/secrets/tokens/istio-token"
        );
        assert_eq!(
            env("IRONMESH_CONTROL_PLANE_ROOT")["value"],
            "/var/run/secrets/istio/root-cert.pem"
        );
        assert_eq!(
            env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(
            env("SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.serviceAccountName"
        );
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(
            volumes[0]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"})
        );
        assert_eq!(volumes[1]["configMap"]["name"], "istio-ca-root-cert");
        assert_eq!(
            proxy["volumeMounts"],
            json!([
                {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
                {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio", "readOnly": true},
            ])
        );
        // Only the proxy sees the token (docs/SECURITY.md): the app's container mounts nothing new.
        assert!(spec["containers"][0].get("volumeMounts").is_none());
    }

    #[test]
    fn injecting_twice_adds_nothing() {
        let once = inject_objects(load(SLEEP));
        let twice = inject_objects(once.clone());
        assert_eq!(once, twice);
    }

    #[test]
    fn the_opt_out_annotation_is_honoured() {
        let yaml = SLEEP.replace(
            "      labels:\n        app: sleep\n    spec:",
            "      labels:\n        app: sleep\n      annotations:\n        sidecar.istio.io/inject: \"false\"\n    spec:",
        );
        let original = load(&yaml);
        assert_eq!(inject_objects(original.clone()), original);
    }

    #[test]
    fn bare_pods_are_injected_too() {
        let pod = load(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: x\n",
        );
        let injected = inject_objects(pod);
        assert_eq!(
            names(&injected[0].body["spec"], "containers"),
            ["app", "ironmesh-proxy"]
        );
        assert_eq!(injected[0].metadata.labels[TLS_MODE_LABEL], "istio");
    }

    #[test]
    fn a_pod_as_the_api_sends_it_gets_the_same_containers_as_a_template() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "foo", "labels": {"app": "sleep"}},
            "spec": {"containers": [{"name": "sleep", "image": "pstauffer/curl"}]}});
        assert!(inject_pod_json(&mut pod));
        let template = &inject_objects(load(SLEEP))[1].body["spec"]["template"];
        assert_eq!(
            pod["spec"]["containers"][1],
            template["spec"]["containers"][1]
        );
        assert_eq!(
            pod["spec"]["initContainers"],
            template["spec"]["initContainers"]
        );
        assert_eq!(pod["metadata"]["labels"][TLS_MODE_LABEL], "istio");
        assert_eq!(pod["metadata"]["labels"]["app"], "sleep");
        assert_eq!(
            pod["metadata"]["annotations"][STATUS_ANNOTATION],
            template["metadata"]["annotations"][STATUS_ANNOTATION]
        );
        let once = pod.clone();
        assert!(!inject_pod_json(&mut pod), "an injected pod is left alone");
        assert_eq!(pod, once);
    }

    #[test]
    fn the_label_wins_over_the_annotation_as_in_istio() {
        let meta = |value: Value| value.as_object().unwrap().clone();
        let key = INJECT_ANNOTATION;
        assert_eq!(pod_injection_choice(&meta(json!({}))), None);
        assert_eq!(
            pod_injection_choice(&meta(json!({"annotations": {key: "False"}}))),
            Some(false)
        );
        assert_eq!(
            pod_injection_choice(&meta(
                json!({"labels": {key: "true"}, "annotations": {key: "false"}})
            )),
            Some(true)
        );
        assert_eq!(
            pod_injection_choice(&meta(json!({"labels": {key: "maybe"}}))),
            None
        );
        let mut pod = json!({"metadata": {"labels": {key: "false"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}});
        assert!(!inject_pod_json(&mut pod), "the label opts out");
    }

    #[test]
    fn namespace_labels_turn_injection_on() {
        assert!(namespace_wants_injection(Some(
            &json!({"istio-injection": "enabled"})
        )));
        assert!(namespace_wants_injection(Some(
            &json!({"ironmesh-injection": "enabled"})
        )));
        assert!(!namespace_wants_injection(Some(
            &json!({"istio-injection": "disabled"})
        )));
        assert!(!namespace_wants_injection(None));
    }
}

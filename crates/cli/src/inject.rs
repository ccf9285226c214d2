//! Sidecar injection of manifests (`ironmesh kube-inject`, and `apply` in namespaces labelled for
//! injection): a pure transform of objects. Adds the `ironmesh-init` init container, the `ironmesh-proxy`
//! container, the `security.istio.io/tlsMode: istio` label and the `sidecar.istio.io/status` annotation to
//! every pod template (Deployment) and Pod. Idempotent; honours `sidecar.istio.io/inject: "false"`.

use ironmesh_api::Object;
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

fn status_annotation() -> String {
    json!({
        "version": concat!("ironmesh-", env!("CARGO_PKG_VERSION")),
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": [],
        "imagePullSecrets": null,
    })
    .to_string()
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
    let opted_out = metadata
        .get("annotations")
        .and_then(|a| a.get(INJECT_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
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
        ironmesh_api::load_documents("test.yaml", yaml)
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
        ironmesh_api::validate_object(&injected[1]).unwrap();
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
        ironmesh_api::validate_object(&injected[1]).unwrap();
        assert_eq!(to_apps_v1(&mut injected[1]), None, "apps/v1 stays as it is");
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

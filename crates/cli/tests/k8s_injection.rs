//! Sidecar injection by the control plane's mutating admission webhook on a REAL kube-apiserver (with
//! etcd, the controller-manager and the scheduler; no nodes: pods are stored and stay Pending, which is
//! all the patch needs): `ironmesh-control-plane run --kubeconfig` outside the cluster, `ironmesh
//! install --webhook-url`, then real kubectl. A pod of a namespace labelled `istio-injection=enabled`
//! is injected and one of an unlabelled namespace is not; `sidecar.istio.io/inject` opts out
//! (annotation) and in (label); a pod written by `ironmesh kube-inject` is stored unchanged; a
//! Deployment's pod (made by the ReplicaSet controller) is injected, and is the same pod as the one
//! `kubectl apply -f <(ironmesh kube-inject -f ...)` gives, minus the fields the API server generates.
//!
//! The cluster is kube/tests/common's (scripts/k8s-env.sh `up --control-plane-only`, or
//! `IRONMESH_K8S_KUBECONFIG`); without the Kubernetes binaries the test fails and says to build them.

mod common;
#[path = "../../kube/tests/common/mod.rs"]
mod k8s;

use std::path::Path;
use std::process::{Command, Stdio};

use k8s::Cluster;
use k8s::control_plane::{ControlPlane, until};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh");

fn ironmesh(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ironmesh {args:?}: {}",
        common::output_text(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn pod_yaml(name: &str, labels: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}{labels}}}\n  \
         annotations: {{{annotations}}}\nspec:\n  containers:\n  - name: app\n    image: docker.io/citizenstig/httpbin\n    \
         imagePullPolicy: IfNotPresent\n    ports:\n    - containerPort: 8000\n"
    )
}

fn get_pod(cluster: &Cluster, namespace: &str, name: &str) -> Value {
    serde_json::from_str(
        &cluster.kubectl_ok(&["get", "pod", name, "-n", namespace, "-o", "json"], None),
    )
    .unwrap()
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// What two ways of injecting must agree on: the pod's labels, annotations and spec, without what the
/// API server and the controllers generate (the service-account token volume's random suffix, the
/// ReplicaSet's `pod-template-hash`, kubectl's last-applied annotation).
fn comparable(pod: &Value) -> Value {
    let mut spec = serde_json::to_string(&pod["spec"]).unwrap();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap();
        if name.starts_with("kube-api-access-") {
            spec = spec.replace(name, "kube-api-access-");
        }
    }
    let mut labels = pod["metadata"]["labels"].clone();
    labels
        .as_object_mut()
        .map(|l| l.remove("pod-template-hash"));
    let mut annotations = pod["metadata"]["annotations"].clone();
    annotations
        .as_object_mut()
        .map(|a| a.remove("kubectl.kubernetes.io/last-applied-configuration"));
    let mut spec: Value = serde_json::from_str(&spec).unwrap();
    // Order is not meaning: the ServiceAccount admission plugin appends its volume and mounts before the
    // webhook injects (so after ours in a kube-inject pod, before them in a webhook-injected one).
    let by_name = |list: &mut Value| {
        if let Some(items) = list.as_array_mut() {
            items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
    };
    by_name(&mut spec["volumes"]);
    for containers in ["containers", "initContainers"] {
        let containers = spec.get_mut(containers).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            if let Some(mounts) = container.get_mut("volumeMounts") {
                by_name(mounts);
            }
        }
    }
    json!({"labels": labels, "annotations": annotations, "spec": spec})
}

#[test]
fn the_webhook_injects_pods_as_kube_inject_does() {
    common::build_control_plane();
    let control_plane = Path::new(BIN).with_file_name("ironmesh-control-plane");
    let cluster = Cluster::get();
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_owned();
    let id = std::process::id();
    let (labelled, plain, manual) = (
        format!("inject-on-{id}"),
        format!("inject-off-{id}"),
        format!("inject-manual-{id}"),
    );

    let home = tempfile::tempdir().unwrap();
    let mut running = ControlPlane::start(&cluster, &control_plane, home.path());
    running.namespaces = vec![labelled.clone(), plain.clone(), manual.clone()];
    // On Kubernetes the control plane takes its CA from istio-system, which `install` creates: it starts
    // serving the webhooks after that, and publishes their caBundle only once it serves (waited for below).
    let webhook_url = running.webhook_url();
    let installed = ironmesh(&[
        "install",
        "--kubeconfig",
        &kubeconfig,
        "--webhook-url",
        &webhook_url,
    ]);
    assert!(
        installed
            .contains("mutatingwebhookconfigurations/istio-sidecar-injector serverside-applied"),
        "{installed}"
    );
    // The control plane publishes its CA into both of the injector's webhooks.
    until(
        "the control plane did not publish its CA in the injector's configuration",
        || {
            let bundles = cluster.kubectl_ok(
                &[
                    "get",
                    "mutatingwebhookconfiguration",
                    "istio-sidecar-injector",
                    "-o",
                    "jsonpath={.webhooks[*].clientConfig.caBundle}",
                ],
                None,
            );
            (bundles.split_whitespace().count() == 2).then_some(())
        },
    );

    cluster.kubectl_ok(&["create", "namespace", &labelled], None);
    cluster.kubectl_ok(
        &["label", "namespace", &labelled, "istio-injection=enabled"],
        None,
    );
    cluster.kubectl_ok(&["create", "namespace", &plain], None);
    cluster.kubectl_ok(&["create", "namespace", &manual], None);
    for namespace in [&labelled, &plain, &manual] {
        // The ServiceAccount admission refuses pods until the controller-manager made `default`.
        until(
            &format!("no default service account in {namespace}"),
            || {
                cluster
                    .kubectl(&["get", "serviceaccount", "default", "-n", namespace], None)
                    .status
                    .success()
                    .then_some(())
            },
        );
    }
    // The API server's webhook configuration is an informer's: the first pod waits until it calls us
    // (a server-side dry run runs the webhooks: they declare no side effects).
    until("the API server never called the injector", || {
        let dry = cluster.kubectl(
            &[
                "create",
                "--dry-run=server",
                "-o",
                "json",
                "-n",
                &labelled,
                "-f",
                "-",
            ],
            Some(&pod_yaml("probe", "", "")),
        );
        let pod: Value = serde_json::from_slice(&dry.stdout).ok()?;
        names(&pod, "containers")
            .contains(&"ironmesh-proxy".to_owned())
            .then_some(())
    });

    let create = |namespace: &str, yaml: &str| {
        cluster.kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(yaml));
    };
    // A labelled namespace: injected, as kube-inject injects.
    create(&labelled, &pod_yaml("app", "", ""));
    let injected = get_pod(&cluster, &labelled, "app");
    assert_eq!(names(&injected, "containers"), ["app", "ironmesh-proxy"]);
    assert_eq!(names(&injected, "initContainers"), ["ironmesh-init"]);
    assert_eq!(
        injected["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    let by_kube_inject = {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.yaml");
        std::fs::write(&file, pod_yaml("app", "", "")).unwrap();
        ironmesh(&["kube-inject", "-f", file.to_str().unwrap()])
    };
    create(&manual, &by_kube_inject);
    let manual_pod = get_pod(&cluster, &manual, "app");
    assert_eq!(
        comparable(&injected),
        comparable(&manual_pod),
        "webhook vs kube-inject"
    );

    // An unlabelled namespace: not injected.
    create(&plain, &pod_yaml("app", "", ""));
    assert_eq!(
        names(&get_pod(&cluster, &plain, "app"), "containers"),
        ["app"]
    );
    // The annotation "false" opts out in a labelled namespace.
    create(
        &labelled,
        &pod_yaml("optout", "", "sidecar.istio.io/inject: \"false\""),
    );
    let optout = get_pod(&cluster, &labelled, "optout");
    assert_eq!(names(&optout, "containers"), ["app"]);
    assert!(names(&optout, "initContainers").is_empty());
    // The label "true" opts in in an unlabelled namespace.
    create(
        &plain,
        &pod_yaml("optin", ", sidecar.istio.io/inject: \"true\"", ""),
    );
    assert_eq!(
        names(&get_pod(&cluster, &plain, "optin"), "containers"),
        ["app", "ironmesh-proxy"]
    );
    // A pod kube-inject injected already is stored as written, in a labelled namespace too.
    create(
        &labelled,
        &by_kube_inject.replacen("\n  name: app\n", "\n  name: manual\n", 1),
    );
    let twice = get_pod(&cluster, &labelled, "manual");
    assert_eq!(names(&twice, "containers"), ["app", "ironmesh-proxy"]);
    assert_eq!(names(&twice, "initContainers"), ["ironmesh-init"]);
    assert_eq!(comparable(&twice)["spec"], comparable(&manual_pod)["spec"]);

    // The walkthrough's httpbin: `kubectl label namespace ... istio-injection=enabled` + `kubectl apply -f
    // samples/httpbin/httpbin-apps-v1.yaml` (the seed's httpbin.yaml is extensions/v1beta1, which
    // Kubernetes 1.16 removed) against `kubectl apply -f <(ironmesh kube-inject -f ...)`.
    let sample = common::samples().join("httpbin/httpbin-apps-v1.yaml");
    let sample = sample.to_str().unwrap();
    cluster.kubectl_ok(&["apply", "-n", &labelled, "-f", sample], None);
    create(&manual, &ironmesh(&["kube-inject", "-f", sample]));
    let replica = |namespace: &str| {
        until(
            &format!("the ReplicaSet controller made no httpbin pod in {namespace}"),
            || {
                let pods: Value = serde_json::from_str(&cluster.kubectl_ok(
                    &[
                        "get",
                        "pods",
                        "-n",
                        namespace,
                        "-l",
                        "app=httpbin",
                        "-o",
                        "json",
                    ],
                    None,
                ))
                .ok()?;
                pods["items"].as_array()?.first().cloned()
            },
        )
    };
    let (webhook_pod, manual_pod) = (replica(&labelled), replica(&manual));
    assert_eq!(
        names(&webhook_pod, "containers"),
        ["httpbin", "ironmesh-proxy"]
    );
    assert_eq!(
        comparable(&webhook_pod),
        comparable(&manual_pod),
        "Deployment: webhook vs kube-inject"
    );
    drop(running);
}

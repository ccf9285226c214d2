//! The sidecar injector's answers to AdmissionReviews as kube-apiserver v1.34 sends them: the JSON
//! patch, applied as the API server applies it, gives the pod `ironmesh kube-inject` gives; pods that
//! opt out, run on the host's network, live in Kubernetes' namespaces or are injected already pass
//! unchanged; and the same over HTTPS at `/inject` beside `/validate`.

mod webhook_server;

use ironmesh_kube::inject::{INJECT_PATH, review};
use ironmesh_kube::webhook::ServeLimits;
use serde_json::{Value, json};
use webhook_server::TestWebhook;

/// A pod CREATE review as the API server sends it (after its defaulting and in-tree admission).
fn admission(namespace: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3b6c1f5e-8d2a-4c47-9a55-1d2e3f4a5b6c",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// A pod the ReplicaSet controller creates for httpbin: no name yet, defaults filled in, the
/// service-account token volume mounted.
fn httpbin_pod(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "httpbin-5d7f9c8b6-",
            "namespace": namespace,
            "labels": {"app": "httpbin", "version": "v1", "pod-template-hash": "5d7f9c8b6"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "httpbin-5d7f9c8b6",
                "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "containers": [{
                "name": "httpbin", "image": "docker.io/citizenstig/httpbin", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8000, "protocol": "TCP"}],
                "resources": {}, "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
            }],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler"
        }
    })
}

/// The response of the answer, checked to echo the request's uid and allow the pod.
fn response(request: &Value) -> Value {
    let answer = review(request);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{response}");
    response
}

/// The pod after the answer's patch, applied as the API server applies it (RFC 6902).
fn admitted(namespace: &str, pod: &Value) -> Value {
    use base64::Engine as _;
    let response = response(&admission(namespace, pod));
    let mut pod = pod.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    } else {
        assert!(response["patchType"].is_null());
    }
    pod
}

fn names(spec: &Value, list: &str) -> Vec<String> {
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_pod_gets_the_same_sidecar_as_kube_inject_through_the_patch() {
    let pod = httpbin_pod("foo");
    let injected = admitted("foo", &pod);
    let mut expected = pod.clone();
    assert!(ironmesh_api::inject::inject_pod_json(&mut expected));
    assert_eq!(
        injected, expected,
        "the patch is exactly kube-inject's change"
    );
    assert_eq!(
        names(&injected["spec"], "containers"),
        ["httpbin", "ironmesh-proxy"]
    );
    assert_eq!(
        names(&injected["spec"], "initContainers"),
        ["ironmesh-init"]
    );
    assert_eq!(
        injected["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    assert!(
        injected["metadata"]["annotations"]["sidecar.istio.io/status"].is_string(),
        "the status annotation (a key with a slash: escaped as ~1 in the patch's path)"
    );
    // Everything the pod had stays.
    assert_eq!(
        injected["metadata"]["ownerReferences"],
        pod["metadata"]["ownerReferences"]
    );
    // The pod's own volumes stay, first; the injection adds the mesh's (token and root) after them.
    let volumes = injected["spec"]["volumes"].as_array().unwrap();
    let own = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(&volumes[..own.len()], &own[..]);
    assert_eq!(
        names(&injected["spec"], "volumes")[own.len()..],
        ["istio-token", "istiod-ca-cert"]
    );
    assert_eq!(
        injected["spec"]["containers"][0],
        pod["spec"]["containers"][0]
    );
}

#[test]
fn pods_that_must_not_be_injected_pass_unchanged() {
    let with = |path: &str, value: Value| {
        let mut pod = httpbin_pod("foo");
        let (parent, key) = path.rsplit_once('/').unwrap();
        pod.pointer_mut(parent).unwrap()[key] = value;
        pod
    };
    let injected_already = {
        let mut pod = httpbin_pod("foo");
        assert!(ironmesh_api::inject::inject_pod_json(&mut pod));
        pod
    };
    // (case, namespace, pod)
    let table = [
        (
            "annotation false",
            "foo",
            with(
                "/metadata",
                json!({"generateName": "h-", "annotations": {"sidecar.istio.io/inject": "false"}}),
            ),
        ),
        (
            "label false",
            "foo",
            with(
                "/metadata",
                json!({"generateName": "h-", "labels": {"sidecar.istio.io/inject": "false"}}),
            ),
        ),
        (
            "host network",
            "foo",
            with("/spec/hostNetwork", json!(true)),
        ),
        ("kube-system", "kube-system", httpbin_pod("kube-system")),
        ("istio-system", "istio-system", httpbin_pod("istio-system")),
        (
            "injected already (kube-inject, or a template)",
            "foo",
            injected_already,
        ),
    ];
    for (case, namespace, pod) in table {
        assert_eq!(admitted(namespace, &pod), pod, "{case}");
    }
}

#[test]
fn the_label_true_wins_over_the_annotation_false_as_in_istio() {
    let mut pod = httpbin_pod("bar");
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
    pod["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    let injected = admitted("bar", &pod);
    assert_eq!(
        names(&injected["spec"], "containers"),
        ["httpbin", "ironmesh-proxy"]
    );
}

#[test]
fn other_kinds_and_operations_are_allowed_unchanged_and_garbage_is_refused() {
    let mut update = admission("foo", &httpbin_pod("foo"));
    update["request"]["operation"] = json!("UPDATE");
    assert!(response(&update)["patch"].is_null());
    let mut service = admission(
        "foo",
        &json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s", "namespace": "foo"}, "spec": {}}),
    );
    service["request"]["kind"]["kind"] = json!("Service");
    assert!(response(&service)["patch"].is_null());

    let answer = review(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}));
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("could not read the AdmissionReview"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_injector_answers_over_https_beside_the_validating_webhook() {
    let mut server = TestWebhook::start(ServeLimits::default()).await;
    let request = serde_json::to_vec(&admission("foo", &httpbin_pod("foo"))).unwrap();
    let answer = server.post(INJECT_PATH, &request, None).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["response"]["patchType"], "JSONPatch", "{body}");
    // The same review at /validate: a pod is not the validating webhook's to patch.
    let answer = server.post("/validate", &request, None).await;
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"]["patch"].is_null(), "{body}");
    let answer = server.post("/mutate", b"{}", None).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(INJECT_PATH), "{answer}");
    server.stop().await;
}

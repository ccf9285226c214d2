//! Against a REAL kube-apiserver and its aggregator: the seed's `extensions/v1beta1` Deployments through
//! ironmesh's aggregated API with real kubectl. `kubectl apply -f samples/httpbin/httpbin.yaml` creates
//! (`deployment.extensions/httpbin created`), applies again (unchanged), applies a change (a strategic
//! merge patch), gets and lists it in extensions/v1beta1 form while it is stored as an apps/v1
//! Deployment with the selector defaulted, and deletes it; a user the API server lets through for
//! `extensions` but who may not create apps/v1 Deployments is refused by our SubjectAccessReview; a
//! client without the aggregator's certificate is refused at the TLS handshake.
//!
//! Needs the Kubernetes binaries of scripts/k8s-build.sh; starts its own control-plane-only cluster (root),
//! or reuses the one `IRONMESH_K8S_KUBECONFIG` names (then removes what it created).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use ironmesh_kube::extensions::{self, FrontProxy};
use ironmesh_kube::install::{InstallOptions, apply, manifests};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::{Cluster, PATIENCE, repo};

/// scripts/k8s-env.sh's host address on the node bridge (`up` creates it, nodes or not): the API
/// server's aggregator dials the endpoint there. Loopback cannot be an Endpoints address.
const HOST_IP: &str = "198.18.127.1";

struct Created<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        // The APIService first: one left pointing at a stopped server blocks namespace deletion.
        self.cluster.delete_if_present(&[
            &["apiservice", extensions::API_SERVICE],
            &["namespace", self.namespace.as_str(), "--wait=false"],
            &["service", extensions::SERVICE, "-n", "istio-system"],
            &["endpoints", extensions::SERVICE, "-n", "istio-system"],
        ]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_extensions_v1beta1_deployments_apply_get_and_delete_with_real_kubectl() {
    ironmesh_kube::webhook::install_crypto_provider();
    let cluster = Cluster::get();
    let client = ironmesh_kube::client(Some(&cluster.kubeconfig))
        .await
        .unwrap();

    let front = FrontProxy::load(&client).await.unwrap();
    assert!(
        !front.allowed_names.is_empty(),
        "the test cluster names its front proxy"
    );
    let cert = extensions::serving_cert().unwrap();
    let tls = front.server_config(&cert).unwrap();
    let listener = tokio::net::TcpListener::bind((HOST_IP, 0)).await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(extensions::serve(
        listener,
        tls,
        front,
        client.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(extensions::keep_ca_bundle(
        client.clone(),
        cert.ca_pem.clone(),
        Duration::from_secs(1),
        shutdown.clone(),
    ));

    let namespace = format!("ironmesh-ext-test-{}", std::process::id());
    let _created = Created {
        cluster: &cluster,
        namespace: namespace.clone(),
    };
    // The install's namespace and aggregated API objects (the rest is other tests' business).
    let options = InstallOptions {
        webhook_url: Some("https://127.0.0.1:1/validate".into()),
        aggregated_api_endpoint: Some(address),
        ..InstallOptions::default()
    };
    let wanted: Vec<Value> = manifests(&options)
        .into_iter()
        .filter(|m| {
            matches!(
                m["kind"].as_str(),
                Some("Namespace" | "Service" | "Endpoints" | "APIService")
            )
        })
        .collect();
    let applied = apply(&client, &wanted).await.unwrap();
    assert!(
        applied.contains(&format!("apiservices/{}", extensions::API_SERVICE)),
        "{applied:?}"
    );

    // The aggregator checks the server (discovery through our certificate) before it says Available.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let available = cluster.kubectl_ok(
            &[
                "get",
                "apiservice",
                extensions::API_SERVICE,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Available\")].status} {.status.conditions[?(@.type==\"Available\")].message}",
            ],
            None,
        );
        if available.starts_with("True") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "APIService {} not Available within {PATIENCE:?}: {available}",
            extensions::API_SERVICE
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The aggregator's discovery reads our documents on its own schedule after the APIService changes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let resources = cluster.kubectl_ok(&["api-resources", "--api-group=extensions"], None);
        if resources.contains("deployments") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "extensions/v1beta1 deployments not in discovery within {PATIENCE:?}: {resources}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    cluster.kubectl_ok(&["create", "namespace", &namespace], None);
    let httpbin = repo().join("samples/httpbin/httpbin.yaml");
    let httpbin = httpbin.to_str().unwrap();
    // The API server's discovery cache may take a moment to list the new group for kubectl's mapper.
    let mut first = cluster.kubectl(&["apply", "-f", httpbin, "-n", &namespace], None);
    for _ in 0..20 {
        if first.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        first = cluster.kubectl(&["apply", "-f", httpbin, "-n", &namespace], None);
    }
    if !first.status.success() {
        // What kubectl and the servers said, request by request.
        let verbose = cluster.kubectl(&["apply", "-v=8", "-f", httpbin, "-n", &namespace], None);
        panic!(
            "kubectl apply failed: {}\n{}",
            text(&first.stderr),
            text(&verbose.stderr)
        );
    }
    let out = text(&first.stdout);
    assert!(out.contains("service/httpbin created"), "{out}");
    assert!(
        out.contains("deployment.extensions/httpbin created"),
        "{out}"
    );

    let again = cluster.kubectl_ok(&["apply", "-f", httpbin, "-n", &namespace], None);
    assert!(
        again.contains("deployment.extensions/httpbin unchanged"),
        "{again}"
    );

    // Read back in both versions: one object, stored as apps/v1 with the selector extensions defaulted.
    let as_extensions: Value = serde_json::from_str(&cluster.kubectl_ok(
        &[
            "get",
            "deployments.extensions",
            "httpbin",
            "-n",
            &namespace,
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let as_apps: Value = serde_json::from_str(&cluster.kubectl_ok(
        &[
            "get",
            "deployments.apps",
            "httpbin",
            "-n",
            &namespace,
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(as_extensions["apiVersion"], "extensions/v1beta1");
    assert_eq!(as_apps["apiVersion"], "apps/v1");
    assert_eq!(as_extensions["metadata"]["uid"], as_apps["metadata"]["uid"]);
    assert_eq!(
        as_apps["spec"]["selector"],
        serde_json::json!({"matchLabels": {"app": "httpbin", "version": "v1"}})
    );
    let listed = cluster.kubectl_ok(&["get", "deployments.extensions", "-n", &namespace], None);
    assert!(listed.contains("httpbin"), "{listed}");
    // Without a group, `deployments` still means apps (our group's priority is below it).
    let plain = cluster.kubectl_ok(
        &[
            "get",
            "deployments",
            "httpbin",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.apiVersion}",
        ],
        None,
    );
    assert_eq!(plain, "apps/v1");

    // A changed file: kubectl's strategic merge patch, done on apps/v1.
    let changed = std::fs::read_to_string(httpbin)
        .unwrap()
        .replace("replicas: 1", "replicas: 2");
    let configured = cluster.kubectl_ok(&["apply", "-f", "-", "-n", &namespace], Some(&changed));
    assert!(
        configured.contains("deployment.extensions/httpbin configured"),
        "{configured}"
    );
    let replicas = cluster.kubectl_ok(
        &[
            "get",
            "deployments.apps",
            "httpbin",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "2");

    // A user the API server lets through for extensions/v1beta1 but who may only read apps/v1
    // Deployments: our SubjectAccessReview refuses the create.
    let user = "ironmesh-ext-test-user";
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: ext-test, namespace: {namespace}}}\n\
         rules:\n- apiGroups: [extensions]\n  resources: [deployments]\n  verbs: [get, list, create, patch, delete]\n\
         - apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, list]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: ext-test, namespace: {namespace}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: ext-test}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    );
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&role));
    let read = cluster.kubectl_ok(
        &[
            "--as",
            user,
            "get",
            "deployments.extensions",
            "httpbin",
            "-n",
            &namespace,
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(read.trim(), "deployment.extensions/httpbin");
    let sleep = std::fs::read_to_string(repo().join("samples/sleep/sleep.yaml")).unwrap();
    let deployment = sleep
        .split("\n---")
        .find(|doc| doc.contains("kind: Deployment"))
        .unwrap();
    let refused = cluster.kubectl(
        &["--as", user, "create", "-f", "-", "-n", &namespace],
        Some(deployment),
    );
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "User \"{user}\" cannot create resource \"deployments\" in API group \"apps\""
        )) && stderr.contains("Forbidden"),
        "{stderr}"
    );
    let missing = cluster.kubectl(
        &["get", "deployments.apps", "sleep", "-n", &namespace],
        None,
    );
    assert!(
        !missing.status.success(),
        "the refused Deployment was stored"
    );

    // Only the aggregator may call the server: without its client certificate the handshake fails.
    let direct = std::process::Command::new("curl")
        .args(["-sk", "-m", "5", "-o", "/dev/null"])
        .arg(format!("https://{address}/apis/extensions/v1beta1"))
        .status()
        .unwrap();
    assert!(
        !direct.success(),
        "a client without the front proxy's certificate got in"
    );

    let deleted = cluster.kubectl_ok(&["delete", "-f", httpbin, "-n", &namespace], None);
    assert!(
        deleted.contains("deployment.extensions \"httpbin\" deleted"),
        "{deleted}"
    );
    let gone = cluster.kubectl(
        &["get", "deployments.apps", "httpbin", "-n", &namespace],
        None,
    );
    assert!(
        !gone.status.success(),
        "deleted through extensions, still in apps"
    );
}

//! Against a REAL kube-apiserver (with etcd, controller-manager and scheduler; no nodes needed): the
//! install's CRDs and webhook configuration, [`KubeSource`] watching Istio resources created with real
//! kubectl (a change reaches `changes()` and the next `list()`), and the webhook refusing an invalid
//! AuthorizationPolicy with our field error in kubectl's stderr.
//!
//! Needs the Kubernetes binaries of scripts/k8s-build.sh (in /var/cache/ironmesh/k8s/v1.34.4/bin, or
//! `IRONMESH_K8S_BIN`); without them the test fails and says so. It starts its own control-plane-only
//! cluster with scripts/k8s-env.sh (root; its own state dir; `down` at the end), or reuses a running one
//! whose admin kubeconfig `IRONMESH_K8S_KUBECONFIG` names (then it removes what it created, except the
//! CRDs: deleting them would delete every Istio resource of that cluster).

mod common;

use std::net::SocketAddr;

use futures::StreamExt;
use ironmesh_api::Object;
use ironmesh_kube::KubeSource;
use ironmesh_kube::install::{InstallOptions, WEBHOOK_CONFIGURATION, apply, manifests};
use ironmesh_kube::webhook::{self, ServingCert};
use tokio_util::sync::CancellationToken;

use common::{Cluster, PATIENCE, repo};

/// What the test created in a shared cluster, deleted even when the test fails.
struct Created<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        self.cluster.delete_if_present(&[
            &["namespace", self.namespace.as_str(), "--wait=false"],
            &["meshpolicies.authentication.istio.io", "default"],
            &[
                "destinationrules.networking.istio.io",
                "default",
                "-n",
                "default",
            ],
            &["validatingwebhookconfiguration", WEBHOOK_CONFIGURATION],
            &[
                "mutatingwebhookconfiguration",
                ironmesh_kube::inject::INJECTOR_CONFIGURATION,
            ],
        ]);
    }
}

fn find<'a>(
    objects: &'a [Object],
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<&'a Object> {
    objects.iter().find(|o| {
        o.kind == kind && o.metadata.name == name && o.metadata.namespace.as_deref() == namespace
    })
}

/// Waits on `changes` until `done` holds for a fresh list.
async fn until(
    source: &KubeSource,
    changes: &mut futures::stream::BoxStream<'static, ()>,
    what: &str,
    done: impl Fn(&[Object]) -> bool,
) {
    let wait = async {
        loop {
            if done(&source.list().1) {
                return;
            }
            changes.next().await.expect("the source's changes ended");
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what}: not seen within {PATIENCE:?}; unsynced: {:?}",
                source.unsynced()
            )
        });
}

fn policy(namespace: &str, action: &str, label: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: httpbin\n  \
         namespace: {namespace}\n  labels: {{step: {label}}}\nspec:\n  selector:\n    matchLabels: {{app: httpbin}}\n  \
         action: {action}\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/{namespace}/sa/sleep]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_watches_and_the_webhook_work_against_a_real_api_server() {
    webhook::install_crypto_provider();
    let cluster = Cluster::get();
    let client = ironmesh_kube::client(Some(&cluster.kubeconfig))
        .await
        .unwrap();

    // The webhook on loopback, where the API server (on the host) calls it; the install points at it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let cert = ServingCert::generate(&["127.0.0.1".to_owned()]).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(webhook::serve(
        listener,
        cert.server_config().unwrap(),
        shutdown.clone(),
    ));

    let namespace = format!("ironmesh-kube-test-{}", std::process::id());
    let created = Created {
        cluster: &cluster,
        namespace: namespace.clone(),
    };
    let options = InstallOptions {
        webhook_url: Some(format!("https://{address}{}", webhook::VALIDATE_PATH)),
        ..InstallOptions::default()
    };
    // The CRDs alone first, and an invalid policy stored while no webhook is registered: the control
    // plane reports it in the policy's status.
    let (crds, rest): (Vec<_>, Vec<_>) = manifests(&options)
        .into_iter()
        .partition(|m| m["kind"] == "CustomResourceDefinition");
    let mut applied = apply(&client, &crds).await.unwrap();
    cluster.kubectl_ok(&["create", "namespace", &namespace], None);
    cluster.kubectl_ok(
        &["create", "-f", "-"],
        Some(&policy(&namespace, "ALLOWED", "stale").replace("name: httpbin", "name: stale")),
    );
    applied.extend(apply(&client, &rest).await.unwrap());
    assert!(
        applied.contains(
            &"customresourcedefinitions/authorizationpolicies.security.istio.io".to_owned()
        ),
        "{applied:?}"
    );
    for configuration in webhook::Configuration::ALL {
        assert!(
            webhook::publish_ca_bundle(&client, configuration, &cert.ca_pem)
                .await
                .unwrap(),
            "{configuration:?} was not installed"
        );
    }
    // kubectl knows Istio's kinds by the CRDs' names, short names and categories.
    let crds = cluster.kubectl_ok(
        &[
            "api-resources",
            "--api-group=networking.istio.io",
            "-o",
            "name",
        ],
        None,
    );
    assert!(
        crds.contains("destinationrules.networking.istio.io"),
        "{crds}"
    );

    let source = std::sync::Arc::new(KubeSource::start(client.clone()));
    {
        let (client, source, shutdown) = (client.clone(), source.clone(), shutdown.clone());
        tokio::spawn(async move { ironmesh_kube::status::report(client, &source, shutdown).await });
    }
    let mut changes = source.changes();
    tokio::time::timeout(PATIENCE, source.wait_synced())
        .await
        .unwrap_or_else(|_| panic!("the watches did not sync: {:?}", source.unsynced()));

    // The seed's MeshPolicy and DestinationRule, and a policy, with real kubectl.
    let samples = repo().join("samples");
    for file in ["default-mesh-policy.yaml", "all-internal-traffic.yml"] {
        cluster.kubectl_ok(&["apply", "-f", samples.join(file).to_str().unwrap()], None);
    }
    cluster.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy(&namespace, "ALLOW", "one")),
    );
    let ns = namespace.clone();
    until(
        &source,
        &mut changes,
        "the applied resources",
        move |objects| {
            find(objects, "MeshPolicy", None, "default").is_some()
                && find(objects, "DestinationRule", Some("default"), "default")
                    .is_some_and(|o| o.spec()["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL")
                && find(objects, "AuthorizationPolicy", Some(&ns), "httpbin").is_some()
                && find(objects, "Namespace", None, &ns).is_some()
        },
    )
    .await;
    let (_, objects) = source.list();
    let policy_object = find(&objects, "AuthorizationPolicy", Some(&namespace), "httpbin").unwrap();
    assert_eq!(policy_object.api_version, "security.istio.io/v1beta1");
    assert!(policy_object.metadata.uid.is_some());
    assert!(
        ironmesh_api::validate_object(policy_object).is_ok(),
        "a watched object is one our api reads"
    );

    // A change reaches changes() and the next list.
    let before = source.list().0;
    cluster.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy(&namespace, "DENY", "two")),
    );
    let ns = namespace.clone();
    until(
        &source,
        &mut changes,
        "the changed policy",
        move |objects| {
            find(objects, "AuthorizationPolicy", Some(&ns), "httpbin")
                .is_some_and(|o| o.spec()["action"] == "DENY" && o.metadata.labels["step"] == "two")
        },
    )
    .await;
    assert!(source.list().0 > before, "the version moves with the watch");

    // An invalid policy is refused by our webhook with our field error, in kubectl's own stderr.
    let refused = cluster.kubectl(
        &["create", "-f", "-"],
        Some(&policy(&namespace, "ALLOWED", "three").replace("name: httpbin", "name: bad")),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "kubectl created an invalid policy: {stderr}"
    );
    assert!(
        stderr.contains("admission webhook \"validation.istio.io\" denied the request")
            && stderr.contains(&format!(
                "authorizationpolicy.security.istio.io/bad in namespace {namespace}: spec.action"
            )),
        "{stderr}"
    );
    let bad = cluster.kubectl(
        &[
            "get",
            "authorizationpolicies.security.istio.io",
            "bad",
            "-n",
            &namespace,
        ],
        None,
    );
    assert!(!bad.status.success(), "the refused policy is not stored");

    // The policy stored before the webhook carries our field error in its status.
    let condition = |name: &str| {
        cluster.kubectl_ok(
            &[
                "get",
                "authorizationpolicies.security.istio.io",
                name,
                "-n",
                &namespace,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Accepted\")]}",
            ],
            None,
        )
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while !condition("stale").contains("spec.action") {
        assert!(
            std::time::Instant::now() < deadline,
            "no Accepted condition on the stale policy: {}",
            condition("stale")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stale: serde_json::Value = serde_json::from_str(&condition("stale")).unwrap();
    assert_eq!(
        (&stale["status"], &stale["reason"]),
        (&serde_json::json!("False"), &serde_json::json!("Invalid"))
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while !condition("httpbin").contains("\"status\":\"True\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the valid policy is not Accepted: {}",
            condition("httpbin")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    drop(created);
}

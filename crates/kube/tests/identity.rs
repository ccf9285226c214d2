//! Identity on a REAL kube-apiserver (control-plane-only cluster, no nodes): proxies' tokens reviewed by
//! TokenReview, the CA's keys in `istio-system`'s Secrets, and the `istio-ca-root-cert` ConfigMaps.
//!
//! - Tokens are made by the real API server (`kubectl create token ... --bound-object-kind Pod`, as the
//!   kubelet projects them) or signed with openssl: a forged one (a key of our own) and an expired one
//!   (the cluster's own service-account key, read from the state dir scripts/k8s-env.sh wrote). A good
//!   token names its pod and service account; a forged, expired, other-audience or deleted pod's token is
//!   refused with a message saying why; a token reviewed once stops working when its pod is deleted
//!   (though the API server's own token cache still accepts it for a few seconds).
//! - CA: without Secrets the first control plane creates `istio-ca-secret` and a second one (another
//!   home, as a replica or a restart) gets the same root; with the plug-in `cacerts` that one is used.
//! - Every namespace, and one created later, gets the CA's roots in `istio-ca-root-cert`.
//!
//! Needs the Kubernetes binaries of scripts/k8s-build.sh and root (see tests/common).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ironmesh_identity::{AuthFailure, CaOptions, CertificateAuthority, TokenAuthenticator};
use ironmesh_kube::KubeSource;
use ironmesh_kube::identity::{
    self, CA_TOKEN_AUDIENCE, PLUGIN_SECRET, ROOT_CONFIGMAP, SELF_SIGNED_SECRET, TokenReviewer,
};
use tokio_util::sync::CancellationToken;

use common::{Cluster, PATIENCE};

struct Created<'a> {
    cluster: &'a Cluster,
    namespaces: Vec<String>,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            self.cluster
                .delete_if_present(&[&["namespace", namespace.as_str(), "--wait=false"]]);
        }
        self.cluster.delete_if_present(&[
            &["secret", PLUGIN_SECRET, "-n", "istio-system"],
            &["secret", SELF_SIGNED_SECRET, "-n", "istio-system"],
        ]);
    }
}

/// The watched pods, as the control plane's resource source answers the reviewer's pod checks.
struct WatchedPods(Arc<KubeSource>);

impl ironmesh_identity::PodLookup for WatchedPods {
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, String> {
        Ok(self.0.pod_uid(namespace, name))
    }
}

fn pod(namespace: &str, name: &str) -> String {
    // No node and no nodeName: the pod stays Pending, and its deletion is immediate.
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  \
         serviceAccountName: sleep\n  containers:\n  - {{name: sleep, image: docker.io/pstauffer/curl}}\n"
    )
}

fn jsonpath(cluster: &Cluster, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let output = format!("jsonpath={path}");
    all.extend(["-o", output.as_str()]);
    cluster.kubectl_ok(&all, None)
}

/// A token the API server issues for `pod` (bound to it), for `audience`.
fn token(cluster: &Cluster, namespace: &str, pod: &str, uid: &str, audience: &str) -> String {
    cluster
        .kubectl_ok(
            &[
                "create",
                "token",
                "sleep",
                "-n",
                namespace,
                "--audience",
                audience,
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                pod,
                "--bound-object-uid",
                uid,
                "--duration",
                "10m",
            ],
            None,
        )
        .trim()
        .to_owned()
}

/// An RS256 JWT with Kubernetes' service-account claims, signed by `key` (PEM) with openssl.
fn signed_jwt(key: &std::path::Path, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{body}");
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl signs the test's tokens");
    use std::io::Write;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let signature = openssl.wait_with_output().unwrap();
    assert!(signature.status.success(), "openssl dgst -sign failed");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature.stdout))
}

fn refused(result: Result<ironmesh_identity::PodClaims, AuthFailure>, what: &str) -> String {
    match result {
        Err(AuthFailure::Refused(reason)) => reason,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reviewed_the_ca_lives_in_secrets_and_every_namespace_gets_the_root() {
    ironmesh_kube::webhook::install_crypto_provider();
    let cluster = Cluster::get();
    let client = ironmesh_kube::client(Some(&cluster.kubeconfig))
        .await
        .unwrap();
    let namespace = format!("ironmesh-id-test-{}", std::process::id());
    let later = format!("{namespace}-later");
    let mut created = Created {
        cluster: &cluster,
        namespaces: vec![namespace.clone()],
    };
    // The watch the control plane binds cached reviews to needs Istio's kinds listed once.
    ironmesh_kube::install::apply(&client, &ironmesh_kube::crds::crds())
        .await
        .unwrap();
    let source = Arc::new(KubeSource::start(client.clone()));
    tokio::time::timeout(PATIENCE, source.wait_synced())
        .await
        .expect("the watches list every kind");

    cluster.kubectl_ok(&["create", "namespace", &namespace], None);
    cluster.kubectl_ok(
        &["create", "serviceaccount", "sleep", "-n", &namespace],
        None,
    );
    for name in ["sleep-a", "sleep-b"] {
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(&pod(&namespace, name)));
    }
    let uid_a = jsonpath(
        &cluster,
        &["get", "pod", "sleep-a", "-n", &namespace],
        "{.metadata.uid}",
    );
    let uid_b = jsonpath(
        &cluster,
        &["get", "pod", "sleep-b", "-n", &namespace],
        "{.metadata.uid}",
    );
    let reviewer = TokenReviewer::new(client.clone(), Arc::new(WatchedPods(source.clone())));

    // A good token names its pod and its service account (the SPIFFE ID's parts).
    let good_a = token(&cluster, &namespace, "sleep-a", &uid_a, CA_TOKEN_AUDIENCE);
    let started = std::time::Instant::now();
    let claims = reviewer.authenticate(&good_a).await.unwrap();
    let first_review = started.elapsed();
    assert_eq!(
        (claims.namespace.as_str(), claims.service_account.as_str()),
        (namespace.as_str(), "sleep")
    );
    assert_eq!(
        (claims.pod.as_str(), claims.pod_uid.as_str()),
        ("sleep-a", uid_a.as_str())
    );
    // Pod B's token names pod B: the configuration stream refuses it for pod A (crates/control's test).
    let good_b = token(&cluster, &namespace, "sleep-b", &uid_b, CA_TOKEN_AUDIENCE);
    assert_eq!(reviewer.authenticate(&good_b).await.unwrap().pod, "sleep-b");
    let started = std::time::Instant::now();
    reviewer.authenticate(&good_a).await.unwrap();
    println!(
        "TokenReview: first review {first_review:?}, remembered review {:?}",
        started.elapsed()
    );

    // Another audience (the API server's own, what `kubectl create token` gives by default).
    let api_audience = token(
        &cluster,
        &namespace,
        "sleep-a",
        &uid_a,
        "https://kubernetes.default.svc.cluster.local",
    );
    let reason = refused(
        reviewer.authenticate(&api_audience).await,
        "another audience",
    );
    assert!(reason.contains("Kubernetes refused the token"), "{reason}");

    // Forged (signed by a key of ours) and expired (signed by the cluster's key, in the past).
    let pki = cluster.kubeconfig.parent().unwrap().join("pki");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sa_uid = jsonpath(
        &cluster,
        &["get", "serviceaccount", "sleep", "-n", &namespace],
        "{.metadata.uid}",
    );
    let claims_at = |issued: u64, expires: u64| {
        serde_json::json!({
            "aud": [CA_TOKEN_AUDIENCE], "iat": issued, "nbf": issued, "exp": expires,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": format!("system:serviceaccount:{namespace}:sleep"),
            "kubernetes.io": {"namespace": namespace, "pod": {"name": "sleep-a", "uid": uid_a},
                              "serviceaccount": {"name": "sleep", "uid": sa_uid}},
        })
    };
    let scratch = tempfile::tempdir().unwrap();
    let other_key = scratch.path().join("other.key");
    assert!(
        Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&other_key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let forged = signed_jwt(&other_key, &claims_at(now - 60, now + 600));
    let reason = refused(reviewer.authenticate(&forged).await, "a forged token");
    assert!(reason.contains("Kubernetes refused the token"), "{reason}");
    let cluster_key = pki.join("sa.key");
    assert!(
        cluster_key.is_file(),
        "{} is missing: the expired token is signed with the cluster's own key (scripts/k8s-env.sh's state dir)",
        cluster_key.display()
    );
    // Signed correctly but for the cluster's key: only the expiry is wrong. The same claims valid now
    // pass, which shows the expired one is refused for its expiry alone.
    let fresh = signed_jwt(&cluster_key, &claims_at(now - 60, now + 600));
    assert_eq!(reviewer.review(&fresh).await.unwrap().pod, "sleep-a");
    let expired = signed_jwt(&cluster_key, &claims_at(now - 7200, now - 3600));
    let reason = refused(reviewer.authenticate(&expired).await, "an expired token");
    assert!(reason.contains("expired"), "{reason}");

    // A deleted pod's token: refused, though it was reviewed (and remembered) before.
    cluster.kubectl_ok(
        &["delete", "pod", "sleep-a", "-n", &namespace, "--wait=true"],
        None,
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while source.pod_uid(&namespace, "sleep-a").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch still shows sleep-a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reason = refused(
        reviewer.authenticate(&good_a).await,
        "a deleted pod's token",
    );
    // The API server refuses it, or (its token cache remembers a success for 10 s) the pod check does.
    assert!(
        reason.contains("Kubernetes refused the token")
            || reason.contains(&format!("pod {namespace}/sleep-a, which no longer exists")),
        "{reason}"
    );
    assert_eq!(reviewer.authenticate(&good_b).await.unwrap().pod, "sleep-b");

    // The CA: created once in istio-system, the same root for a second control plane.
    cluster.delete_if_present(&[
        &["secret", PLUGIN_SECRET, "-n", "istio-system"],
        &["secret", SELF_SIGNED_SECRET, "-n", "istio-system"],
    ]);
    let _ = cluster.kubectl(&["create", "namespace", "istio-system"], None);
    let options = || CaOptions::new("cluster.local");
    let (home1, home2, home3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let first = identity::load_ca(&client, home1.path(), options())
        .await
        .unwrap();
    let second = identity::load_ca(&client, home2.path(), options())
        .await
        .unwrap();
    assert_eq!(first.root_fingerprint(), second.root_fingerprint());
    assert_eq!(
        jsonpath(
            &cluster,
            &["get", "secret", SELF_SIGNED_SECRET, "-n", "istio-system"],
            "{.type}"
        ),
        "istio.io/ca-root"
    );
    // The plug-in CA wins when present (an intermediate under a root of the user's).
    let (root_cert, root_key) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
    let plugin_dir = tempfile::tempdir().unwrap();
    for (name, contents) in [
        ("ca-cert.pem", &root_cert),
        ("ca-key.pem", &root_key),
        ("root-cert.pem", &root_cert),
        ("cert-chain.pem", &root_cert),
    ] {
        std::fs::write(plugin_dir.path().join(name), contents).unwrap();
    }
    let from_file = |name: &str| format!("--from-file={}", plugin_dir.path().join(name).display());
    cluster.kubectl_ok(
        &[
            "create",
            "secret",
            "generic",
            PLUGIN_SECRET,
            "-n",
            "istio-system",
            &from_file("ca-cert.pem"),
            &from_file("ca-key.pem"),
            &from_file("root-cert.pem"),
            &from_file("cert-chain.pem"),
        ],
        None,
    );
    let plugged = identity::load_ca(&client, home3.path(), options())
        .await
        .unwrap();
    let plugin_root =
        CertificateAuthority::plug_in(plugin_dir.path(), options(), &root_cert, &root_key, "", "")
            .unwrap()
            .root_fingerprint();
    assert_eq!(plugged.root_fingerprint(), plugin_root);
    assert_ne!(plugged.root_fingerprint(), first.root_fingerprint());

    // Every namespace gets the roots, and so does one created afterwards.
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(identity::keep_root_configmaps(
        client.clone(),
        first.watch_trust_bundle(),
        source.clone(),
        shutdown.clone(),
    ));
    let root_in = |ns: &str| {
        let out = cluster.kubectl(
            &[
                "get",
                "configmap",
                ROOT_CONFIGMAP,
                "-n",
                ns,
                "-o",
                "jsonpath={.data.root-cert\\.pem}",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    created.namespaces.push(later.clone());
    cluster.kubectl_ok(&["create", "namespace", &later], None);
    for ns in [namespace.as_str(), "default", later.as_str()] {
        let deadline = std::time::Instant::now() + PATIENCE;
        while root_in(ns) != first.trust_bundle_pem() {
            assert!(
                std::time::Instant::now() < deadline,
                "{ns} has no {ROOT_CONFIGMAP} with the CA's root: {:?}",
                root_in(ns)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(created);
}

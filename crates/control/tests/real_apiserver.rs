//! The control plane on a REAL kube-apiserver: `ironmesh-control-plane install` then `run --kubeconfig`,
//! serving proxies over TLS on TCP (istiod's 15012) with a certificate of its CA, verified against the
//! root it wrote into the namespace's `istio-ca-root-cert`; a proxy authenticated by its pod's projected
//! service-account token (TokenReview) gets a certificate for its service account, cannot subscribe as
//! another pod, and gets nothing once its pod is deleted; a sidecar subscribed as its pod (which exists
//! only in Kubernetes), and AuthorizationPolicies applied
//! with real kubectl reaching that sidecar's configuration through the same loop and policy engine as on
//! the local runtime; the webhook the running control plane registered refuses an invalid policy.
//! Prints the push latency (kubectl apply returned → the sidecar holds the configuration) at p50/p99.
//!
//! The cluster is kube/tests/common's (scripts/k8s-env.sh `up --control-plane-only`, or
//! `IRONMESH_K8S_KUBECONFIG`); without the Kubernetes binaries the test fails and says to build them.

#[path = "../../kube/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control_plane::ControlPlane;
use common::{Cluster, PATIENCE};
use ironmesh_identity::{CaClient, CertificateSigner, ControlPlaneAddress, SignError};
use tokio_stream::StreamExt as _;

use ironmesh_proto::{CompiledConfig, ConfigClient, ConfigClientOptions, TokenSource};

const CONTROL_PLANE: &str = env!("CARGO_BIN_EXE_ironmesh-control-plane");

fn policy(namespace: &str, name: &str, action: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  selector:\n    matchLabels: {{app: httpbin}}\n  action: {action}\n  rules:\n  - to:\n    - operation:\n        \
         paths: [/{name}]\n"
    )
}

fn policy_names(compiled: &CompiledConfig) -> Vec<String> {
    compiled
        .config
        .workload
        .iter()
        .flat_map(|w| w.authorization_policies.iter().map(|p| p.name.clone()))
        .collect()
}

async fn wait_for_policy(
    configs: &mut tokio::sync::watch::Receiver<Option<Arc<CompiledConfig>>>,
    name: &str,
) {
    let seen = configs.wait_for(|config| {
        config
            .as_ref()
            .is_some_and(|c| policy_names(c).iter().any(|n| n == name))
    });
    let seen = tokio::time::timeout(PATIENCE, seen)
        .await
        .is_ok_and(|seen| seen.is_ok());
    assert!(
        seen,
        "policy {name} did not reach the sidecar; it has {:?}",
        configs.borrow().as_deref().map(policy_names)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_applied_with_kubectl_reach_the_sidecar_of_a_kubernetes_pod() {
    let cluster = Cluster::get();
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_owned();

    // The control plane first: it waits for Istio's CRDs (configuring no sidecar meanwhile) and for
    // its webhook configuration, which the install then brings.
    let home = tempfile::tempdir().unwrap();
    let namespace = format!("ironmesh-cp-test-{}", std::process::id());
    let mut running = ControlPlane::start(&cluster, Path::new(CONTROL_PLANE), home.path());
    running.namespaces = vec![namespace.clone()];
    running.also_delete = vec![
        ["secret", "istio-ca-secret", "-n", "istio-system"]
            .map(String::from)
            .to_vec(),
        ["namespace", "istio-system", "--wait=false"]
            .map(String::from)
            .to_vec(),
    ];
    let (webhook_url, xds_port) = (running.webhook_url(), running.xds_port);
    let install =
        || {
            let install = Command::new(CONTROL_PLANE)
                .args([
                    "install",
                    "--kubeconfig",
                    &kubeconfig,
                    "--webhook-url",
                    &webhook_url,
                ])
                .output()
                .unwrap();
            assert!(
                install.status.success(),
                "install: {}",
                String::from_utf8_lossy(&install.stderr)
            );
            assert!(String::from_utf8_lossy(&install.stdout).contains(
                "customresourcedefinitions/sidecars.networking.istio.io serverside-applied"
            ));
        };
    // The control plane waits for istio-system to keep its CA there, then listens for proxies.
    install();
    running.wait_for_port(xds_port);

    // A pod with a sidecar, bound to a node that does not exist: Kubernetes keeps it (Pending) and no
    // kubelet runs it, which is all the control plane needs to configure its sidecar.
    cluster.kubectl_ok(&["create", "namespace", &namespace], None);
    cluster.kubectl_ok(
        &["create", "serviceaccount", "httpbin", "-n", &namespace],
        None,
    );
    for name in ["httpbin-1", "httpbin-2"] {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: httpbin}}}}\n\
             spec:\n  serviceAccountName: httpbin\n  nodeName: nowhere\n  containers:\n  - {{name: httpbin, image: docker.io/kennethreitz/httpbin, ports: [{{containerPort: 80}}]}}\n  \
             - {{name: ironmesh-proxy, image: ironmesh/proxy}}\n"
        );
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(&pod));
    }
    let uid = cluster.kubectl_ok(
        &[
            "get",
            "pod",
            "httpbin-1",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    // The pod's projected service-account token, as the kubelet makes it (audience istio-ca, bound to
    // the pod), and the root the control plane wrote into the namespace, which the proxy verifies it with.
    let token = cluster
        .kubectl_ok(
            &[
                "create",
                "token",
                "httpbin",
                "-n",
                &namespace,
                "--audience",
                "istio-ca",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "httpbin-1",
                "--bound-object-uid",
                &uid,
                "--duration",
                "10m",
            ],
            None,
        )
        .trim()
        .to_owned();
    let token_file = home.path().join("istio-token");
    std::fs::write(&token_file, &token).unwrap();
    let root_file = home.path().join("root-cert.pem");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let root = cluster.kubectl(
            &[
                "get",
                "configmap",
                "istio-ca-root-cert",
                "-n",
                &namespace,
                "-o",
                "jsonpath={.data.root-cert\\.pem}",
            ],
            None,
        );
        if root.status.success() && root.stdout.starts_with(b"-----BEGIN CERTIFICATE-----") {
            std::fs::write(&root_file, &root.stdout).unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no istio-ca-root-cert in {namespace}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Over TLS on TCP, verified against that root under the name the serving certificate carries.
    let address = ControlPlaneAddress::Https {
        url: format!("https://127.0.0.1:{xds_port}"),
        root_file: root_file.clone(),
    };

    // The CA signs for the token's service account.
    let ca = CaClient::for_address(&address, &token_file).unwrap();
    let spiffe = format!("spiffe://cluster.local/ns/{namespace}/sa/httpbin");
    let leaf = sign(&ca, &spiffe).await.unwrap();
    assert!(
        leaf.contains(&format!("URI:{spiffe}")),
        "the certificate names {leaf}"
    );

    // Pod 1's token does not subscribe as pod 2.
    let refused = subscribe(&address, &token, &format!("httpbin-2.{namespace}")).await;
    assert!(
        refused.code() == tonic::Code::PermissionDenied
            && refused
                .message()
                .contains(&format!("bound to pod httpbin-1.{namespace}")),
        "{refused:?}"
    );

    let sidecar = ConfigClient::spawn(ConfigClientOptions::new(
        address.clone(),
        ironmesh_identity::proxy_id("httpbin-1", &namespace),
        TokenSource::Static(token.clone()),
    ));
    let mut configs = sidecar.config();
    let first = tokio::time::timeout(PATIENCE, configs.wait_for(Option::is_some))
        .await
        .is_ok_and(|first| first.is_ok());
    assert!(first, "the sidecar got no configuration");
    assert!(policy_names(configs.borrow().as_ref().unwrap()).is_empty());

    let mut latencies = Vec::new();
    for step in 0..20 {
        let name = format!("p{step}");
        cluster.kubectl_ok(
            &["apply", "-f", "-"],
            Some(&policy(&namespace, &name, "ALLOW")),
        );
        // kubectl has returned: the API server has stored the policy.
        let started = Instant::now();
        wait_for_policy(&mut configs, &name).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "push latency over {} policy changes (kubectl apply returned -> sidecar configured): p50 {:?}, p99 {:?}",
        latencies.len(),
        at(0.5),
        at(0.99)
    );

    // A second install resets the webhook to `Ignore`; the control plane puts back `Fail`.
    install();
    let failure_policy = || {
        cluster.kubectl_ok(
            &[
                "get",
                "validatingwebhookconfiguration",
                "istio-validator-istio-system",
                "-o",
                "jsonpath={.webhooks[0].failurePolicy}",
            ],
            None,
        )
    };
    let deadline = Instant::now() + PATIENCE;
    while failure_policy() != "Fail" {
        assert!(
            Instant::now() < deadline,
            "the control plane did not restore failurePolicy: Fail"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The running control plane published its CA in the webhook configuration: kubectl is refused.
    let refused = cluster.kubectl(
        &["create", "-f", "-"],
        Some(&policy(&namespace, "bad", "ALLOWED")),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "an invalid policy was stored: {stderr}"
    );
    assert!(stderr.contains("spec.action"), "{stderr}");

    // Once its pod is deleted, the pod's token gets nothing more.
    cluster.kubectl_ok(
        &[
            "delete",
            "pod",
            "httpbin-1",
            "-n",
            &namespace,
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    let deadline = Instant::now() + PATIENCE;
    let error = loop {
        match sign(&ca, &spiffe).await {
            Err(error) => break error,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the deleted pod's token still gets certificates"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(&error, SignError::Unauthenticated(reason)
            if reason.contains("Kubernetes refused the token") || reason.contains("no longer exists")),
        "{error}"
    );
    drop(running);
}

/// A certificate for `spiffe` from the CA at the other end of `ca`; the leaf as openssl prints it.
async fn sign(ca: &CaClient, spiffe: &str) -> Result<String, SignError> {
    let id: ironmesh_identity::SpiffeId = spiffe.parse().unwrap();
    let (csr, _key) = ironmesh_identity::csr_for(&id).unwrap();
    let chain = ca.sign(csr, Duration::from_secs(3600)).await?.chain_pem;
    let mut openssl = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(chain[0].as_bytes())
        .unwrap();
    Ok(String::from_utf8_lossy(&openssl.wait_with_output().unwrap().stdout).into_owned())
}

/// The configuration stream's answer to a subscription as `proxy_id` with `token`.
async fn subscribe(address: &ControlPlaneAddress, token: &str, proxy_id: &str) -> tonic::Status {
    use ironmesh_proto::pb::proxy_config_service_client::ProxyConfigServiceClient;
    use ironmesh_proto::pb::{ProxyMessage, Subscribe, proxy_message};
    let channel = ironmesh_identity::connect_channel(address).await.unwrap();
    let first = ProxyMessage {
        kind: Some(proxy_message::Kind::Subscribe(Subscribe {
            proxy_id: proxy_id.to_owned(),
            known_version: String::new(),
        })),
    };
    let mut request =
        tonic::Request::new(tokio_stream::iter([first]).chain(tokio_stream::pending()));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match ProxyConfigServiceClient::new(channel)
        .stream_config(request)
        .await
    {
        Ok(_) => panic!("{proxy_id} was let subscribe with another pod's token"),
        Err(status) => status,
    }
}

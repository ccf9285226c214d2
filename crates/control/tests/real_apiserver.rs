//! The control plane on a REAL kube-apiserver: `ironmesh-control-plane install` then `run --kubeconfig`,
//! a sidecar subscribed as its pod (which exists only in Kubernetes), and AuthorizationPolicies applied
//! with real kubectl reaching that sidecar's configuration through the same loop and policy engine as on
//! the local runtime; the webhook the running control plane registered refuses an invalid policy.
//! Prints the push latency (kubectl apply returned → the sidecar holds the configuration) at p50/p99.
//!
//! The cluster is kube/tests/common's (scripts/k8s-env.sh `up --control-plane-only`, or
//! `IRONMESH_K8S_KUBECONFIG`); without the Kubernetes binaries the test fails and says to build them.

#[path = "../../kube/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, PATIENCE};
use ironmesh_identity::{ControlPlaneAddress, CredentialAuthority, PodClaims};

use ironmesh_proto::{CompiledConfig, ConfigClient, ConfigClientOptions, TokenSource};

const CONTROL_PLANE: &str = env!("CARGO_BIN_EXE_ironmesh-control-plane");

/// The control plane process; SIGTERM (then SIGKILL) on drop, and everything the test made is deleted.
struct Running<'a> {
    cluster: &'a Cluster,
    child: Child,
    namespace: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.cluster.delete_if_present(&[
            &["namespace", self.namespace.as_str(), "--wait=false"],
            &[
                "validatingwebhookconfiguration",
                "istio-validator-istio-system",
            ],
            &["mutatingwebhookconfiguration", "istio-sidecar-injector"],
            &["clusterrolebinding", "istiod-istio-system"],
            &["clusterrole", "istiod-istio-system"],
            &["namespace", "istio-system", "--wait=false"],
        ]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

fn wait_for_file(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the control plane exited ({status}) before creating {}",
                path.display()
            );
        }
        assert!(Instant::now() < deadline, "{} not created", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_applied_with_kubectl_reach_the_sidecar_of_a_kubernetes_pod() {
    let cluster = Cluster::get();
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_owned();
    let port = free_port();
    let install =
        || {
            let install = Command::new(CONTROL_PLANE)
                .args(["install", "--kubeconfig", &kubeconfig, "--webhook-url"])
                .arg(format!("https://127.0.0.1:{port}/validate"))
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

    // The control plane first: it waits for Istio's CRDs (configuring no sidecar meanwhile) and for
    // its webhook configuration, which the install then brings.
    let home = tempfile::tempdir().unwrap();
    let namespace = format!("ironmesh-cp-test-{}", std::process::id());
    let child = Command::new(CONTROL_PLANE)
        .args([
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--webhook-name",
            "127.0.0.1",
        ])
        .args(["--webhook-address", &format!("127.0.0.1:{port}")])
        .env("IRONMESH_HOME", home.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running {
        cluster: &cluster,
        child,
        namespace: namespace.clone(),
    };
    wait_for_file(&home.path().join("run/xds.sock"), &mut running.child);
    install();

    // A pod with a sidecar, bound to a node that does not exist: Kubernetes keeps it (Pending) and no
    // kubelet runs it, which is all the control plane needs to configure its sidecar.
    cluster.kubectl_ok(&["create", "namespace", &namespace], None);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: httpbin-1, namespace: {namespace}, labels: {{app: httpbin}}}}\n\
         spec:\n  nodeName: nowhere\n  containers:\n  - {{name: httpbin, image: docker.io/kennethreitz/httpbin, ports: [{{containerPort: 80}}]}}\n  \
         - {{name: ironmesh-proxy, image: ironmesh/proxy}}\n"
    );
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&pod));
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
    // The pod's credential, as the control plane's own key signs them (on Kubernetes this becomes the
    // pod's service-account token, checked by TokenReview: issue 14, item 3).
    let credentials = CredentialAuthority::load_or_create(&home.path().join("ca")).unwrap();
    let token = credentials.issue(
        &PodClaims {
            namespace: namespace.clone(),
            service_account: "default".into(),
            pod: "httpbin-1".into(),
            pod_uid: uid,
        },
        Duration::from_secs(600),
    );
    let sidecar = ConfigClient::spawn(ConfigClientOptions::new(
        ControlPlaneAddress::Unix(home.path().join("run/xds.sock")),
        ironmesh_identity::proxy_id("httpbin-1", &namespace),
        TokenSource::Static(token),
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
    drop(running);
}

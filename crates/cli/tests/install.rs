//! `ironmesh install`: the CLI passes it on to `ironmesh-control-plane install` (which links the
//! Kubernetes client), so the manifests and errors users see are the control plane's.

mod common;

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh");

fn install(args: &[&str]) -> std::process::Output {
    common::build_control_plane();
    Command::new(BIN)
        .arg("install")
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run ironmesh install")
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .collect()
}

#[test]
fn dry_run_prints_the_crds_rbac_webhook_and_control_plane_as_yaml_documents() {
    let output = install(&["--dry-run"]);
    assert!(output.status.success(), "{}", common::output_text(&output));
    let docs = documents(&String::from_utf8(output.stdout).unwrap());
    let named: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "CustomResourceDefinition meshpolicies.authentication.istio.io",
        "CustomResourceDefinition authorizationpolicies.security.istio.io",
        "CustomResourceDefinition destinationrules.networking.istio.io",
        "Namespace istio-system",
        "ServiceAccount istiod",
        "ClusterRoleBinding istiod-istio-system",
        "ClusterRoleBinding istiod-auth-delegator-istio-system",
        "Role istiod-istio-system",
        "RoleBinding istiod-istio-system",
        "ValidatingWebhookConfiguration istio-validator-istio-system",
        "MutatingWebhookConfiguration istio-sidecar-injector",
        "Deployment istiod",
        "Service istiod",
    ] {
        assert!(
            named.iter().any(|n| n == expected),
            "{expected} not in {named:?}"
        );
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        // The release's image, as images/build.sh builds it and the nodes import it (never `latest`,
        // which the kubelet would pull).
        concat!("ironmesh/control-plane:", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_control_plane_outside_the_cluster_gets_the_webhook_url_and_no_deployment() {
    let output = install(&[
        "--dry-run",
        "--webhook-url",
        "https://127.0.0.1:15017/validate",
        "--image",
        "unused",
    ]);
    assert!(output.status.success(), "{}", common::output_text(&output));
    let docs = documents(&String::from_utf8(output.stdout).unwrap());
    assert!(docs.iter().all(|d| d["kind"] != "Deployment"));
    let webhook = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        webhook["webhooks"][0]["clientConfig"]["url"],
        "https://127.0.0.1:15017/validate"
    );
    let injector = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        injector["webhooks"][0]["clientConfig"]["url"],
        "https://127.0.0.1:15017/inject"
    );
}

#[test]
fn without_a_cluster_install_says_to_pass_a_kubeconfig() {
    let output = install(&[]);
    assert!(!output.status.success());
    let text = common::output_text(&output);
    assert!(text.contains("--kubeconfig"), "{text}");
}

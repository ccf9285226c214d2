//! The CA follows its Secret on a REAL kube-apiserver (control-plane-only cluster, no nodes), as istiod
//! reloads a plugged-in CA whose files changed: a changed `cacerts` moves the running CA to its key and
//! its root (the trust bundle the control plane pushes to proxies changes, and new certificates chain
//! to the new root), with an Event `CAReloaded` on the Secret; a malformed update (a key that does not
//! fit the certificate, a missing key) is refused with an Event `CAUpdateRefused` saying why, and the
//! CA keeps its last good keys; the next good update is taken again.
//!
//! Needs the Kubernetes binaries of scripts/k8s-build.sh and root (see tests/common).

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ironmesh_identity::{CaOptions, CertificateAuthority, SpiffeId};
use ironmesh_kube::identity::{self, CA_REFUSED, CA_RELOADED, PLUGIN_SECRET, SELF_SIGNED_SECRET};
use tokio_util::sync::CancellationToken;

use common::{Cluster, PATIENCE};

struct Created<'a> {
    cluster: &'a Cluster,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        self.cluster.delete_if_present(&[
            &["secret", PLUGIN_SECRET, "-n", "istio-system"],
            &["secret", SELF_SIGNED_SECRET, "-n", "istio-system"],
            &[
                "events",
                "-n",
                "istio-system",
                "--field-selector",
                "involvedObject.kind=Secret",
            ],
        ]);
    }
}

/// Writes `cacerts` with `keys` (Istio's file names and their contents) as `kubectl apply` does.
fn apply_cacerts(cluster: &Cluster, keys: &[(&str, &str)]) {
    let data: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(name, pem)| ((*name).to_owned(), STANDARD.encode(pem).into()))
        .collect();
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": PLUGIN_SECRET, "namespace": "istio-system"}, "data": data});
    // Replaced whole: `apply` would keep a key the new Secret leaves out.
    cluster.kubectl_ok(
        &["replace", "--force", "-f", "-"],
        Some(&secret.to_string()),
    );
}

fn plug_in(cert: &str, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ca-cert.pem", cert.to_owned()),
        ("ca-key.pem", key.to_owned()),
        ("root-cert.pem", cert.to_owned()),
        ("cert-chain.pem", cert.to_owned()),
    ]
}

fn borrowed<'a>(keys: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    keys.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The messages of the Events with `reason` on the CA's Secrets.
fn events(cluster: &Cluster, reason: &str) -> Vec<String> {
    let out = cluster.kubectl_ok(
        &[
            "get",
            "events",
            "-n",
            "istio-system",
            "--field-selector",
            &format!("reason={reason},involvedObject.name={PLUGIN_SECRET}"),
            "-o",
            "json",
        ],
        None,
    );
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until `count` Events with `reason` exist; their messages.
async fn wait_for_events(cluster: &Cluster, reason: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let found = events(cluster, reason);
        if found.len() >= count {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {count} Events {reason} on Secret {PLUGIN_SECRET}; found {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the CA's trust bundle is exactly `root`.
async fn wait_for_bundle(bundle: &mut tokio::sync::watch::Receiver<Vec<String>>, root: &str) {
    let seen = bundle.wait_for(|roots| roots.len() == 1 && roots[0].trim() == root.trim());
    let seen = tokio::time::timeout(PATIENCE, seen)
        .await
        .is_ok_and(|seen| seen.is_ok());
    assert!(seen, "the trust bundle did not become the new root");
}

/// The root a certificate the CA signs now chains to.
fn signed_root(ca: &CertificateAuthority) -> String {
    let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/sleep".parse().unwrap();
    let (csr, _key) = ironmesh_identity::csr_for(&id).unwrap();
    let chain = ca
        .sign_workload(&csr, &id, Duration::from_secs(3600))
        .unwrap();
    chain.last().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_cacerts_reloads_the_ca_and_a_malformed_one_is_refused() {
    ironmesh_kube::webhook::install_crypto_provider();
    let cluster = Cluster::get();
    let client = ironmesh_kube::client(Some(&cluster.kubeconfig))
        .await
        .unwrap();
    let _created = Created { cluster: &cluster };
    cluster.delete_if_present(&[
        &["secret", PLUGIN_SECRET, "-n", "istio-system"],
        &["secret", SELF_SIGNED_SECRET, "-n", "istio-system"],
    ]);
    let _ = cluster.kubectl(&["create", "namespace", "istio-system"], None);
    let root = || CertificateAuthority::generate_root_pem("cluster.local").unwrap();
    let ((a_cert, a_key), (b_cert, b_key), (c_cert, c_key)) = (root(), root(), root());

    apply_cacerts(&cluster, &borrowed(&plug_in(&a_cert, &a_key)));
    let home = tempfile::tempdir().unwrap();
    let ca_dir = home.path().join("ca");
    let ca = Arc::new(
        identity::load_ca(&client, &ca_dir, CaOptions::new("cluster.local"))
            .await
            .unwrap(),
    );
    assert_eq!(signed_root(&ca), a_cert.trim());
    let mut bundle = ca.watch_trust_bundle();
    let shutdown = CancellationToken::new();
    let keeper = tokio::spawn(identity::keep_ca_current(
        client.clone(),
        ca.clone(),
        ca_dir.clone(),
        shutdown.clone(),
    ));

    // A new root in cacerts: the running CA takes it, and says so on the Secret.
    apply_cacerts(&cluster, &borrowed(&plug_in(&b_cert, &b_key)));
    wait_for_bundle(&mut bundle, &b_cert).await;
    assert_eq!(signed_root(&ca), b_cert.trim());
    let reloaded = wait_for_events(&cluster, CA_RELOADED, 1).await;
    assert!(
        reloaded.iter().any(|m| m.contains(&ca.root_fingerprint())),
        "{reloaded:?}"
    );

    // C's certificate with B's key: refused, and the CA keeps B.
    let mut mismatched = plug_in(&c_cert, &c_key);
    mismatched[1].1 = b_key.clone();
    apply_cacerts(&cluster, &borrowed(&mismatched));
    let refused = wait_for_events(&cluster, CA_REFUSED, 1).await;
    assert!(
        refused
            .iter()
            .any(|m| m.contains("the key does not belong to the CA certificate")),
        "{refused:?}"
    );
    // No key at all: refused, saying which key is missing.
    apply_cacerts(
        &cluster,
        &[("ca-cert.pem", c_cert.as_str()), ("root-cert.pem", &c_cert)],
    );
    let refused = wait_for_events(&cluster, CA_REFUSED, 2).await;
    assert!(
        refused.iter().any(|m| m.contains("has no ca-key.pem")),
        "{refused:?}"
    );
    let roots: Vec<String> = bundle
        .borrow_and_update()
        .iter()
        .map(|r| r.trim().to_owned())
        .collect();
    assert_eq!(
        roots,
        [b_cert.trim()],
        "a refused update changed the trust bundle"
    );
    assert_eq!(signed_root(&ca), b_cert.trim());

    // The next good update is taken.
    apply_cacerts(&cluster, &borrowed(&plug_in(&c_cert, &c_key)));
    wait_for_bundle(&mut bundle, &c_cert).await;
    assert_eq!(signed_root(&ca), c_cert.trim());

    shutdown.cancel();
    keeper.await.unwrap();
}

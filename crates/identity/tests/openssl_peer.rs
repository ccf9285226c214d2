//! Interop with a stock TLS stack: `openssl s_client` holding a CA-issued certificate completes mTLS with
//! our server config (TLS 1.3, ALPN `istio`) and is refused without a client certificate.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ironmesh_identity::csr_for;
use support::*;

fn s_client(addr: std::net::SocketAddr, dir: &std::path::Path, with_cert: bool) -> String {
    let mut args = vec![
        "s_client".to_owned(),
        "-connect".to_owned(),
        addr.to_string(),
        "-tls1_3".to_owned(),
        "-alpn".to_owned(),
        "istio".to_owned(),
        "-CAfile".to_owned(),
        "root.pem".to_owned(),
    ];
    if with_cert {
        args.extend(
            [
                "-cert",
                "cert.pem",
                "-key",
                "key.pem",
                "-cert_chain",
                "chain.pem",
            ]
            .map(String::from),
        );
    }
    let mut child = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl binary must be installed for this test");
    // One request line, then close stdin so s_client exits after the answer.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_with_a_mesh_certificate_is_accepted_and_without_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let addr = echo_server(server).await;
    let (csr, key) = csr_for(&id("bar", "sleep")).unwrap();
    let chain = ca
        .sign_workload(&csr, &id("bar", "sleep"), Duration::from_secs(600))
        .unwrap();
    let work = dir.path().to_owned();
    std::fs::write(work.join("cert.pem"), &chain[0]).unwrap();
    std::fs::write(work.join("chain.pem"), chain[1..].concat()).unwrap();
    std::fs::write(work.join("key.pem"), key).unwrap();
    std::fs::write(work.join("root.pem"), ca.trust_bundle_pem()).unwrap();

    let accepted = {
        let work = work.clone();
        tokio::task::spawn_blocking(move || s_client(addr, &work, true))
            .await
            .unwrap()
    };
    assert!(
        accepted.contains("pong spiffe://cluster.local/ns/bar/sa/sleep"),
        "{accepted}"
    );
    assert!(accepted.contains("ALPN protocol: istio"), "{accepted}");
    // The server follows the client's order: openssl offers AES-256-GCM first and gets it, where
    // sidecars (AES-128-GCM first) get AES-128-GCM (tests/mtls.rs).
    assert!(
        accepted.contains("Cipher is TLS_AES_256_GCM_SHA384"),
        "{accepted}"
    );
    assert!(
        accepted.contains("Verify return code: 0 (ok)"),
        "{accepted}"
    );

    let refused = tokio::task::spawn_blocking(move || s_client(addr, &work, false))
        .await
        .unwrap();
    assert!(!refused.contains("pong"), "{refused}");
    assert!(refused.contains("alert"), "expected a TLS alert: {refused}");
}

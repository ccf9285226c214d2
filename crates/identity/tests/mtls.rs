//! mTLS between two workload managers: success, secure naming, trust domain, self-signed and expired peers,
//! and plaintext refused on the TLS-only listener.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ironmesh_identity::{CaOptions, CertificateAuthority, LocalSigner};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn mutual_tls_carries_both_identities() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let client = workload(&ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    let addr = echo_server(server).await;
    let mut tls = connect(&client, addr, &[id("foo", "httpbin")])
        .await
        .unwrap();
    let reply = ping(&mut tls).await.unwrap();
    assert_eq!(reply, "pong spiffe://cluster.local/ns/bar/sa/sleep");
    assert_eq!(
        ironmesh_identity::peer_identity(tls.get_ref().1),
        Some(id("foo", "httpbin"))
    );
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"istio"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // Envoy's (BoringSSL's) first choice, not rustls's default AES-256-GCM: cheaper per byte, same strength
    // as the handshake.
    assert_eq!(
        tls.get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|suite| suite.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
}

#[tokio::test]
async fn secure_naming_refuses_a_server_with_another_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server = workload(&ca, id("foo", "impostor"), Duration::from_secs(3600)).await;
    let client = workload(&ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    let addr = echo_server(server).await;
    let err = connect(&client, addr, &[id("foo", "httpbin")])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ApplicationVerificationFailure"),
        "{err}"
    );
}

#[tokio::test]
async fn server_refuses_a_client_from_another_trust_domain() {
    ironmesh_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    // A second CA for another trust domain whose root the server is made to trust too: only the trust
    // domain check can refuse the client then.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Arc::new(
        CertificateAuthority::load_or_create(other_dir.path(), CaOptions::new("evil.local"))
            .unwrap(),
    );
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let mut bundle = ca.trust_bundle_pems();
    bundle.extend(other.trust_bundle_pems());
    server.set_trust_bundle(&bundle).unwrap();
    let outsider_id = ironmesh_identity::SpiffeId::new("evil.local", "foo", "sleep").unwrap();
    let outsider = ironmesh_identity::WorkloadCertificates::spawn(
        outsider_id.clone(),
        Arc::new(LocalSigner::new(other.clone(), outsider_id)),
        rotation(Duration::from_secs(3600)),
    );
    outsider.ready().await;
    // Its own CA's root first: a pushed bundle names the signing CA's current root first, and a
    // different one would make the outsider renew at once (and take its CA's bundle back).
    let mut outsider_bundle = other.trust_bundle_pems();
    outsider_bundle.extend(ca.trust_bundle_pems());
    outsider.set_trust_bundle(&outsider_bundle).unwrap();
    let addr = echo_server(server).await;
    let err = connect(&outsider, addr, &[id("foo", "httpbin")])
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("access"), "{err}");
}

#[tokio::test]
async fn server_refuses_a_client_of_an_untrusted_self_signed_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue_ca = new_ca(rogue_dir.path());
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    // Same trust domain, same name, but its root is not in the server's bundle.
    let rogue = workload(&rogue_ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    // It trusts the server's root too (after its own, so it keeps its certificate): only the server's
    // check can refuse the connection.
    let mut rogue_bundle = rogue_ca.trust_bundle_pems();
    rogue_bundle.extend(ca.trust_bundle_pems());
    rogue.set_trust_bundle(&rogue_bundle).unwrap();
    let addr = echo_server(server).await;
    let err = connect(&rogue, addr, &[id("foo", "httpbin")])
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("unknown"),
        "expected an unknown-CA refusal, got {err}"
    );
}

#[tokio::test]
async fn client_refuses_an_untrusted_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue_ca = new_ca(rogue_dir.path());
    let rogue_server = workload(&rogue_ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let client = workload(&ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    let addr = echo_server(rogue_server).await;
    let err = connect(&client, addr, &[id("foo", "httpbin")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn expired_peer_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let client = workload(&ca, id("bar", "sleep"), Duration::from_secs(2)).await;
    let expired_chain = client.snapshot().unwrap();
    // Build a client config frozen on the first 2 s certificate by stopping its rotation: a separate
    // manager would renew, so we drop the manager and keep only the config.
    let config = client.client_config(&[id("foo", "httpbin")], vec![]);
    drop(client);
    let addr = echo_server(server).await;
    connect_with(config.clone(), addr)
        .await
        .expect("valid at first");
    let wait = expired_chain
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    let err = connect_with(config, addr).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn plaintext_is_refused_on_the_tls_only_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let addr = echo_server(server).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nping\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("the server must close a plaintext connection");
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("pong"), "plaintext got an answer: {text}");
}

#[tokio::test]
async fn handshake_fails_closed_before_the_first_certificate() {
    ironmesh_identity::install_crypto_provider();
    struct NeverSigns;
    impl ironmesh_identity::CertificateSigner for NeverSigns {
        fn sign(
            &self,
            _csr: String,
            _ttl: Duration,
        ) -> ironmesh_identity::BoxFuture<
            '_,
            Result<ironmesh_identity::SignedChain, ironmesh_identity::SignError>,
        > {
            Box::pin(async {
                Err(ironmesh_identity::SignError::Refused(
                    "test CA is down".into(),
                ))
            })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let client = workload(&ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    let server = ironmesh_identity::WorkloadCertificates::spawn(
        id("foo", "httpbin"),
        Arc::new(NeverSigns),
        rotation(Duration::from_secs(3600)),
    );
    let addr = echo_server(server.clone()).await;
    assert!(
        connect(&client, addr, &[id("foo", "httpbin")])
            .await
            .is_err()
    );
    assert!(server.snapshot().is_none());
}

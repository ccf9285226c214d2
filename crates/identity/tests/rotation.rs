//! Rotation under traffic: mTLS handshakes and requests keep flowing, with zero failures, across several
//! workload certificate rotations on a 2 s TTL and across a root rotation (rotate → renew → retire).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ironmesh_identity::{CertificateAuthority, WorkloadCertificates};
use support::*;

const TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Traffic {
    new_connections_ok: AtomicU64,
    long_lived_requests_ok: AtomicU64,
    failures: AtomicU64,
    stop: AtomicBool,
}

async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn generation(certs: &WorkloadCertificates) -> u64 {
    certs.snapshot().map(|i| i.generation).unwrap_or(0)
}

fn chains_to(certs: &WorkloadCertificates, root_pem: &str) -> bool {
    certs
        .snapshot()
        .is_some_and(|i| i.chain_pem.last().map(String::as_str) == Some(root_pem))
}

fn push_bundle(ca: &CertificateAuthority, managers: &[&WorkloadCertificates]) {
    // What the control plane does after a root change: every proxy gets the new bundle.
    for m in managers {
        m.set_trust_bundle(&ca.trust_bundle_pems()).unwrap();
    }
}

// No bundle is pushed: workloads learn the new root from their own renewals, and until then the
// cross-signed root in every new chain lets them accept peers that already renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_workload_and_root_rotations_without_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server = workload(&ca, id("foo", "httpbin"), TTL).await;
    let client = workload(&ca, id("bar", "sleep"), TTL).await;
    rotate_under_traffic(&ca, server, client).await;
}

// The same through the real gRPC service on a Unix socket: the new roots reach the proxies in the
// trust-bundle response metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_rotations_with_certificates_from_the_grpc_ca() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = GrpcCa::start(dir.path()).await;
    let server = grpc.workload(id("foo", "httpbin"), "httpbin-1", TTL).await;
    let client = grpc.workload(id("bar", "sleep"), "sleep-1", TTL).await;
    rotate_under_traffic(&grpc.ca, server, client).await;
}

async fn rotate_under_traffic(
    ca: &CertificateAuthority,
    server: WorkloadCertificates,
    client: WorkloadCertificates,
) {
    let addr = echo_server(server.clone()).await;
    let expected = [id("foo", "httpbin")];
    // One config for the whole test: it must follow every rotation by itself.
    let client_config = client.client_config(&expected, vec![b"istio".to_vec()]);
    let traffic = Arc::new(Traffic::default());

    let mut long_lived = connect_with(client_config.clone(), addr).await.unwrap();
    let long_lived_task = {
        let traffic = traffic.clone();
        tokio::spawn(async move {
            while !traffic.stop.load(Ordering::Relaxed) {
                match ping(&mut long_lived).await {
                    Ok(reply) if reply == "pong spiffe://cluster.local/ns/bar/sa/sleep" => {
                        traffic
                            .long_lived_requests_ok
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("long-lived connection failed: {other:?}");
                        traffic.failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let new_connections_task = {
        let traffic = traffic.clone();
        let config = client_config.clone();
        tokio::spawn(async move {
            while !traffic.stop.load(Ordering::Relaxed) {
                match connect_with(config.clone(), addr).await {
                    Ok(_) => traffic.new_connections_ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("new connection failed: {e}");
                        traffic.failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // At least three rotations of both certificates.
    wait_for("three workload rotations", Duration::from_secs(20), || {
        generation(&server) >= 4 && generation(&client) >= 4
    })
    .await;
    let ok_before_root_rotation = traffic.new_connections_ok.load(Ordering::Relaxed);
    assert!(ok_before_root_rotation > 10);

    // Root rotation: both roots trusted, new certificates from the new root.
    let old_root = ca.current_root_pem();
    ca.rotate_root().unwrap();
    let new_root = ca.current_root_pem();
    assert_ne!(old_root, new_root);
    wait_for("renewal from the new root", Duration::from_secs(20), || {
        chains_to(&server, &new_root) && chains_to(&client, &new_root)
    })
    .await;
    // Let traffic run with new-root certificates for a while, then drop the old root.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ca.retire_root().unwrap();
    let generation_at_retire = generation(&server).min(generation(&client));
    wait_for(
        "two more rotations after retiring",
        Duration::from_secs(20),
        || {
            generation(&server) >= generation_at_retire + 2
                && generation(&client) >= generation_at_retire + 2
        },
    )
    .await;
    assert_eq!(
        server.snapshot().unwrap().trust_bundle_pem,
        vec![new_root.clone()]
    );

    traffic.stop.store(true, Ordering::Relaxed);
    long_lived_task.await.unwrap();
    new_connections_task.await.unwrap();
    let failures = traffic.failures.load(Ordering::Relaxed);
    let handshakes = traffic.new_connections_ok.load(Ordering::Relaxed);
    let requests = traffic.long_lived_requests_ok.load(Ordering::Relaxed);
    eprintln!(
        "handshakes ok: {handshakes}, long-lived requests ok: {requests}, failures: {failures}, \
         server generation {}, client generation {}",
        generation(&server),
        generation(&client)
    );
    assert_eq!(failures, 0);
    assert!(handshakes > ok_before_root_rotation + 10);
    assert!(requests > 50);
}

#[tokio::test(flavor = "current_thread")]
async fn after_retiring_the_old_root_its_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    // A client whose certificate is from the old root and that will not renew within the test.
    let stale_client = workload(&ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    ca.rotate_root().unwrap();
    // Only the server learns the new bundle (and renews from the new root); the stale client keeps its
    // old-root certificate because nothing tells it about the rotation.
    push_bundle(&ca, &[&server]);
    let addr = echo_server(server.clone()).await;
    let expected = [id("foo", "httpbin")];
    // During the overlap the old-root client is still accepted.
    connect(&stale_client, addr, &expected).await.unwrap();
    ca.retire_root().unwrap();
    push_bundle(&ca, &[&server]);
    let err = connect(&stale_client, addr, &expected).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("unknown"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_pushed_bundle_with_a_new_root_renews_the_certificate_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    // An hour-long certificate: no scheduled renewal happens during the test.
    let certs = workload(&ca, id("foo", "httpbin"), Duration::from_secs(3600)).await;
    let mut bundles = ca.watch_trust_bundle();

    ca.rotate_root().unwrap();
    assert!(
        bundles.has_changed().unwrap(),
        "the CA announces its new bundle"
    );
    let pushed = bundles.borrow_and_update().clone();
    assert_eq!(pushed, ca.trust_bundle_pems());
    certs.set_trust_bundle(&pushed).unwrap();
    let new_root = ca.current_root_pem();
    wait_for(
        "renewal from the pushed root",
        Duration::from_secs(10),
        || chains_to(&certs, &new_root),
    )
    .await;
    assert_eq!(generation(&certs), 2);
    assert_eq!(certs.snapshot().unwrap().trust_bundle_pem.len(), 2);

    ca.retire_root().unwrap();
    assert_eq!(*bundles.borrow_and_update(), vec![new_root]);
}

/// Fails every call while `down` is set; otherwise signs with the in-process CA.
struct FlakySigner {
    inner: ironmesh_identity::LocalSigner,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl ironmesh_identity::CertificateSigner for FlakySigner {
    fn sign(
        &self,
        csr_pem: String,
        ttl: Duration,
    ) -> ironmesh_identity::BoxFuture<
        '_,
        Result<ironmesh_identity::SignedChain, ironmesh_identity::SignError>,
    > {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Box::pin(async {
                Err(ironmesh_identity::SignError::Refused(
                    "CA down for the test".into(),
                ))
            });
        }
        self.inner.sign(csr_pem, ttl)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_ca_is_retried_with_backoff_while_the_valid_certificate_stays_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let down = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let signer = FlakySigner {
        inner: ironmesh_identity::LocalSigner::new(ca.clone(), id("foo", "httpbin")),
        down: down.clone(),
        calls: calls.clone(),
    };
    let server = WorkloadCertificates::spawn(
        id("foo", "httpbin"),
        Arc::new(signer),
        rotation(Duration::from_secs(4)),
    );
    let first = server.ready().await;
    let client = workload(&ca, id("bar", "sleep"), Duration::from_secs(3600)).await;
    let addr = echo_server(server.clone()).await;
    down.store(true, Ordering::Relaxed);
    // Past the renewal point, the CA refuses: the first certificate is still served.
    let renewal_due = first
        .next_rotation
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(renewal_due + Duration::from_millis(600)).await;
    assert_eq!(generation(&server), 1);
    let retries = calls.load(Ordering::Relaxed) - 1;
    assert!(retries >= 2, "expected retries with backoff, saw {retries}");
    assert!(
        retries < 20,
        "backoff must slow retries down, saw {retries}"
    );
    connect(&client, addr, &[id("foo", "httpbin")])
        .await
        .unwrap();
    // The CA comes back before expiry: the next retry installs a new certificate.
    down.store(false, Ordering::Relaxed);
    wait_for("recovery", Duration::from_secs(5), || {
        generation(&server) >= 2
    })
    .await;
    connect(&client, addr, &[id("foo", "httpbin")])
        .await
        .unwrap();
}

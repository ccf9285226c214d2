//! The control plane's TLS endpoint on TCP (Kubernetes' 15012) with real rustls on loopback: the serving
//! certificate issued by the mesh CA, the proxy's client verifying it against a root file, the CA service
//! behind it; another root is refused with a message naming the root file; a client that never finishes
//! its handshake is dropped; a renewed serving certificate after a root rotation still verifies.

use std::sync::Arc;
use std::time::Duration;

use ironmesh_identity::ca_service::CaService;
use ironmesh_identity::serving::{ServingCertificate, ServingLimits, tls_incoming};
use ironmesh_identity::{
    CaClient, CaOptions, CertificateAuthority, CertificateSigner, ControlPlaneAddress,
    CredentialAuthority, PodClaims, SignError, SpiffeId, csr_for, write_token_file,
};
use tokio::io::AsyncReadExt as _;

struct Endpoint {
    port: u16,
    ca: Arc<CertificateAuthority>,
    serving: Arc<ServingCertificate>,
    credentials: Arc<CredentialAuthority>,
    dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

async fn endpoint(limits: ServingLimits) -> Endpoint {
    ironmesh_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        CertificateAuthority::load_or_create(
            &dir.path().join("ca"),
            CaOptions::new("cluster.local"),
        )
        .unwrap(),
    );
    let credentials = Arc::new(CredentialAuthority::from_secret(&[9; 32]));
    let serving =
        ServingCertificate::issue(ca.clone(), vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tls_incoming(listener, serving.server_config(), limits);
    let service = CaService::new(ca.clone(), credentials.clone()).into_server();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    Endpoint {
        port,
        ca,
        serving,
        credentials,
        dir,
        _server: server,
    }
}

impl Endpoint {
    fn client(&self, host: &str, root_pem: &str) -> CaClient {
        let root_file = self.dir.path().join(format!("root-{host}.pem"));
        std::fs::write(&root_file, root_pem).unwrap();
        let token_file = self.dir.path().join("token");
        let token = self.credentials.issue(
            &PodClaims {
                namespace: "foo".into(),
                service_account: "sleep".into(),
                pod: "sleep-1".into(),
                pod_uid: "u1".into(),
            },
            Duration::from_secs(600),
        );
        write_token_file(&token_file, &token).unwrap();
        let address = ControlPlaneAddress::Https {
            url: format!("https://{host}:{}", self.port),
            root_file,
        };
        CaClient::for_address(&address, &token_file).unwrap()
    }
}

async fn sign(client: &CaClient) -> Result<Vec<String>, SignError> {
    let id = SpiffeId::new("cluster.local", "foo", "sleep").unwrap();
    let (csr, _key) = csr_for(&id).unwrap();
    Ok(client.sign(csr, Duration::from_secs(3600)).await?.chain_pem)
}

#[tokio::test]
async fn a_proxy_gets_a_certificate_over_tls_verified_against_its_root_file() {
    let endpoint = endpoint(ServingLimits::default()).await;
    let root = endpoint.ca.trust_bundle_pem();
    for host in ["127.0.0.1", "localhost"] {
        let chain = sign(&endpoint.client(host, &root)).await.unwrap();
        assert_eq!(
            chain.last(),
            Some(&endpoint.ca.current_root_pem()),
            "{host}"
        );
    }

    // A root the control plane's certificate does not chain to: refused, and the message says where
    // the root came from.
    let (other_root, _) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
    let error = sign(&endpoint.client("127.0.0.1", &other_root))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, SignError::Unreachable { .. }) && text.contains("root-127.0.0.1.pem"),
        "{text}"
    );

    // After a root rotation the renewed serving certificate comes from the new root; a proxy whose root
    // file holds the bundle (both roots, as istio-ca-root-cert does) still verifies it.
    let before = endpoint.serving.leaf_der();
    endpoint.ca.rotate_root().unwrap();
    endpoint.serving.renew().unwrap();
    assert_ne!(endpoint.serving.leaf_der(), before);
    let chain = sign(&endpoint.client("localhost", &endpoint.ca.trust_bundle_pem()))
        .await
        .unwrap();
    assert_eq!(chain.last(), Some(&endpoint.ca.current_root_pem()));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    let endpoint = endpoint(ServingLimits {
        max_connections: 8,
        handshake_timeout: Duration::from_millis(200),
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", endpoint.port))
        .await
        .unwrap();
    // The server closes it; a read ends (0 bytes or a reset) instead of waiting forever.
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection is still open: {read:?}"
    );
    // And the endpoint still serves.
    sign(&endpoint.client("127.0.0.1", &endpoint.ca.trust_bundle_pem()))
        .await
        .unwrap();
}

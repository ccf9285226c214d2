//! The real CA gRPC service over a Unix socket in a temp dir: issues the credential's identity whatever the
//! CSR asks, refuses missing/expired/forged/wrong-audience credentials, and feeds a workload manager.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironmesh_identity::proto::IstioCertificateRequest;
use ironmesh_identity::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use ironmesh_identity::{
    CA_AUDIENCE, CaClient, CertificateAuthority, CertificateSigner, CredentialAuthority, PodClaims,
    SignError, WorkloadCertificates, csr_for, write_token_file,
};
use support::*;

struct Harness {
    // Keeps the server running for the test.
    _grpc: GrpcCa,
    socket: PathBuf,
    token_file: PathBuf,
    ca: Arc<CertificateAuthority>,
    credentials: Arc<CredentialAuthority>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let grpc = GrpcCa::start(dir.path()).await;
    Harness {
        socket: grpc.socket.clone(),
        token_file: dir.path().join("token"),
        ca: grpc.ca.clone(),
        credentials: grpc.credentials.clone(),
        _grpc: grpc,
        _dir: dir,
    }
}

fn sleep_pod() -> PodClaims {
    PodClaims {
        namespace: "foo".into(),
        service_account: "sleep".into(),
        pod: "sleep-5d8f".into(),
        pod_uid: "0d8c7f1e".into(),
    }
}

impl Harness {
    fn client(&self) -> CaClient {
        CaClient::new(
            &format!("unix://{}", self.socket.display()),
            &self.token_file,
        )
        .unwrap()
    }

    fn write_token(&self, token: &str) {
        write_token_file(&self.token_file, token).unwrap();
    }

    async fn sign_as_admin(&self) -> Result<Vec<String>, SignError> {
        let (csr, _) = csr_for(&id("kube-system", "admin")).unwrap();
        self.client()
            .sign(csr, Duration::from_secs(600))
            .await
            .map(|signed| signed.chain_pem)
    }
}

fn leaf_ids(chain: &[String]) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain[0].as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[tokio::test]
async fn issues_the_credential_identity_not_the_requested_one() {
    let h = harness().await;
    h.write_token(&h.credentials.issue(&sleep_pod(), Duration::from_secs(600)));
    let chain = h.sign_as_admin().await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        leaf_ids(&chain),
        vec!["URI(spiffe://cluster.local/ns/foo/sa/sleep)"]
    );
    assert_eq!(chain[1], h.ca.current_root_pem());
}

#[tokio::test]
async fn refuses_an_expired_credential() {
    let h = harness().await;
    let issued = SystemTime::now() - Duration::from_secs(3600);
    h.write_token(&h.credentials.issue_at(
        &sleep_pod(),
        CA_AUDIENCE,
        issued,
        Duration::from_secs(60),
    ));
    let err = h.sign_as_admin().await.unwrap_err();
    assert!(matches!(err, SignError::Unauthenticated(_)), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn refuses_a_forged_credential() {
    let h = harness().await;
    let forger = CredentialAuthority::from_secret(&[42; 32]);
    h.write_token(&forger.issue(&sleep_pod(), Duration::from_secs(600)));
    let err = h.sign_as_admin().await.unwrap_err();
    assert!(matches!(err, SignError::Unauthenticated(_)), "{err}");
    assert!(
        err.to_string().contains("signature does not match"),
        "{err}"
    );
}

#[tokio::test]
async fn refuses_a_wrong_audience() {
    let h = harness().await;
    h.write_token(&h.credentials.issue_at(
        &sleep_pod(),
        "istio-ca",
        SystemTime::now(),
        Duration::from_secs(600),
    ));
    let err = h.sign_as_admin().await.unwrap_err();
    assert!(matches!(err, SignError::Unauthenticated(_)), "{err}");
    assert!(err.to_string().contains("audience"), "{err}");
}

#[tokio::test]
async fn refuses_a_missing_credential() {
    let h = harness().await;
    // Straight through the generated client, without any authorization metadata.
    let client = h.client();
    drop(client);
    let path = h.socket.clone();
    let channel =
        ironmesh_identity::connect_channel(&ironmesh_identity::ControlPlaneAddress::Unix(path))
            .await
            .unwrap();
    let (csr, _) = csr_for(&id("foo", "sleep")).unwrap();
    let status = IstioCertificateServiceClient::new(channel)
        .create_certificate(IstioCertificateRequest {
            csr,
            validity_duration: 60,
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("no credential"),
        "{}",
        status.message()
    );
    // An empty token file is a missing credential too.
    h.write_token("");
    let err = h.sign_as_admin().await.unwrap_err();
    assert!(matches!(err, SignError::Unauthenticated(_)), "{err}");
}

#[tokio::test]
async fn refuses_an_invalid_csr_and_a_too_long_ttl() {
    let h = harness().await;
    h.write_token(&h.credentials.issue(&sleep_pod(), Duration::from_secs(600)));
    let err = h
        .client()
        .sign("garbage".into(), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::Refused(_)), "{err}");
    let (csr, _) = csr_for(&id("foo", "sleep")).unwrap();
    let err = h
        .client()
        .sign(csr, Duration::from_secs(100 * 86400))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maximum"), "{err}");
}

#[tokio::test]
async fn token_file_is_reread_at_every_call() {
    let h = harness().await;
    let client = h.client();
    h.write_token("not-a-token");
    let (csr, _) = csr_for(&id("foo", "sleep")).unwrap();
    assert!(
        client
            .sign(csr.clone(), Duration::from_secs(60))
            .await
            .is_err()
    );
    h.write_token(&h.credentials.issue(&sleep_pod(), Duration::from_secs(600)));
    let signed = client.sign(csr, Duration::from_secs(60)).await.unwrap();
    assert_eq!(signed.trust_bundle_pem, h.ca.trust_bundle_pems());
}

#[tokio::test]
async fn workload_manager_gets_its_certificate_over_grpc() {
    let h = harness().await;
    h.write_token(&h.credentials.issue(&sleep_pod(), Duration::from_secs(600)));
    let certs = WorkloadCertificates::spawn(
        id("foo", "sleep"),
        Arc::new(h.client()),
        rotation(Duration::from_secs(600)),
    );
    let info = tokio::time::timeout(Duration::from_secs(10), certs.ready())
        .await
        .unwrap();
    assert_eq!(info.spiffe_id, id("foo", "sleep"));
    assert_eq!(
        info.not_after.duration_since(info.not_before).unwrap(),
        Duration::from_secs(600)
    );
    assert_eq!(info.trust_bundle_pem, h.ca.trust_bundle_pems());
    // Renewal at half the life, jittered by 2 % of it.
    let renew_in = info
        .next_rotation
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs_f64();
    assert!(
        (285.0..=313.0).contains(&renew_in),
        "renewal in {renew_in} s"
    );
}

#[tokio::test]
async fn manager_keeps_retrying_while_the_credential_is_refused() {
    let h = harness().await;
    h.write_token("not-a-token");
    let certs = WorkloadCertificates::spawn(
        id("foo", "sleep"),
        Arc::new(h.client()),
        rotation(Duration::from_secs(600)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(certs.snapshot().is_none());
    // Once the runtime writes a valid token, the backoff loop picks it up.
    h.write_token(&h.credentials.issue(&sleep_pod(), Duration::from_secs(600)));
    tokio::time::timeout(Duration::from_secs(5), certs.ready())
        .await
        .unwrap();
}

/// The pods of a test, by `namespace/name`, with their uids.
#[derive(Default)]
struct Pods(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl ironmesh_identity::PodLookup for Pods {
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .cloned())
    }
}

impl Pods {
    fn set(&self, pod: &PodClaims) {
        self.0.lock().unwrap().insert(
            format!("{}/{}", pod.namespace, pod.pod),
            pod.pod_uid.clone(),
        );
    }

    fn delete(&self, pod: &PodClaims) {
        self.0
            .lock()
            .unwrap()
            .remove(&format!("{}/{}", pod.namespace, pod.pod));
    }
}

#[tokio::test]
async fn a_credential_dies_with_its_pod_and_does_not_pass_for_a_recreated_one() {
    let dir = tempfile::tempdir().unwrap();
    let pods = Arc::new(Pods::default());
    let grpc = GrpcCa::start_with_pods(dir.path(), Some(pods.clone())).await;
    let token_file = dir.path().join("token");
    let client = CaClient::new(&format!("unix://{}", grpc.socket.display()), &token_file).unwrap();
    let (csr, _) = csr_for(&id("foo", "sleep")).unwrap();
    let pod = sleep_pod();
    write_token_file(
        &token_file,
        &grpc.credentials.issue(&pod, Duration::from_secs(600)),
    )
    .unwrap();

    pods.set(&pod);
    client
        .sign(csr.clone(), Duration::from_secs(60))
        .await
        .unwrap();

    pods.delete(&pod);
    let err = client
        .sign(csr.clone(), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::Unauthenticated(_)), "{err}");
    assert!(
        err.to_string().contains("foo/sleep-5d8f"),
        "names the pod: {err}"
    );
    assert!(err.to_string().contains("no longer exists"), "{err}");

    // Recreated under the same name: a new uid, so the old credential stays refused...
    let recreated = PodClaims {
        pod_uid: "a41b22e0".into(),
        ..pod.clone()
    };
    pods.set(&recreated);
    let err = client
        .sign(csr.clone(), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::Unauthenticated(_)), "{err}");
    assert!(err.to_string().contains("a41b22e0"), "{err}");
    // ...and the new pod's own credential works.
    write_token_file(
        &token_file,
        &grpc.credentials.issue(&recreated, Duration::from_secs(600)),
    )
    .unwrap();
    client.sign(csr, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn impersonation_is_refused_unauthenticated_as_istiod_does_without_trusted_nodes() {
    let h = harness().await;
    let path = h.socket.clone();
    let channel =
        ironmesh_identity::connect_channel(&ironmesh_identity::ControlPlaneAddress::Unix(path))
            .await
            .unwrap();
    let token = h.credentials.issue(&sleep_pod(), Duration::from_secs(600));
    let (csr, _) = csr_for(&id("kube-system", "admin")).unwrap();
    let request = |impersonate: Option<&str>| {
        let metadata = impersonate.map(|identity| prost_types::Struct {
            fields: [(
                ironmesh_identity::ca_service::IMPERSONATED_IDENTITY.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(identity.into())),
                },
            )]
            .into(),
        });
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 60,
            metadata,
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let mut client = IstioCertificateServiceClient::new(channel);
    let status = client
        .create_certificate(request(Some(
            "spiffe://cluster.local/ns/kube-system/sa/admin",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("impersonat"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("ns/kube-system/sa/admin"),
        "{}",
        status.message()
    );
    // An empty value asks for nothing (istiod's GetStringValue() != ""): the caller's own identity.
    let chain = client
        .create_certificate(request(Some("")))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        leaf_ids(&chain),
        vec!["URI(spiffe://cluster.local/ns/foo/sa/sleep)"]
    );
}

//! Shared helpers for the identity crate's integration tests: a CA in a temp dir, workload managers
//! signed in-process, and a tiny mTLS echo server on loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironmesh_identity::{
    CaOptions, CertificateAuthority, LocalSigner, RotationOptions, SpiffeId, WorkloadCertificates,
};
use rustls::pki_types::{IpAddr, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TD: &str = "cluster.local";

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

pub fn new_ca(dir: &std::path::Path) -> Arc<CertificateAuthority> {
    ironmesh_identity::install_crypto_provider();
    Arc::new(CertificateAuthority::load_or_create(dir, CaOptions::new(TD)).unwrap())
}

pub fn rotation(ttl: Duration) -> RotationOptions {
    RotationOptions {
        ttl,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        ..RotationOptions::default()
    }
}

pub async fn workload(
    ca: &Arc<CertificateAuthority>,
    identity: SpiffeId,
    ttl: Duration,
) -> WorkloadCertificates {
    let signer = Arc::new(LocalSigner::new(ca.clone(), identity.clone()));
    let certs = WorkloadCertificates::spawn(identity, signer, rotation(ttl));
    tokio::time::timeout(Duration::from_secs(10), certs.ready())
        .await
        .expect("first certificate within 10 s");
    certs
}

/// Accepts mTLS connections; for every line `ping` answers `pong <client identity>` on the same connection.
pub async fn echo_server(certs: WorkloadCertificates) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = ironmesh_identity::peer_identity(tls.get_ref().1)
                    .map(|id| id.to_string())
                    .unwrap_or_default();
                let mut buf = [0u8; 5];
                while tls.read_exact(&mut buf).await.is_ok() {
                    let reply = format!("pong {peer}\n");
                    if tls.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

pub async fn connect(
    client: &WorkloadCertificates,
    addr: SocketAddr,
    expected: &[SpiffeId],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = client.client_config(expected, vec![b"istio".to_vec()]);
    connect_with(config, addr).await
}

pub async fn connect_with(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(IpAddr::from(std::net::IpAddr::from([0, 0, 0, 0])));
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    // TLS 1.3 client auth failures surface on the first read, so do one round trip before saying "ok".
    ping(&mut tls).await?;
    Ok(tls)
}

pub async fn ping(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> std::io::Result<String> {
    tls.write_all(b"ping\n").await?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tls.read(&mut byte).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

/// The real CA gRPC service on a Unix socket in `dir`, with the pod credentials it accepts.
pub struct GrpcCa {
    pub ca: Arc<CertificateAuthority>,
    pub credentials: Arc<ironmesh_identity::CredentialAuthority>,
    pub socket: std::path::PathBuf,
    dir: std::path::PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl GrpcCa {
    pub async fn start(dir: &std::path::Path) -> Self {
        Self::start_with_pods(dir, None).await
    }

    /// The CA service bound to the pods `pods` knows, as the control plane runs it.
    pub async fn start_with_pods(
        dir: &std::path::Path,
        pods: Option<Arc<dyn ironmesh_identity::PodLookup>>,
    ) -> Self {
        let ca = new_ca(&dir.join("ca"));
        let credentials = Arc::new(
            ironmesh_identity::CredentialAuthority::load_or_create(&dir.join("ca")).unwrap(),
        );
        let socket = dir.join("xds.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut service =
            ironmesh_identity::ca_service::CaService::new(ca.clone(), credentials.clone());
        if let Some(pods) = pods {
            service = service.bound_to_pods(pods);
        }
        let path = socket.clone();
        tokio::spawn(async move {
            ironmesh_identity::ca_service::serve_unix(&path, service, async {
                let _ = stopped.await;
            })
            .await
            .expect("the CA gRPC server must start");
        });
        for _ in 0..250 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        GrpcCa {
            ca,
            credentials,
            socket,
            dir: dir.to_owned(),
            _stop: stop,
        }
    }

    /// A workload manager that gets its certificates over gRPC with a pod token written for it.
    pub async fn workload(
        &self,
        identity: SpiffeId,
        pod: &str,
        ttl: Duration,
    ) -> WorkloadCertificates {
        let token_file = self.dir.join(format!("{pod}.token"));
        let claims = ironmesh_identity::PodClaims {
            namespace: identity.namespace().to_owned(),
            service_account: identity.service_account().to_owned(),
            pod: pod.to_owned(),
            pod_uid: format!("{pod}-uid"),
        };
        let token = self.credentials.issue(&claims, Duration::from_secs(3600));
        ironmesh_identity::write_token_file(&token_file, &token).unwrap();
        let client = ironmesh_identity::CaClient::new(
            &format!("unix://{}", self.socket.display()),
            token_file,
        )
        .unwrap();
        let certs = WorkloadCertificates::spawn(identity, Arc::new(client), rotation(ttl));
        tokio::time::timeout(Duration::from_secs(10), certs.ready())
            .await
            .expect("first certificate over gRPC within 10 s");
        certs
    }
}

/// `openssl verify` of `chain` (leaf first) against `bundle`, in `dir`: its stdout and stderr, for the
/// caller to assert `leaf.pem: OK` or a refusal.
pub fn openssl_verify(dir: &std::path::Path, bundle: &str, chain: &[String]) -> String {
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    std::fs::write(dir.join("leaf.pem"), &chain[0]).unwrap();
    std::fs::write(dir.join("untrusted.pem"), chain[1..].concat()).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "bundle.pem",
            "-untrusted",
            "untrusted.pem",
            "leaf.pem",
        ])
        .current_dir(dir)
        .output()
        .expect("the openssl binary must be installed for this test");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

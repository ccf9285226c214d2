//! TCP ports through the in-process proxy pair: copied both ways over mTLS, with Istio's TCP metrics.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ironmesh_proto::pb::{
    ClientTls, ClientTlsMode, Endpoint, InboundPort, Protocol, ProxyConfig, ServerMode, Service,
    ServicePort, Workload,
};
use support::{Mesh, ip, spiffe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    address
}

fn config(name: &str, sa: &str) -> ProxyConfig {
    ProxyConfig {
        version: "v1".into(),
        workload: Some(Workload {
            name: name.into(),
            namespace: "foo".into(),
            service_account: sa.into(),
            ports: vec![InboundPort {
                port: 9000,
                protocol: Protocol::Tcp as i32,
                mode: ServerMode::Strict as i32,
            }],
            default_mode: ServerMode::Strict as i32,
            ..Default::default()
        }),
        services: vec![Service {
            hostname: "echo.foo.svc.cluster.local".into(),
            namespace: "foo".into(),
            vip: "10.96.0.9".into(),
            ports: vec![ServicePort {
                port: 9000,
                target_port: 9000,
                protocol: Protocol::Tcp as i32,
                tls: Some(ClientTls {
                    mode: ClientTlsMode::IstioMutual as i32,
                    ..Default::default()
                }),
            }],
            endpoints: vec![Endpoint {
                ip: "10.0.0.2".into(),
                mtls_ready: true,
                spiffe_id: spiffe("foo", "echo").to_string(),
            }],
        }],
        auto_mtls: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn tcp_is_copied_both_ways_over_mtls_and_counted() {
    let mesh = Mesh::pair(9000, echo_app().await, "echo", config).await;

    let mut stream = mesh
        .network
        .dial(ip("10.0.0.1"), "10.96.0.9:9000".parse().unwrap())
        .await
        .unwrap();
    let payload = vec![7u8; 100_000];
    stream.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, payload);
    drop(stream);

    // The closed connection is counted on both sides with mutual_tls.
    for (pod, reporter) in [("10.0.0.1", "source"), ("10.0.0.2", "destination")] {
        let mut text = String::new();
        for _ in 0..100 {
            text = mesh.proxies[&ip(pod)].metrics.encode();
            if text.contains("istio_tcp_connections_closed_total{") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = text
            .lines()
            .find(|line| {
                line.starts_with("istio_tcp_sent_bytes_total{")
                    && line.contains(&format!("reporter=\"{reporter}\""))
            })
            .unwrap_or_else(|| panic!("no sent bytes for {reporter}:\n{text}"));
        assert!(
            sent.contains("connection_security_policy=\"mutual_tls\""),
            "{sent}"
        );
        assert!(sent.ends_with(" 100000"), "{sent}");
        assert!(
            text.contains("istio_tcp_connections_opened_total{"),
            "{text}"
        );
    }
}

/// The first flight of a real TLS client offering `alpn`.
fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("echo.foo.svc.cluster.local").unwrap();
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    connection.write_tls(&mut bytes).unwrap();
    bytes
}

/// Sends `bytes` from a pod without sidecar to the echo pod and returns what came back within a short time.
async fn send_from_outside(mesh: &Mesh, bytes: &[u8]) -> Vec<u8> {
    let mut stream = mesh
        .network
        .dial(ip("10.0.0.3"), "10.0.0.2:9000".parse().unwrap())
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut echoed = vec![0u8; bytes.len()];
    match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echoed)).await {
        Ok(Ok(_)) => echoed,
        _ => Vec::new(),
    }
}

async fn echo_mesh(mode: ServerMode) -> Mesh {
    ironmesh_identity::install_crypto_provider();
    let mut mesh = Mesh::new().await;
    mesh.add_app(ip("10.0.0.2"), 9000, echo_app().await);
    mesh.add_proxy(ip("10.0.0.2"), "echo-1", "foo", "echo")
        .await;
    let mut server = config("echo-1", "echo");
    let workload = server.workload.as_mut().unwrap();
    workload.ports[0].mode = mode as i32;
    workload.default_mode = mode as i32;
    mesh.publish(ip("10.0.0.2"), "echo-1.foo", server).await;
    mesh
}

#[tokio::test]
async fn permissive_passes_application_tls_through_and_terminates_mesh_alpn() {
    let mesh = echo_mesh(ServerMode::Permissive).await;
    let app_tls = client_hello(&[b"http/1.1"]);
    assert_eq!(
        send_from_outside(&mesh, &app_tls).await,
        app_tls,
        "application TLS must reach the app untouched"
    );
    let mesh_tls = client_hello(&[b"istio-peer-exchange", b"istio"]);
    let reply = send_from_outside(&mesh, &mesh_tls).await;
    assert_ne!(
        reply, mesh_tls,
        "mesh mTLS must be terminated by the proxy, not echoed by the app"
    );
    let plaintext = b"hello plaintext".to_vec();
    assert_eq!(send_from_outside(&mesh, &plaintext).await, plaintext);
}

#[tokio::test]
async fn disable_forwards_even_mesh_tls_bytes_unterminated() {
    let mesh = echo_mesh(ServerMode::Disable).await;
    let mesh_tls = client_hello(&[b"istio-peer-exchange", b"istio"]);
    assert_eq!(send_from_outside(&mesh, &mesh_tls).await, mesh_tls);
}

#[tokio::test]
async fn strict_terminates_application_tls_instead_of_passing_it() {
    let mesh = echo_mesh(ServerMode::Strict).await;
    let app_tls = client_hello(&[b"http/1.1"]);
    assert_ne!(send_from_outside(&mesh, &app_tls).await, app_tls);
    assert_eq!(
        send_from_outside(&mesh, b"plaintext").await,
        Vec::<u8>::new()
    );
}

/// Fuzzed through the real proxy: whatever bytes a client without a sidecar sends to a STRICT port, the
/// application never receives any of them.
#[test]
fn strict_never_lets_random_bytes_reach_the_app() {
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A counting app: any byte it receives is a STRICT violation.
    let received = std::sync::Arc::new(AtomicUsize::new(0));
    let mesh = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = listener.local_addr().unwrap();
        let counter = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        counter.fetch_add(read, Ordering::SeqCst);
                    }
                });
            }
        });
        let mut mesh = Mesh::new().await;
        mesh.add_app(ip("10.0.0.2"), 9000, app);
        mesh.add_proxy(ip("10.0.0.2"), "echo-1", "foo", "echo")
            .await;
        mesh.publish(ip("10.0.0.2"), "echo-1.foo", config("echo-1", "echo"))
            .await;
        mesh
    });
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(48));
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..300),
        // Biased towards TLS-looking starts so the ClientHello path is exercised too.
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|mut tail| {
            let mut bytes = vec![0x16, 0x03, 0x01];
            bytes.append(&mut tail);
            bytes
        }),
    ];
    runner
        .run(&bytes, |bytes| {
            runtime.block_on(async {
                let mut stream = mesh
                    .network
                    .dial(ip("10.0.0.3"), "10.0.0.2:9000".parse().unwrap())
                    .await
                    .unwrap();
                let _ = stream.write_all(&bytes).await;
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut sink))
                    .await;
            });
            prop_assert_eq!(
                received.load(Ordering::SeqCst),
                0,
                "bytes {:?} reached the app",
                bytes
            );
            Ok(())
        })
        .unwrap();
    drop(mesh);
}

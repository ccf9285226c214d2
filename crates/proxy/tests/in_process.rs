//! docs/SEMANTICS.md#outcomes decisions through the real proxy in-process (fake sockets over loopback, real CA, real hub).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ironmesh_proto::pb::{
    ClientTls, ClientTlsMode, Endpoint, InboundPort, Protocol, ProxyConfig, ServerMode, Service,
    ServicePort, Workload,
};
use support::{Mesh, Outcome, http_get, ip, spiffe, start_http_app};

const SLEEP_IP: &str = "10.0.0.1";
const HTTPBIN_IP: &str = "10.0.0.2";
const LEGACY_IP: &str = "10.0.0.3";
const OUTSIDE_IP: &str = "10.0.0.9";
const HTTPBIN_VIP: &str = "10.96.0.2:8000";
const LEGACY_VIP: &str = "10.96.0.3:8000";
const BODY_TERMINATION: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const BODY_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

fn vip(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The client TLS settings sleep's proxy uses for both services.
struct ClientSide {
    tls: ClientTlsMode,
    subject_alt_names: Vec<String>,
    auto_mtls: bool,
}

fn services(client: &ClientSide, httpbin_mode: ServerMode) -> Vec<Service> {
    let port = || ServicePort {
        port: 8000,
        target_port: 80,
        protocol: Protocol::Http as i32,
        tls: Some(ClientTls {
            mode: client.tls as i32,
            sni: String::new(),
            subject_alt_names: client.subject_alt_names.clone(),
        }),
    };
    vec![
        Service {
            hostname: "httpbin.foo.svc.cluster.local".into(),
            namespace: "foo".into(),
            vip: HTTPBIN_VIP.split(':').next().unwrap().into(),
            ports: vec![port()],
            endpoints: vec![Endpoint {
                ip: HTTPBIN_IP.into(),
                mtls_ready: httpbin_mode != ServerMode::Disable,
                spiffe_id: spiffe("foo", "httpbin").to_string(),
            }],
        },
        Service {
            hostname: "legacy.legacy.svc.cluster.local".into(),
            namespace: "legacy".into(),
            vip: LEGACY_VIP.split(':').next().unwrap().into(),
            ports: vec![port()],
            endpoints: vec![Endpoint {
                ip: LEGACY_IP.into(),
                ..Default::default()
            }],
        },
    ]
}

fn workload(name: &str, sa: &str, mode: ServerMode) -> Workload {
    Workload {
        name: name.into(),
        namespace: "foo".into(),
        service_account: sa.into(),
        spiffe_id: spiffe("foo", sa).to_string(),
        ports: vec![InboundPort {
            port: 80,
            protocol: Protocol::Http as i32,
            mode: mode as i32,
        }],
        default_mode: mode as i32,
        ..Default::default()
    }
}

/// sleep (sidecar) and httpbin (sidecar) in foo, legacy (no sidecar) in legacy, an outside pod unknown to the mesh.
async fn mesh(client: ClientSide, httpbin_mode: ServerMode) -> Mesh {
    let mut mesh = Mesh::new().await;
    mesh.add_app(ip(HTTPBIN_IP), 80, start_http_app("httpbin").await);
    mesh.add_app(ip(LEGACY_IP), 80, start_http_app("legacy").await);
    mesh.add_app(ip(OUTSIDE_IP), 80, start_http_app("outside").await);
    mesh.add_proxy(ip(SLEEP_IP), "sleep-1", "foo", "sleep")
        .await;
    mesh.add_proxy(ip(HTTPBIN_IP), "httpbin-1", "foo", "httpbin")
        .await;
    let services = services(&client, httpbin_mode);
    let config = |workload| ProxyConfig {
        version: "v1".into(),
        workload: Some(workload),
        services: services.clone(),
        auto_mtls: client.auto_mtls,
        ..Default::default()
    };
    mesh.publish(
        ip(SLEEP_IP),
        "sleep-1.foo",
        config(workload("sleep-1", "sleep", ServerMode::Permissive)),
    )
    .await;
    mesh.publish(
        ip(HTTPBIN_IP),
        "httpbin-1.foo",
        config(workload("httpbin-1", "httpbin", httpbin_mode)),
    )
    .await;
    mesh
}

fn mutual() -> ClientSide {
    ClientSide {
        tls: ClientTlsMode::IstioMutual,
        subject_alt_names: vec![],
        auto_mtls: true,
    }
}

fn plaintext() -> ClientSide {
    ClientSide {
        tls: ClientTlsMode::ClientDisable,
        subject_alt_names: vec![],
        auto_mtls: false,
    }
}

fn expect_response(outcome: Outcome) -> (u16, String) {
    match outcome {
        Outcome::Response { status, body } => (status, body),
        other => panic!("expected an HTTP response, got {other:?}"),
    }
}

#[tokio::test]
async fn sidecar_to_strict_sidecar_over_istio_mutual_is_200_with_xfcc() {
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/ip").await);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("pod=httpbin xfcc=By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash="),
        "{body}"
    );
    assert!(
        body.ends_with(";Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/sleep"),
        "{body}"
    );
    // Istio's metric names and labels on both sides.
    let client_metrics = mesh.proxies[&ip(SLEEP_IP)].metrics.encode();
    let server_metrics = mesh.proxies[&ip(HTTPBIN_IP)].metrics.encode();
    for (text, reporter) in [
        (&client_metrics, "source"),
        (&server_metrics, "destination"),
    ] {
        let line = text
            .lines()
            .find(|line| {
                line.starts_with("istio_requests_total{")
                    && line.contains(&format!("reporter=\"{reporter}\""))
            })
            .unwrap_or_else(|| panic!("no istio_requests_total for {reporter} in\n{text}"));
        assert!(
            line.contains("connection_security_policy=\"mutual_tls\""),
            "{line}"
        );
        assert!(
            line.contains("destination_service=\"httpbin.foo.svc.cluster.local\""),
            "{line}"
        );
        assert!(line.contains("response_code=\"200\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(server_metrics.contains("istio_request_duration_milliseconds_bucket{"));
}

#[tokio::test]
async fn sidecar_to_permissive_sidecar_over_istio_mutual_is_200() {
    let mesh = mesh(mutual(), ServerMode::Permissive).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
    assert_eq!(status, 200);
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/foo/sa/sleep"),
        "{body}"
    );
}

#[tokio::test]
async fn plaintext_sidecar_to_strict_sidecar_is_503_connection_termination() {
    let mesh = mesh(plaintext(), ServerMode::Strict).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
    assert_eq!((status, body.as_str()), (503, BODY_TERMINATION));
}

#[tokio::test]
async fn plaintext_sidecar_to_permissive_and_disable_is_200_without_xfcc() {
    for mode in [ServerMode::Permissive, ServerMode::Disable] {
        let mesh = mesh(plaintext(), mode).await;
        let (status, body) =
            expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
        assert_eq!(
            (status, body.as_str()),
            (200, "pod=httpbin xfcc=-"),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn istio_mutual_to_disable_sidecar_is_503() {
    let mesh = mesh(mutual(), ServerMode::Disable).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
    assert_eq!(status, 503);
    assert!(
        body.starts_with(
            "upstream connect error or disconnect/reset before headers. reset reason: "
        ),
        "{body}"
    );
}

#[tokio::test]
async fn istio_mutual_to_a_pod_without_sidecar_is_503_and_plaintext_is_200() {
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(LEGACY_VIP), "/").await);
    assert_eq!(status, 503);
    assert!(body == BODY_FAILURE || body == BODY_TERMINATION, "{body}");
    let mesh = self::mesh(plaintext(), ServerMode::Strict).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(LEGACY_VIP), "/").await);
    assert_eq!((status, body.as_str()), (200, "pod=legacy xfcc=-"));
}

#[tokio::test]
async fn client_without_sidecar_to_strict_is_reset_and_to_permissive_is_200() {
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    // legacy has no sidecar: it dials the httpbin pod directly, which redirects into the inbound listener.
    let outcome = http_get(
        &mesh.network,
        ip(LEGACY_IP),
        SocketAddr::new(ip(HTTPBIN_IP), 80),
        "/",
    )
    .await;
    assert!(
        matches!(outcome, Outcome::Reset),
        "expected a reset (curl exit 56), got {outcome:?}"
    );
    let mesh = self::mesh(mutual(), ServerMode::Permissive).await;
    let (status, body) = expect_response(
        http_get(
            &mesh.network,
            ip(LEGACY_IP),
            SocketAddr::new(ip(HTTPBIN_IP), 80),
            "/",
        )
        .await,
    );
    assert_eq!((status, body.as_str()), (200, "pod=httpbin xfcc=-"));
}

#[tokio::test]
async fn secure_naming_refuses_a_server_with_the_wrong_identity() {
    let client = ClientSide {
        tls: ClientTlsMode::IstioMutual,
        subject_alt_names: vec![spiffe("foo", "not-httpbin").to_string()],
        auto_mtls: true,
    };
    let mesh = mesh(client, ServerMode::Strict).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
    assert_eq!((status, body.as_str()), (503, BODY_FAILURE));
}

#[tokio::test]
async fn auto_mtls_encrypts_to_sidecars_and_not_to_legacy_pods() {
    let client = ClientSide {
        tls: ClientTlsMode::Auto,
        subject_alt_names: vec![],
        auto_mtls: true,
    };
    let mesh = mesh(client, ServerMode::Strict).await;
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
    assert_eq!(status, 200);
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/foo/sa/sleep"),
        "{body}"
    );
    let (status, body) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(LEGACY_VIP), "/").await);
    assert_eq!((status, body.as_str()), (200, "pod=legacy xfcc=-"));
}

#[tokio::test]
async fn unknown_destinations_pass_through_untouched() {
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    let outcome = http_get(
        &mesh.network,
        ip(SLEEP_IP),
        SocketAddr::new(ip(OUTSIDE_IP), 80),
        "/",
    )
    .await;
    let (status, body) = expect_response(outcome);
    assert_eq!((status, body.as_str()), (200, "pod=outside xfcc=-"));
}

#[tokio::test]
async fn strict_never_forwards_arbitrary_plaintext_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    let probes: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03",
        b"\x16\x03\x01\x00\x05hello",
        b"\x00\x01\x02",
    ];
    for probe in probes {
        let mut stream = mesh
            .network
            .dial(ip(LEGACY_IP), SocketAddr::new(ip(HTTPBIN_IP), 80))
            .await
            .unwrap();
        let _ = stream.write_all(probe).await;
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
            .await
            .unwrap();
        // Whatever happened (reset, alert, close), the app never answered.
        assert!(
            !String::from_utf8_lossy(&reply).contains("pod=httpbin"),
            "{probe:?} reached the app: {read:?}"
        );
    }
}

#[tokio::test]
async fn readiness_needs_a_certificate_and_a_configuration() {
    let mut mesh = Mesh::new().await;
    mesh.add_proxy(ip(SLEEP_IP), "sleep-1", "foo", "sleep")
        .await;
    let proxy = &mesh.proxies[&ip(SLEEP_IP)];
    proxy.certs.ready().await;
    assert!(!proxy.admin.is_ready(), "ready without configuration");
    mesh.publish(
        ip(SLEEP_IP),
        "sleep-1.foo",
        ProxyConfig {
            version: "v1".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(mesh.proxies[&ip(SLEEP_IP)].admin.is_ready());
}

#[tokio::test]
async fn killing_the_hub_keeps_traffic_flowing_and_proxies_reconnect() {
    let mut mesh = mesh(mutual(), ServerMode::Strict).await;
    // A keep-alive connection opened before the control plane dies.
    let stream = mesh
        .network
        .dial(ip(SLEEP_IP), vip(HTTPBIN_VIP))
        .await
        .unwrap();
    let (mut existing, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = || {
        http::Request::get("/")
            .header("host", "httpbin")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = existing.send_request(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    mesh.hub_server.take().unwrap().kill();
    let mut connected = mesh.proxies[&ip(SLEEP_IP)].client.connected();
    tokio::time::timeout(Duration::from_secs(5), connected.wait_for(|c| !*c))
        .await
        .unwrap()
        .unwrap();
    // The existing connection and new connections keep working on cached config and certificates.
    existing.ready().await.unwrap();
    let response = existing.send_request(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    for _ in 0..3 {
        let (status, _) =
            expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
        assert_eq!(status, 200);
    }
    // The control plane comes back; the proxies reconnect by themselves and take new config.
    mesh.hub_server = Some(support::HubServer::start(&mesh.hub, &mesh.socket));
    tokio::time::timeout(Duration::from_secs(5), connected.wait_for(|c| *c))
        .await
        .unwrap()
        .unwrap();
    let mut changed = (*mesh.proxies[&ip(SLEEP_IP)]
        .data_plane
        .current_config()
        .unwrap())
    .clone();
    changed.version = "v2".into();
    changed
        .services
        .retain(|s| s.hostname.starts_with("legacy"));
    mesh.publish(ip(SLEEP_IP), "sleep-1.foo", changed).await;
}

#[tokio::test]
async fn http2_prior_knowledge_goes_through_the_mtls_pair() {
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    let stream = mesh
        .network
        .dial(ip(SLEEP_IP), vip(HTTPBIN_VIP))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = http::Request::get("http://httpbin.foo.svc.cluster.local:8000/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        assert!(
            body.contains("URI=spiffe://cluster.local/ns/foo/sa/sleep"),
            "{body}"
        );
    }
}

async fn admin_get(address: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

#[tokio::test]
async fn admin_metrics_and_readiness_endpoints() {
    use ironmesh_proxy::admin::{Surface, serve};
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    let (status, _) =
        expect_response(http_get(&mesh.network, ip(SLEEP_IP), vip(HTTPBIN_VIP), "/").await);
    assert_eq!(status, 200);
    let state = mesh.proxies[&ip(SLEEP_IP)].admin.clone();
    let mut addresses = Vec::new();
    for surface in [Surface::Admin, Surface::Metrics, Surface::Readiness] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap());
        tokio::spawn(serve(listener, state.clone(), surface));
    }
    let (admin, metrics, readiness) = (addresses[0], addresses[1], addresses[2]);
    assert_eq!(admin_get(readiness, "/healthz/ready").await.0, 200);
    let (status, dump) = admin_get(admin, "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["version"], "v1");
    assert_eq!(
        dump["services"][0]["ports"][0]["tls"]["mode"],
        "ISTIO_MUTUAL"
    );
    let (status, certs) = admin_get(admin, "/certs").await;
    assert_eq!(status, 200);
    assert!(
        certs.contains("spiffe://cluster.local/ns/foo/sa/sleep"),
        "{certs}"
    );
    let (status, text) = admin_get(metrics, "/stats/prometheus").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("istio_requests_total{reporter=\"source\""),
        "{text}"
    );
    // The admin port is not served on the metrics listener.
    assert_eq!(admin_get(metrics, "/config_dump").await.0, 404);
}

#[tokio::test]
async fn drain_stops_accepting_and_closes_idle_keep_alive_connections() {
    let mut mesh = mesh(mutual(), ServerMode::Strict).await;
    let stream = mesh
        .network
        .dial(ip(SLEEP_IP), vip(HTTPBIN_VIP))
        .await
        .unwrap();
    let (mut open, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = || {
        http::Request::get("/")
            .header("host", "httpbin")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = open.send_request(get()).await.unwrap();
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let proxy = mesh.proxies.remove(&ip(SLEEP_IP)).unwrap();
    let outbound = proxy.data_plane.outbound_addr();
    assert!(proxy.data_plane.active_connections() >= 1);
    let started = std::time::Instant::now();
    let drain = tokio::spawn(proxy.data_plane.drain(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(outbound).await.is_err(),
        "still accepting after drain began"
    );
    // The idle keep-alive connection is closed, so the drain does not wait for the 30 s grace.
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("drain ends once the idle connection is closed")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let closed = match open.ready().await {
        Err(_) => true,
        Ok(()) => open.send_request(get()).await.is_err(),
    };
    assert!(
        closed,
        "the idle connection should have been closed by the drain"
    );
}

/// A GET from sleep to httpbin on a new downstream connection WITHOUT `Connection: close` (as curl sends
/// it), so the client sidecar keeps its upstream connection pooled afterwards.
async fn keep_alive_get(mesh: &Mesh) -> (u16, String) {
    let stream = mesh
        .network
        .dial(ip(SLEEP_IP), vip(HTTPBIN_VIP))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/")
        .header("host", "httpbin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Re-publishes httpbin's configuration with its port in `mode`.
async fn switch_httpbin(mesh: &Mesh, client: &ClientSide, mode: ServerMode, version: &str) {
    let config = ProxyConfig {
        version: version.into(),
        workload: Some(workload("httpbin-1", "httpbin", mode)),
        services: services(client, mode),
        auto_mtls: client.auto_mtls,
        ..Default::default()
    };
    mesh.publish(ip(HTTPBIN_IP), "httpbin-1.foo", config).await;
}

#[tokio::test]
async fn a_switch_to_strict_closes_plaintext_connections_already_accepted() {
    // The walkthrough's second phase: the client sidecar has a pooled plaintext connection to httpbin's
    // sidecar from before the STRICT MeshPolicy; the next request must not ride it through.
    let client = plaintext();
    let mesh = mesh(plaintext(), ServerMode::Permissive).await;
    for _ in 0..2 {
        assert_eq!(
            keep_alive_get(&mesh).await.0,
            200,
            "PERMISSIVE takes plaintext"
        );
    }
    switch_httpbin(&mesh, &client, ServerMode::Strict, "v2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let (status, body) = loop {
        let outcome = keep_alive_get(&mesh).await;
        if outcome.0 != 200 || tokio::time::Instant::now() > deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((status, body.as_str()), (503, BODY_TERMINATION));
}

#[tokio::test]
async fn a_switch_to_disable_closes_mtls_connections_already_accepted() {
    let client = mutual();
    let mesh = mesh(mutual(), ServerMode::Strict).await;
    assert_eq!(keep_alive_get(&mesh).await.0, 200);
    switch_httpbin(&mesh, &client, ServerMode::Disable, "v2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let status = loop {
        let (status, _) = keep_alive_get(&mesh).await;
        if status != 200 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status, 503,
        "ISTIO_MUTUAL to a DISABLE port fails, also on a pooled connection"
    );
}

//! AuthorizationPolicy enforcement and REGISTRY_ONLY egress through the real proxy in-process (fake
//! sockets over loopback, real CA, real hub): Envoy's 403 on HTTP, closed TCP, live policy updates.

mod policy;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ironmesh_proto::pb::{
    AuthorizationPolicy, ClientTls, ClientTlsMode, Endpoint, InboundPort, OutboundTrafficPolicy,
    Protocol, ProxyConfig, ServerMode, Service, ServicePort, Workload,
};
use policy::pushed_policy;
use support::{Mesh, ip, spiffe, start_http_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLEEP_FOO: &str = "10.0.0.1";
const HTTPBIN: &str = "10.0.0.2";
const SLEEP_BAR: &str = "10.0.0.4";
const OUTSIDE: &str = "10.0.0.9";
const HTTPBIN_HTTP: &str = "10.96.0.2:8000";
const HTTPBIN_TCP: &str = "10.96.0.2:9000";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

async fn echo_app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    address
}

fn policy(name: &str, spec: &str) -> AuthorizationPolicy {
    pushed_policy(name, spec, false)
}

const ALLOW_FOO: &str =
    r#"{"action":"ALLOW","rules":[{"from":[{"source":{"namespaces":["foo"]}}]}]}"#;
const DENY_HEADERS: &str =
    r#"{"action":"DENY","rules":[{"to":[{"operation":{"paths":["/headers"]}}]}]}"#;
const DENY_BAR: &str =
    r#"{"action":"DENY","rules":[{"from":[{"source":{"namespaces":["bar"]}}]}]}"#;

/// The one service, httpbin in foo: HTTP on 8000 (pod port 80) and TCP echo on 9000, ISTIO_MUTUAL.
fn services() -> Vec<Service> {
    let tls = Some(ClientTls {
        mode: ClientTlsMode::IstioMutual as i32,
        ..Default::default()
    });
    vec![Service {
        hostname: "httpbin.foo.svc.cluster.local".into(),
        namespace: "foo".into(),
        vip: "10.96.0.2".into(),
        ports: vec![
            ServicePort {
                port: 8000,
                target_port: 80,
                protocol: Protocol::Http as i32,
                tls: tls.clone(),
            },
            ServicePort {
                port: 9000,
                target_port: 9000,
                protocol: Protocol::Tcp as i32,
                tls,
            },
        ],
        endpoints: vec![Endpoint {
            ip: HTTPBIN.into(),
            mtls_ready: true,
            spiffe_id: spiffe("foo", "httpbin").to_string(),
        }],
    }]
}

fn config(
    version: &str,
    (name, namespace, sa): (&str, &str, &str),
    mode: ServerMode,
    policies: Vec<AuthorizationPolicy>,
    outbound: OutboundTrafficPolicy,
) -> ProxyConfig {
    ProxyConfig {
        version: version.into(),
        workload: Some(Workload {
            name: name.into(),
            namespace: namespace.into(),
            service_account: sa.into(),
            spiffe_id: spiffe(namespace, sa).to_string(),
            labels: [("app".to_owned(), name.to_owned())].into(),
            ports: vec![
                InboundPort {
                    port: 80,
                    protocol: Protocol::Http as i32,
                    mode: mode as i32,
                },
                InboundPort {
                    port: 9000,
                    protocol: Protocol::Tcp as i32,
                    mode: mode as i32,
                },
            ],
            default_mode: mode as i32,
            authorization_policies: policies,
            outbound_traffic_policy: outbound as i32,
        }),
        services: services(),
        auto_mtls: true,
        ..Default::default()
    }
}

const HTTPBIN_POD: (&str, &str, &str) = ("httpbin", "foo", "httpbin");

/// sleep in foo and in bar (sidecars), httpbin in foo (sidecar, `mode`, `policies`), an outside pod.
async fn mesh(mode: ServerMode, policies: Vec<AuthorizationPolicy>) -> Mesh {
    let mut mesh = Mesh::new().await;
    mesh.add_app(ip(HTTPBIN), 80, start_http_app("httpbin").await);
    mesh.add_app(ip(HTTPBIN), 9000, echo_app().await);
    mesh.add_app(ip(OUTSIDE), 80, start_http_app("outside").await);
    mesh.add_proxy(ip(SLEEP_FOO), "sleep", "foo", "sleep").await;
    mesh.add_proxy(ip(SLEEP_BAR), "sleep", "bar", "sleep").await;
    mesh.add_proxy(ip(HTTPBIN), "httpbin", "foo", "httpbin")
        .await;
    let allow_any = OutboundTrafficPolicy::AllowAny;
    for (pod, namespace) in [(SLEEP_FOO, "foo"), (SLEEP_BAR, "bar")] {
        let client = ("sleep", namespace, "sleep");
        let config = config("v1", client, ServerMode::Permissive, vec![], allow_any);
        mesh.publish(ip(pod), &format!("sleep.{namespace}"), config)
            .await;
    }
    let config = config("v1", HTTPBIN_POD, mode, policies, allow_any);
    mesh.publish(ip(HTTPBIN), "httpbin.foo", config).await;
    mesh
}

/// One HTTP/1.1 GET as an app in pod `from` sends it: `(status, head, body)`, or `None` when the
/// connection was closed or reset without a response.
async fn get(mesh: &Mesh, from: &str, to: &str, path: &str) -> Option<(u16, String, String)> {
    let mut stream = mesh.network.dial(ip(from), addr(to)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("no answer within 10 s")
        .ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

fn status(response: Option<(u16, String, String)>) -> u16 {
    response.expect("an HTTP response").0
}

/// Opens a TCP connection from `from` to httpbin's echo port and checks one round trip; `None` when the
/// connection is closed instead of echoing.
async fn echo_connection(mesh: &Mesh, from: &str) -> Option<TcpStream> {
    let mut stream = mesh.network.dial(ip(from), addr(HTTPBIN_TCP)).await.ok()?;
    round_trip(&mut stream).await.then_some(stream)
}

async fn round_trip(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut echoed = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await,
        Ok(Ok(_)) if &echoed == b"ping"
    )
}

/// Waits until the peer closes `stream` (EOF or reset); false if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 16];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn metric_line(mesh: &Mesh, pod: &str, prefix: &str, needle: &str) -> Option<String> {
    mesh.proxies[&ip(pod)]
        .metrics
        .encode()
        .lines()
        .find(|line| line.starts_with(prefix) && line.contains(needle))
        .map(str::to_owned)
}

#[tokio::test]
async fn allow_from_namespace_foo_lets_foo_in_and_gives_bar_envoys_exact_403() {
    let mesh = mesh(ServerMode::Strict, vec![policy("allow-foo", ALLOW_FOO)]).await;
    let (code, _, body) = get(&mesh, SLEEP_FOO, HTTPBIN_HTTP, "/ip").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, head, body) = get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await.unwrap();
    assert_eq!(code, 403);
    assert_eq!(body, "RBAC: access denied");
    assert!(head.contains("content-type: text/plain"), "{head}");

    let denied = metric_line(
        &mesh,
        HTTPBIN,
        "ironmesh_authz_denied_total{",
        "foo/allow-foo",
    )
    .expect("a denial counted by policy");
    assert!(denied.contains("action=\"ALLOW\""), "{denied}");
    assert!(denied.ends_with(" 1"), "{denied}");
    let requests = metric_line(
        &mesh,
        HTTPBIN,
        "istio_requests_total{",
        "response_code=\"403\"",
    )
    .expect("the 403 in Istio's request metric");
    assert!(requests.contains("source_principal=\"spiffe://cluster.local/ns/bar/sa/sleep\""));
}

#[tokio::test]
async fn deny_on_headers_gives_403_only_there_over_mtls_and_plaintext() {
    for mode in [ServerMode::Strict, ServerMode::Permissive] {
        let mesh = mesh(mode, vec![policy("deny-headers", DENY_HEADERS)]).await;
        // Over mTLS from a sidecar, and (PERMISSIVE) in plaintext from a pod without one.
        let mut clients = vec![(SLEEP_BAR, HTTPBIN_HTTP)];
        if mode == ServerMode::Permissive {
            clients.push((OUTSIDE, "10.0.0.2:80"));
        }
        for (from, to) in clients {
            assert_eq!(
                status(get(&mesh, from, to, "/headers").await),
                403,
                "{mode:?} {from}"
            );
            assert_eq!(
                status(get(&mesh, from, to, "/headers?x=1").await),
                403,
                "{mode:?}"
            );
            assert_eq!(
                status(get(&mesh, from, to, "/ip").await),
                200,
                "{mode:?} {from}"
            );
            assert_eq!(
                status(get(&mesh, from, to, "/").await),
                200,
                "{mode:?} {from}"
            );
        }
    }
}

#[tokio::test]
async fn a_tcp_port_denial_closes_the_connection() {
    let mesh = mesh(ServerMode::Strict, vec![policy("allow-foo", ALLOW_FOO)]).await;
    assert!(
        echo_connection(&mesh, SLEEP_FOO).await.is_some(),
        "foo is allowed"
    );
    assert!(
        echo_connection(&mesh, SLEEP_BAR).await.is_none(),
        "bar is closed"
    );
    let denied = metric_line(
        &mesh,
        HTTPBIN,
        "ironmesh_authz_denied_total{",
        "protocol=\"tcp\"",
    )
    .expect("the TCP denial counted");
    assert!(denied.contains("policy=\"foo/allow-foo\""), "{denied}");
}

#[tokio::test]
async fn a_policy_update_applies_to_new_requests_and_closes_a_no_longer_allowed_tcp_connection() {
    let allow_any = OutboundTrafficPolicy::AllowAny;
    let mesh = mesh(ServerMode::Strict, vec![]).await;
    let mut bar_tcp = echo_connection(&mesh, SLEEP_BAR)
        .await
        .expect("no policy yet");
    let mut foo_tcp = echo_connection(&mesh, SLEEP_FOO)
        .await
        .expect("no policy yet");
    assert_eq!(
        status(get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await),
        200
    );

    let started = Instant::now();
    let update = config(
        "v2",
        HTTPBIN_POD,
        ServerMode::Strict,
        vec![policy("deny-bar", DENY_BAR)],
        allow_any,
    );
    mesh.publish(ip(HTTPBIN), "httpbin.foo", update).await;
    assert!(
        closed_within(&mut bar_tcp, Duration::from_secs(1)).await,
        "bar's open TCP connection must be closed once bar is denied"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        round_trip(&mut foo_tcp).await,
        "foo's connection is still allowed and stays open"
    );
    let (code, _, body) = get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await.unwrap();
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(
        status(get(&mesh, SLEEP_FOO, HTTPBIN_HTTP, "/ip").await),
        200
    );

    // Removing the policy lets bar in again.
    let update = config("v3", HTTPBIN_POD, ServerMode::Strict, vec![], allow_any);
    mesh.publish(ip(HTTPBIN), "httpbin.foo", update).await;
    assert_eq!(
        status(get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await),
        200
    );
}

#[tokio::test]
async fn a_bad_policy_is_nacked_and_the_last_good_policies_stay_enforced() {
    let mesh = mesh(ServerMode::Strict, vec![policy("allow-foo", ALLOW_FOO)]).await;
    let bad = config(
        "v2",
        HTTPBIN_POD,
        ServerMode::Strict,
        // Only a broken control plane sends this (apply refuses it): CUSTOM without rules.
        vec![AuthorizationPolicy {
            namespace: "foo".into(),
            name: "custom".into(),
            action: ironmesh_proto::pb::authorization_policy::Action::Custom as i32,
            ..Default::default()
        }],
        OutboundTrafficPolicy::AllowAny,
    );
    mesh.hub.publish("httpbin.foo", bad);
    let mut nack = None;
    for _ in 0..200 {
        nack = mesh.hub.status("httpbin.foo").and_then(|s| s.last_nack);
        if nack.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let nack = nack.expect("the bad policy is NACKed");
    assert!(
        format!("{nack:?}").contains("authorizationpolicy/foo/custom"),
        "{nack:?}"
    );
    assert_eq!(
        mesh.proxies[&ip(HTTPBIN)]
            .data_plane
            .current_config()
            .unwrap()
            .version,
        "v1"
    );
    assert_eq!(
        status(get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await),
        403
    );
}

#[tokio::test]
async fn registry_only_gives_502_to_an_unknown_destination_and_allow_any_passes_through() {
    let mesh = mesh(ServerMode::Strict, vec![]).await;
    let outside = "10.0.0.9:80";
    let (code, _, body) = get(&mesh, SLEEP_BAR, outside, "/").await.unwrap();
    assert_eq!(code, 200, "ALLOW_ANY passes through: {body}");

    let bar = ("sleep", "bar", "sleep");
    let registry_only = OutboundTrafficPolicy::RegistryOnly;
    let update = config("v2", bar, ServerMode::Permissive, vec![], registry_only);
    mesh.publish(ip(SLEEP_BAR), "sleep.bar", update).await;
    let (code, _, body) = get(&mesh, SLEEP_BAR, outside, "/").await.unwrap();
    assert_eq!((code, body.as_str()), (502, ""), "Envoy's block_all");
    // A known service is still reachable, and non-HTTP to an unknown destination is closed.
    assert_eq!(
        status(get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await),
        200
    );
    let mut tcp = mesh
        .network
        .dial(ip(SLEEP_BAR), addr("10.0.0.9:5432"))
        .await
        .unwrap();
    let _ = tcp.write_all(b"\x00\x01binary").await;
    assert!(closed_within(&mut tcp, Duration::from_secs(2)).await);
}

fn dry_run(name: &str, spec: &str) -> AuthorizationPolicy {
    pushed_policy(name, spec, true)
}

/// The client sidecar sends Envoy's SNI `outbound_.<port>_._.<FQDN>`; the server matches it with
/// `connection.sni` (istio generator.go connSNIGenerator → Envoy `requested_server_name`).
#[tokio::test]
async fn connection_sni_matches_what_the_client_sidecar_sends() {
    let deny_http_sni = r#"{"action":"DENY","rules":[{"when":[{"key":"connection.sni","values":["outbound_.8000_._.httpbin.foo.svc.cluster.local"]}]}]}"#;
    let denying = mesh(ServerMode::Strict, vec![policy("deny-sni", deny_http_sni)]).await;
    let (code, _, body) = get(&denying, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await.unwrap();
    assert_eq!(code, 403, "{body}");
    // The TCP port's connections carry `outbound_.9000_._...`: not denied.
    assert!(echo_connection(&denying, SLEEP_BAR).await.is_some());

    let allow_sni = r#"{"rules":[{"when":[{"key":"connection.sni","values":["*.httpbin.foo.svc.cluster.local"]}]}]}"#;
    let mesh = mesh(ServerMode::Permissive, vec![policy("allow-sni", allow_sni)]).await;
    assert_eq!(
        status(get(&mesh, SLEEP_FOO, HTTPBIN_HTTP, "/ip").await),
        200
    );
    // Plaintext from a pod without a sidecar has no SNI: no ALLOW rule matches.
    assert_eq!(status(get(&mesh, OUTSIDE, "10.0.0.2:80", "/ip").await), 403);
}

/// `istio.io/dry-run: "true"`: evaluated, logged and counted, never enforced (builder.go shadow rules).
#[tokio::test]
async fn a_dry_run_deny_all_is_counted_and_not_enforced() {
    let deny_all = r#"{"action":"DENY","rules":[{}]}"#;
    let mesh = mesh(ServerMode::Strict, vec![dry_run("deny-all", deny_all)]).await;
    let (code, _, body) = get(&mesh, SLEEP_BAR, HTTPBIN_HTTP, "/ip").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(echo_connection(&mesh, SLEEP_BAR).await.is_some());
    let http = metric_line(
        &mesh,
        HTTPBIN,
        "ironmesh_authz_dry_run_total{",
        "protocol=\"http\"",
    )
    .expect("the dry-run evaluation counted");
    assert!(http.contains("action=\"DENY\""), "{http}");
    assert!(http.contains("result=\"denied\""), "{http}");
    assert!(http.contains("policy=\"foo/deny-all\""), "{http}");
    assert!(http.ends_with(" 1"), "{http}");
    assert!(
        metric_line(
            &mesh,
            HTTPBIN,
            "ironmesh_authz_dry_run_total{",
            "protocol=\"tcp\""
        )
        .is_some()
    );
    assert!(metric_line(&mesh, HTTPBIN, "ironmesh_authz_denied_total{", "").is_none());
}

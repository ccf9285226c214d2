//! The data plane under malformed or hostile requests, in-process (fake sockets over loopback, real CA,
//! real hub, raw TCP for what curl will not send): duplicate Host headers, absolute-form targets against a
//! host-based DENY, invalid chunked bodies, a pooled upstream connection reset under a request, a client
//! that never finishes its headers, and the connection cap.

mod policy;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ironmesh_proto::pb::{
    AuthorizationPolicy, ClientTls, ClientTlsMode, Endpoint, InboundPort, OutboundTrafficPolicy,
    Protocol, ProxyConfig, ServerMode, Service, ServicePort, Workload,
};
use ironmesh_proxy::ConnectionLimits;
use support::{Mesh, ip, spiffe};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SLEEP: &str = "10.0.0.1";
const HTTPBIN: &str = "10.0.0.2";
const LEGACY: &str = "10.0.0.3";
const HTTPBIN_HTTP: &str = "10.96.0.2:8000";
/// httpbin's pod address, as a client without a sidecar reaches it.
const HTTPBIN_POD_HTTP: &str = "10.0.0.2:80";

/// DENY every request for host `httpbin.foo` (any port).
const DENY_HOST: &str = r#"{"action":"DENY","rules":[{"to":[{"operation":{"hosts":["httpbin.foo","httpbin.foo:*"]}}]}]}"#;

/// A policy that denies nothing the tests send: with any policy in place, plaintext HTTP from a pod
/// without a sidecar is parsed by the proxy rather than relayed as bytes.
const DENY_NOTHING: &str =
    r#"{"action":"DENY","rules":[{"to":[{"operation":{"paths":["/never"]}}]}]}"#;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn services() -> Vec<Service> {
    vec![Service {
        hostname: "httpbin.foo.svc.cluster.local".into(),
        namespace: "foo".into(),
        vip: "10.96.0.2".into(),
        ports: vec![ServicePort {
            port: 8000,
            target_port: 80,
            protocol: Protocol::Http as i32,
            tls: Some(ClientTls {
                mode: ClientTlsMode::IstioMutual as i32,
                ..Default::default()
            }),
        }],
        endpoints: vec![Endpoint {
            ip: HTTPBIN.into(),
            mtls_ready: true,
            spiffe_id: spiffe("foo", "httpbin").to_string(),
        }],
    }]
}

fn config(
    (name, sa): (&str, &str),
    mode: ServerMode,
    policies: Vec<AuthorizationPolicy>,
) -> ProxyConfig {
    ProxyConfig {
        version: "v1".into(),
        workload: Some(Workload {
            name: name.into(),
            namespace: "foo".into(),
            service_account: sa.into(),
            spiffe_id: spiffe("foo", sa).to_string(),
            labels: [("app".to_owned(), name.to_owned())].into(),
            ports: vec![InboundPort {
                port: 80,
                protocol: Protocol::Http as i32,
                mode: mode as i32,
            }],
            default_mode: mode as i32,
            authorization_policies: policies,
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny as i32,
        }),
        services: services(),
        auto_mtls: true,
        ..Default::default()
    }
}

/// An app that reads each request's whole body and answers `host=<Host header> body=<bytes>`.
async fn host_echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let host = request
                            .headers()
                            .get_all(http::header::HOST)
                            .iter()
                            .map(|h| h.to_str().unwrap_or("?").to_owned())
                            .collect::<Vec<_>>()
                            .join(",");
                        let body = http_body_util::BodyExt::collect(request.into_body()).await;
                        let text = match body {
                            Ok(body) => format!("host={host} body={}", body.to_bytes().len()),
                            Err(error) => format!("host={host} body-error={error}"),
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(text)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// sleep (sidecar), httpbin (sidecar, PERMISSIVE, `policies`, app `app`) and a legacy pod without one.
async fn mesh(policies: Vec<AuthorizationPolicy>, app: SocketAddr) -> Mesh {
    mesh_with(policies, app, ConnectionLimits::DATA_PLANE).await
}

async fn mesh_with(
    policies: Vec<AuthorizationPolicy>,
    app: SocketAddr,
    limits: ConnectionLimits,
) -> Mesh {
    let mut mesh = Mesh::new().await;
    mesh.proxy_limits = limits;
    mesh.add_app(ip(HTTPBIN), 80, app);
    mesh.add_proxy(ip(SLEEP), "sleep", "foo", "sleep").await;
    mesh.add_proxy(ip(HTTPBIN), "httpbin", "foo", "httpbin")
        .await;
    let sleep = config(("sleep", "sleep"), ServerMode::Permissive, vec![]);
    mesh.publish(ip(SLEEP), "sleep.foo", sleep).await;
    let httpbin = config(("httpbin", "httpbin"), ServerMode::Permissive, policies);
    mesh.publish(ip(HTTPBIN), "httpbin.foo", httpbin).await;
    mesh
}

fn policies(spec: &str) -> Vec<AuthorizationPolicy> {
    vec![policy::pushed_policy("deny", spec, false)]
}

fn deny_host() -> Vec<AuthorizationPolicy> {
    policies(DENY_HOST)
}

/// Sends `raw` (a whole request) from pod `from` to `to` and reads one response: `(status, body)`.
async fn exchange(mesh: &Mesh, from: &str, to: &str, raw: &str) -> (u16, String) {
    let mut stream = mesh.network.dial(ip(from), addr(to)).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    read_response(&mut stream)
        .await
        .unwrap_or_else(|| panic!("no HTTP response to {raw:?}"))
}

/// Reads one HTTP/1.1 response with a Content-Length or chunked body, leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut reader = BufReader::new(stream);
    let read = async {
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.ok()?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.ok()?;
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("content-length:") {
                length = value.trim().parse().ok()?;
            }
            chunked |= line == "transfer-encoding: chunked";
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await.ok()?;
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await.ok()?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body).await.ok()?;
        }
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

#[tokio::test]
async fn two_host_headers_get_400_on_the_outbound_and_on_the_inbound() {
    let mesh = mesh(deny_host(), host_echo_app().await).await;
    let request = "GET /get HTTP/1.1\r\nHost: other.example\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n";
    // Through the client's sidecar (outbound) ...
    let (status, body) = exchange(&mesh, SLEEP, HTTPBIN_HTTP, request).await;
    assert_eq!(status, 400, "{body}");
    // ... and straight into httpbin's sidecar, in plaintext, as a pod without a sidecar sends it.
    let (status, body) = exchange(&mesh, LEGACY, HTTPBIN_POD_HTTP, request).await;
    assert_eq!(status, 400, "{body}");
    // One Host header still works, and the DENY on httpbin.foo still applies.
    let fine = "GET /get HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n";
    let (status, body) = exchange(&mesh, SLEEP, HTTPBIN_HTTP, fine).await;
    assert_eq!((status, body.as_str()), (200, "host=other.example body=0"));
    let denied = "GET /get HTTP/1.1\r\nHost: httpbin.foo:8000\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(&mesh, SLEEP, HTTPBIN_HTTP, denied).await.0, 403);
}

#[tokio::test]
async fn an_absolute_form_target_is_authorized_on_the_host_the_app_sees() {
    let mesh = mesh(deny_host(), host_echo_app().await).await;
    for (from, to) in [(SLEEP, HTTPBIN_HTTP), (LEGACY, HTTPBIN_POD_HTTP)] {
        // The target names the denied host, the Host header another one: denied, as Envoy does.
        let smuggled = "GET http://httpbin.foo/get HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n";
        let (status, body) = exchange(&mesh, from, to, smuggled).await;
        assert_eq!(status, 403, "from {from}: {body}");
        // The target names an allowed host and the Host header the denied one: allowed, and the app sees
        // the allowed host, never the one the policy did not look at.
        let other = "GET http://other.example/get HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n";
        let (status, body) = exchange(&mesh, from, to, other).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "host=other.example body=0"),
            "from {from}"
        );
    }
}

#[tokio::test]
async fn an_invalid_chunked_body_gets_400_not_503() {
    let mesh = mesh(policies(DENY_NOTHING), host_echo_app().await).await;
    let bad_chunk = "POST /post HTTP/1.1\r\nHost: httpbin.foo\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    for (from, to) in [(SLEEP, HTTPBIN_HTTP), (LEGACY, HTTPBIN_POD_HTTP)] {
        let (status, body) = exchange(&mesh, from, to, bad_chunk).await;
        assert_eq!(status, 400, "from {from}: {body}");
    }
    let good_chunk = "POST /post HTTP/1.1\r\nHost: httpbin.foo\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (status, body) = exchange(&mesh, SLEEP, HTTPBIN_HTTP, good_chunk).await;
    assert_eq!((status, body.as_str()), (200, "host=httpbin.foo body=5"));
}

/// An app that answers the first request of each connection and resets the connection on the second,
/// having read it, as a replaced pod at the same IP answers a stale pooled connection.
async fn resetting_app(requests: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                for turn in 0.. {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(value) = line.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body).await;
                    requests.fetch_add(1, Ordering::SeqCst);
                    if turn == 1 {
                        ironmesh_proxy::reset(reader.into_inner());
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn a_pooled_connection_reset_under_a_get_is_retried_once_and_a_post_is_not() {
    let requests = Arc::new(AtomicUsize::new(0));
    let mesh = mesh(vec![], resetting_app(requests.clone()).await).await;
    // Keep-alive requests, so that httpbin's sidecar pools its connection to the app.
    let get = "GET /get HTTP/1.1\r\nHost: httpbin.foo\r\n\r\n";
    let mut client = mesh
        .network
        .dial(ip(SLEEP), addr(HTTPBIN_HTTP))
        .await
        .unwrap();
    client.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut client).await, Some((200, "ok".into())));
    // The pooled connection is reset under the second GET: it is sent again on a new connection.
    client.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut client).await, Some((200, "ok".into())));
    assert_eq!(requests.load(Ordering::SeqCst), 3, "first, reset, retried");

    // A POST with a body is not replayed: Envoy's 503, and the app saw it once.
    let post = "POST /post HTTP/1.1\r\nHost: httpbin.foo\r\nContent-Length: 5\r\n\r\nhello";
    client.write_all(post.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut client).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        4,
        "the POST reached the app once"
    );
}

/// An app that answers every request of every connection, and keeps each request line and the number of
/// connections it accepted.
async fn recording_app(
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut first = true;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_string();
                        if line.is_empty() {
                            break;
                        }
                        if std::mem::take(&mut first) {
                            lines.lock().unwrap().push(line);
                        }
                    }
                    let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_requests_go_in_origin_form() {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mesh = mesh(vec![], recording_app(lines.clone(), accepted.clone()).await).await;
    // Two keep-alive client connections one after the other, three requests each; one in absolute form.
    for target in ["/a", "http://httpbin.foo/b"] {
        let mut client = mesh
            .network
            .dial(ip(SLEEP), addr(HTTPBIN_HTTP))
            .await
            .unwrap();
        for _ in 0..3 {
            let get = format!("GET {target} HTTP/1.1\r\nHost: httpbin.foo\r\n\r\n");
            client.write_all(get.as_bytes()).await.unwrap();
            assert_eq!(read_response(&mut client).await, Some((200, "ok".into())));
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the app's sidecar reuses one pooled connection for all six requests"
    );
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines[..3].iter().all(|line| line == "GET /a HTTP/1.1")
            && lines[3..].iter().all(|line| line == "GET /b HTTP/1.1"),
        "the app sees origin-form targets: {lines:?}"
    );
}

/// Waits until the peer closes `stream` (EOF or reset) and answers what it sent before.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 512];
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..read]);
        }
    });
    read.await.expect("closed by the proxy within 10 s");
    received
}

/// The mesh with no policy denying anything and a 300 ms header-read timeout.
async fn mesh_with_short_header_timeout() -> Mesh {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ConnectionLimits::DATA_PLANE
    };
    mesh_with(policies(DENY_NOTHING), host_echo_app().await, limits).await
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let mesh = mesh_with_short_header_timeout().await;
    for (from, to) in [(SLEEP, HTTPBIN_HTTP), (LEGACY, HTTPBIN_POD_HTTP)] {
        let mut slow = mesh.network.dial(ip(from), addr(to)).await.unwrap();
        // Half a request head, then silence (slowloris).
        slow.write_all(b"GET /get HTTP/1.1\r\nHost: httpbin.foo\r\nX-Slow: ")
            .await
            .unwrap();
        let received = until_closed(&mut slow).await;
        assert!(
            !String::from_utf8_lossy(&received).contains(" 200 "),
            "from {from}: {received:?}"
        );
    }
    // A complete request on a new connection is still served.
    let fine = "GET /get HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(&mesh, SLEEP, HTTPBIN_HTTP, fine).await.0, 200);
}

#[tokio::test]
async fn an_outbound_http_client_that_sends_nothing_is_disconnected_after_the_header_timeout() {
    let mesh = mesh_with_short_header_timeout().await;
    // Connected through the sleep pod's sidecar to an HTTP service, then silence: not held for the
    // idle timeout (1 h) while the sidecar waits for a first byte.
    let mut silent = mesh
        .network
        .dial(ip(SLEEP), addr(HTTPBIN_HTTP))
        .await
        .unwrap();
    assert_eq!(until_closed(&mut silent).await, Vec::<u8>::new());
    let fine = "GET /get HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(&mesh, SLEEP, HTTPBIN_HTTP, fine).await.0, 200);
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_served_again_once_some_end() {
    let limits = ConnectionLimits {
        max_connections: 2,
        ..ConnectionLimits::DATA_PLANE
    };
    let mesh = mesh_with(vec![], host_echo_app().await, limits).await;
    // Two idle connections to httpbin's sidecar (no sidecar on the client side) fill its cap ...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = mesh
            .network
            .dial(ip(LEGACY), addr(HTTPBIN_POD_HTTP))
            .await
            .unwrap();
        let keep = "GET /get HTTP/1.1\r\nHost: httpbin.foo\r\n\r\n";
        stream.write_all(keep.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.map(|r| r.0), Some(200));
        held.push(stream);
    }
    // ... so a third is closed without an answer.
    let mut third = mesh
        .network
        .dial(ip(LEGACY), addr(HTTPBIN_POD_HTTP))
        .await
        .unwrap();
    let _ = third
        .write_all(b"GET /get HTTP/1.1\r\nHost: httpbin.foo\r\n\r\n")
        .await;
    assert!(until_closed(&mut third).await.is_empty());
    // Once one closes, new connections are served again.
    drop(held.pop());
    let fine = "GET /get HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n";
    let mut served = false;
    for _ in 0..100 {
        let mut stream = mesh
            .network
            .dial(ip(LEGACY), addr(HTTPBIN_POD_HTTP))
            .await
            .unwrap();
        if stream.write_all(fine.as_bytes()).await.is_ok()
            && let Some((200, _)) = read_response_or_none(&mut stream).await
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served,
        "a connection was served after one of the two closed"
    );
}

async fn read_response_or_none(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

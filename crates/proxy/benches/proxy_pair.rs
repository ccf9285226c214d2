//! Added latency of a sidecar pair (mTLS, HTTP/1.1 keep-alive, 1 kB response) over calling the app
//! directly, in-process on loopback (fake socket layer, real CA, real hub).
//!
//! With `IRONMESH_HTTP_REQUESTS=N` set, it instead sends N requests through the pair (after a warm-up)
//! with the proxy's access log on stdout, for counting instructions per request under
//! `valgrind --tool=callgrind`: the difference of two runs' totals over the difference of their N
//! (BENCHMARKS.md, "Issue 15: HTTP path instructions per request"). `IRONMESH_TCP_REQUESTS=N` does the
//! same through the pair's TCP port (the same bytes each way, one connection), for comparison.
//! `IRONMESH_TCP_CONNECTIONS=N` opens a new connection through the TCP port for each exchange: what a
//! connection costs (the sidecars' full mTLS handshake, set-up and close) beyond its bytes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ironmesh_proto::pb::{
    ClientTls, ClientTlsMode, Endpoint, InboundPort, Protocol, ProxyConfig, ServerMode, Service,
    ServicePort, Workload,
};
use support::{Mesh, ip, spiffe};

const KILOBYTE_APP_PORT: u16 = 80;

async fn kilobyte_app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from(vec![b'x'; 1024])),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

fn config(workload: Workload) -> ProxyConfig {
    ProxyConfig {
        version: "v1".into(),
        workload: Some(workload),
        services: vec![Service {
            hostname: "app.foo.svc.cluster.local".into(),
            namespace: "foo".into(),
            vip: "10.96.0.2".into(),
            ports: vec![ServicePort {
                port: 8000,
                target_port: KILOBYTE_APP_PORT.into(),
                protocol: Protocol::Http as i32,
                tls: Some(ClientTls {
                    mode: ClientTlsMode::IstioMutual as i32,
                    ..Default::default()
                }),
            }],
            endpoints: vec![Endpoint {
                ip: "10.0.0.2".into(),
                mtls_ready: true,
                spiffe_id: spiffe("foo", "app").to_string(),
            }],
        }],
        auto_mtls: true,
        ..Default::default()
    }
}

fn workload(name: &str, sa: &str) -> Workload {
    Workload {
        name: name.into(),
        namespace: "foo".into(),
        service_account: sa.into(),
        ports: vec![InboundPort {
            port: KILOBYTE_APP_PORT.into(),
            protocol: Protocol::Http as i32,
            mode: ServerMode::Strict as i32,
        }],
        default_mode: ServerMode::Strict as i32,
        ..Default::default()
    }
}

async fn connect(stream: tokio::net::TcpStream) -> SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>) {
    sender.ready().await.unwrap();
    let request = http::Request::get("/")
        .header("host", "app")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1024);
}

/// The client-app pair of sidecars with the HTTP service between them, and keep-alive connections to
/// the app directly and through the pair.
async fn http_pair() -> (Mesh, SendRequest<Empty<Bytes>>, SendRequest<Empty<Bytes>>) {
    let app = kilobyte_app().await;
    let mesh = Mesh::pair(KILOBYTE_APP_PORT, app, "app", |name, sa| {
        config(workload(name, sa))
    })
    .await;
    let direct = connect(tokio::net::TcpStream::connect(app).await.unwrap()).await;
    let vip: SocketAddr = "10.96.0.2:8000".parse().unwrap();
    let through_pair = connect(mesh.network.dial(ip("10.0.0.1"), vip).await.unwrap()).await;
    (mesh, direct, through_pair)
}

fn proxy_pair(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mesh, mut direct, mut through_pair) = runtime.block_on(http_pair());
    let mut group = c.benchmark_group("http1_1kB_keepalive");
    group.bench_function("direct", |b| b.iter(|| runtime.block_on(get(&mut direct))));
    group.bench_function("through_mtls_proxy_pair", |b| {
        b.iter(|| runtime.block_on(get(&mut through_pair)))
    });
    group.finish();
    drop(mesh);
}

/// A TCP app that reads and discards, then answers one byte when the client half-closes.
async fn sink_app() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(read) = stream.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                }
                let _ = stream.write_all(b"k").await;
            });
        }
    });
    address
}

const BULK_BYTES: usize = 16 << 20;

async fn push_bulk(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..BULK_BYTES / chunk.len() {
        stream.write_all(&chunk).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    let mut done = [0u8; 1];
    stream.read_exact(&mut done).await.unwrap();
}

/// The client-app pair of sidecars with a TCP service (port 8000 on the VIP) to `app` between them: the
/// HTTP pair's configuration with the port's protocol TCP and the app on port 9000.
async fn tcp_pair(app: SocketAddr) -> Mesh {
    Mesh::pair(9000, app, "app", |name, sa| {
        let mut config = config(workload(name, sa));
        config.services[0].ports[0].protocol = Protocol::Tcp as i32;
        config.services[0].ports[0].target_port = 9000;
        let workload = config.workload.as_mut().unwrap();
        workload.ports = vec![InboundPort {
            port: 9000,
            protocol: Protocol::Tcp as i32,
            mode: ServerMode::Strict as i32,
        }];
        config
    })
    .await
}

fn tcp_bulk(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mesh, app) = runtime.block_on(async {
        let app = sink_app().await;
        (tcp_pair(app).await, app)
    });
    let vip: SocketAddr = "10.96.0.2:8000".parse().unwrap();
    let mut group = c.benchmark_group("tcp_bulk_16MiB");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Bytes(BULK_BYTES as u64));
    group.bench_function("direct", |b| {
        b.iter(|| {
            runtime.block_on(async {
                push_bulk(tokio::net::TcpStream::connect(app).await.unwrap()).await
            })
        })
    });
    group.bench_function("through_mtls_proxy_pair", |b| {
        b.iter(|| {
            runtime.block_on(async {
                push_bulk(mesh.network.dial(ip("10.0.0.1"), vip).await.unwrap()).await
            })
        })
    });
    group.finish();
}

/// Counts heap allocations, so the request modes can say how many an exchange costs.
#[allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one forwards to the system allocator"
)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    pub struct CountingAllocator;

    // SAFETY: every call goes to the system allocator with the caller's arguments; this only counts.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the caller's contract for `alloc` is passed on unchanged.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System` (every allocation here does), with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed on unchanged.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;
}
use counting::ALLOCATIONS;

/// Runs `exchanges` after 20 warm-up ones on one thread (as the proxy's one data-plane worker runs
/// them), with the access log written as in a pod (its writer thread, to stdout); prints the heap
/// allocations per exchange (all threads: both sidecars, the client, the app and the log writer).
fn count<S>(
    what: &str,
    exchanges: usize,
    set_up: impl AsyncFnOnce() -> (Mesh, S),
    exchange: impl AsyncFn(&mut S),
) {
    tracing_subscriber::fmt().with_ansi(false).init();
    ironmesh_proxy::access_log::install(Box::new(std::io::stdout()), false, Default::default())
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mesh, mut state) = set_up().await;
        for _ in 0..20 {
            exchange(&mut state).await;
        }
        let before = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..exchanges {
            exchange(&mut state).await;
        }
        let allocations = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed) - before;
        eprintln!(
            "{what}: {:.1} heap allocations per exchange ({exchanges} exchanges)",
            allocations as f64 / exchanges.max(1) as f64
        );
        drop(state);
        drop(mesh);
    });
}

/// Sends `requests` requests through the pair's HTTP port (see [`count`]).
fn count_http_requests(requests: usize) {
    count(
        "http",
        requests,
        async || {
            let (mesh, _direct, through_pair) = http_pair().await;
            (mesh, through_pair)
        },
        async |through_pair| get(through_pair).await,
    );
}

/// The size of a request and of a response in the TCP request mode: the HTTP mode's request line and
/// Host header, and its 1 kB body with hyper's response headers.
const TCP_REQUEST: usize = 34;
const TCP_RESPONSE: usize = 1024 + 80;

/// A TCP app that answers every `TCP_REQUEST` bytes it reads with `TCP_RESPONSE` bytes.
async fn answering_app() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = [0u8; TCP_REQUEST];
                let response = [b'x'; TCP_RESPONSE];
                while stream.read_exact(&mut request).await.is_ok() {
                    if stream.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// As [`count_http_requests`], through the TCP port of the pair: the same bytes each way per exchange,
/// over one mTLS connection, so the difference is what the HTTP path costs beyond relaying.
fn count_tcp_requests(requests: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    count(
        "tcp",
        requests,
        async || {
            let mesh = tcp_pair(answering_app().await).await;
            let vip: SocketAddr = "10.96.0.2:8000".parse().unwrap();
            let stream = mesh.network.dial(ip("10.0.0.1"), vip).await.unwrap();
            (mesh, stream)
        },
        async |stream| {
            let mut response = [0u8; TCP_RESPONSE];
            stream.write_all(&[b'r'; TCP_REQUEST]).await.unwrap();
            stream.read_exact(&mut response).await.unwrap();
        },
    );
}

/// As [`count_tcp_requests`], each exchange on a connection of its own, closed by the client after its
/// response (the sidecars close theirs behind it).
fn count_tcp_connections(connections: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    count(
        "tcp connection",
        connections,
        async || {
            let mesh = tcp_pair(answering_app().await).await;
            let network = mesh.network.clone();
            (mesh, network)
        },
        async |network| {
            let vip: SocketAddr = "10.96.0.2:8000".parse().unwrap();
            let mut stream = network.dial(ip("10.0.0.1"), vip).await.unwrap();
            let mut response = [0u8; TCP_RESPONSE];
            stream.write_all(&[b'r'; TCP_REQUEST]).await.unwrap();
            stream.read_exact(&mut response).await.unwrap();
            stream.shutdown().await.unwrap();
            // The end of stream comes back once both sidecars closed their side.
            assert_eq!(stream.read(&mut response).await.unwrap(), 0);
        },
    );
}

criterion_group!(benches, proxy_pair, tcp_bulk);

fn main() {
    if let Ok(connections) = std::env::var("IRONMESH_TCP_CONNECTIONS") {
        return count_tcp_connections(
            connections
                .parse()
                .expect("IRONMESH_TCP_CONNECTIONS: a number"),
        );
    }
    if let Ok(requests) = std::env::var("IRONMESH_TCP_REQUESTS") {
        return count_tcp_requests(requests.parse().expect("IRONMESH_TCP_REQUESTS: a number"));
    }
    if let Ok(requests) = std::env::var("IRONMESH_HTTP_REQUESTS") {
        return count_http_requests(requests.parse().expect("IRONMESH_HTTP_REQUESTS: a number"));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! Fixed-rate load on the CA gRPC endpoint over loopback TCP: 1,000 CreateCertificate calls per second for
//! 10 s (bounded: 10,000 calls), latency measured from each call's scheduled start (no coordinated
//! omission). Prints p50/p99/max. Goal: p99 < 10 ms.
//! Run: `cargo bench -p ironmesh-identity --bench ca_grpc_load` (env LOAD_RATE / LOAD_SECONDS override).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ironmesh_identity::ca_service::CaService;
use ironmesh_identity::{
    CaClient, CaOptions, CertificateAuthority, CertificateSigner, CredentialAuthority, PodClaims,
    SpiffeId, csr_for, write_token_file,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special: keep it short there.
    let is_bench = std::env::args().any(|a| a == "--bench");
    let rate = env_u64("LOAD_RATE", 1000).clamp(1, 5000);
    let seconds = env_u64("LOAD_SECONDS", if is_bench { 10 } else { 1 }).clamp(1, 60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rate, seconds));
}

async fn run(rate: u64, seconds: u64) {
    ironmesh_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        CertificateAuthority::load_or_create(dir.path(), CaOptions::new("cluster.local")).unwrap(),
    );
    let credentials = Arc::new(CredentialAuthority::load_or_create(dir.path()).unwrap());
    // The CA runs on its own runtime and OS thread, as the control plane is a separate process from the
    // proxies calling it; the load generator keeps the bench's runtime.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let service = CaService::new(ca, credentials.clone()).into_server();
    std::thread::spawn(move || {
        let server_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        server_runtime.block_on(async move {
            use tokio_stream::StreamExt;
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            // Without TCP_NODELAY, Nagle + delayed ACKs add tens of ms to small gRPC replies.
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
                if let Ok(conn) = &conn {
                    let _ = conn.set_nodelay(true);
                }
                conn
            });
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
    });
    let token_file = dir.path().join("token");
    let claims = PodClaims {
        namespace: "foo".into(),
        service_account: "sleep".into(),
        pod: "sleep-1".into(),
        pod_uid: "bench-uid".into(),
    };
    write_token_file(
        &token_file,
        &credentials.issue(&claims, Duration::from_secs(3600)),
    )
    .unwrap();
    let client = Arc::new(CaClient::new(&format!("http://{addr}"), &token_file).unwrap());
    // Proxies make their CSR before calling; pre-make a pool so the load generator measures the CA only.
    let identity = SpiffeId::new("cluster.local", "foo", "sleep").unwrap();
    let csrs: Arc<Vec<String>> =
        Arc::new((0..256).map(|_| csr_for(&identity).unwrap().0).collect());
    // Warm the connection.
    client
        .sign(csrs[0].clone(), Duration::from_secs(3600))
        .await
        .unwrap();

    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = started + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let csr = csrs[i as usize % csrs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let result = client.sign(csr, Duration::from_secs(3600)).await;
            (scheduled.elapsed(), result.is_ok())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for task in tasks {
        let (latency, ok) = task.await.unwrap();
        if !ok {
            errors += 1;
        }
        latencies.push(latency);
    }
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "ca_grpc_load: {total} calls at {rate}/s over {wall:.2?} (loopback TCP), errors {errors}, \
         p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

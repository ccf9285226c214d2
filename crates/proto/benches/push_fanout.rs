//! Time for one configuration change to be applied (ACKed) by 1,000 connected proxies, in-process over a
//! Unix socket (BENCHMARKS.md#bars: p99 < 1 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ironmesh_proto::pb::{Endpoint, ProxyConfig, Service, ServicePort};
use ironmesh_proto::{ConfigClient, ConfigClientOptions, ConfigHub, HubOptions, TokenSource};

const PROXIES: usize = 1000;

fn config(generation: u64) -> ProxyConfig {
    ProxyConfig {
        version: format!("v{generation}"),
        services: (0..20)
            .map(|index| Service {
                hostname: format!("svc-{index}.default.svc.cluster.local"),
                namespace: "default".into(),
                vip: format!("10.96.0.{index}"),
                ports: vec![ServicePort {
                    port: 80,
                    target_port: 8080,
                    ..Default::default()
                }],
                endpoints: vec![Endpoint {
                    ip: format!("10.0.{index}.{}", generation % 250),
                    ..Default::default()
                }],
            })
            .collect(),
        ..Default::default()
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xds.sock");
    let hub = ConfigHub::new(
        Arc::new(|_: &str, _: &str| Ok(())),
        HubOptions {
            debounce: Duration::from_millis(10),
        },
    );
    let ids: Vec<String> = (0..PROXIES)
        .map(|index| format!("pod-{index}.default"))
        .collect();
    let clients: Vec<ConfigClient> = runtime.block_on(async {
        let server_hub = hub.clone();
        let path = socket.clone();
        tokio::spawn(async move {
            server_hub
                .serve_unix(&path, std::future::pending())
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        for id in &ids {
            hub.publish(id, config(0));
        }
        ids.iter()
            .map(|id| {
                ConfigClient::spawn(ConfigClientOptions::new(
                    ironmesh_identity::ControlPlaneAddress::Unix(socket.clone()),
                    id.clone(),
                    TokenSource::None,
                ))
            })
            .collect()
    });
    let all_acked = |version: &str| {
        ids.iter()
            .all(|id| hub.status(id).and_then(|s| s.acked_version).as_deref() == Some(version))
    };
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_acked("v0") {
            assert!(
                Instant::now() < deadline,
                "1,000 proxies did not connect within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut generation = 0;
    let mut group = c.benchmark_group("push_fanout");
    group.sample_size(10);
    group.bench_function("1000_proxies_change_applied", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                generation += 1;
                let version = format!("v{generation}");
                let started = Instant::now();
                for id in &ids {
                    hub.publish(id, config(generation));
                }
                runtime.block_on(async {
                    while !all_acked(&version) {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                });
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    drop(clients);
}

criterion_group!(benches, fanout);
criterion_main!(benches);

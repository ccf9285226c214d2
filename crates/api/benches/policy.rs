//! Policy resolution at scale: 100 namespaces holding 10,100 policies and rules (PeerAuthentications,
//! legacy Policies, DestinationRules) plus 2,500 services. Measures index build time and lookups per
//! second for server mode, client TLS and a whole `tls-check`.
//!
//! Run: `cargo bench -p ironmesh-api --bench policy`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ironmesh_api::Object;
use ironmesh_api::policy::{MeshConfig, PolicyIndex, Workload};
use serde_json::json;

const NAMESPACES: usize = 100;
const APPS_PER_NAMESPACE: usize = 25;
const LOOKUPS_PER_ITERATION: usize = 1000;

fn object(value: serde_json::Value, age: usize) -> Object {
    let mut obj: Object = serde_json::from_value(value).expect("bench object is well-formed");
    obj.metadata.creation_timestamp = Some(format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        age / 3600 % 24,
        age / 60 % 60,
        age % 60
    ));
    obj
}

/// 100 × (1 namespace PA + 25 workload PAs + 25 legacy Policies + 25 exact DRs + 25 wildcard DRs)
/// + the mesh-wide PA, MeshPolicy and root DR = 10,103 policies and rules.
fn corpus() -> Vec<Object> {
    let modes = ["STRICT", "PERMISSIVE", "DISABLE", "UNSET"];
    let tls = ["ISTIO_MUTUAL", "DISABLE", "SIMPLE"];
    let mut objects = vec![
        object(
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "PERMISSIVE"}}}),
            0,
        ),
        object(
            json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy",
            "metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {}}]}}),
            0,
        ),
        object(
            json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
            "metadata": {"name": "default", "namespace": "istio-system"},
            "spec": {"host": "*.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}),
            0,
        ),
    ];
    let mut age = 1;
    for n in 0..NAMESPACES {
        let ns = format!("ns{n}");
        if n % 2 == 0 {
            objects.push(object(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": modes[n % 4]}}}), age));
        }
        for a in 0..APPS_PER_NAMESPACE {
            age += 1;
            let app = format!("app{a}");
            objects.push(object(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 8000, "targetPort": 8080}]}}), age));
            objects.push(object(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": format!("{app}-pa"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}, "mtls": {"mode": modes[(n + a) % 4]},
                         "portLevelMtls": {"9090": {"mode": "DISABLE"}}}}), age));
            objects.push(object(json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "Policy",
                "metadata": {"name": format!("{app}-legacy"), "namespace": ns},
                "spec": {"targets": [{"name": app, "ports": [{"number": 8000}]}], "peers": [{"mtls": null}]}}), age));
            objects.push(object(json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                "metadata": {"name": format!("{app}-exact"), "namespace": ns},
                "spec": {"host": app, "trafficPolicy": {"tls": {"mode": tls[a % 3]},
                         "portLevelSettings": [{"port": {"number": 9000}, "tls": {"mode": "DISABLE"}}]}}}), age));
            objects.push(object(
                json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                "metadata": {"name": format!("{app}-wild"), "namespace": ns},
                "spec": {"host": format!("*.{app}.example"), "exportTo": ["."],
                         "trafficPolicy": {"tls": {"mode": tls[(a + 1) % 3]}}}}),
                age,
            ));
        }
    }
    objects
}

fn workloads() -> Vec<Workload> {
    (0..LOOKUPS_PER_ITERATION)
        .map(|i| Workload {
            namespace: format!("ns{}", (i * 7) % NAMESPACES),
            labels: [(
                "app".to_string(),
                format!("app{}", (i * 13) % APPS_PER_NAMESPACE),
            )]
            .into(),
            service_account: "default".into(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let objects = corpus();
    let policies_and_rules = objects.iter().filter(|o| o.kind != "Service").count();
    assert!(policies_and_rules >= 10_000, "{policies_and_rules}");
    let mesh = MeshConfig::default();

    c.bench_function("index_build_10k", |b| {
        b.iter(|| PolicyIndex::new(black_box(&objects), mesh.clone()))
    });

    let index = PolicyIndex::new(&objects, mesh);
    let workloads = workloads();
    let hosts: Vec<(String, String)> = (0..LOOKUPS_PER_ITERATION)
        .map(|i| {
            (
                format!("ns{}", (i * 11) % NAMESPACES),
                format!(
                    "app{}.ns{}.svc.cluster.local",
                    (i * 5) % APPS_PER_NAMESPACE,
                    (i * 3) % NAMESPACES
                ),
            )
        })
        .collect();

    let mut group = c.benchmark_group("lookups_10k");
    group.throughput(Throughput::Elements(LOOKUPS_PER_ITERATION as u64));
    group.bench_function("server_mode", |b| {
        b.iter(|| {
            for (i, workload) in workloads.iter().enumerate() {
                black_box(index.server_mode(workload, if i % 2 == 0 { 8080 } else { 9090 }));
            }
        })
    });
    group.bench_function("server_mode_legacy", |b| {
        let legacy_only = corpus()
            .into_iter()
            .filter(|o| o.kind != "PeerAuthentication")
            .collect::<Vec<_>>();
        let legacy_index = PolicyIndex::new(&legacy_only, MeshConfig::default());
        b.iter(|| {
            for workload in &workloads {
                black_box(legacy_index.server_mode(workload, 8080));
            }
        })
    });
    group.bench_function("client_tls", |b| {
        b.iter(|| {
            for (client, host) in &hosts {
                black_box(index.client_tls(client, host, 8000));
            }
        })
    });
    group.finish();

    let mut whole = c.benchmark_group("tls_check_10k");
    whole.sample_size(10);
    whole.throughput(Throughput::Elements(2_500));
    whole.bench_function("all_services", |b| {
        b.iter(|| black_box(index.tls_check(Some("ns1"), None)))
    });
    whole.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

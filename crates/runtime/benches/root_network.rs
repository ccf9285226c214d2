//! ROOT-ONLY benchmarks of the network mechanisms: pod network setup + removal, and a full service NAT
//! sync (render + atomic `iptables-restore`) at 10 and 1,000 services. They create their own cluster in a
//! temporary home and tear it down at the end; they panic (never skip) without root.

use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ironmesh_runtime::{Cluster, Protocol, ServiceNat};

struct Teardown(Cluster);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(error) = self.0.teardown() {
            eprintln!("bench teardown failed: {error}");
        }
    }
}

fn services(count: u32) -> Vec<ServiceNat> {
    (0..count)
        .map(|i| ServiceNat {
            vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + i),
            port: 8000,
            protocol: Protocol::Tcp,
            endpoints: (0..3)
                .map(|e| {
                    (
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + i * 3 + e),
                        8000,
                    )
                })
                .collect(),
        })
        .collect()
}

fn network(c: &mut Criterion) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "root_network benches need root (network namespaces)"
    );
    let home = tempfile::tempdir().expect("temporary home");
    let guard = Teardown(Cluster::open(home.path()).expect("open cluster"));
    let cluster = &guard.0;
    cluster.cleanup_stale().expect("cleanup");
    cluster.ensure_node().expect("node namespace");

    let mut group = c.benchmark_group("root_network");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("add_pod+remove_pod", |b| {
        b.iter(|| {
            cluster
                .add_pod("bench", "pod-a", Ipv4Addr::new(198, 18, 9, 9))
                .expect("add pod");
            cluster.remove_pod("bench", "pod-a");
        })
    });
    for count in [10u32, 1000] {
        let desired = services(count);
        group.bench_with_input(
            BenchmarkId::new("sync_services", count),
            &desired,
            |b, desired| b.iter(|| cluster.sync_services(desired).expect("sync services")),
        );
    }
    group.finish();
}

criterion_group!(benches, network);
criterion_main!(benches);

//! CSR signing throughput of the CA on one core (goal: at least 5,000 signed CSRs per second).
//! Run: `cargo bench -p ironmesh-identity --bench ca`

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ironmesh_identity::{CaOptions, CertificateAuthority, SpiffeId, csr_for};

fn signing(c: &mut Criterion) {
    ironmesh_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca =
        CertificateAuthority::load_or_create(dir.path(), CaOptions::new("cluster.local")).unwrap();
    let identity = SpiffeId::new("cluster.local", "foo", "sleep").unwrap();
    let (csr, _key) = csr_for(&identity).unwrap();

    let mut group = c.benchmark_group("ca");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    // What the CA does per request: parse + verify the CSR, build the leaf, sign it, PEM-encode the chain.
    group.bench_function("sign_workload_csr", |b| {
        b.iter(|| {
            ca.sign_workload(&csr, &identity, Duration::from_secs(86400))
                .unwrap()
        })
    });
    // For scale: what the proxy spends making its key and CSR (client side, not on the CA).
    group.bench_function("proxy_key_and_csr", |b| {
        b.iter(|| csr_for(&identity).unwrap())
    });
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);

//! Store throughput: durable single-object applies, 100-object batches, point reads and a 1,000-object
//! list. The store file lives in the system temp dir, so the numbers include that disk's fsync cost.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ironmesh_store::{ApplyItem, ApplyOptions, LabelSelector, ObjectKey, Store, WriteMode};
use serde_json::{Value, json};

fn service(name: &str, port: u64) -> ApplyItem {
    ApplyItem {
        object: json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"ports": [{"name": "http", "port": port}], "selector": {"app": name}}}),
        origin: "bench".into(),
    }
}

fn options() -> ApplyOptions {
    ApplyOptions {
        namespace: Some("default".into()),
        mode: WriteMode::Apply,
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store.redb")).expect("store opens");
    let mut port = 1u64;

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_one_durable", |b| {
        b.iter(|| {
            port = port % 65535 + 1;
            store
                .apply(&[service("one", port)], &options())
                .expect("apply")
        })
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("apply_batch_of_100", |b| {
        b.iter_batched(
            || {
                port = port % 65535 + 1;
                (0..100)
                    .map(|i| service(&format!("batch-{i}"), port))
                    .collect::<Vec<_>>()
            },
            |items| store.apply(&items, &options()).expect("apply"),
            BatchSize::SmallInput,
        )
    });

    let items: Vec<_> = (0..1000)
        .map(|i| service(&format!("svc-{i}"), 80))
        .collect();
    store.apply(&items, &options()).expect("seed");
    let key = ObjectKey::new("services", Some("default"), "svc-500");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_one", |b| b.iter(|| store.get(&key).expect("get")));

    group.throughput(Throughput::Elements(1000));
    group.bench_function("list_1000_services", |b| {
        b.iter(|| {
            let list = store
                .list(Some("services"), Some("default"), &LabelSelector::default())
                .expect("list");
            let items: &Vec<Value> = &list.items;
            assert!(items.len() >= 1000);
        })
    });
    group.finish();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);

//! The store's contract: apply outcomes, system metadata, all-or-nothing batches, namespaces, status
//! writes, delete, watch, persistence across reopen, and the CLI API round trip over a Unix socket.

use std::sync::Arc;

use ironmesh_store::client::ApiClient;
use ironmesh_store::wire::WatchRequest;
use ironmesh_store::{
    ApplyAction, ApplyItem, ApplyOptions, EventType, LabelSelector, ObjectKey, Reason, Store,
    StoreError, WriteMode,
};
use serde_json::{Value, json};

fn item(object: Value, origin: &str) -> ApplyItem {
    ApplyItem {
        object,
        origin: origin.to_string(),
    }
}

fn service(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"app": name}},
           "spec": {"ports": [{"name": "http", "port": port}], "selector": {"app": name}}})
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn in_ns(ns: &str) -> ApplyOptions {
    ApplyOptions {
        namespace: Some(ns.to_string()),
        mode: WriteMode::Apply,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    (dir, store)
}

fn meta<'a>(object: &'a Value, field: &str) -> &'a Value {
    &object["metadata"][field]
}

#[test]
fn bootstrap_creates_default_namespaces_and_permissive_mesh_policy() {
    let (_dir, store) = open();
    let ns = store
        .list(Some("namespaces"), None, &LabelSelector::default())
        .unwrap();
    let names: Vec<_> = ns.items.iter().map(|o| meta(o, "name").clone()).collect();
    assert_eq!(names, vec![json!("default"), json!("istio-system")]);
    let mesh = store
        .get(&ObjectKey::new("meshpolicies", None, "default"))
        .unwrap();
    assert_eq!(mesh["spec"]["peers"][0]["mtls"]["mode"], "PERMISSIVE");
    // The walkthrough's own MeshPolicy then reports `configured`.
    let walkthrough = json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy",
        "metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {}}]}});
    let results = store
        .apply(
            &[item(walkthrough, "mesh.yaml:1")],
            &ApplyOptions::default(),
        )
        .unwrap();
    assert_eq!(
        results[0].to_string(),
        "meshpolicy.authentication.istio.io/default configured"
    );
}

#[test]
fn apply_reports_created_unchanged_configured_and_stamps_metadata() {
    let (_dir, store) = open();
    let first = store
        .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(first[0].to_string(), "service/httpbin created");
    let created = &first[0].object;
    assert_eq!(meta(created, "generation"), 1);
    assert_eq!(meta(created, "namespace"), "default");
    let uid = meta(created, "uid").as_str().unwrap().to_string();
    assert_eq!(uid.len(), 36);
    let stamp = meta(created, "creationTimestamp")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&stamp).is_ok(),
        "{stamp}"
    );

    let again = store
        .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(again[0].action, ApplyAction::Unchanged);
    assert_eq!(
        meta(&again[0].object, "resourceVersion"),
        meta(created, "resourceVersion")
    );

    let changed = store
        .apply(&[item(service("httpbin", 8001), "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(changed[0].to_string(), "service/httpbin configured");
    let changed = &changed[0].object;
    assert_eq!(meta(changed, "generation"), 2);
    assert_eq!(meta(changed, "uid").as_str(), Some(uid.as_str()));
    assert_eq!(
        meta(changed, "creationTimestamp").as_str(),
        Some(stamp.as_str())
    );
    assert_ne!(
        meta(changed, "resourceVersion"),
        meta(created, "resourceVersion")
    );

    let mut relabelled = service("httpbin", 8001);
    relabelled["metadata"]["labels"]["tier"] = json!("web");
    let relabelled = store
        .apply(&[item(relabelled, "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(relabelled[0].action, ApplyAction::Configured);
    assert_eq!(
        meta(&relabelled[0].object, "generation"),
        2,
        "labels are not spec"
    );
}

#[test]
fn reapplying_a_service_keeps_the_cluster_ip_the_control_plane_assigned() {
    let (_dir, store) = open();
    store
        .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("default"))
        .unwrap();
    let mut assigned = service("httpbin", 8000);
    assigned["spec"]["clusterIP"] = json!("198.19.0.10");
    store
        .apply(&[item(assigned, "controller")], &in_ns("default"))
        .unwrap();
    let again = store
        .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(again[0].action, ApplyAction::Unchanged);
    assert_eq!(again[0].object["spec"]["clusterIP"], "198.19.0.10");
    let changed = store
        .apply(&[item(service("httpbin", 8001), "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(changed[0].object["spec"]["clusterIP"], "198.19.0.10");
}

#[test]
fn a_batch_with_one_bad_document_changes_nothing() {
    let (_dir, store) = open();
    let before = store.list(None, None, &LabelSelector::default()).unwrap();
    let mut items: Vec<_> = (0..5)
        .map(|i| {
            item(
                service(&format!("svc{i}"), 80 + i),
                &format!("f.yaml:{}", 1 + 12 * i),
            )
        })
        .collect();
    items.push(item(
        json!({"apiVersion": "v1", "kind": "Servic", "metadata": {"name": "bad"}}),
        "f.yaml:61",
    ));
    let err = store.apply(&items, &in_ns("default")).unwrap_err();
    assert_eq!(err.reason(), Reason::Invalid);
    assert!(err.to_string().starts_with("f.yaml:61: "), "{err}");
    let after = store.list(None, None, &LabelSelector::default()).unwrap();
    assert_eq!(after.items, before.items);
    assert_eq!(after.resource_version, before.resource_version);
}

#[test]
fn namespaces_must_exist_unless_created_in_the_same_batch() {
    let (_dir, store) = open();
    let err = store
        .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("foo"))
        .unwrap_err();
    assert_eq!(err.reason(), Reason::NotFound);
    assert_eq!(err.to_string(), "namespaces \"foo\" not found");
    let mut svc = service("httpbin", 8000);
    svc["metadata"]["namespace"] = json!("foo");
    let results = store
        .apply(
            &[item(svc, "a:5"), item(namespace("foo"), "a:1")],
            &ApplyOptions::default(),
        )
        .unwrap();
    assert_eq!(results.len(), 2);
    let mismatch = store
        .apply(&[item(results[0].object.clone(), "a:1")], &in_ns("bar"))
        .unwrap_err();
    assert_eq!(mismatch.reason(), Reason::BadRequest);
    assert!(
        mismatch.to_string().contains("--namespace=foo"),
        "{mismatch}"
    );
}

#[test]
fn create_refuses_existing_objects() {
    let (_dir, store) = open();
    let create = ApplyOptions {
        namespace: None,
        mode: WriteMode::Create,
    };
    store
        .apply(&[item(namespace("foo"), "cli")], &create)
        .unwrap();
    let err = store
        .apply(&[item(namespace("foo"), "cli")], &create)
        .unwrap_err();
    assert_eq!(err.to_string(), "namespaces \"foo\" already exists");
    assert_eq!(err.reason(), Reason::AlreadyExists);
}

#[test]
fn status_writes_keep_generation_and_deleting_a_namespace_deletes_its_objects() {
    let (_dir, store) = open();
    store
        .apply(
            &[
                item(namespace("foo"), "a:1"),
                item(service("httpbin", 8000), "a:5"),
            ],
            &in_ns("foo"),
        )
        .unwrap();
    let key = ObjectKey::new("services", Some("foo"), "httpbin");
    let updated = store
        .update_status(&key, json!({"loadBalancer": {}}))
        .unwrap();
    assert_eq!(meta(&updated, "generation"), 1);
    assert_eq!(updated["status"], json!({"loadBalancer": {}}));
    // A later apply keeps the status the controller wrote.
    let reapplied = store
        .apply(&[item(service("httpbin", 8001), "a:5")], &in_ns("foo"))
        .unwrap();
    assert_eq!(reapplied[0].object["status"], json!({"loadBalancer": {}}));

    store
        .delete(&ObjectKey::new("namespaces", None, "foo"))
        .unwrap();
    assert!(matches!(store.get(&key), Err(StoreError::NotFound { .. })));
    let err = store
        .delete(&ObjectKey::new("namespaces", None, "foo"))
        .unwrap_err();
    assert_eq!(err.to_string(), "namespaces \"foo\" not found");
}

#[test]
fn list_filters_by_namespace_and_labels() {
    let (_dir, store) = open();
    store
        .apply(
            &[
                item(service("httpbin", 8000), "a:1"),
                item(service("sleep", 80), "a:2"),
            ],
            &in_ns("default"),
        )
        .unwrap();
    let all = store
        .list(Some("services"), None, &LabelSelector::default())
        .unwrap();
    assert_eq!(all.items.len(), 2);
    let sleep = store
        .list(
            Some("services"),
            Some("default"),
            &LabelSelector::parse("app=sleep").unwrap(),
        )
        .unwrap();
    assert_eq!(sleep.items.len(), 1);
    assert_eq!(meta(&sleep.items[0], "name"), "sleep");
    let elsewhere = store
        .list(
            Some("services"),
            Some("istio-system"),
            &LabelSelector::default(),
        )
        .unwrap();
    assert!(elsewhere.items.is_empty());
}

#[test]
fn watch_sees_committed_changes_in_order_and_failed_batches_send_nothing() {
    let (_dir, store) = open();
    let (list, mut events) = store.list_and_subscribe(Some("services"), None).unwrap();
    assert!(list.items.is_empty());
    store
        .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("default"))
        .unwrap();
    let bad = [
        item(service("x", 1), "a:1"),
        item(json!({"kind": "Nope"}), "a:9"),
    ];
    assert!(store.apply(&bad, &in_ns("default")).is_err());
    store
        .apply(&[item(service("httpbin", 8001), "a:1")], &in_ns("default"))
        .unwrap();
    store
        .delete(&ObjectKey::new("services", Some("default"), "httpbin"))
        .unwrap();
    let kinds: Vec<_> = (0..3)
        .map(|_| events.try_recv().unwrap())
        .map(|e| (e.event_type, e.resource_version))
        .collect();
    assert_eq!(kinds[0].0, EventType::Added);
    assert_eq!(kinds[1].0, EventType::Modified);
    assert_eq!(kinds[2].0, EventType::Deleted);
    assert!(
        kinds[0].1 > list.resource_version && kinds[0].1 < kinds[1].1 && kinds[1].1 < kinds[2].1
    );
    assert!(events.try_recv().is_err(), "the failed batch sent no event");
}

#[test]
fn watching_from_a_resource_version_replays_what_came_after_it() {
    let (_dir, store) = open();
    let list = store
        .list(Some("services"), None, &LabelSelector::default())
        .unwrap();
    // Changes between the list and the watch are not lost.
    store
        .apply(&[item(service("a", 80), "a:1")], &in_ns("default"))
        .unwrap();
    store
        .apply(&[item(service("b", 80), "a:1")], &in_ns("default"))
        .unwrap();
    let (backlog, mut live) = store.subscribe_from(list.resource_version).unwrap();
    let names: Vec<_> = backlog
        .iter()
        .map(|e| e.object["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("a"), json!("b")]);
    store
        .apply(&[item(service("c", 80), "a:1")], &in_ns("default"))
        .unwrap();
    assert_eq!(live.try_recv().unwrap().object["metadata"]["name"], "c");
    assert!(live.try_recv().is_err());
    // After a restart the history is gone: an old version is Expired, the current one is fine.
    let path = store.path().to_path_buf();
    let current = store
        .list(None, None, &LabelSelector::default())
        .unwrap()
        .resource_version;
    drop(store);
    let reopened = Store::open(&path).unwrap();
    let err = reopened.subscribe_from(list.resource_version).unwrap_err();
    assert_eq!(err.reason(), Reason::Expired);
    assert!(reopened.subscribe_from(current).unwrap().0.is_empty());
}

#[test]
fn objects_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let uid = {
        let store = Store::open(&path).unwrap();
        let results = store
            .apply(&[item(service("httpbin", 8000), "a:1")], &in_ns("default"))
            .unwrap();
        meta(&results[0].object, "uid").clone()
    };
    let store = Store::open(&path).unwrap();
    let object = store
        .get(&ObjectKey::new("services", Some("default"), "httpbin"))
        .unwrap();
    assert_eq!(meta(&object, "uid"), &uid);
}

#[tokio::test]
async fn the_cli_api_round_trips_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
    let socket = dir.path().join("api.sock");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let (store, socket, shutdown) = (store.clone(), socket.clone(), shutdown.clone());
        async move { ironmesh_store::serve_api(store, &socket, shutdown).await }
    });
    let client = ApiClient::new(&socket);
    let mut ready = false;
    for _ in 0..100 {
        if client.info().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready, "the API server never answered");
    let mut watch = client
        .watch(&WatchRequest {
            plural: Some("namespaces".into()),
            ..WatchRequest::default()
        })
        .await
        .unwrap();
    // The stream opens with the current objects.
    for _ in 0..2 {
        let event = watch.next().await.unwrap().unwrap();
        assert_eq!(event.event_type, EventType::Added);
    }
    let results = client
        .apply(vec![item(namespace("foo"), "cli")], ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(results[0].to_string(), "namespace/foo created");
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!(event.object["metadata"]["name"], "foo");

    let missing = client
        .get(&ObjectKey::new("namespaces", None, "nope"))
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "Error from server (NotFound): namespaces \"nope\" not found"
    );
    let list = client.list(Some("namespaces"), None, None).await.unwrap();
    assert_eq!(list.items.len(), 3);

    // A watch from a resourceVersion replays what came after it, over the socket too.
    let mut replay = client
        .watch(&WatchRequest {
            resource_version: Some(list.resource_version - 1),
            ..WatchRequest::default()
        })
        .await
        .unwrap();
    let replayed = replay.next().await.unwrap().unwrap();
    assert_eq!(replayed.resource_version, list.resource_version);

    // A watch of every kind names each object's plural from the start.
    let mut everything = client.watch(&WatchRequest::default()).await.unwrap();
    let mut plurals = Vec::new();
    for _ in 0..4 {
        plurals.push(everything.next().await.unwrap().unwrap().plural);
    }
    assert_eq!(
        plurals,
        ["meshpolicies", "namespaces", "namespaces", "namespaces"]
    );

    client.shutdown().await.unwrap();
    server.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket file is removed on shutdown");
    assert!(client.info().await.is_err());
}

#[test]
fn istios_validation_runs_in_the_store_and_its_warnings_come_back_with_the_result() {
    let (_dir, store) = open();
    let rule = |outlier: Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "r"},
               "spec": {"host": "httpbin", "trafficPolicy": {"outlierDetection": outlier}}})
    };
    // Istio's webhook refuses a percentage over 100: nothing is stored.
    let err = store
        .apply(
            &[item(rule(json!({"maxEjectionPercent": 105})), "dr.yaml:1")],
            &in_ns("default"),
        )
        .unwrap_err();
    assert_eq!(err.reason(), Reason::Invalid);
    assert!(
        err.to_string()
            .contains("dr.yaml:1: spec.trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{err}"
    );
    // A deprecated field is stored, with Istio's warning in the answer (what kubectl prints).
    let results = store
        .apply(
            &[item(rule(json!({"consecutiveErrors": 5})), "dr.yaml:1")],
            &in_ns("default"),
        )
        .unwrap();
    assert_eq!(results[0].action, ApplyAction::Created);
    assert_eq!(
        results[0].warnings,
        [
            "dr.yaml:1: spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead"
        ]
    );
    let clean = store
        .apply(
            &[item(service("httpbin", 8000), "svc.yaml:1")],
            &in_ns("default"),
        )
        .unwrap();
    assert!(clean[0].warnings.is_empty());
}

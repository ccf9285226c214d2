//! Property tests: precedence invariants of the policy engine (a broader policy never changes a
//! narrower decision, UNSET equals absent, order of objects does not matter) and a loader that never
//! panics on arbitrary input.

use ironmesh_api::policy::{MeshConfig, PolicyIndex, ServerMode, Workload};
use ironmesh_api::{Object, load_documents};
use proptest::prelude::*;
use serde_json::json;

const PEER_MODES: [&str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
const TLS_MODES: [&str; 4] = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

fn object(value: serde_json::Value, age: u32) -> Object {
    let mut obj: Object = serde_json::from_value(value).unwrap();
    obj.metadata.creation_timestamp = Some(format!("2026-01-01T00:00:{:02}Z", age % 60));
    obj
}

fn peer_authn(namespace: &str, name: &str, mode: &str, selector: Option<&str>, age: u32) -> Object {
    let mut spec = json!({"mtls": {"mode": mode}});
    if let Some(app) = selector {
        spec["selector"] = json!({"matchLabels": {"app": app}});
    }
    object(
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        age,
    )
}

fn legacy(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    peers: u8,
    targets: bool,
    age: u32,
) -> Object {
    let peers = match peers % 3 {
        0 => json!([]),
        1 => json!([{"mtls": null}]),
        _ => json!([{"mtls": {"mode": "PERMISSIVE"}}]),
    };
    let mut spec = json!({"peers": peers});
    if targets {
        spec["targets"] = json!([{"name": "httpbin"}]);
    }
    object(
        json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": kind,
               "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        age,
    )
}

fn rule(namespace: &str, name: &str, host: &str, mode: &str, age: u32) -> Object {
    object(
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"host": host, "trafficPolicy": {"tls": {"mode": mode}}}}),
        age,
    )
}

fn httpbin_service() -> Object {
    object(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin", "namespace": "foo"},
               "spec": {"selector": {"app": "httpbin"}, "ports": [{"name": "http", "port": 8000}]}}),
        0,
    )
}

fn httpbin() -> Workload {
    Workload {
        namespace: "foo".into(),
        labels: [("app".to_string(), "httpbin".to_string())].into(),
        service_account: "default".into(),
    }
}

fn server(objects: &[Object]) -> (ServerMode, Option<String>) {
    let decision = PolicyIndex::new(objects, MeshConfig::default()).server_mode(&httpbin(), 8000);
    (decision.mode, decision.decided_by.map(|r| r.to_string()))
}

proptest! {
    /// docs/SEMANTICS.md#peerauthentication-mode: a workload-level mode that is set decides, whatever the namespace and mesh levels say.
    #[test]
    fn broader_peer_authentications_never_change_a_workload_decision(
        workload_mode in 1usize..4,
        broader in proptest::collection::vec((0usize..4, any::<bool>(), 0u32..50), 0..6),
    ) {
        let narrow = peer_authn("foo", "wl", PEER_MODES[workload_mode], Some("httpbin"), 30);
        let alone = server(&[httpbin_service(), narrow.clone()]);
        let mut objects = vec![httpbin_service(), narrow];
        for (i, (mode, in_root, age)) in broader.iter().enumerate() {
            let ns = if *in_root { "istio-system" } else { "foo" };
            objects.push(peer_authn(ns, &format!("b{i}"), PEER_MODES[*mode], None, *age));
        }
        prop_assert_eq!(server(&objects), alone);
    }

    /// docs/SEMANTICS.md#peerauthentication-mode: adding a workload policy whose mode is UNSET never changes the mode.
    #[test]
    fn unset_workload_policy_equals_absent(
        mesh in proptest::option::of(0usize..4),
        namespace in proptest::option::of(0usize..4),
    ) {
        prop_assume!(mesh.is_some() || namespace.is_some());
        let mut objects = vec![httpbin_service()];
        if let Some(m) = mesh { objects.push(peer_authn("istio-system", "mesh", PEER_MODES[m], None, 1)); }
        if let Some(m) = namespace { objects.push(peer_authn("foo", "ns", PEER_MODES[m], None, 2)); }
        let before = server(&objects);
        objects.push(peer_authn("foo", "wl", "UNSET", Some("httpbin"), 3));
        prop_assert_eq!(server(&objects), before);
    }

    /// docs/SEMANTICS.md#legacy-precedence: a service-specific legacy policy decides regardless of namespace and mesh policies.
    #[test]
    fn broader_legacy_policies_never_change_a_service_decision(
        peers in 0u8..3,
        namespace_peers in proptest::option::of(0u8..3),
        mesh_peers in proptest::option::of(0u8..3),
    ) {
        let narrow = legacy("Policy", Some("foo"), "svc", peers, true, 5);
        let alone = server(&[httpbin_service(), narrow.clone()]);
        let mut objects = vec![httpbin_service(), narrow];
        if let Some(p) = namespace_peers { objects.push(legacy("Policy", Some("foo"), "default", p, false, 1)); }
        if let Some(p) = mesh_peers { objects.push(legacy("MeshPolicy", None, "default", p, false, 0)); }
        prop_assert_eq!(server(&objects), alone);
    }

    /// "Oldest wins" depends on timestamps, never on the order objects are listed in.
    #[test]
    fn object_order_does_not_matter(
        policies in proptest::collection::vec((0usize..4, 0usize..3, 0u32..50), 1..8),
        rules in proptest::collection::vec((0usize..4, 0usize..3, 0usize..3, 0u32..50), 0..8),
        seed in any::<u64>(),
    ) {
        let namespaces = ["foo", "istio-system", "bar"];
        let hosts = ["*.local", "httpbin.foo.svc.cluster.local", "*.foo.svc.cluster.local"];
        let mut objects = vec![httpbin_service()];
        for (i, (mode, ns, age)) in policies.iter().enumerate() {
            let selector = (i % 2 == 0).then_some("httpbin");
            objects.push(peer_authn(namespaces[*ns], &format!("p{i}"), PEER_MODES[*mode], selector, *age));
        }
        for (i, (mode, ns, host, age)) in rules.iter().enumerate() {
            objects.push(rule(namespaces[*ns], &format!("r{i}"), hosts[*host], TLS_MODES[*mode], *age));
        }
        let ask = |objects: &[Object]| {
            let index = PolicyIndex::new(objects, MeshConfig::default());
            let client = index.client_tls("bar", "httpbin.foo.svc.cluster.local", 8000);
            (index.server_mode(&httpbin(), 8000), client.mode, client.decided_by)
        };
        let before = ask(&objects);
        let len = objects.len();
        let mut state = seed;
        for i in (1..len).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            objects.swap(i, (state >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(ask(&objects), before);
    }

    /// docs/SEMANTICS.md#destinationrule-precedence: a rule in the client's namespace decides, whatever the root and other namespaces hold.
    #[test]
    fn broader_rules_never_change_a_client_namespace_decision(
        mode in 0usize..4,
        others in proptest::collection::vec((0usize..4, 0usize..3, any::<bool>(), 0u32..50), 0..6),
    ) {
        let narrow = rule("bar", "mine", "httpbin.foo.svc.cluster.local", TLS_MODES[mode], 20);
        let decide = |objects: &[Object]| {
            let d = PolicyIndex::new(objects, MeshConfig::default())
                .client_tls("bar", "httpbin.foo.svc.cluster.local", 8000);
            (d.mode, d.decided_by)
        };
        let alone = decide(std::slice::from_ref(&narrow));
        let mut objects = vec![narrow];
        for (i, (m, ns, exact, age)) in others.iter().enumerate() {
            let host = if *exact { "httpbin.foo.svc.cluster.local" } else { "*.local" };
            let namespace = ["foo", "istio-system", "other"][*ns];
            objects.push(rule(namespace, &format!("o{i}"), host, TLS_MODES[*m], *age));
        }
        prop_assert_eq!(decide(&objects), alone);
    }

    /// The loader returns `Ok` or `Err` on any bytes; it never panics.
    #[test]
    fn load_documents_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_documents("fuzz.yaml", &text);
    }

    /// Same for YAML-looking noise built from YAML's own punctuation and our field names.
    #[test]
    fn load_documents_never_panics_on_yaml_like_noise(
        parts in proptest::collection::vec(prop_oneof![
            Just("apiVersion: "), Just("kind: "), Just("metadata:"), Just("spec:"), Just("peers:"),
            Just("- "), Just("mtls: "), Just("{"), Just("}"), Just("["), Just("]"), Just(": "), Just("\n"),
            Just("  "), Just("---\n"), Just("&a "), Just("*a "), Just("'"), Just("\""), Just("#"),
            Just("MeshPolicy"), Just("List"), Just("items:"), Just("v1"), Just("8000"), Just("null"),
            Just("? "), Just("|\n"), Just(">-\n"), Just("!!str "), Just("%YAML 1.2\n"), Just("\t"),
        ], 0..64),
    ) {
        let text: String = parts.concat();
        let _ = load_documents("noise.yaml", &text);
    }
}

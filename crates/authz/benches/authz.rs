//! Criterion bench: evaluating one request against 1,000 rules (10 ALLOW policies of 100 rules each,
//! the matching rule last, plus one DENY policy that never matches), after the one-off index build.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ironmesh_authz::{AuthzIndex, Http, Peer, PolicyObject, Request};
use serde_json::json;

const POLICIES: usize = 10;
const RULES_PER_POLICY: usize = 100;

fn policies() -> Vec<PolicyObject> {
    let mut objects: Vec<PolicyObject> = (0..POLICIES)
        .map(|p| {
            let rules: Vec<_> = (0..RULES_PER_POLICY)
                .map(|r| {
                    let n = p * RULES_PER_POLICY + r;
                    json!({
                        "from": [{"source": {"principals": [format!("cluster.local/ns/ns{n}/sa/client")]}}],
                        "to": [{"operation": {"methods": ["GET", "POST"], "paths": [format!("/api/v{n}/*")]}}],
                        "when": [{"key": "request.headers[x-tenant]", "values": [format!("tenant-{n}")]}],
                    })
                })
                .collect();
            PolicyObject {
                namespace: "foo".into(),
                name: format!("allow-{p}"),
                creation_timestamp: Some(format!("2026-01-01T00:00:{p:02}Z")),
                annotations: Default::default(),
                spec: json!({"action": "ALLOW", "rules": rules}),
            }
        })
        .collect();
    objects.push(PolicyObject {
        namespace: "foo".into(),
        name: "deny-admin".into(),
        creation_timestamp: None,
        annotations: Default::default(),
        spec: json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
    });
    objects
}

fn bench_evaluate(c: &mut Criterion) {
    let index = AuthzIndex::new(policies(), "istio-system").expect("bench policies are valid");
    let applied = index.policies_for("foo", &BTreeMap::new());
    let last = POLICIES * RULES_PER_POLICY - 1;
    let request = Request {
        peer: Some(Peer::from_principal(&format!(
            "cluster.local/ns/ns{last}/sa/client"
        ))),
        source_ip: "10.0.0.2".parse().expect("ip"),
        destination_ip: "10.0.0.3".parse().expect("ip"),
        destination_port: 8000,
        sni: None,
        http: Some(Http {
            method: "GET".into(),
            path: format!("/api/v{last}/items?page=2"),
            host: "httpbin.foo:8000".into(),
            headers: vec![
                ("user-agent".into(), "curl/8".into()),
                ("X-Tenant".into(), format!("tenant-{last}")),
            ],
        }),
    };
    assert!(
        applied.evaluate(&request).allowed,
        "the bench request must reach the last rule and match"
    );
    c.bench_function("evaluate_1000_rules_match_last", |b| {
        b.iter(|| black_box(applied.evaluate(black_box(&request))))
    });

    let mut denied = request.clone();
    denied.peer = Some(Peer::from_principal("cluster.local/ns/other/sa/client"));
    assert!(!applied.evaluate(&denied).allowed);
    c.bench_function("evaluate_1000_rules_none_match", |b| {
        b.iter(|| black_box(applied.evaluate(black_box(&denied))))
    });
}

/// The walkthrough's case: namespace isolation plus a DENY on /headers, the common size of a real workload.
fn bench_walkthrough(c: &mut Criterion) {
    let policies = vec![
        PolicyObject {
            namespace: "foo".into(),
            name: "foo-isolation".into(),
            creation_timestamp: None,
            annotations: Default::default(),
            spec: json!({"rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}),
        },
        PolicyObject {
            namespace: "foo".into(),
            name: "deny-headers".into(),
            creation_timestamp: None,
            annotations: Default::default(),
            spec: json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["bar"]}}], "to": [{"operation": {"paths": ["/headers"]}}]}]}),
        },
    ];
    let index = AuthzIndex::new(policies, "istio-system").expect("valid");
    let applied = index.policies_for("foo", &BTreeMap::new());
    let request = Request {
        peer: Some(Peer::from_principal("cluster.local/ns/foo/sa/sleep")),
        source_ip: "10.0.0.2".parse().expect("ip"),
        destination_ip: "10.0.0.3".parse().expect("ip"),
        destination_port: 8000,
        sni: None,
        http: Some(Http {
            method: "GET".into(),
            path: "/ip".into(),
            host: "httpbin.foo:8000".into(),
            headers: vec![],
        }),
    };
    assert!(applied.evaluate(&request).allowed);
    c.bench_function("evaluate_walkthrough_2_policies", |b| {
        b.iter(|| black_box(applied.evaluate(black_box(&request))))
    });
}

criterion_group!(benches, bench_evaluate, bench_walkthrough);
criterion_main!(benches);

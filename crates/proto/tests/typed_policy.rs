//! Typed AuthorizationPolicies on the wire. Each row goes the whole way: the policies as the control plane
//! validates and scopes them (ironmesh-authz, what `apply` accepts) → the protobuf messages of a
//! `ProxyConfig` → bytes → the proxy's one compile step (`decode_config`) → the decision, which must be the
//! expected one and the same, rule for rule, as the control plane's own. Then malformed messages, as only a
//! broken or foreign control plane could send them, refused by resource and field path.
//!
//! The matchers and condition keys are Istio's (pkg/config/security/security.go `ValidateAttribute`,
//! pilot/pkg/security/authz/model/generator.go); their semantics are docs/SEMANTICS.md#authz-rules.

use std::collections::BTreeMap;

use ironmesh_authz::{AuthzIndex, DEFAULT_ROOT_NAMESPACE, Decision, PolicyObject, Request};
use ironmesh_proto::pb::authorization_policy::{Action, Condition, Operation, Rule, Source};
use ironmesh_proto::pb::{self, AuthorizationPolicy};
use ironmesh_proto::{ConfigRejection, decode_config, policy_message};
use prost::Message;
use serde_json::{Value, json};

/// The requests of ironmesh-authz's own tests: `GET /ip` to httpbin.foo:8000 (10.0.0.3) from 10.0.0.2.
#[path = "../../authz/tests/common/mod.rs"]
mod requests;

/// From sleep in bar, over mTLS.
fn request() -> Request {
    requests::mtls_from("bar")
}

fn plaintext() -> Request {
    requests::plaintext()
}

fn tcp() -> Request {
    Request {
        http: None,
        ..request()
    }
}

/// One stored policy: `(name, creation timestamp, dry-run annotation, spec)`.
type Stored = (&'static str, &'static str, bool, Value);

fn stored(policies: &[Stored]) -> Vec<PolicyObject> {
    policies
        .iter()
        .map(|(name, created, dry_run, spec)| PolicyObject {
            namespace: "foo".into(),
            name: (*name).into(),
            creation_timestamp: Some((*created).into()),
            annotations: match dry_run {
                true => [("istio.io/dry-run".to_owned(), "true".to_owned())].into(),
                false => BTreeMap::new(),
            },
            spec: spec.clone(),
        })
        .collect()
}

fn labels() -> BTreeMap<String, String> {
    [("app".to_owned(), "httpbin".to_owned())].into()
}

/// The configuration a control plane sends httpbin's sidecar with `policies`.
fn config(policies: Vec<AuthorizationPolicy>) -> pb::ProxyConfig {
    pb::ProxyConfig {
        version: "1".into(),
        workload: Some(pb::Workload {
            name: "httpbin-1".into(),
            namespace: "foo".into(),
            labels: labels().into_iter().collect(),
            authorization_policies: policies,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The control plane's decision and the proxy's, after the wire.
fn both_sides(policies: &[Stored], request: &Request) -> (Decision, Decision) {
    let index = AuthzIndex::new(stored(policies), DEFAULT_ROOT_NAMESPACE).expect("valid policies");
    let applied = index.policies_for("foo", &labels());
    let sent = applied
        .entries()
        .map(|(name, policy, dry_run)| policy_message(name, policy, dry_run))
        .collect();
    let bytes = config(sent).encode_to_vec();
    let proxy = decode_config(&bytes).expect("the proxy compiles what the control plane sends");
    (applied.evaluate(request), proxy.authz.evaluate(request))
}

fn allow(rule: Value) -> Vec<Stored> {
    vec![("p", "2024-01-01T00:00:00Z", false, json!({"rules": [rule]}))]
}

fn from(source: Value) -> Vec<Stored> {
    allow(json!({"from": [{"source": source}]}))
}

fn to(operation: Value) -> Vec<Stored> {
    allow(json!({"to": [{"operation": operation}]}))
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Vec<Stored> {
    allow(json!({"when": [{"key": key, "values": values, "notValues": not_values}]}))
}

#[test]
fn every_matcher_decides_the_same_after_the_wire() {
    let at = |created: &'static str, name: &'static str, spec: Value| (name, created, false, spec);
    let rows: Vec<(&str, Vec<Stored>, Request, bool)> = vec![
        // Source: identities need mTLS; their `not` forms match plaintext (no identity is "in the list").
        (
            "principals",
            from(json!({"principals": ["cluster.local/ns/bar/sa/sleep"]})),
            request(),
            true,
        ),
        (
            "principals, other",
            from(json!({"principals": ["cluster.local/ns/foo/*"]})),
            request(),
            false,
        ),
        (
            "principals, plaintext",
            from(json!({"principals": ["*"]})),
            plaintext(),
            false,
        ),
        (
            "notPrincipals",
            from(json!({"notPrincipals": ["cluster.local/ns/bar/*"]})),
            request(),
            false,
        ),
        (
            "notPrincipals, plaintext",
            from(json!({"notPrincipals": ["*"]})),
            plaintext(),
            true,
        ),
        (
            "requestPrincipals: never a JWT",
            from(json!({"requestPrincipals": ["*"]})),
            request(),
            false,
        ),
        (
            "notRequestPrincipals",
            from(json!({"notRequestPrincipals": ["*"]})),
            request(),
            true,
        ),
        (
            "namespaces",
            from(json!({"namespaces": ["bar"]})),
            request(),
            true,
        ),
        (
            "namespaces, prefix",
            from(json!({"namespaces": ["fo*"]})),
            request(),
            false,
        ),
        (
            "notNamespaces",
            from(json!({"notNamespaces": ["bar"]})),
            request(),
            false,
        ),
        (
            "serviceAccounts",
            from(json!({"serviceAccounts": ["bar/sleep"]})),
            request(),
            true,
        ),
        (
            "serviceAccounts: the policy's namespace",
            from(json!({"serviceAccounts": ["sleep"]})),
            request(),
            false,
        ),
        (
            "notServiceAccounts",
            from(json!({"notServiceAccounts": ["bar/sleep"]})),
            request(),
            false,
        ),
        (
            "trustDomains",
            from(json!({"trustDomains": ["cluster.local"]})),
            request(),
            true,
        ),
        (
            "notTrustDomains",
            from(json!({"notTrustDomains": ["*.local"]})),
            request(),
            false,
        ),
        (
            "ipBlocks",
            from(json!({"ipBlocks": ["10.0.0.0/24"]})),
            request(),
            true,
        ),
        (
            "ipBlocks, bare address",
            from(json!({"ipBlocks": ["10.0.0.9"]})),
            request(),
            false,
        ),
        (
            "notIpBlocks",
            from(json!({"notIpBlocks": ["10.0.0.2"]})),
            request(),
            false,
        ),
        (
            "remoteIpBlocks",
            from(json!({"remoteIpBlocks": ["10.0.0.0/8"]})),
            request(),
            true,
        ),
        (
            "notRemoteIpBlocks",
            from(json!({"notRemoteIpBlocks": ["10.0.0.0/8"]})),
            request(),
            false,
        ),
        // Operation: hosts ignore case and port, paths are normalized, HTTP fields never match TCP in ALLOW.
        (
            "hosts",
            to(json!({"hosts": ["HTTPBIN.foo"]})),
            request(),
            true,
        ),
        (
            "hosts, suffix",
            to(json!({"hosts": ["*.bar"]})),
            request(),
            false,
        ),
        (
            "notHosts",
            to(json!({"notHosts": ["httpbin.*"]})),
            request(),
            false,
        ),
        (
            "methods",
            to(json!({"methods": ["GET", "HEAD"]})),
            request(),
            true,
        ),
        (
            "notMethods",
            to(json!({"notMethods": ["GET"]})),
            request(),
            false,
        ),
        ("paths", to(json!({"paths": ["/ip"]})), request(), true),
        (
            "paths, template",
            to(json!({"paths": ["/{*}"]})),
            request(),
            true,
        ),
        (
            "paths, prefix",
            to(json!({"paths": ["/headers*"]})),
            request(),
            false,
        ),
        (
            "notPaths",
            to(json!({"notPaths": ["/ip"]})),
            request(),
            false,
        ),
        ("paths on TCP", to(json!({"paths": ["/ip"]})), tcp(), false),
        ("ports", to(json!({"ports": ["8000"]})), request(), true),
        (
            "ports as numbers",
            to(json!({"ports": [9000]})),
            request(),
            false,
        ),
        ("notPorts", to(json!({"notPorts": ["8000"]})), tcp(), false),
        // Conditions, every key Istio supports.
        (
            "source.namespace",
            when("source.namespace", &["bar"], &[]),
            request(),
            true,
        ),
        (
            "source.principal",
            when("source.principal", &["*/sa/sleep"], &[]),
            request(),
            true,
        ),
        (
            "source.serviceAccount",
            when("source.serviceAccount", &["bar/sleep"], &[]),
            request(),
            true,
        ),
        (
            "source.trustDomain",
            when("source.trustDomain", &[], &["cluster.local"]),
            request(),
            false,
        ),
        (
            "source.ip",
            when("source.ip", &["10.0.0.2/32"], &[]),
            request(),
            true,
        ),
        (
            "remote.ip",
            when("remote.ip", &[], &["10.0.0.0/8"]),
            request(),
            false,
        ),
        (
            "request.headers",
            when("request.headers[user-agent]", &["curl*"], &[]),
            request(),
            true,
        ),
        (
            "request.headers, absent",
            when("request.headers[x-token]", &["*"], &[]),
            request(),
            false,
        ),
        (
            "destination.ip",
            when("destination.ip", &["10.0.0.3"], &[]),
            request(),
            true,
        ),
        (
            "destination.port",
            when("destination.port", &[], &["8000"]),
            request(),
            false,
        ),
        (
            "connection.sni",
            when("connection.sni", &["*"], &[]),
            request(),
            false,
        ),
        (
            "request.auth.principal",
            when("request.auth.principal", &["*"], &[]),
            request(),
            false,
        ),
        (
            "request.auth.claims",
            when("request.auth.claims[iss]", &[], &["x"]),
            request(),
            true,
        ),
        (
            "envoy filter metadata",
            when("experimental.envoy.filters.a.b[c]", &["d"], &[]),
            request(),
            false,
        ),
        // Actions and order: CUSTOM, then DENY, then ALLOW; AUDIT and dry runs never decide.
        (
            "DENY",
            vec![at(
                "2024-01-01T00:00:00Z",
                "deny",
                json!({"action": "DENY", "rules": [{}]}),
            )],
            request(),
            false,
        ),
        (
            "AUDIT",
            vec![at(
                "2024-01-01T00:00:00Z",
                "audit",
                json!({"action": "AUDIT", "rules": [{}]}),
            )],
            request(),
            true,
        ),
        (
            "CUSTOM without a provider denies",
            vec![at(
                "2024-01-01T00:00:00Z",
                "ext",
                json!({"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]}),
            )],
            request(),
            false,
        ),
        (
            "spec: {} allows nothing",
            vec![at("2024-01-01T00:00:00Z", "nothing", json!({}))],
            request(),
            false,
        ),
        (
            "DENY wins over an older ALLOW",
            vec![
                at("2024-01-01T00:00:00Z", "allow-all", json!({"rules": [{}]})),
                at(
                    "2024-01-02T00:00:00Z",
                    "deny-get",
                    json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
                ),
            ],
            request(),
            false,
        ),
        (
            "the second rule matches",
            allow(json!({"to": [{"operation": {"paths": ["/headers"]}}]}))
                .into_iter()
                .map(|(n, c, d, mut spec)| {
                    spec["rules"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"from": [{"source": {"namespaces": ["bar"]}}]}));
                    (n, c, d, spec)
                })
                .collect(),
            request(),
            true,
        ),
        (
            "a dry-run DENY does not deny",
            vec![(
                "dry",
                "2024-01-01T00:00:00Z",
                true,
                json!({"action": "DENY", "rules": [{}]}),
            )],
            request(),
            true,
        ),
        (
            "oldest ALLOW is reported",
            vec![
                at("2024-01-02T00:00:00Z", "a-newer", json!({"rules": [{}]})),
                at("2024-01-01T00:00:00Z", "z-older", json!({"rules": [{}]})),
            ],
            request(),
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (name, policies, request, allowed) in &rows {
        let (control, proxy) = both_sides(policies, request);
        if control != proxy {
            failures.push(format!("{name}: control plane {control}, proxy {proxy}"));
        } else if proxy.allowed != *allowed {
            failures.push(format!("{name}: expected allowed={allowed}, got {proxy}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn the_decision_names_the_policy_and_rule_and_reports_audit_and_dry_run() {
    let policies = vec![
        (
            "z-older",
            "2024-01-01T00:00:00Z",
            false,
            json!({"rules": [{"to": [{"operation": {"paths": ["/x"]}}]}, {}]}),
        ),
        (
            "a-newer",
            "2024-01-02T00:00:00Z",
            false,
            json!({"rules": [{}]}),
        ),
        (
            "audit",
            "2024-01-01T00:00:00Z",
            false,
            json!({"action": "AUDIT", "rules": [{}]}),
        ),
        (
            "dry",
            "2024-01-01T00:00:00Z",
            true,
            json!({"action": "DENY", "rules": [{}]}),
        ),
    ];
    let (_, proxy) = both_sides(&policies, &request());
    assert_eq!(
        proxy.to_string(),
        "allowed by ALLOW policy foo/z-older rule 1; audited by foo/audit rule 0; dry-run DENY policies would deny (matched foo/dry rule 0)"
    );
    assert_eq!(proxy.audited.len(), 1);
    assert_eq!(proxy.dry_run.len(), 1);
    assert!(!proxy.dry_run[0].allowed);
}

/// A policy message as the control plane builds it, then `change`d as a broken sender might.
fn malformed(change: impl FnOnce(&mut AuthorizationPolicy)) -> ConfigRejection {
    let mut policy = AuthorizationPolicy {
        namespace: "foo".into(),
        name: "bad".into(),
        action: Action::Allow as i32,
        rules: vec![Rule {
            from: vec![Source {
                namespaces: vec!["bar".into()],
                ..Default::default()
            }],
            to: vec![Operation {
                ports: vec!["8000".into()],
                ..Default::default()
            }],
            when: vec![Condition {
                key: "source.ip".into(),
                values: vec!["10.0.0.0/8".into()],
                not_values: vec![],
            }],
        }],
        dry_run: false,
    };
    assert!(decode_config(&config(vec![policy.clone()]).encode_to_vec()).is_ok());
    change(&mut policy);
    match decode_config(&config(vec![policy]).encode_to_vec()) {
        Ok(_) => panic!("the malformed policy compiled"),
        Err(rejection) => rejection,
    }
}

#[test]
fn malformed_policies_from_the_wire_are_refused_by_name_and_path() {
    type Change = Box<dyn FnOnce(&mut AuthorizationPolicy)>;
    let rows: Vec<(&str, Change, &str)> = vec![
        (
            "unknown action",
            Box::new(|p| p.action = 9),
            "unknown action 9; expected ALLOW, DENY, AUDIT or CUSTOM",
        ),
        (
            "no name",
            Box::new(|p| p.name.clear()),
            "namespace and name are required",
        ),
        (
            "DENY without rules",
            Box::new(|p| {
                p.action = Action::Deny as i32;
                p.rules.clear()
            }),
            "spec.rules: DENY action without `rules`",
        ),
        (
            "bad CIDR",
            Box::new(|p| p.rules[0].from[0].ip_blocks = vec!["10.0.0.0/33".into()]),
            "spec.rules[0].from[0].source.ipBlocks[0]: bad CIDR range (10.0.0.0/33)",
        ),
        (
            "empty value",
            Box::new(|p| p.rules[0].from[0].principals = vec![String::new()]),
            "spec.rules[0].from[0].source.principals[0]: empty value not allowed",
        ),
        (
            "empty source",
            Box::new(|p| p.rules[0].from[0] = Source::default()),
            "spec.rules[0].from[0].source: `from.source` must not be empty",
        ),
        (
            "accounts with namespaces",
            Box::new(|p| p.rules[0].from[0].service_accounts = vec!["sleep".into()]),
            "spec.rules[0].from[0].source: cannot set serviceAccounts with namespaces or principals",
        ),
        (
            "bad port",
            Box::new(|p| p.rules[0].to[0].ports = vec!["http".into()]),
            "spec.rules[0].to[0].operation.ports[0]: bad port (http)",
        ),
        (
            "bad path template",
            Box::new(|p| p.rules[0].to[0].paths = vec!["/a/{id}".into()]),
            "spec.rules[0].to[0].operation.paths[0]",
        ),
        (
            "unknown key",
            Box::new(|p| p.rules[0].when[0].key = "request.size".into()),
            "spec.rules[0].when[0].key: unknown attribute: request.size",
        ),
        (
            "bad map key",
            Box::new(|p| p.rules[0].when[0].key = "request.headers".into()),
            "spec.rules[0].when[0].key: bad key (request.headers)",
        ),
        (
            "no values",
            Box::new(|p| p.rules[0].when[0].values.clear()),
            "spec.rules[0].when[0]: at least one of `values` or `notValues`",
        ),
        (
            "bad IP value",
            Box::new(|p| p.rules[0].when[0].values = vec!["ten".into()]),
            "spec.rules[0].when[0].values[0]: bad IP address (ten)",
        ),
        (
            "CUSTOM with identities",
            Box::new(|p| p.action = Action::Custom as i32),
            "spec.rules[0].from[0].source.namespaces: namespaces is currently not supported with CUSTOM action",
        ),
    ];
    let mut failures = Vec::new();
    for (name, change, reason) in rows {
        let rejection = malformed(change);
        if rejection.resource != "authorizationpolicy/foo/bad" && name != "no name" {
            failures.push(format!("{name}: resource {}", rejection.resource));
        }
        if !rejection.reason.starts_with(reason) {
            failures.push(format!(
                "{name}: reason {:?}, expected it to start with {reason:?}",
                rejection.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bytes_that_are_not_a_configuration_are_refused() {
    let rejection = decode_config(b"\xff\xff\xff").expect_err("refused");
    assert_eq!(rejection.resource, "config");
    assert!(
        rejection.reason.starts_with("not a ProxyConfig"),
        "{rejection}"
    );
}

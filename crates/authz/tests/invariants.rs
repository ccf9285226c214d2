//! Property tests of invariants that follow from Istio's evaluation order (docs/SEMANTICS.md#authz-evaluation):
//! DENY first, then "no ALLOW policy → allow", then "allow iff some ALLOW rule matches".
//! - adding a DENY policy never turns a deny into an allow;
//! - adding an ALLOW policy to a workload that had no ALLOW policy never turns a deny into an allow
//!   (the deny can only have come from a DENY rule, which still matches) — it may turn allows into denies;
//! - adding an ALLOW policy to a workload that already had one never turns an allow into a deny;
//! - AUDIT policies never change `allowed`;
//! - the input order of policies changes nothing, explanation included.

mod common;

use std::collections::BTreeMap;

use ironmesh_authz::{AuthzIndex, Decision, Http, Peer, PolicyObject, Request};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const WORKLOAD_NS: &str = "foo";

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

fn string_values(
    field: &'static str,
    vocab: &'static [&'static str],
) -> impl Strategy<Value = (String, Value)> {
    proptest::sample::subsequence(vocab, 1..=vocab.len().min(2))
        .prop_map(move |v| (field.to_owned(), json!(v)))
}

fn source() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        string_values("namespaces", &["foo", "bar", "*", "b*"]),
        string_values("notNamespaces", &["foo", "bar"]),
        string_values(
            "principals",
            &["cluster.local/ns/foo/sa/sleep", "*", "*/sa/sleep"]
        ),
        string_values("notPrincipals", &["*", "cluster.local/ns/bar/sa/sleep"]),
        string_values("ipBlocks", &["10.0.0.0/24", "10.0.1.5", "0.0.0.0/0"]),
        string_values("notIpBlocks", &["10.0.0.0/24"]),
        string_values("notRequestPrincipals", &["*"]),
    ];
    proptest::collection::vec(field, 1..3)
        .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>()))
}

fn operation() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        string_values("ports", &["8000", "9000"]),
        string_values("notPorts", &["9000"]),
        string_values("paths", &["/ip", "/headers", "/h*", "*"]),
        string_values("notPaths", &["/headers"]),
        string_values("methods", &["GET", "POST"]),
        string_values("hosts", &["httpbin.foo", "*.example.com"]),
    ];
    proptest::collection::vec(field, 1..3)
        .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>()))
}

fn condition() -> impl Strategy<Value = Value> {
    let key_values = prop_oneof![
        Just(("source.namespace", vec!["foo"])),
        Just(("destination.port", vec!["8000"])),
        Just(("request.headers[x-tenant]", vec!["blue", "*"])),
        Just(("source.ip", vec!["10.0.0.0/16"])),
        Just(("connection.sni", vec!["*"])),
    ];
    (key_values, any::<bool>()).prop_map(|((key, values), negate)| {
        let field = if negate { "notValues" } else { "values" };
        json!({"key": key, field: values})
    })
}

fn rule() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(source(), 0..3),
        proptest::collection::vec(operation(), 0..3),
        proptest::collection::vec(condition(), 0..2),
    )
        .prop_map(|(from, to, when)| {
            let mut rule = Map::new();
            if !from.is_empty() {
                rule.insert(
                    "from".into(),
                    from.into_iter().map(|s| json!({"source": s})).collect(),
                );
            }
            if !to.is_empty() {
                rule.insert(
                    "to".into(),
                    to.into_iter().map(|o| json!({"operation": o})).collect(),
                );
            }
            if !when.is_empty() {
                rule.insert("when".into(), Value::Array(when));
            }
            Value::Object(rule)
        })
}

/// A policy spec with the given action (as a JSON value, `null` = the ALLOW default). DENY needs at
/// least one rule (Istio refuses a DENY without `rules`).
fn spec_with(action: &'static str) -> impl Strategy<Value = Value> {
    let min_rules = usize::from(action == "DENY");
    (
        proptest::collection::vec(rule(), min_rules..3),
        proptest::option::of(pick(&["httpbin", "sleep"])),
    )
        .prop_map(move |(rules, app)| {
            let mut spec = json!({"action": action, "rules": rules});
            if let Some(app) = app {
                spec["selector"] = json!({"matchLabels": {"app": app}});
            }
            spec
        })
}

fn any_spec() -> impl Strategy<Value = Value> {
    prop_oneof![spec_with("ALLOW"), spec_with("DENY"), spec_with("AUDIT")]
}

/// Policies in the workload's namespace, the root namespace or elsewhere, uniquely named.
fn policies() -> impl Strategy<Value = Vec<PolicyObject>> {
    proptest::collection::vec(
        (pick(&[WORKLOAD_NS, "istio-system", "bar"]), any_spec()),
        0..5,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (namespace, spec))| PolicyObject {
                namespace: namespace.into(),
                name: format!("p{i}"),
                creation_timestamp: None,
                annotations: Default::default(),
                spec,
            })
            .collect()
    })
}

fn request() -> impl Strategy<Value = Request> {
    let peer = proptest::option::of(pick(&["foo", "bar"]));
    let http = proptest::option::of((
        pick(&["GET", "POST"]),
        pick(&["/ip", "/headers", "/admin"]),
        pick(&["httpbin.foo:8000", "api.example.com"]),
        proptest::option::of(pick(&["blue", "red"])),
    ));
    (
        peer,
        pick(&["10.0.0.2", "10.0.1.5", "192.168.1.1"]),
        pick(&[8000u16, 9000]),
        any::<bool>(),
        http,
    )
        .prop_map(|(peer, ip, port, sni, http)| Request {
            peer: peer.map(|ns| Peer::from_principal(&format!("cluster.local/ns/{ns}/sa/sleep"))),
            source_ip: ip.parse().expect("ip"),
            destination_ip: "10.0.0.3".parse().expect("ip"),
            destination_port: port,
            sni: sni.then(|| "httpbin.foo.svc.cluster.local".to_owned()),
            http: http.map(|(method, path, host, tenant)| Http {
                method: method.into(),
                path: path.into(),
                host: host.into(),
                headers: tenant
                    .map(|t| vec![("X-Tenant".to_owned(), t.to_owned())])
                    .unwrap_or_default(),
            }),
        })
}

fn workload_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), "httpbin".to_owned())])
}

fn decide(policies: &[PolicyObject], request: &Request) -> Decision {
    let index =
        AuthzIndex::new(policies.to_vec(), "istio-system").expect("generated policies are valid");
    index
        .policies_for(WORKLOAD_NS, &workload_labels())
        .evaluate(request)
}

fn has_allow_policy(policies: &[PolicyObject]) -> bool {
    let index = AuthzIndex::new(policies.to_vec(), "istio-system").expect("valid");
    index
        .policies_for(WORKLOAD_NS, &workload_labels())
        .policies()
        .any(|(_, action)| action == ironmesh_authz::Action::Allow)
}

fn added(policies: &[PolicyObject], spec: Value) -> Vec<PolicyObject> {
    let mut more = policies.to_vec();
    more.push(PolicyObject {
        namespace: WORKLOAD_NS.into(),
        name: "added".into(),
        creation_timestamp: None,
        annotations: Default::default(),
        spec,
    });
    more
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn adding_a_deny_policy_never_turns_a_deny_into_an_allow(
        policies in policies(), deny in spec_with("DENY"), request in request()
    ) {
        let before = decide(&policies, &request);
        let after = decide(&added(&policies, deny), &request);
        prop_assert!(before.allowed || !after.allowed, "before: {before}; after: {after}");
    }

    #[test]
    fn adding_the_first_allow_policy_never_turns_a_deny_into_an_allow(
        policies in policies(), allow in spec_with("ALLOW"), request in request()
    ) {
        prop_assume!(!has_allow_policy(&policies));
        let before = decide(&policies, &request);
        let after = decide(&added(&policies, allow), &request);
        prop_assert!(before.allowed || !after.allowed, "before: {before}; after: {after}");
    }

    #[test]
    fn adding_another_allow_policy_never_turns_an_allow_into_a_deny(
        policies in policies(), existing in spec_with("ALLOW"), allow in spec_with("ALLOW"), request in request()
    ) {
        // Make sure an ALLOW policy already applies: the workload's namespace, no selector.
        let mut existing = existing;
        existing.as_object_mut().expect("spec object").remove("selector");
        let mut policies = policies;
        policies.push(PolicyObject { namespace: WORKLOAD_NS.into(), name: "existing".into(), creation_timestamp: None, annotations: Default::default(), spec: existing });
        prop_assert!(has_allow_policy(&policies));
        let before = decide(&policies, &request);
        let after = decide(&added(&policies, allow), &request);
        prop_assert!(!before.allowed || after.allowed, "before: {before}; after: {after}");
    }

    #[test]
    fn audit_policies_never_change_the_decision(
        policies in policies(), audit in spec_with("AUDIT"), request in request()
    ) {
        let before = decide(&policies, &request);
        let after = decide(&added(&policies, audit), &request);
        prop_assert_eq!(before.allowed, after.allowed);
        prop_assert_eq!(before.by, after.by);
    }

    #[test]
    fn policy_input_order_changes_nothing(policies in policies(), request in request()) {
        let mut reversed = policies.clone();
        reversed.reverse();
        prop_assert_eq!(decide(&policies, &request), decide(&reversed, &request));
    }

    #[test]
    fn a_deny_by_a_policy_names_a_deny_policy_and_an_allow_by_a_policy_an_allow_policy(
        policies in policies(), request in request()
    ) {
        let decision = decide(&policies, &request);
        if let Some(by) = &decision.by {
            let expected = if decision.allowed { ironmesh_authz::Action::Allow } else { ironmesh_authz::Action::Deny };
            prop_assert_eq!(by.action, expected);
        }
    }
}

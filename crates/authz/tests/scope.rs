//! Which policies apply to a workload (docs/SEMANTICS.md#authz-scope; API-AP = istio/api `authorization_policy.proto` `selector`; Istio docs concepts
//! "Policy Target"): own namespace + root namespace, narrowed by `selector.matchLabels`.

mod common;

use std::collections::BTreeMap;

use common::{decide_for, mtls_from, policy};
use ironmesh_authz::{Action, AuthzIndex, PolicyObject};
use serde_json::json;

fn allow_nothing(namespace: &str, name: &str, selector: Option<&[(&str, &str)]>) -> PolicyObject {
    let mut spec = json!({});
    if let Some(labels) = selector {
        let labels: BTreeMap<_, _> = labels.iter().copied().collect();
        spec["selector"] = json!({"matchLabels": labels});
    }
    policy(namespace, name, spec)
}

fn applies(policies: Vec<PolicyObject>, namespace: &str, labels: &[(&str, &str)]) -> bool {
    !decide_for(policies, namespace, labels, &mtls_from("foo")).allowed
}

/// (case named after the rule, the policy, workload namespace, workload labels, whether it applies)
type ScopeRow = (
    &'static str,
    PolicyObject,
    &'static str,
    &'static [(&'static str, &'static str)],
    bool,
);

#[test]
fn scope_table() {
    let httpbin: &[(&str, &str)] = &[("app", "httpbin"), ("version", "v1")];
    let sleep: &[(&str, &str)] = &[("app", "sleep")];
    let rows: Vec<ScopeRow> = vec![
        (
            "authz-scope: a namespace policy without selector applies to every workload of the namespace",
            allow_nothing("foo", "p", None),
            "foo",
            sleep,
            true,
        ),
        (
            "authz-scope: a namespace policy does not apply in another namespace",
            allow_nothing("foo", "p", None),
            "bar",
            httpbin,
            false,
        ),
        (
            "authz-scope: a selector narrows a namespace policy to matching workloads",
            allow_nothing("foo", "p", Some(&[("app", "httpbin")])),
            "foo",
            httpbin,
            true,
        ),
        (
            "authz-scope: a selector skips workloads whose labels differ",
            allow_nothing("foo", "p", Some(&[("app", "httpbin")])),
            "foo",
            sleep,
            false,
        ),
        (
            "API-AP every matchLabels entry must match",
            allow_nothing("foo", "p", Some(&[("app", "httpbin"), ("version", "v2")])),
            "foo",
            httpbin,
            false,
        ),
        (
            "API-AP an empty matchLabels selects all workloads",
            allow_nothing("foo", "p", Some(&[])),
            "foo",
            sleep,
            true,
        ),
        (
            "authz-scope: a root-namespace policy without selector is mesh-wide",
            allow_nothing("istio-system", "p", None),
            "bar",
            sleep,
            true,
        ),
        (
            "authz-scope: a root-namespace policy with selector applies to matching workloads in all namespaces",
            allow_nothing("istio-system", "p", Some(&[("app", "httpbin")])),
            "bar",
            httpbin,
            true,
        ),
        (
            "authz-scope: a root-namespace policy with selector skips other workloads",
            allow_nothing("istio-system", "p", Some(&[("app", "httpbin")])),
            "bar",
            sleep,
            false,
        ),
        (
            "authz-scope: a selector in a non-root namespace never reaches other namespaces",
            allow_nothing("bar", "p", Some(&[("app", "httpbin")])),
            "foo",
            httpbin,
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (name, policy, namespace, labels, want) in rows {
        if applies(vec![policy], namespace, labels) != want {
            failures.push(format!("{name}: expected applies={want}"));
        }
    }
    common::assert_no_failures(&failures);
}

#[test]
fn root_namespace_is_configurable() {
    let policies = vec![
        allow_nothing("mesh-root", "root", None),
        allow_nothing("istio-system", "plain", None),
    ];
    let index = AuthzIndex::new(policies, "mesh-root").expect("valid");
    assert_eq!(index.root_namespace(), "mesh-root");
    let applied = index.policies_for("bar", &BTreeMap::new());
    let names: Vec<String> = applied
        .policies()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(names, ["mesh-root/root"]);
}

#[test]
fn applied_policies_list_deny_then_allow_then_audit() {
    let policies = vec![
        policy("foo", "audit", json!({"action": "AUDIT", "rules": [{}]})),
        policy("foo", "allow", json!({"rules": [{}]})),
        policy(
            "istio-system",
            "deny",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}),
        ),
    ];
    let index = AuthzIndex::new(policies, "istio-system").expect("valid");
    assert_eq!(index.len(), 3);
    let applied = index.policies_for("foo", &BTreeMap::new());
    let listed: Vec<(String, Action)> = applied
        .policies()
        .map(|(n, a)| (n.to_string(), a))
        .collect();
    assert_eq!(
        listed,
        [
            ("istio-system/deny".to_owned(), Action::Deny),
            ("foo/allow".to_owned(), Action::Allow),
            ("foo/audit".to_owned(), Action::Audit)
        ]
    );
    assert!(
        index
            .policies_for("bar", &BTreeMap::new())
            .policies()
            .all(|(n, _)| &*n.namespace == "istio-system")
    );
    assert!(
        AuthzIndex::new(vec![], "istio-system")
            .expect("empty")
            .policies_for("foo", &BTreeMap::new())
            .is_empty()
    );
}

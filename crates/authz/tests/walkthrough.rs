//! The walkthrough's authorization cases: namespace isolation in `foo` and a DENY on `/headers` for `bar`
//! (docs/SEMANTICS.md#authz-examples; Istio docs security-policy-examples).

mod common;

use common::{decide, mtls_from, plaintext, policy, with_path};
use serde_json::json;

fn namespace_isolation() -> ironmesh_authz::PolicyObject {
    policy(
        "foo",
        "foo-isolation",
        json!({"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}),
    )
}

#[test]
fn namespace_isolation_allows_foo_denies_bar_and_plaintext_legacy() {
    let from_foo = decide(vec![namespace_isolation()], &mtls_from("foo"));
    assert!(from_foo.allowed);
    assert_eq!(
        from_foo.to_string(),
        "allowed by ALLOW policy foo/foo-isolation rule 0"
    );

    let from_bar = decide(vec![namespace_isolation()], &mtls_from("bar"));
    assert!(!from_bar.allowed);
    assert_eq!(
        from_bar.to_string(),
        "denied: ALLOW policies apply (foo/foo-isolation) but none matches"
    );

    // Legacy has no sidecar: plaintext, no identity, so `namespaces` cannot match (docs/SEMANTICS.md#authz-identity).
    let from_legacy = decide(vec![namespace_isolation()], &plaintext());
    assert!(!from_legacy.allowed);
    assert!(from_legacy.by.is_none());
}

#[test]
fn namespace_isolation_does_not_reach_other_namespaces() {
    let decision = common::decide_for(
        vec![namespace_isolation()],
        "bar",
        &[("app", "httpbin")],
        &mtls_from("legacy"),
    );
    assert!(decision.allowed);
    assert_eq!(decision.to_string(), "allowed: no ALLOW policy applies");
}

#[test]
fn deny_headers_for_bar_denies_only_bar_on_headers() {
    let deny = policy(
        "foo",
        "deny-headers",
        json!({"action": "DENY", "rules": [{
            "from": [{"source": {"namespaces": ["bar"]}}],
            "to": [{"operation": {"paths": ["/headers"]}}],
        }]}),
    );
    let bar_headers = decide(vec![deny.clone()], &with_path(mtls_from("bar"), "/headers"));
    assert!(!bar_headers.allowed);
    assert_eq!(
        bar_headers.to_string(),
        "denied by DENY policy foo/deny-headers rule 0"
    );

    assert!(
        decide(vec![deny.clone()], &mtls_from("bar")).allowed,
        "bar on /ip is not denied"
    );
    assert!(
        decide(vec![deny.clone()], &with_path(mtls_from("foo"), "/headers")).allowed,
        "foo on /headers is fine"
    );
    // With the namespace isolation also in place, bar is kept out everywhere, foo still gets in.
    let both = vec![deny, namespace_isolation()];
    assert!(!decide(both.clone(), &mtls_from("bar")).allowed);
    assert!(decide(both, &with_path(mtls_from("foo"), "/headers")).allowed);
}

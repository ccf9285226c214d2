//! How the fields and condition keys added for Istio fidelity match, one row each, as Istio's generator
//! compiles them to Envoy RBAC (istio/istio pilot/pkg/security/authz/model/generator.go): serviceAccounts,
//! trustDomains, namespaces with `*` anywhere, source.serviceAccount, source.trustDomain, path templates
//! (pilot/pkg/security/authz/matcher/template.go → Envoy's URI template), connection.sni,
//! experimental.envoy.filters and JWT-only attributes on TCP. Then CUSTOM, targetRef(s) and dry-run
//! policies at the policy level.

mod common;

use std::collections::BTreeMap;

use common::{decide, mtls_from, plaintext, policy, tcp, with_path};
use ironmesh_authz::{Action, AuthzIndex, DEFAULT_ROOT_NAMESPACE, Peer, PolicyObject, Request};
use serde_json::{Value, json};

fn from_principal(principal: &str) -> Request {
    Request {
        peer: Some(Peer::from_principal(principal)),
        ..plaintext()
    }
}

fn with_sni(mut request: Request, sni: &str) -> Request {
    request.sni = Some(sni.into());
    request
}

/// (Istio rule, one ALLOW rule, request, whether the rule matches)
type Row = (&'static str, Value, Request, bool);

fn run(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for (name, rule, request, matches) in rows {
        let spec = json!({"action": "ALLOW", "rules": [rule]});
        let decision = decide(vec![policy("foo", "p", spec)], &request);
        if decision.allowed != matches {
            failures.push(format!(
                "{name}: expected match={matches}, got `{decision}`"
            ));
        }
    }
    common::assert_no_failures(&failures);
}

fn from(source: Value) -> Value {
    json!({"from": [{"source": source}]})
}

fn paths(paths: &[&str]) -> Value {
    json!({"to": [{"operation": {"paths": paths}}]})
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Value {
    let mut condition = json!({"key": key});
    if !values.is_empty() {
        condition["values"] = json!(values);
    }
    if !not_values.is_empty() {
        condition["notValues"] = json!(not_values);
    }
    json!({"when": [condition]})
}

#[test]
fn source_fields() {
    run(vec![
        (
            "serviceAccountRegex: `sa` means the policy's namespace",
            from(json!({"serviceAccounts": ["sleep"]})),
            mtls_from("foo"),
            true,
        ),
        (
            "serviceAccountRegex: `sa` in another namespace does not match",
            from(json!({"serviceAccounts": ["sleep"]})),
            mtls_from("bar"),
            false,
        ),
        (
            "serviceAccountRegex: `ns/sa` names the namespace",
            from(json!({"serviceAccounts": ["bar/sleep"]})),
            mtls_from("bar"),
            true,
        ),
        (
            "serviceAccountRegex: the account name is whole (sleep ≠ sleepy)",
            from(json!({"serviceAccounts": ["foo/sleepy"]})),
            mtls_from("foo"),
            false,
        ),
        (
            "serviceAccounts need an mTLS peer (principalAuthenticated)",
            from(json!({"serviceAccounts": ["foo/sleep"]})),
            plaintext(),
            false,
        ),
        (
            "notServiceAccounts: plaintext is not in the list",
            from(json!({"notServiceAccounts": ["foo/sleep"]})),
            plaintext(),
            true,
        ),
        (
            "notServiceAccounts: a listed account does not match",
            from(json!({"notServiceAccounts": ["sleep"]})),
            mtls_from("foo"),
            false,
        ),
        (
            "srcTrustDomainGenerator: exact trust domain",
            from(json!({"trustDomains": ["cluster.local"]})),
            mtls_from("bar"),
            true,
        ),
        (
            "srcTrustDomainGenerator: another trust domain",
            from(json!({"trustDomains": ["example.org"]})),
            mtls_from("bar"),
            false,
        ),
        (
            "srcTrustDomainGenerator: `cluster.*` stays inside the trust domain",
            from(json!({"trustDomains": ["cluster.*"]})),
            from_principal("cluster.local/ns/foo/sa/a"),
            true,
        ),
        (
            "srcTrustDomainGenerator: `*` needs an authenticated peer",
            from(json!({"trustDomains": ["*"]})),
            plaintext(),
            false,
        ),
        (
            "notTrustDomains: a foreign trust domain passes",
            from(json!({"notTrustDomains": ["cluster.local"]})),
            from_principal("other.td/ns/foo/sa/a"),
            true,
        ),
        (
            "srcNamespaceGenerator: `*` anywhere in a namespace",
            from(json!({"namespaces": ["f*o"]})),
            mtls_from("foo"),
            true,
        ),
        (
            "StringMatcherWithPrefix: a `*` inside a principal is a literal",
            from(json!({"principals": ["cluster.local/ns/*/sa/sleep"]})),
            mtls_from("foo"),
            false,
        ),
        (
            "requestPrincipalGenerator: HTTP-only, an ALLOW rule on TCP is dropped",
            from(json!({"notRequestPrincipals": ["*"]})),
            tcp(mtls_from("foo")),
            false,
        ),
    ]);
}

#[test]
fn path_templates() {
    run(vec![
        (
            "{*} matches one segment",
            paths(&["/api/{*}/items"]),
            with_path(mtls_from("foo"), "/api/v1/items"),
            true,
        ),
        (
            "{*} does not span segments",
            paths(&["/api/{*}/items"]),
            with_path(mtls_from("foo"), "/api/v1/v2/items"),
            false,
        ),
        (
            "{*} is not empty",
            paths(&["/api/{*}/items"]),
            with_path(mtls_from("foo"), "/api//items"),
            false,
        ),
        (
            "{**} spans segments",
            paths(&["/static/{**}"]),
            with_path(mtls_from("foo"), "/static/css/site.css?v=2"),
            true,
        ),
        (
            "{**} keeps the slash before it",
            paths(&["/static/{**}"]),
            with_path(mtls_from("foo"), "/static"),
            false,
        ),
        (
            "templates match the normalized path",
            paths(&["/api/{*}/items"]),
            with_path(mtls_from("foo"), "/api/./v1/x/../items"),
            true,
        ),
        (
            "notPaths templates",
            json!({"to": [{"operation": {"notPaths": ["/admin/{**}"]}}]}),
            with_path(mtls_from("foo"), "/admin/users/1"),
            false,
        ),
    ]);
}

#[test]
fn condition_keys() {
    let sni = "outbound_.8000_._.httpbin.foo.svc.cluster.local";
    run(vec![
        (
            "connSNIGenerator: the SNI the client sidecar sent",
            when(
                "connection.sni",
                &["outbound_.8000_._.httpbin.foo.svc.cluster.local"],
                &[],
            ),
            with_sni(mtls_from("foo"), sni),
            true,
        ),
        (
            "connSNIGenerator: suffix match",
            when("connection.sni", &["*.httpbin.foo.svc.cluster.local"], &[]),
            with_sni(mtls_from("foo"), sni),
            true,
        ),
        (
            "connSNIGenerator: no SNI matches no value",
            when("connection.sni", &["*"], &[]),
            mtls_from("foo"),
            false,
        ),
        (
            "connSNIGenerator: notValues",
            when("connection.sni", &[], &["outbound_.9000_*"]),
            with_sni(mtls_from("foo"), sni),
            true,
        ),
        (
            "source.serviceAccount: `ns/sa`",
            when("source.serviceAccount", &["bar/sleep"], &[]),
            mtls_from("bar"),
            true,
        ),
        (
            "source.serviceAccount: `sa` is in the policy namespace",
            when("source.serviceAccount", &["sleep"], &[]),
            mtls_from("bar"),
            false,
        ),
        (
            "source.trustDomain: values",
            when("source.trustDomain", &["cluster.local"], &[]),
            mtls_from("bar"),
            true,
        ),
        (
            "source.trustDomain: notValues on plaintext",
            when("source.trustDomain", &[], &["cluster.local"]),
            plaintext(),
            true,
        ),
        (
            "source.namespace: `*` anywhere",
            when("source.namespace", &["b*r"], &[]),
            mtls_from("bar"),
            true,
        ),
        (
            "experimental.envoy.filters: no such filter metadata in ironmesh, values never match",
            when(
                "experimental.envoy.filters.network.mysql_proxy[db.table]",
                &["[update]"],
                &[],
            ),
            mtls_from("foo"),
            false,
        ),
        (
            "experimental.envoy.filters: notValues always match",
            when(
                "experimental.envoy.filters.network.mysql_proxy[db.table]",
                &[],
                &["[update]"],
            ),
            mtls_from("foo"),
            true,
        ),
        (
            "request.auth.claims: HTTP-only, dropped from an ALLOW rule on TCP",
            when("request.auth.claims[groups]", &[], &["admin"]),
            tcp(mtls_from("foo")),
            false,
        ),
    ]);
}

fn object(name: &str, spec: Value, dry_run: Option<&str>) -> PolicyObject {
    let mut object = policy("foo", name, spec);
    if let Some(value) = dry_run {
        object.annotations = BTreeMap::from([("istio.io/dry-run".to_owned(), value.to_owned())]);
    }
    object
}

fn evaluate(policies: Vec<PolicyObject>, request: &Request) -> ironmesh_authz::Decision {
    let index = AuthzIndex::new(policies, DEFAULT_ROOT_NAMESPACE).expect("valid policies");
    let labels = BTreeMap::from([("app".to_owned(), "httpbin".to_owned())]);
    index.policies_for("foo", &labels).evaluate(request)
}

#[test]
fn dry_run_policies_are_evaluated_and_never_enforced() {
    let deny_all = json!({"action": "DENY", "rules": [{}]});
    // builder.go isDryRun: a dry-run DENY-all denies nothing, its shadow result says it would.
    let decision = evaluate(
        vec![object("deny-all", deny_all.clone(), Some("true"))],
        &mtls_from("foo"),
    );
    assert!(decision.allowed, "{decision}");
    assert_eq!(decision.dry_run.len(), 1);
    assert_eq!(decision.dry_run[0].action, Action::Deny);
    assert!(!decision.dry_run[0].allowed);
    assert_eq!(
        decision.to_string(),
        "allowed: no ALLOW policy applies; dry-run DENY policies would deny (matched foo/deny-all rule 0)"
    );
    // "false", and a value strconv.ParseBool refuses, enforce the policy.
    for value in ["false", "yes"] {
        let decision = evaluate(
            vec![object("deny-all", deny_all.clone(), Some(value))],
            &mtls_from("foo"),
        );
        assert!(!decision.allowed, "{value}: {decision}");
        assert!(decision.dry_run.is_empty());
    }
    // A dry-run ALLOW does not switch the workload to default-deny, and reports what it would do.
    let allow_bar = json!({"rules": [{"from": [{"source": {"namespaces": ["bar"]}}]}]});
    let decision = evaluate(
        vec![object("allow-bar", allow_bar, Some("True"))],
        &mtls_from("foo"),
    );
    assert!(decision.allowed, "{decision}");
    assert_eq!(
        decision.to_string(),
        "allowed: no ALLOW policy applies; dry-run ALLOW policies would deny (no rule matches)"
    );
    // An enforced DENY that denies first: the ALLOW shadow engine is never reached (Envoy filter order).
    let decision = evaluate(
        vec![
            object("deny-all", deny_all.clone(), None),
            object("allow-all", json!({"rules": [{}]}), Some("1")),
        ],
        &mtls_from("foo"),
    );
    assert!(!decision.allowed);
    assert!(decision.dry_run.is_empty(), "{decision}");
}

#[test]
fn custom_without_a_provider_denies_what_it_matches_and_target_refs_skip_sidecars() {
    let custom = json!({"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]});
    let decision = evaluate(
        vec![object("ext", custom.clone(), None)],
        &with_path(mtls_from("foo"), "/admin/x"),
    );
    assert_eq!(
        decision.to_string(),
        "denied by CUSTOM policy foo/ext rule 0"
    );
    assert!(evaluate(vec![object("ext", custom, None)], &mtls_from("foo")).allowed);
    // policyattachment.go ShouldAttachPolicy: a policy with targetRef(s) never applies to a sidecar.
    let targeted = json!({"action": "DENY", "targetRefs": [{"kind": "Service", "group": "", "name": "httpbin"}], "rules": [{}]});
    let decision = evaluate(vec![object("gw", targeted, None)], &mtls_from("foo"));
    assert!(decision.allowed, "{decision}");
    let index = AuthzIndex::new(
        vec![object("gw", json!({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}}), None)],
        DEFAULT_ROOT_NAMESPACE,
    )
    .unwrap();
    assert!(index.policies_for("foo", &BTreeMap::new()).is_empty());
}

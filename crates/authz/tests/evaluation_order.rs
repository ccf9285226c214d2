//! Evaluation order and defaults (docs/SEMANTICS.md#authz-evaluation and
//! docs/SEMANTICS.md#authz-tcp; API-AP = the header of istio/api `security/v1beta1/authorization_policy.proto`): each row lists the policies of namespace `foo` and the expected explanation.

mod common;

use common::{decide, mtls_from, plaintext, policy, tcp, with_path};
use ironmesh_authz::{PolicyObject, Request};
use serde_json::{Value, json};

fn p(name: &str, spec: Value) -> PolicyObject {
    policy("foo", name, spec)
}

fn allow_all(name: &str) -> PolicyObject {
    p(name, json!({"rules": [{}]}))
}

fn deny_path(name: &str, path: &str) -> PolicyObject {
    p(
        name,
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": [path]}}]}]}),
    )
}

struct Row {
    name: &'static str,
    policies: Vec<PolicyObject>,
    request: Request,
    expect: &'static str,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "authz-evaluation: no policy: allow",
            policies: vec![],
            request: plaintext(),
            expect: "allowed: no ALLOW policy applies",
        },
        Row {
            name: "authz-evaluation: `spec: {}` is allow-nothing",
            policies: vec![p("allow-nothing", json!({}))],
            request: mtls_from("foo"),
            expect: "denied: ALLOW policies apply (foo/allow-nothing) but none matches",
        },
        Row {
            name: "authz-evaluation: `rules: [{}]` (ALLOW) is allow-all",
            policies: vec![allow_all("allow-all")],
            request: plaintext(),
            expect: "allowed by ALLOW policy foo/allow-all rule 0",
        },
        Row {
            name: "authz-evaluation: DENY + `rules: [{}]` is deny-all",
            policies: vec![p("deny-all", json!({"action": "DENY", "rules": [{}]}))],
            request: mtls_from("foo"),
            expect: "denied by DENY policy foo/deny-all rule 0",
        },
        Row {
            name: "builder.go getBadCustomDenyRules: CUSTOM without a known provider denies what its rules match",
            policies: vec![
                allow_all("allow-all"),
                p(
                    "ext-authz",
                    json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]}),
                ),
            ],
            request: mtls_from("foo"),
            expect: "denied by CUSTOM policy foo/ext-authz rule 0",
        },
        Row {
            name: "builder.go getBadCustomDenyRules: requests CUSTOM rules do not match go on to DENY and ALLOW",
            policies: vec![
                allow_all("allow-all"),
                p(
                    "ext-authz",
                    json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
                ),
            ],
            request: mtls_from("foo"),
            expect: "allowed by ALLOW policy foo/allow-all rule 0",
        },
        Row {
            name: "authz-evaluation: DENY is evaluated before ALLOW",
            policies: vec![allow_all("allow-all"), deny_path("deny-ip", "/ip")],
            request: mtls_from("foo"),
            expect: "denied by DENY policy foo/deny-ip rule 0",
        },
        Row {
            name: "authz-evaluation: a DENY that does not match falls through to ALLOW",
            policies: vec![allow_all("allow-all"), deny_path("deny-admin", "/admin")],
            request: mtls_from("foo"),
            expect: "allowed by ALLOW policy foo/allow-all rule 0",
        },
        Row {
            name: "authz-evaluation: default deny only once an ALLOW policy applies",
            policies: vec![deny_path("deny-admin", "/admin")],
            request: mtls_from("bar"),
            expect: "allowed: no ALLOW policy applies",
        },
        Row {
            name: "authz-evaluation: any matching ALLOW policy allows",
            policies: vec![
                p(
                    "allow-bar",
                    json!({"rules": [{"from": [{"source": {"namespaces": ["bar"]}}]}]}),
                ),
                p(
                    "allow-foo",
                    json!({"rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}),
                ),
            ],
            request: mtls_from("foo"),
            expect: "allowed by ALLOW policy foo/allow-foo rule 0",
        },
        Row {
            name: "API-AP a policy matches if any rule matches; the first matching rule is reported",
            policies: vec![p(
                "two-rules",
                json!({"rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}, {"to": [{"operation": {"paths": ["/ip"]}}]}]}),
            )],
            request: mtls_from("foo"),
            expect: "allowed by ALLOW policy foo/two-rules rule 1",
        },
        Row {
            name: "authz-evaluation: several ALLOW policies, none matches: all are named",
            policies: vec![
                p("a", json!({})),
                p(
                    "b",
                    json!({"rules": [{"from": [{"source": {"namespaces": ["baz"]}}]}]}),
                ),
            ],
            request: mtls_from("foo"),
            expect: "denied: ALLOW policies apply (foo/a, foo/b) but none matches",
        },
        Row {
            name: "API-AP AUDIT never changes the decision and is not an ALLOW policy",
            policies: vec![p("audit-all", json!({"action": "AUDIT", "rules": [{}]}))],
            request: mtls_from("foo"),
            expect: "allowed: no ALLOW policy applies; audited by foo/audit-all rule 0",
        },
        Row {
            name: "API-AP AUDIT is reported alongside a DENY",
            policies: vec![
                p("audit-all", json!({"action": "AUDIT", "rules": [{}]})),
                deny_path("deny-ip", "/ip"),
            ],
            request: mtls_from("foo"),
            expect: "denied by DENY policy foo/deny-ip rule 0; audited by foo/audit-all rule 0",
        },
        Row {
            name: "API-AP AUDIT that does not match is not reported",
            policies: vec![
                p(
                    "audit-admin",
                    json!({"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
                ),
                allow_all("allow-all"),
            ],
            request: mtls_from("foo"),
            expect: "allowed by ALLOW policy foo/allow-all rule 0",
        },
        Row {
            name: "authz-tcp: HTTP-only fields on TCP: a DENY on a path denies the whole TCP port",
            policies: vec![deny_path("deny-headers", "/headers")],
            request: tcp(mtls_from("foo")),
            expect: "denied by DENY policy foo/deny-headers rule 0",
        },
        Row {
            name: "authz-tcp: HTTP-only fields on TCP: a DENY with notPaths also counts as matching",
            policies: vec![p(
                "deny-not-ip",
                json!({"action": "DENY", "rules": [{"to": [{"operation": {"notPaths": ["/ip"]}}]}]}),
            )],
            request: tcp(mtls_from("foo")),
            expect: "denied by DENY policy foo/deny-not-ip rule 0",
        },
        Row {
            name: "authz-tcp: HTTP-only fields on TCP: a DENY on a header condition denies the TCP port",
            policies: vec![p(
                "deny-header",
                json!({"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-evil]", "values": ["1"]}]}]}),
            )],
            request: tcp(mtls_from("foo")),
            expect: "denied by DENY policy foo/deny-header rule 0",
        },
        Row {
            name: "authz-tcp: HTTP-only fields on TCP: the DENY still needs its TCP fields to match",
            policies: vec![p(
                "deny-bar-headers",
                json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["bar"]}}], "to": [{"operation": {"paths": ["/headers"]}}]}]}),
            )],
            request: tcp(mtls_from("foo")),
            expect: "allowed: no ALLOW policy applies",
        },
        Row {
            name: "authz-tcp: HTTP-only fields on TCP: an ALLOW with methods is ignored, so the only ALLOW denies",
            policies: vec![p(
                "allow-get",
                json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
            )],
            request: tcp(mtls_from("foo")),
            expect: "denied: ALLOW policies apply (foo/allow-get) but none matches",
        },
        Row {
            name: "authz-tcp: HTTP-only fields on TCP: another ALLOW rule with TCP fields still allows",
            policies: vec![p(
                "allow-mixed",
                json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}, {"to": [{"operation": {"ports": ["8000"]}}]}]}),
            )],
            request: tcp(mtls_from("foo")),
            expect: "allowed by ALLOW policy foo/allow-mixed rule 1",
        },
        Row {
            name: "Istio pathNormalization BASE: a DENY on /headers also catches /./headers",
            policies: vec![deny_path("deny-headers", "/headers")],
            request: with_path(mtls_from("bar"), "/./headers"),
            expect: "denied by DENY policy foo/deny-headers rule 0",
        },
        Row {
            name: "Istio pathNormalization BASE: a DENY on /headers also catches /ip/../headers",
            policies: vec![deny_path("deny-headers", "/headers")],
            request: with_path(mtls_from("bar"), "/ip/../headers?x=1"),
            expect: "denied by DENY policy foo/deny-headers rule 0",
        },
        Row {
            name: "Istio pathNormalization BASE: a DENY on /headers also catches /%68eaders",
            policies: vec![deny_path("deny-headers", "/headers")],
            request: with_path(mtls_from("bar"), "/%68eaders"),
            expect: "denied by DENY policy foo/deny-headers rule 0",
        },
        Row {
            name: "authz-examples: Require mTLS: DENY notPrincipals [*] denies plaintext",
            policies: vec![p(
                "require-mtls",
                json!({"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}),
            )],
            request: plaintext(),
            expect: "denied by DENY policy foo/require-mtls rule 0",
        },
        Row {
            name: "authz-examples: Require mTLS: DENY notPrincipals [*] lets mTLS through",
            policies: vec![p(
                "require-mtls",
                json!({"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}),
            )],
            request: mtls_from("bar"),
            expect: "allowed: no ALLOW policy applies",
        },
        Row {
            name: "authz-examples: isolation DENY form: notNamespaces [foo] denies bar and plaintext",
            policies: vec![p(
                "deny-others",
                json!({"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["foo"]}}]}]}),
            )],
            request: plaintext(),
            expect: "denied by DENY policy foo/deny-others rule 0",
        },
        Row {
            name: "Istio authn-policy task \"require a valid token\" (from memory, unconfirmed): DENY notRequestPrincipals [*] denies requests without a JWT",
            policies: vec![p(
                "require-jwt",
                json!({"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]}),
            )],
            request: mtls_from("foo"),
            expect: "denied by DENY policy foo/require-jwt rule 0",
        },
    ]
}

#[test]
fn evaluation_order_table() {
    let mut failures = Vec::new();
    for row in rows() {
        let decision = decide(row.policies, &row.request);
        let got = decision.to_string();
        if got != row.expect || decision.allowed != row.expect.starts_with("allowed") {
            failures.push(format!(
                "{}:\n  expected `{}`\n  got      `{got}`",
                row.name, row.expect
            ));
        }
    }
    common::assert_no_failures(&failures);
}

#[test]
fn older_policies_are_evaluated_and_reported_first() {
    let mut newer = deny_path("a-newer", "/ip");
    newer.creation_timestamp = Some("2026-02-01T00:00:00Z".into());
    let mut older = deny_path("z-older", "/ip");
    older.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
    let decision = decide(vec![newer.clone(), older.clone()], &mtls_from("foo"));
    assert_eq!(
        decision.to_string(),
        "denied by DENY policy foo/z-older rule 0"
    );
    assert_eq!(decide(vec![older, newer], &mtls_from("foo")), decision);
}

#[test]
fn decision_fields_name_policy_and_rule() {
    let decision = decide(
        vec![deny_path("deny-headers", "/headers")],
        &with_path(mtls_from("bar"), "/headers"),
    );
    let by = decision.by.expect("a DENY decided");
    assert_eq!(
        (&*by.namespace, &*by.name, by.rule),
        ("foo", "deny-headers", 0)
    );
    assert_eq!(by.action, ironmesh_authz::Action::Deny);
    assert!(decision.audited.is_empty());
    assert!(decision.allow_policies.is_empty());
}

#[test]
fn explain_lists_every_applied_policy_with_its_matching_rule() {
    let policies = vec![
        deny_path("deny-admin", "/admin"),
        p("allow-nothing", json!({})),
        p(
            "allow-foo",
            json!({"rules": [{"from": [{"source": {"namespaces": ["bar"]}}]}, {"from": [{"source": {"namespaces": ["foo"]}}]}]}),
        ),
        p("audit-all", json!({"action": "AUDIT", "rules": [{}]})),
    ];
    let index = ironmesh_authz::AuthzIndex::new(policies, "istio-system").expect("valid");
    let applied = index.policies_for("foo", &Default::default());
    let lines: Vec<String> = applied
        .explain(&mtls_from("foo"))
        .iter()
        .map(|m| {
            format!(
                "{} {} {}/{:?}",
                m.action, m.policy, m.rule_count, m.matching_rule
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "DENY foo/deny-admin 1/None",
            "ALLOW foo/allow-foo 2/Some(1)",
            "ALLOW foo/allow-nothing 0/None",
            "AUDIT foo/audit-all 1/Some(0)",
        ]
    );
}

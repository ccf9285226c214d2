//! Invalid specs are refused with the field path and a hint (istio/api `security/v1beta1/authorization_policy.proto`; Istio's validation refuses
//! empty sources/operations and conditions without values). One row per error.

use ironmesh_authz::{AuthorizationPolicy, AuthzError, AuthzIndex, PolicyObject};
use serde_json::{Value, json};

fn error_of(spec: Value) -> String {
    match AuthorizationPolicy::from_spec(&spec) {
        Ok(policy) => panic!("expected an error for {spec}, got {policy:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn error_table() {
    let rows: Vec<(&str, Value, &str)> = vec![
        (
            "CUSTOM without rules is refused (Istio: never triggered)",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
            "spec.rules: CUSTOM action without `rules` is meaningless",
        ),
        (
            "unknown action",
            json!({"action": "DENNY"}),
            "spec.action: unknown action `DENNY`; expected ALLOW, DENY, AUDIT or CUSTOM",
        ),
        (
            "action must be a string",
            json!({"action": 1}),
            "spec.action: expected a string",
        ),
        (
            "spec must be an object",
            json!([1]),
            "spec: expected an object",
        ),
        (
            "unknown spec field",
            json!({"rule": []}),
            "spec.rule: unknown field",
        ),
        (
            "targetRef needs a name",
            json!({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io"}}),
            "spec.targetRef.name: targetRef name must be set",
        ),
        (
            "selector labels are strings",
            json!({"selector": {"matchLabels": {"v": 1}}}),
            "spec.selector.matchLabels.v: expected a string label value",
        ),
        (
            "rules is a list",
            json!({"rules": {}}),
            "spec.rules: expected a list",
        ),
        (
            "namespaces is a list of strings",
            json!({"rules": [{"from": [{"source": {"namespaces": "foo"}}]}]}),
            "spec.rules[0].from[0].source.namespaces: expected a list of strings",
        ),
        (
            "list items are strings",
            json!({"rules": [{"from": [{"source": {"principals": ["a", 3]}}]}]}),
            "spec.rules[0].from[0].source.principals[1]: expected a string",
        ),
        (
            "typo in a source field",
            json!({"rules": [{"from": [{"source": {"namespace": ["foo"]}}]}]}),
            "spec.rules[0].from[0].source.namespace: unknown field",
        ),
        (
            "empty source",
            json!({"rules": [{"from": [{"source": {}}]}]}),
            "spec.rules[0].from[0].source: `from.source` must not be empty",
        ),
        (
            "missing source",
            json!({"rules": [{"from": [{}]}]}),
            "spec.rules[0].from[0].source: `from.source` must not be nil",
        ),
        (
            "empty operation",
            json!({"rules": [{}, {"to": [{"operation": {}}]}]}),
            "spec.rules[1].to[0].operation: `to.operation` must not be empty",
        ),
        (
            "bad port",
            json!({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}),
            "spec.rules[0].to[0].operation.ports[0]: bad port (http)",
        ),
        (
            "port out of range",
            json!({"rules": [{"to": [{"operation": {"notPorts": [70000]}}]}]}),
            "spec.rules[0].to[0].operation.notPorts[0]: bad port (70000)",
        ),
        (
            "bad CIDR",
            json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/40"]}}]}]}),
            "spec.rules[0].from[0].source.ipBlocks[0]: bad CIDR range (10.0.0.0/40)",
        ),
        (
            "braces outside a path template",
            json!({"rules": [{"to": [{"operation": {"paths": ["/a/{id}/b"]}}]}]}),
            "spec.rules[0].to[0].operation.paths[0]: invalid or unsupported path /a/{id}/b",
        ),
        (
            "unknown when key",
            json!({"rules": [{"when": [{"key": "source.user", "values": ["x"]}]}]}),
            "spec.rules[0].when[0].key: unknown attribute: source.user; supported keys:",
        ),
        (
            "when key required",
            json!({"rules": [{"when": [{"values": ["x"]}]}]}),
            "spec.rules[0].when[0].key: `key` must not be empty",
        ),
        (
            "when needs values",
            json!({"rules": [{"when": [{"key": "source.namespace"}]}]}),
            "spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key source.namespace",
        ),
        (
            "when destination.port values are ports",
            json!({"rules": [{"when": [{"key": "destination.port", "values": ["x"]}]}]}),
            "spec.rules[0].when[0].values[0]: bad port (x)",
        ),
        (
            "when source.ip values are CIDRs",
            json!({"rules": [{"when": [{"key": "source.ip", "notValues": ["foo"]}]}]}),
            "spec.rules[0].when[0].notValues[0]: bad IP address (foo)",
        ),
        (
            "empty header name",
            json!({"rules": [{"when": [{"key": "request.headers[]", "values": ["x"]}]}]}),
            "spec.rules[0].when[0].key: bad key (request.headers[]): should have format a[b]",
        ),
    ];
    let mut failures = Vec::new();
    for (name, spec, fragment) in rows {
        let message = error_of(spec);
        if !message.contains(fragment) {
            failures.push(format!("{name}: `{message}` does not contain `{fragment}`"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_specs_parse() {
    let specs = [
        json!({}),
        json!(null),
        json!({"action": "AUDIT", "rules": [{}]}),
        json!({"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW", "rules": [{
            "from": [{"source": {"principals": ["*"], "notNamespaces": ["bar"], "ipBlocks": ["10.0.0.1", "fd00::/8"],
                                 "requestPrincipals": ["iss/sub"], "notRemoteIpBlocks": ["1.2.3.0/24"]}}],
            "to": [{"operation": {"hosts": ["*.foo"], "ports": [8000, "9000"], "methods": ["GET"], "notPaths": ["/admin*"]}}],
            "when": [{"key": "request.headers[X-Tenant]", "values": ["blue"]}, {"key": "request.auth.claims[groups]", "values": ["admin"]},
                     {"key": "connection.sni", "notValues": ["*.evil"]}, {"key": "destination.ip", "values": ["10.0.0.0/8"]}],
        }]}),
    ];
    for spec in specs {
        AuthorizationPolicy::from_spec(&spec)
            .unwrap_or_else(|e| panic!("{spec} should parse: {e}"));
    }
    let deny = AuthorizationPolicy::from_spec(&json!({"action": "DENY", "rules": [{}, {}]}))
        .expect("valid");
    assert_eq!(
        (deny.action(), deny.rule_count()),
        (ironmesh_authz::Action::Deny, 2)
    );
}

#[test]
fn an_invalid_policy_fails_the_index_naming_it() {
    let good = PolicyObject {
        namespace: "foo".into(),
        name: "ok".into(),
        creation_timestamp: None,
        annotations: Default::default(),
        spec: json!({}),
    };
    let bad = PolicyObject {
        namespace: "foo".into(),
        name: "ext-authz".into(),
        creation_timestamp: None,
        annotations: Default::default(),
        spec: json!({"action": "CUSTOM"}),
    };
    let error = AuthzIndex::new(vec![good, bad], "istio-system")
        .expect_err("CUSTOM without rules is refused");
    assert!(
        matches!(&error, AuthzError::InvalidPolicy { namespace, name, .. } if namespace == "foo" && name == "ext-authz")
    );
    assert!(
        error.to_string().starts_with(
            "AuthorizationPolicy foo/ext-authz is invalid: spec.rules: CUSTOM action without `rules`"
        ),
        "{error}"
    );
}

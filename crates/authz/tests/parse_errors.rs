//! Invalid specs are refused with the field path and a hint (API-AP schema; Istio's validation refuses
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
            "CUSTOM is refused",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
            "spec.action: CUSTOM is not supported",
        ),
        (
            "unknown action",
            json!({"action": "DENNY"}),
            "spec.action: unknown action `DENNY`; expected ALLOW, DENY or AUDIT",
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
            "targetRef is refused",
            json!({"targetRef": {"kind": "Gateway"}}),
            "spec.targetRef: targeting gateways or services is not supported",
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
            "spec.rules[0].from[0].source: a source must set at least one field",
        ),
        (
            "missing source",
            json!({"rules": [{"from": [{}]}]}),
            "spec.rules[0].from[0].source: expected a source object",
        ),
        (
            "empty operation",
            json!({"rules": [{}, {"to": [{"operation": {}}]}]}),
            "spec.rules[1].to[0].operation: an operation must set at least one field",
        ),
        (
            "bad port",
            json!({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}),
            "spec.rules[0].to[0].operation.ports[0]: `\"http\"` is not a port",
        ),
        (
            "port out of range",
            json!({"rules": [{"to": [{"operation": {"notPorts": [70000]}}]}]}),
            "spec.rules[0].to[0].operation.notPorts[0]: `70000` is not a port",
        ),
        (
            "bad CIDR",
            json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/40"]}}]}]}),
            "spec.rules[0].from[0].source.ipBlocks[0]: `10.0.0.0/40` is not an IP address or CIDR block",
        ),
        (
            "star in the middle",
            json!({"rules": [{"to": [{"operation": {"paths": ["/a*b"]}}]}]}),
            "spec.rules[0].to[0].operation.paths[0]: `/a*b`: `*` is only allowed alone",
        ),
        (
            "path template",
            json!({"rules": [{"to": [{"operation": {"paths": ["/a/{*}/b"]}}]}]}),
            "path templates ({*}, {**}) are not supported",
        ),
        (
            "unknown when key",
            json!({"rules": [{"when": [{"key": "source.user", "values": ["x"]}]}]}),
            "spec.rules[0].when[0].key: unknown key `source.user`; supported keys:",
        ),
        (
            "when key required",
            json!({"rules": [{"when": [{"values": ["x"]}]}]}),
            "spec.rules[0].when[0].key: required",
        ),
        (
            "when needs values",
            json!({"rules": [{"when": [{"key": "source.namespace"}]}]}),
            "spec.rules[0].when[0]: a condition needs `values` or `notValues`",
        ),
        (
            "when destination.port values are ports",
            json!({"rules": [{"when": [{"key": "destination.port", "values": ["x"]}]}]}),
            "spec.rules[0].when[0].values[0]: `\"x\"` is not a port",
        ),
        (
            "when source.ip values are CIDRs",
            json!({"rules": [{"when": [{"key": "source.ip", "notValues": ["foo"]}]}]}),
            "spec.rules[0].when[0].notValues[0]: `foo` is not an IP address",
        ),
        (
            "empty header name",
            json!({"rules": [{"when": [{"key": "request.headers[]", "values": ["x"]}]}]}),
            "unknown key `request.headers[]`",
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
        spec: json!({}),
    };
    let bad = PolicyObject {
        namespace: "foo".into(),
        name: "ext-authz".into(),
        creation_timestamp: None,
        spec: json!({"action": "CUSTOM"}),
    };
    let error = AuthzIndex::new(vec![good, bad], "istio-system").expect_err("CUSTOM is refused");
    assert!(
        matches!(&error, AuthzError::InvalidPolicy { namespace, name, .. } if namespace == "foo" && name == "ext-authz")
    );
    assert!(
        error.to_string().starts_with(
            "AuthorizationPolicy foo/ext-authz is invalid: spec.action: CUSTOM is not supported"
        ),
        "{error}"
    );
}

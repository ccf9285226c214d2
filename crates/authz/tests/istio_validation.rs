//! Istio's own validation verdicts for AuthorizationPolicy, row for row: every case of
//! `TestValidateAuthorizationPolicy` (istio/istio pkg/config/validation/validation_test.go) with the Go
//! proto written as the YAML/JSON a user applies, and the attribute, wildcard, service account and trust
//! domain tables of pkg/config/security/security_test.go (`TestValidateCondition`,
//! `TestCheckWildcardValues`, `TestCheckTrustDomainValues`). Each row names the Istio case it checks.

use ironmesh_authz::{AuthorizationPolicy, validation_warnings};
use serde_json::{Value, json};

/// (Istio case name, spec, `istio.io/dry-run` annotation, valid, warning expected)
type Row = (&'static str, Value, Option<&'static str>, bool, bool);

/// Istio's verdict for one policy: valid or not, and whether it warns.
fn verdict(spec: &Value, dry_run: Option<&str>) -> (bool, bool) {
    let valid = AuthorizationPolicy::from_spec(spec)
        .and_then(|policy| policy.check_dry_run(dry_run))
        .is_ok();
    (valid, !validation_warnings(spec).is_empty())
}

fn httpbin_v1() -> Value {
    json!({"matchLabels": {"app": "httpbin", "version": "v1"}})
}

fn gateway_deny(target: Value, extra: Value) -> Value {
    let mut spec = json!({
        "action": "DENY",
        "rules": [{"from": [{"source": {"principals": ["temp"]}}],
                   "to": [{"operation": {"ports": ["8080"], "methods": ["GET", "DELETE"]}}]}],
    });
    for (key, value) in target
        .as_object()
        .unwrap()
        .iter()
        .chain(extra.as_object().unwrap())
    {
        spec[key] = value.clone();
    }
    spec
}

fn source(source: Value) -> Value {
    json!({"rules": [{"from": [{"source": source}]}]})
}

fn operation(operation: Value) -> Value {
    json!({"rules": [{"to": [{"operation": operation}]}]})
}

fn when(condition: Value) -> Value {
    json!({"selector": {"matchLabels": {"app": "httpbin"}}, "rules": [{"when": [condition]}]})
}

fn gateway_ref() -> Value {
    json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "foo"})
}

#[test]
fn test_validate_authorization_policy_table() {
    let rows: Vec<Row> = vec![
        (
            "good",
            json!({"selector": httpbin_v1(), "rules": [{
                "from": [{"source": {"principals": ["sa1"]}}, {"source": {"principals": ["sa2"]}}],
                "to": [{"operation": {"methods": ["GET"]}}, {"operation": {"methods": ["POST"]}}],
                "when": [{"key": "source.ip", "values": ["1.2.3.4", "5.6.7.0/24"]},
                         {"key": "request.headers[:authority]", "values": ["v1", "v2"]}],
            }]}),
            None,
            true,
            false,
        ),
        (
            "good serviceAccounts",
            json!({"selector": httpbin_v1(), "rules": [{"from": [
                {"source": {"serviceAccounts": ["ns1/sa1", "ns2/sa2"]}},
                {"source": {"principals": ["sa2"]}},
            ]}]}),
            None,
            true,
            false,
        ),
        (
            "serviceAccounts and namespaces",
            json!({"selector": httpbin_v1(), "rules": [{"from": [
                {"source": {"serviceAccounts": ["ns1/sa1", "ns2/sa2"], "namespaces": ["ns"]}},
            ]}]}),
            None,
            false,
            false,
        ),
        (
            "custom-good",
            json!({"action": "CUSTOM", "provider": {"name": "my-custom-authz"}, "rules": [{}]}),
            None,
            true,
            false,
        ),
        (
            "custom-empty-provider",
            json!({"action": "CUSTOM", "provider": {"name": ""}, "rules": [{}]}),
            None,
            false,
            false,
        ),
        (
            "custom-nil-provider",
            json!({"action": "CUSTOM", "rules": [{}]}),
            None,
            false,
            false,
        ),
        (
            "custom-invalid-rule",
            json!({"action": "CUSTOM", "provider": {"name": "my-custom-authz"}, "rules": [{
                "from": [{"source": {"namespaces": ["ns"], "notNamespaces": ["ns"], "principals": ["id"],
                                     "notPrincipals": ["id"], "requestPrincipals": ["req"], "notRequestPrincipals": ["req"]}}],
                "when": [{"key": "source.namespace", "values": ["source.namespace1"], "notValues": ["source.namespace2"]},
                         {"key": "source.principal", "values": ["source.principal1"], "notValues": ["source.principal2"]},
                         {"key": "request.auth.claims[a]", "values": ["claims1"], "notValues": ["claims2"]}],
            }]}),
            None,
            false,
            false,
        ),
        (
            "provider-wrong-action",
            json!({"action": "ALLOW", "provider": {"name": ""}, "rules": [{}]}),
            None,
            false,
            false,
        ),
        (
            "allow-rules-nil",
            json!({"action": "ALLOW"}),
            None,
            true,
            false,
        ),
        (
            "dry-run-valid-allow",
            json!({"action": "ALLOW"}),
            Some("true"),
            true,
            false,
        ),
        (
            "dry-run-valid-deny",
            json!({"action": "DENY", "rules": [{}]}),
            Some("false"),
            true,
            false,
        ),
        (
            "dry-run-invalid-value",
            json!({"action": "ALLOW"}),
            Some("foo"),
            false,
            false,
        ),
        (
            "dry-run-invalid-action-custom",
            json!({"action": "CUSTOM"}),
            Some("true"),
            false,
            false,
        ),
        (
            "dry-run-invalid-action-audit",
            json!({"action": "AUDIT"}),
            Some("true"),
            false,
            false,
        ),
        (
            "deny-rules-nil",
            json!({"action": "DENY"}),
            None,
            false,
            false,
        ),
        (
            "selector-empty-value",
            json!({"selector": {"matchLabels": {"app": "", "version": "v1"}}}),
            None,
            true,
            false,
        ),
        (
            "selector-empty-key",
            json!({"selector": {"matchLabels": {"app": "httpbin", "": "v1"}}}),
            None,
            false,
            false,
        ),
        (
            "selector-empty-labels",
            json!({"selector": {}}),
            None,
            true,
            true,
        ),
        (
            "selector-wildcard-value",
            json!({"selector": {"matchLabels": {"app": "httpbin-*"}}}),
            None,
            false,
            false,
        ),
        (
            "selector-wildcard-key",
            json!({"selector": {"matchLabels": {"app-*": "httpbin"}}}),
            None,
            false,
            false,
        ),
        (
            "target-ref-good",
            gateway_deny(json!({"targetRef": gateway_ref()}), json!({})),
            None,
            true,
            false,
        ),
        (
            "target-refs-good",
            gateway_deny(json!({"targetRefs": [gateway_ref()]}), json!({})),
            None,
            true,
            false,
        ),
        (
            "target-refs-good-service",
            gateway_deny(
                json!({"targetRefs": [{"group": "", "kind": "Service", "name": "foo"}]}),
                json!({}),
            ),
            None,
            true,
            false,
        ),
        (
            "target-ref-non-empty-namespace",
            gateway_deny(
                json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "foo", "namespace": "bar"}}),
                json!({}),
            ),
            None,
            false,
            false,
        ),
        (
            "target-ref-empty-name",
            gateway_deny(
                json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway"}}),
                json!({}),
            ),
            None,
            false,
            false,
        ),
        (
            "target-ref-wrong-group",
            gateway_deny(
                json!({"targetRef": {"group": "wrong-group", "kind": "Gateway", "name": "foo"}}),
                json!({}),
            ),
            None,
            false,
            false,
        ),
        (
            "target-ref-wrong-kind",
            gateway_deny(
                json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "wrong-kind", "name": "foo"}}),
                json!({}),
            ),
            None,
            false,
            false,
        ),
        (
            "target-ref-and-selector-cannot-both-be-set",
            gateway_deny(
                json!({"targetRef": gateway_ref()}),
                json!({"selector": {"matchLabels": {"app": "httpbin"}}}),
            ),
            None,
            false,
            false,
        ),
        (
            "target-refs-and-selector-cannot-both-be-set",
            gateway_deny(
                json!({"targetRefs": [gateway_ref()]}),
                json!({"selector": {"matchLabels": {"app": "httpbin"}}}),
            ),
            None,
            false,
            false,
        ),
        (
            "from-empty",
            json!({"rules": [{"from": []}]}),
            None,
            false,
            false,
        ),
        (
            "source-nil",
            json!({"rules": [{"from": [{}]}]}),
            None,
            false,
            false,
        ),
        ("source-empty", source(json!({})), None, false, false),
        (
            "to-empty",
            json!({"rules": [{"to": []}]}),
            None,
            false,
            false,
        ),
        (
            "operation-nil",
            json!({"rules": [{"to": [{}]}]}),
            None,
            false,
            false,
        ),
        ("operation-empty", operation(json!({})), None, false, false),
        (
            "Principals-empty",
            source(json!({"principals": ["p1", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotPrincipals-empty",
            source(json!({"notPrincipals": ["p1", ""]})),
            None,
            false,
            false,
        ),
        (
            "RequestPrincipals-empty",
            source(json!({"requestPrincipals": ["p1", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotRequestPrincipals-empty",
            source(json!({"notRequestPrincipals": ["p1", ""]})),
            None,
            false,
            false,
        ),
        (
            "Namespaces-empty",
            source(json!({"namespaces": ["ns", ""]})),
            None,
            false,
            false,
        ),
        (
            "ServiceAccounts-empty",
            source(json!({"serviceAccounts": ["ns/sa", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotNamespaces-empty",
            source(json!({"notNamespaces": ["ns", ""]})),
            None,
            false,
            false,
        ),
        (
            "IpBlocks-empty",
            source(json!({"ipBlocks": ["1.2.3.4", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotIpBlocks-empty",
            source(json!({"notIpBlocks": ["1.2.3.4", ""]})),
            None,
            false,
            false,
        ),
        (
            "RemoteIpBlocks-empty",
            source(json!({"remoteIpBlocks": ["1.2.3.4", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotRemoteIpBlocks-empty",
            source(json!({"notRemoteIpBlocks": ["1.2.3.4", ""]})),
            None,
            false,
            false,
        ),
        (
            "Hosts-empty",
            operation(json!({"hosts": ["host", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotHosts-empty",
            operation(json!({"notHosts": ["host", ""]})),
            None,
            false,
            false,
        ),
        (
            "Ports-empty",
            operation(json!({"ports": ["80", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotPorts-empty",
            operation(json!({"notPorts": ["80", ""]})),
            None,
            false,
            false,
        ),
        (
            "Methods-empty",
            operation(json!({"methods": ["GET", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotMethods-empty",
            operation(json!({"notMethods": ["GET", ""]})),
            None,
            false,
            false,
        ),
        (
            "Paths-empty",
            operation(json!({"paths": ["/path", ""]})),
            None,
            false,
            false,
        ),
        (
            "NotPaths-empty",
            operation(json!({"notPaths": ["/path", ""]})),
            None,
            false,
            false,
        ),
        (
            "value-empty",
            json!({"rules": [{"when": [{"key": "request.headers[:authority]", "values": ["v1", ""]}]}]}),
            None,
            false,
            false,
        ),
        (
            "invalid ip and port in ipBlocks",
            json!({"rules": [{
                "from": [{"source": {"ipBlocks": ["1.2.3.4", "ip1"], "notIpBlocks": ["5.6.7.8", "ip2"]}}],
                "to": [{"operation": {"ports": ["80", "port1"], "notPorts": ["90", "port2"]}}],
            }]}),
            None,
            false,
            false,
        ),
        (
            "invalid ip and port in remoteIpBlocks",
            json!({"rules": [{
                "from": [{"source": {"remoteIpBlocks": ["1.2.3.4", "ip1"], "notRemoteIpBlocks": ["5.6.7.8", "ip2"]}}],
                "to": [{"operation": {"ports": ["80", "port1"], "notPorts": ["90", "port2"]}}],
            }]}),
            None,
            false,
            false,
        ),
        (
            "condition-key-missing",
            when(json!({"values": ["v1", "v2"]})),
            None,
            false,
            false,
        ),
        (
            "condition-key-empty",
            when(json!({"key": "", "values": ["v1", "v2"]})),
            None,
            false,
            false,
        ),
        (
            "condition-value-missing",
            when(json!({"key": "source.principal"})),
            None,
            false,
            false,
        ),
        (
            "condition-value-invalid",
            json!({"rules": [{"when": [{"key": "source.ip", "values": ["a.b.c.d"]}]}]}),
            None,
            false,
            false,
        ),
        (
            "condition-notValue-invalid",
            json!({"rules": [{"when": [{"key": "source.ip", "notValues": ["a.b.c.d"]}]}]}),
            None,
            false,
            false,
        ),
        (
            "condition-unknown",
            when(json!({"key": "key1", "values": ["v1"]})),
            None,
            false,
            false,
        ),
        (
            "L7DenyWithFrom",
            json!({"action": "DENY", "selector": {"matchLabels": {"app": "httpbin"}},
                   "rules": [{"from": [{"source": {"requestPrincipals": ["example.com/sub-1"]}}]}]}),
            None,
            true,
            true,
        ),
        (
            "L7DenyWithTo",
            json!({"action": "DENY", "selector": {"matchLabels": {"app": "httpbin"}},
                   "rules": [{"to": [{"operation": {"methods": ["GET", "DELETE"]}}]}]}),
            None,
            true,
            true,
        ),
        (
            "L7DenyWithFromAndTo",
            json!({"action": "DENY", "selector": {"matchLabels": {"app": "httpbin"}}, "rules": [{
                "from": [{"source": {"principals": ["temp"]}}],
                "to": [{"operation": {"methods": ["GET", "DELETE"]}}],
            }]}),
            None,
            true,
            true,
        ),
        (
            "L7DenyWithFromAndToWithPort",
            json!({"action": "DENY", "selector": {"matchLabels": {"app": "httpbin"}}, "rules": [{
                "from": [{"source": {"principals": ["temp"]}}],
                "to": [{"operation": {"ports": ["8080"], "methods": ["GET", "DELETE"]}}],
            }]}),
            None,
            true,
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (name, spec, dry_run, valid, warns) in rows {
        let got = verdict(&spec, dry_run);
        if got != (valid, warns) {
            let error = AuthorizationPolicy::from_spec(&spec).err();
            failures.push(format!(
                "{name}: (valid, warning) = {got:?}, Istio says ({valid}, {warns}); error: {error:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Rules of `ValidateAuthorizationPolicy` that its test table does not exercise, read from
/// pkg/config/validation/validation.go.
#[test]
fn validate_authorization_policy_rules_beyond_the_table() {
    let rows: Vec<(&str, Value, bool)> = vec![
        (
            "CUSTOM without rules never triggers",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
            false,
        ),
        (
            "CUSTOM: serviceAccounts not supported",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"from": [{"source": {"serviceAccounts": ["sa"]}}]}]}),
            false,
        ),
        (
            "CUSTOM: trustDomains not supported",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"from": [{"source": {"trustDomains": ["td"]}}]}]}),
            false,
        ),
        (
            "CUSTOM: source.trustDomain condition not supported",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"when": [{"key": "source.trustDomain", "values": ["td"]}]}]}),
            false,
        ),
        (
            "CUSTOM: ipBlocks, paths and headers are supported",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{
                "from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}],
                "to": [{"operation": {"paths": ["/admin*"]}}],
                "when": [{"key": "request.headers[x-user]", "values": ["a"]}]}]}),
            true,
        ),
        (
            "serviceAccounts with notPrincipals",
            source(json!({"notServiceAccounts": ["sa"], "notPrincipals": ["p"]})),
            false,
        ),
        (
            "serviceAccounts with ipBlocks is fine",
            source(json!({"serviceAccounts": ["sa"], "ipBlocks": ["10.0.0.0/8"]})),
            true,
        ),
        (
            "CheckServiceAccount: more than 16 values",
            source(
                json!({"serviceAccounts": (0..17).map(|i| format!("sa{i}")).collect::<Vec<_>>()}),
            ),
            false,
        ),
        (
            "CheckServiceAccount: wildcard",
            source(json!({"serviceAccounts": ["ns/*"]})),
            false,
        ),
        (
            "CheckServiceAccount: too many slashes",
            source(json!({"notServiceAccounts": ["a/b/c"]})),
            false,
        ),
        (
            "CheckServiceAccount: longer than 320",
            source(json!({"serviceAccounts": ["a".repeat(321)]})),
            false,
        ),
        (
            "trustDomains: valid wildcards",
            source(json!({"trustDomains": ["cluster.local", "*", "td-*", "*.example"]})),
            true,
        ),
        (
            "trustDomains: a SPIFFE ID is not a trust domain",
            source(json!({"notTrustDomains": ["spiffe://cluster.local"]})),
            false,
        ),
        (
            "trustDomains: wildcard in the middle",
            source(json!({"trustDomains": ["a*b"]})),
            false,
        ),
        (
            "principals: a `*` in the middle is accepted (only emptiness is checked)",
            source(json!({"principals": ["cluster.local/ns/*/sa/sleep"]})),
            true,
        ),
        (
            "ports: 0 is a port for ValidatePorts",
            operation(json!({"ports": ["0"]})),
            true,
        ),
        (
            "ports: 65536 is not",
            operation(json!({"ports": ["65536"]})),
            false,
        ),
        (
            "paths: valid templates",
            operation(
                json!({"paths": ["/api/{*}/items", "/static/{**}"], "notPaths": ["/{*}/admin/{**}"]}),
            ),
            true,
        ),
        (
            "paths: {**} before {*}",
            operation(json!({"notPaths": ["/{**}/x/{*}"]})),
            false,
        ),
        ("rule: null is refused", json!({"rules": [null]}), false),
        (
            "rules: [] on DENY is no rules",
            json!({"action": "DENY", "rules": []}),
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (name, spec, valid) in rows {
        let got = AuthorizationPolicy::from_spec(&spec);
        if got.is_ok() != valid {
            failures.push(format!("{name}: got {got:?}, want valid={valid}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// pkg/config/security/security_test.go `TestValidateCondition`, every row, as a `when` condition.
#[test]
fn test_validate_condition_table() {
    let rows: &[(&str, &[&str], bool)] = &[
        ("request.headers[:authority]", &["productpage", ""], false),
        ("request.headers[:authority]", &["productpage"], true),
        ("request.headers[]", &["productpage"], false),
        ("source.ip", &["1.2.3.4", "5.6.7.0/24"], true),
        ("source.ip", &["a.b.c.d"], false),
        ("remote.ip", &["1.2.3.4", "5.6.7.0/24"], true),
        ("remote.ip", &["a.b.c.d"], false),
        ("source.namespace", &["value"], true),
        ("source.user", &["value"], false),
        ("source.principal", &["value"], true),
        ("source.serviceAccount", &["too/many/slashes"], false),
        ("source.serviceAccount", &["/emptyns"], false),
        ("source.serviceAccount", &["emptysa/"], false),
        ("source.serviceAccount", &["ns/sa"], true),
        ("source.serviceAccount", &["sa"], true),
        ("source.trustDomain", &["cluster.local"], true),
        ("source.trustDomain", &["*"], true),
        ("source.trustDomain", &["foo*"], true),
        ("source.trustDomain", &["*bar"], true),
        ("source.trustDomain", &["fo*-bar"], false),
        ("source.trustDomain", &["fo*bar*"], false),
        ("source.trustDomain", &[""], false),
        ("request.auth.principal", &["value"], true),
        ("request.auth.audiences", &["value"], true),
        ("request.auth.presenter", &["value"], true),
        ("request.auth.claims[id]", &["123"], true),
        ("request.auth.claims[]", &["value"], false),
        ("destination.ip", &["1.2.3.4", "5.6.7.0/24"], true),
        ("destination.ip", &["a.b.c.d"], false),
        ("destination.port", &["80", "90"], true),
        ("destination.port", &["80", "x"], false),
        ("destination.labels[app]", &["value"], false),
        ("destination.name", &["value"], false),
        ("destination.namespace", &["value"], false),
        ("destination.user", &["value"], false),
        ("connection.sni", &["value"], true),
        ("experimental.envoy.filters.a.b[c]", &["value"], true),
        ("experimental.envoy.filters.a.b.x", &["value"], false),
    ];
    let mut failures = Vec::new();
    for (key, values, valid) in rows {
        for field in ["values", "notValues"] {
            let spec = json!({"rules": [{"when": [{"key": key, field: values}]}]});
            let got = AuthorizationPolicy::from_spec(&spec);
            if got.is_ok() != *valid {
                failures.push(format!(
                    "{key} {field} {values:?}: got {got:?}, want valid={valid}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The warnings Istio prints, with the field path ironmesh reports them at.
#[test]
fn warnings_name_their_field_and_say_what_istio_says() {
    let warnings = validation_warnings(&json!({"selector": {}}));
    assert_eq!(
        warnings,
        [(
            "spec.selector".to_owned(),
            "workload selector specified without labels".to_owned()
        )]
    );
    let warnings = validation_warnings(&json!({"action": "DENY", "rules": [
        {"to": [{"operation": {"ports": ["8000"]}}]},
        {"to": [{"operation": {"paths": ["/admin"]}}]},
    ]}));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "spec.rules[1]");
    assert!(
        warnings[0]
            .1
            .starts_with("configured AuthorizationPolicy will deny all traffic to TCP ports"),
        "{warnings:?}"
    );
    // ALLOW rules on HTTP attributes do not warn; an invalid spec has its error, not warnings.
    assert!(
        validation_warnings(&json!({"rules": [{"to": [{"operation": {"paths": ["/a"]}}]}]}))
            .is_empty()
    );
    assert!(validation_warnings(&json!({"action": "DENY", "selector": {}})).is_empty());
}

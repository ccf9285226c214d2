//! Table-driven validation cases: Istio's own rules (docs/SEMANTICS.md#validation) and the
//! Kubernetes rules we rely on. Each case gives the field path and a fragment the message must contain.

mod common;

use common::*;
use ironmesh_api::load_documents;

/// (rule, YAML, expected (field path, message fragment) or `None` for valid).
type Case = (&'static str, String, Option<(&'static str, &'static str)>);

fn first_problem(yaml: &str) -> Option<(String, String)> {
    load_documents("case.yaml", yaml)
        .err()
        .map(|e| (e.problems[0].path.clone(), e.problems[0].message.clone()))
}

#[test]
fn validation_table() {
    let deployment = |template: &str| {
        format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:{template}\n"
        )
    };
    let cases: Vec<Case> = vec![
        ("legacy-kinds: MeshPolicy must be named default", doc("authentication.istio.io/v1alpha1", "MeshPolicy", None, "mesh", " {}"), Some(("metadata.name", "expected \"default\""))),
        ("legacy-kinds: MeshPolicy must not have targets", mesh_policy(" {targets: [{name: httpbin}]}"), Some(("spec.targets", "expected none"))),
        ("legacy-kinds: Policy without targets must be named default", policy("foo", "ns-wide", " {peers: [{mtls: {}}]}"), Some(("metadata.name", "must be named default"))),
        ("legacy-kinds: Policy with targets must not be named default", policy("foo", "default", " {targets: [{name: httpbin}]}"), Some(("metadata.name", "must not be named default"))),
        ("legacy-kinds: a valid namespace Policy", policy("foo", "default", " {peers: [{mtls: {}}]}"), None),
        ("legacy-kinds: a valid targeted Policy", policy("foo", "httpbin", " {targets: [{name: httpbin, ports: [{number: 8000}]}]}"), None),
        ("legacy-fields: target name is required", policy("foo", "p", " {targets: [{ports: [{number: 8000}]}]}"), Some(("spec.targets[0].name", "missing"))),
        ("legacy-fields: port selector: number or name (validateAuthNPortSelector)", policy("foo", "p", " {targets: [{name: a, ports: [{}]}]}"), Some(("spec.targets[0].ports[0]", "expected a port number 1-65535 or a port name"))),
        ("legacy-fields: ports are 1-65535", policy("foo", "p", " {targets: [{name: a, ports: [{number: 70000}]}]}"), Some(("spec.targets[0].ports[0].number", "1-65535"))),
        ("legacy-fields: legacy mtls mode is STRICT or PERMISSIVE", mesh_policy(" {peers: [{mtls: {mode: DISABLE}}]}"), Some(("spec.peers[0].mtls.mode", "expected one of STRICT, PERMISSIVE"))),
        ("peerauthentication-fields: portLevelMtls requires a selector", peer_authn("foo", "p", " {portLevelMtls: {8080: {mode: DISABLE}}}"), Some(("spec.portLevelMtls", "requires a selector"))),
        ("peerauthentication-fields: portLevelMtls keys are ports 1-65535", peer_authn("foo", "p", " {selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}}}"), Some(("spec.portLevelMtls.0", "1-65535"))),
        ("peerauthentication-fields: portLevelMtls needs at least one entry", peer_authn("foo", "p", " {selector: {matchLabels: {app: a}}, portLevelMtls: {}}"), Some(("spec.portLevelMtls", "at least one port"))),
        ("peerauthentication-fields: mode is UNSET, DISABLE, PERMISSIVE or STRICT", peer_authn("foo", "p", " {mtls: {mode: STRCT}}"), Some(("spec.mtls.mode", "did you mean STRICT?"))),
        ("peerauthentication-fields: a valid PeerAuthentication with port-level mTLS", peer_authn("foo", "p", " {selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}"), None),
        ("destinationrule-hosts: DestinationRule needs a host", rule("foo", "r", " {trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"), Some(("spec.host", "missing"))),
        ("destinationrule-tls: MUTUAL needs clientCertificate", rule("foo", "r", " {host: a, trafficPolicy: {tls: {mode: MUTUAL, privateKey: /k}}}"), Some(("spec.trafficPolicy.tls.clientCertificate", "MUTUAL requires"))),
        ("destinationrule-tls: MUTUAL needs privateKey", rule("foo", "r", " {host: a, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c}}}"), Some(("spec.trafficPolicy.tls.privateKey", "MUTUAL requires"))),
        ("destinationrule-tls: MUTUAL in a port-level setting needs certificates too", rule("foo", "r", " {host: a, trafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: MUTUAL, clientCertificate: /c}}]}}"), Some(("spec.trafficPolicy.portLevelSettings[0].tls.privateKey", "MUTUAL requires"))),
        ("destinationrule-tls: MUTUAL with credentialName is fine", rule("foo", "r", " {host: a, trafficPolicy: {tls: {mode: MUTUAL, credentialName: secret}}}"), None),
        ("destinationrule-ports-subsets: port-level settings need a port number", rule("foo", "r", " {host: a, trafficPolicy: {portLevelSettings: [{tls: {mode: DISABLE}}]}}"), Some(("spec.trafficPolicy.portLevelSettings[0].port.number", "missing"))),
        ("destinationrule-tls: unknown TLS field suggests the closest", rule("foo", "r", " {host: a, trafficPolicy: {tls: {mode: SIMPLE, subjectAltName: [x]}}}"), Some(("spec.trafficPolicy.tls.subjectAltName", "did you mean subjectAltNames?"))),
        ("destinationrule-precedence: exportTo is a list of strings", rule("foo", "r", " {host: a, exportTo: .}"), Some(("spec.exportTo", "expected a list"))),
        ("Istio ValidateAuthorizationPolicy: CUSTOM without rules is refused", doc("security.istio.io/v1", "AuthorizationPolicy", Some("foo"), "a", " {action: CUSTOM, provider: {name: ext}}"), Some(("spec.rules", "CUSTOM action without `rules` is meaningless"))),
        ("validation: AuthorizationPolicy action is ALLOW, DENY, AUDIT", doc("security.istio.io/v1", "AuthorizationPolicy", Some("foo"), "a", " {action: DENNY}"), Some(("spec.action", "did you mean DENY?"))),
        ("authz-examples: a valid namespace-isolation AuthorizationPolicy", doc("security.istio.io/v1beta1", "AuthorizationPolicy", Some("foo"), "a", " {action: ALLOW, rules: [{from: [{source: {namespaces: [foo]}}]}]}"), None),
        ("Istio kinds reject unknown top-level fields", "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspce:\n  host: a\n".to_string(), Some(("spce", "did you mean spec?"))),
        ("Sidecar is stored and validated", doc("networking.istio.io/v1beta1", "Sidecar", Some("foo"), "s", " {egress: [{hosts: [\"./*\"]}], workloadSelector: {labels: {app: a}}}"), None),
        ("k8s: Namespace names are DNS-1123 labels", doc("v1", "Namespace", None, "my.ns", " {}").replace("spec: {}\n", ""), Some(("metadata.name", "DNS-1123 label"))),
        ("k8s: Service ports are 1-65535", service("foo", "s", " {ports: [{port: 0}]}"), Some(("spec.ports[0].port", "1-65535"))),
        ("k8s: several Service ports need names", service("foo", "s", " {ports: [{port: 80}, {port: 81}]}"), Some(("spec.ports[0].name", "several ports"))),
        ("k8s: Service port is required", service("foo", "s", " {ports: [{name: http, targetPort: 8080}]}"), Some(("spec.ports[0].port", "missing"))),
        ("k8s: unknown Service fields are kept", service("foo", "s", " {ports: [{port: 80}], sessionAffinity: None, clusterIP: 10.0.0.1}"), None),
        ("k8s: Deployment needs a template", deployment(" {replicas: 1}"), Some(("spec.template", "missing"))),
        ("k8s: Deployment template needs containers", deployment(" {template: {metadata: {labels: {app: a}}, spec: {}}}"), Some(("spec.template.spec.containers", "at least one container"))),
        ("k8s: containers need names", deployment(" {template: {spec: {containers: [{image: x}]}}}"), Some(("spec.template.spec.containers[0].name", "DNS-1123"))),
        ("k8s: selector must match template labels", deployment(" {selector: {matchLabels: {app: b}}, template: {metadata: {labels: {app: a}}, spec: {containers: [{name: c}]}}}"), Some(("spec.selector.matchLabels", "does not match"))),
        ("k8s: labels are strings", service("foo", "s", " {}").replace("  name: s\n", "  name: s\n  labels:\n    enabled: yes\n"), Some(("metadata.labels.enabled", "quote it"))),
        ("k8s: Pod needs containers", doc("v1", "Pod", Some("foo"), "p", " {containers: []}"), Some(("spec.containers", "at least one container"))),
        ("k8s: ServiceAccount loads", "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sleep\n".to_string(), None),
    ];
    let mut failures = Vec::new();
    for (rule_name, yaml, expected) in &cases {
        let got = first_problem(yaml);
        let ok = match (expected, &got) {
            (None, None) => true,
            (Some((path, fragment)), Some((got_path, message))) => {
                got_path == path && message.contains(fragment)
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{rule_name}: expected {expected:?}, got {got:?}"));
        }
    }
    common::assert_no_failures(&failures);
}

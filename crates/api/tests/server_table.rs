//! Table-driven server-mode cases. Each names the Istio rule it checks (the docs/SEMANTICS.md anchor it starts with).

mod common;

use common::*;
use ironmesh_api::policy::ServerMode::{self, Disable, Permissive, Strict};

/// httpbin in foo: service port 8000 → container 8080 (named `http`), service port 9000 → 9000.
fn httpbin_foo() -> String {
    service(
        "foo",
        "httpbin",
        " {selector: {app: httpbin}, ports: [{name: http, port: 8000, targetPort: 8080}, {name: grpc, port: 9000}]}",
    )
}

struct Case {
    rule: &'static str,
    yaml: String,
    namespace: &'static str,
    labels: &'static [(&'static str, &'static str)],
    port: u16,
    mode: ServerMode,
    by: &'static str,
}

const HTTPBIN: &[(&str, &str)] = &[("app", "httpbin"), ("version", "v1")];
const OTHER: &[(&str, &str)] = &[("app", "other")];

fn case(rule: &'static str, yaml: String, port: u16, mode: ServerMode, by: &'static str) -> Case {
    Case {
        rule,
        yaml: format!("{}{yaml}", httpbin_foo()),
        namespace: "foo",
        labels: HTTPBIN,
        port,
        mode,
        by,
    }
}

fn legacy_cases() -> Vec<Case> {
    let strict_mesh = mesh_policy(" {peers: [{mtls: {}}]}");
    let permissive_ns = policy("foo", "default", " {peers: [{mtls: {mode: PERMISSIVE}}]}");
    let strict_svc = |name: &str, ports: &str| {
        policy(
            "foo",
            name,
            &format!(" {{targets: [{{name: httpbin{ports}}}], peers: [{{mtls: {{}}}}]}}"),
        )
    };
    vec![
        case(
            "legacy-peers: `mtls: {}` is STRICT",
            mesh_policy(" {peers: [{mtls: {}}]}"),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: bare `mtls:` is STRICT",
            mesh_policy("\n  peers:\n  - mtls:\n"),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: `mtls: null` is STRICT",
            mesh_policy("\n  peers:\n  - mtls: null\n"),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: `mode: STRICT`",
            mesh_policy(" {peers: [{mtls: {mode: STRICT}}]}"),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: `mode: PERMISSIVE`",
            mesh_policy(" {peers: [{mtls: {mode: PERMISSIVE}}]}"),
            8080,
            Permissive,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: deprecated `allowTls: true` is PERMISSIVE",
            mesh_policy(" {peers: [{mtls: {allowTls: true}}]}"),
            8080,
            Permissive,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: no `peers` (`spec: {}`) is DISABLE",
            mesh_policy(" {}"),
            8080,
            Disable,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: peers without an mtls method is DISABLE",
            mesh_policy(" {peers: [{jwt: {issuer: x}}]}"),
            8080,
            Disable,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: the first mtls entry counts, after a jwt",
            mesh_policy(" {peers: [{jwt: {issuer: x}}, {mtls: {}}]}"),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: only the first mtls entry counts",
            mesh_policy(" {peers: [{mtls: {mode: PERMISSIVE}}, {mtls: {}}]}"),
            8080,
            Permissive,
            "MeshPolicy /default",
        ),
        case(
            "legacy-peers: no policy at all is DISABLE",
            String::new(),
            8080,
            Disable,
            "-",
        ),
        case(
            "legacy-precedence: namespace Policy beats MeshPolicy",
            format!("{strict_mesh}{permissive_ns}"),
            8080,
            Permissive,
            "Policy foo/default",
        ),
        case(
            "legacy-precedence: service-specific beats namespace-wide",
            format!("{permissive_ns}{}", strict_svc("svc-strict", "")),
            8080,
            Strict,
            "Policy foo/svc-strict",
        ),
        case(
            "legacy-precedence: port selector names the SERVICE port (8000 → container 8080)",
            format!(
                "{permissive_ns}{}",
                strict_svc("p8000", ", ports: [{number: 8000}]")
            ),
            8080,
            Strict,
            "Policy foo/p8000",
        ),
        case(
            "legacy-precedence: port selector for 8000 does not cover container 9000",
            format!(
                "{permissive_ns}{}",
                strict_svc("p8000", ", ports: [{number: 8000}]")
            ),
            9000,
            Permissive,
            "Policy foo/default",
        ),
        case(
            "legacy-precedence: port selector by service port name",
            format!(
                "{permissive_ns}{}",
                strict_svc("http", ", ports: [{name: http}]")
            ),
            8080,
            Strict,
            "Policy foo/http",
        ),
        case(
            "legacy-precedence: service port 8000 is not container port 8000",
            format!(
                "{permissive_ns}{}",
                strict_svc("p8000", ", ports: [{number: 8000}]")
            ),
            8000,
            Permissive,
            "Policy foo/default",
        ),
        case(
            "legacy-precedence: targetPort defaults to port (9000)",
            format!(
                "{permissive_ns}{}",
                strict_svc("p9000", ", ports: [{number: 9000}]")
            ),
            9000,
            Strict,
            "Policy foo/p9000",
        ),
        case(
            "legacy-precedence: oldest portless policy wins",
            format!(
                "{}{}",
                strict_svc("older", ""),
                policy(
                    "foo",
                    "newer",
                    " {targets: [{name: httpbin}], peers: [{mtls: {mode: PERMISSIVE}}]}"
                )
            ),
            8080,
            Strict,
            "Policy foo/older",
        ),
        case(
            "legacy-precedence: port match beats an older portless policy",
            format!(
                "{}{}",
                policy("foo", "portless", " {targets: [{name: httpbin}]}"),
                strict_svc("port", ", ports: [{number: 8000}]")
            ),
            8080,
            Strict,
            "Policy foo/port",
        ),
        case(
            "legacy-precedence: oldest port-matching policy wins",
            format!(
                "{}{}",
                strict_svc("first", ", ports: [{number: 8000}]"),
                policy(
                    "foo",
                    "second",
                    " {targets: [{name: httpbin, ports: [{number: 8000}]}]}"
                )
            ),
            8080,
            Strict,
            "Policy foo/first",
        ),
        case(
            "legacy-precedence: policy for another service does not apply",
            format!(
                "{strict_mesh}{}",
                policy("foo", "sleep-only", " {targets: [{name: sleep}]}")
            ),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-precedence: target names resolve in the policy's namespace",
            format!(
                "{strict_mesh}{}",
                policy("bar", "httpbin-bar", " {targets: [{name: httpbin}]}")
            ),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-precedence: no inheritance: a service policy without peers is DISABLE",
            format!(
                "{strict_mesh}{}",
                policy("foo", "plain", " {targets: [{name: httpbin}]}")
            ),
            8080,
            Disable,
            "Policy foo/plain",
        ),
        case(
            "legacy-precedence: another namespace's default policy does not apply",
            format!("{strict_mesh}{}", policy("bar", "default", " {}")),
            8080,
            Strict,
            "MeshPolicy /default",
        ),
        case(
            "legacy-precedence: the target must be one of the policy's targets",
            format!(
                "{strict_mesh}{}",
                policy(
                    "foo",
                    "multi",
                    " {targets: [{name: sleep}, {name: httpbin, ports: [{number: 9000}]}], peers: [{mtls: {mode: PERMISSIVE}}]}"
                )
            ),
            9000,
            Permissive,
            "Policy foo/multi",
        ),
        Case {
            labels: OTHER,
            ..case(
                "legacy-precedence: a workload outside the service selector gets only ns/mesh policies",
                format!("{strict_mesh}{}", strict_svc("svc", "")),
                8080,
                Strict,
                "MeshPolicy /default",
            )
        },
        case(
            "legacy-precedence: oldest by creationTimestamp, not document order",
            format!(
                "{}{}",
                policy("foo", "b", " {targets: [{name: httpbin}]}").replace(
                    "  name: b\n",
                    "  name: b\n  creationTimestamp: \"2025-01-02T00:00:00Z\"\n"
                ),
                policy(
                    "foo",
                    "a",
                    " {targets: [{name: httpbin}], peers: [{mtls: {}}]}"
                )
                .replace(
                    "  name: a\n",
                    "  name: a\n  creationTimestamp: \"2025-01-03T00:00:00Z\"\n"
                ),
            ),
            8080,
            Disable,
            "Policy foo/b",
        ),
        case(
            "legacy-precedence: equal timestamps: name breaks the tie",
            format!(
                "{}{}",
                policy("foo", "zz", " {targets: [{name: httpbin}]}").replace(
                    "  name: zz\n",
                    "  name: zz\n  creationTimestamp: \"2025-01-01T00:00:00Z\"\n"
                ),
                policy(
                    "foo",
                    "aa",
                    " {targets: [{name: httpbin}], peers: [{mtls: {}}]}"
                )
                .replace(
                    "  name: aa\n",
                    "  name: aa\n  creationTimestamp: \"2025-01-01T00:00:00Z\"\n"
                ),
            ),
            8080,
            Strict,
            "Policy foo/aa",
        ),
    ]
}

fn peer_authentication_cases() -> Vec<Case> {
    let permissive_mesh_policy = mesh_policy(" {peers: [{mtls: {mode: PERMISSIVE}}]}");
    let root = |mode: &str| {
        peer_authn(
            "istio-system",
            "default",
            &format!(" {{mtls: {{mode: {mode}}}}}"),
        )
    };
    let ns = |mode: &str| peer_authn("foo", "default", &format!(" {{mtls: {{mode: {mode}}}}}"));
    let wl = |name: &str, mode: &str, extra: &str| {
        peer_authn(
            "foo",
            name,
            &format!(
                " {{selector: {{matchLabels: {{app: httpbin}}}}, mtls: {{mode: {mode}}}{extra}}}"
            ),
        )
    };
    vec![
        case(
            "legacy-and-peerauthentication: any PeerAuthentication makes legacy policies ignored",
            format!("{permissive_mesh_policy}{}", root("STRICT")),
            8080,
            Strict,
            "PeerAuthentication istio-system/default",
        ),
        case(
            "legacy-and-peerauthentication: an UNSET mesh PeerAuthentication still replaces legacy (→ PERMISSIVE)",
            format!(
                "{}{}",
                policy("foo", "default", " {peers: [{mtls: {}}]}"),
                root("UNSET")
            ),
            8080,
            Permissive,
            "PeerAuthentication istio-system/default",
        ),
        case(
            "legacy-and-peerauthentication: a PeerAuthentication of another namespace leaves legacy in force",
            format!(
                "{}{}",
                policy("foo", "default", " {peers: [{mtls: {}}]}"),
                peer_authn("bar", "default", " {mtls: {mode: DISABLE}}")
            ),
            8080,
            Strict,
            "Policy foo/default",
        ),
        case(
            "peerauthentication-scope: root-namespace PeerAuthentication with a selector is ignored",
            format!(
                "{permissive_mesh_policy}{}",
                peer_authn(
                    "istio-system",
                    "sel",
                    " {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}"
                )
            ),
            8080,
            Permissive,
            "MeshPolicy /default",
        ),
        case(
            "peerauthentication-mode: namespace level beats mesh level",
            format!("{}{}", root("STRICT"), ns("PERMISSIVE")),
            8080,
            Permissive,
            "PeerAuthentication foo/default",
        ),
        case(
            "peerauthentication-mode: namespace UNSET inherits the mesh mode",
            format!("{}{}", root("STRICT"), ns("UNSET")),
            8080,
            Strict,
            "PeerAuthentication istio-system/default",
        ),
        case(
            "peerauthentication-mode: workload level beats mesh DISABLE",
            format!("{}{}", root("DISABLE"), wl("wl", "STRICT", "")),
            8080,
            Strict,
            "PeerAuthentication foo/wl",
        ),
        case(
            "peerauthentication-mode: workload UNSET inherits namespace DISABLE",
            format!("{}{}", ns("DISABLE"), wl("wl", "UNSET", "")),
            8080,
            Disable,
            "PeerAuthentication foo/default",
        ),
        case(
            "peerauthentication-mode: mesh UNSET means PERMISSIVE",
            root("UNSET"),
            8080,
            Permissive,
            "PeerAuthentication istio-system/default",
        ),
        case(
            "peerauthentication-mode: port-level DISABLE overrides the workload mode on that port",
            wl("wl", "STRICT", ", portLevelMtls: {8080: {mode: DISABLE}}"),
            8080,
            Disable,
            "PeerAuthentication foo/wl",
        ),
        case(
            "peerauthentication-mode: port-level applies only to its port",
            wl("wl", "STRICT", ", portLevelMtls: {8080: {mode: DISABLE}}"),
            9000,
            Strict,
            "PeerAuthentication foo/wl",
        ),
        case(
            "peerauthentication-mode: port-level UNSET inherits the workload mode",
            wl("wl", "PERMISSIVE", ", portLevelMtls: {8080: {mode: UNSET}}"),
            8080,
            Permissive,
            "PeerAuthentication foo/wl",
        ),
        case(
            "peerauthentication-mode: port-level UNSET inherits through an UNSET workload to the namespace",
            format!(
                "{}{}",
                ns("STRICT"),
                wl("wl", "UNSET", ", portLevelMtls: {8080: {mode: UNSET}}")
            ),
            8080,
            Strict,
            "PeerAuthentication foo/default",
        ),
        case(
            "peerauthentication-fields: portLevelMtls keys are container ports, not service ports",
            wl("wl", "STRICT", ", portLevelMtls: {8000: {mode: DISABLE}}"),
            8080,
            Strict,
            "PeerAuthentication foo/wl",
        ),
        Case {
            labels: OTHER,
            ..case(
                "peerauthentication-scope: a workload selector must match the pod labels",
                format!("{}{}", ns("PERMISSIVE"), wl("wl", "STRICT", "")),
                8080,
                Permissive,
                "PeerAuthentication foo/default",
            )
        },
        case(
            "peerauthentication-scope: oldest namespace-level PeerAuthentication wins",
            format!(
                "{}{}",
                ns("DISABLE"),
                peer_authn("foo", "newer", " {mtls: {mode: STRICT}}")
            ),
            8080,
            Disable,
            "PeerAuthentication foo/default",
        ),
        case(
            "peerauthentication-scope: oldest matching workload PeerAuthentication wins",
            format!(
                "{}{}",
                wl("older", "DISABLE", ""),
                wl("newer", "STRICT", "")
            ),
            8080,
            Disable,
            "PeerAuthentication foo/older",
        ),
        case(
            "peerauthentication-scope: selectors match a subset of the labels",
            peer_authn(
                "foo",
                "v1",
                " {selector: {matchLabels: {version: v1}}, mtls: {mode: STRICT}}",
            ),
            8080,
            Strict,
            "PeerAuthentication foo/v1",
        ),
        Case {
            namespace: "istio-system",
            ..case(
                "peerauthentication-scope: in the root namespace, its un-selected policy is mesh-wide and selectors are ignored",
                format!(
                    "{}{}",
                    root("STRICT"),
                    peer_authn(
                        "istio-system",
                        "sel",
                        " {selector: {matchLabels: {app: httpbin}}, mtls: {mode: DISABLE}}"
                    )
                ),
                8080,
                Strict,
                "PeerAuthentication istio-system/default",
            )
        },
        case(
            "peerauthentication-scope: a mesh-wide PeerAuthentication covers every namespace",
            root("DISABLE"),
            8080,
            Disable,
            "PeerAuthentication istio-system/default",
        ),
        case(
            "peerauthentication-mode: a namespace PeerAuthentication without mtls is UNSET",
            format!("{}{}", root("STRICT"), peer_authn("foo", "default", " {}")),
            8080,
            Strict,
            "PeerAuthentication istio-system/default",
        ),
        case(
            "peerauthentication-scope: an empty selector is namespace-wide",
            format!(
                "{}{}",
                root("STRICT"),
                peer_authn("foo", "empty", " {selector: {}, mtls: {mode: DISABLE}}")
            ),
            8080,
            Disable,
            "PeerAuthentication foo/empty",
        ),
        case(
            "peerauthentication-mode: with only a namespace PeerAuthentication, its mode applies",
            ns("STRICT"),
            8080,
            Strict,
            "PeerAuthentication foo/default",
        ),
        case(
            "peerauthentication-mode: workload DISABLE beats namespace STRICT",
            format!("{}{}", ns("STRICT"), wl("wl", "DISABLE", "")),
            8080,
            Disable,
            "PeerAuthentication foo/wl",
        ),
    ]
}

#[test]
fn server_mode_table() {
    let cases: Vec<Case> = legacy_cases()
        .into_iter()
        .chain(peer_authentication_cases())
        .collect();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let index = index(&case.yaml, false);
        let decision = index.server_mode(&workload(case.namespace, case.labels), case.port);
        let got = (decision.mode, who(&decision.decided_by));
        if got != (case.mode, case.by.to_string()) {
            failures.push(format!(
                "{}: expected {:?} by {}, got {:?} by {}",
                case.rule, case.mode, case.by, got.0, got.1
            ));
        }
    }
    common::assert_no_failures(&failures);
}

//! Table-driven client TLS, auto mTLS and tls-check status cases. Each names the Istio rule it checks
//! (istio-semantics.md section).

mod common;

use common::*;
use ironmesh_api::policy::ClientTlsMode::{self, Disable, IstioMutual, Mutual, Simple, Unset};
use ironmesh_api::policy::{ClientDecision, ServerMode, TlsCheckStatus, effective_client_mtls};

const FOO_HTTPBIN: &str = "httpbin.foo.svc.cluster.local";

struct Case {
    rule: &'static str,
    yaml: String,
    client: &'static str,
    host: &'static str,
    port: u16,
    subset: Option<&'static str>,
    mode: ClientTlsMode,
    by: &'static str,
}

fn case(
    rule: &'static str,
    yaml: String,
    client: &'static str,
    mode: ClientTlsMode,
    by: &'static str,
) -> Case {
    Case {
        rule,
        yaml,
        client,
        host: FOO_HTTPBIN,
        port: 8000,
        subset: None,
        mode,
        by,
    }
}

fn tls(mode: &str) -> String {
    format!(" {{host: httpbin.foo.svc.cluster.local, trafficPolicy: {{tls: {{mode: {mode}}}}}}}")
}

fn host_tls(host: &str, mode: &str) -> String {
    format!(" {{host: \"{host}\", trafficPolicy: {{tls: {{mode: {mode}}}}}}}")
}

fn cases() -> Vec<Case> {
    let root_mutual = rule(
        "istio-system",
        "default",
        &host_tls("*.local", "ISTIO_MUTUAL"),
    );
    vec![
        case(
            "§3.2 no rule anywhere leaves TLS unset",
            String::new(),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.2 a rule in the client namespace applies",
            rule("bar", "r", &tls("ISTIO_MUTUAL")),
            "bar",
            IstioMutual,
            "DestinationRule bar/r",
        ),
        case(
            "§3.1 short host resolves against the rule's namespace",
            rule("foo", "r", &host_tls("httpbin", "ISTIO_MUTUAL")),
            "bar",
            IstioMutual,
            "DestinationRule foo/r",
        ),
        case(
            "§3.1 short host in another namespace names another service",
            rule("bar", "r", &host_tls("httpbin", "ISTIO_MUTUAL")),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.2 client namespace beats service namespace",
            format!(
                "{}{}",
                rule("foo", "svc-ns", &tls("DISABLE")),
                rule("bar", "client-ns", &tls("ISTIO_MUTUAL"))
            ),
            "bar",
            IstioMutual,
            "DestinationRule bar/client-ns",
        ),
        case(
            "§3.2 service namespace rule applies when the client namespace has none",
            rule("foo", "svc-ns", &tls("SIMPLE")),
            "bar",
            Simple,
            "DestinationRule foo/svc-ns",
        ),
        case(
            "§3.2 exportTo `.` hides a service-namespace rule from other clients",
            format!(
                "{root_mutual}{}",
                rule(
                    "foo",
                    "private",
                    " {host: httpbin, exportTo: [\".\"], trafficPolicy: {tls: {mode: DISABLE}}}"
                )
            ),
            "bar",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        case(
            "§3.2 exportTo `.` still applies inside its own namespace",
            rule(
                "foo",
                "private",
                " {host: httpbin, exportTo: [\".\"], trafficPolicy: {tls: {mode: DISABLE}}}",
            ),
            "foo",
            Disable,
            "DestinationRule foo/private",
        ),
        case(
            "§3.2 the root namespace rule applies last",
            root_mutual.clone(),
            "bar",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        case(
            "§3.2 service namespace beats root namespace",
            format!("{root_mutual}{}", rule("foo", "svc-ns", &tls("DISABLE"))),
            "bar",
            Disable,
            "DestinationRule foo/svc-ns",
        ),
        case(
            "§3.2 first namespace with any match wins, even a broader wildcard",
            format!(
                "{}{}",
                rule("bar", "wide", &host_tls("*.local", "DISABLE")),
                rule("foo", "exact", &tls("ISTIO_MUTUAL"))
            ),
            "bar",
            Disable,
            "DestinationRule bar/wide",
        ),
        case(
            "§3.1 exact host beats a wildcard in one namespace",
            format!(
                "{}{}",
                rule("bar", "wide", &host_tls("*.local", "DISABLE")),
                rule("bar", "exact", &tls("ISTIO_MUTUAL"))
            ),
            "bar",
            IstioMutual,
            "DestinationRule bar/exact",
        ),
        case(
            "§3.1 longer wildcard beats shorter",
            format!(
                "{}{}",
                rule("bar", "local", &host_tls("*.local", "DISABLE")),
                rule(
                    "bar",
                    "foo-ns",
                    &host_tls("*.foo.svc.cluster.local", "SIMPLE")
                )
            ),
            "bar",
            Simple,
            "DestinationRule bar/foo-ns",
        ),
        case(
            "§3.1 `*` matches every host",
            rule("bar", "all", &host_tls("*", "ISTIO_MUTUAL")),
            "bar",
            IstioMutual,
            "DestinationRule bar/all",
        ),
        case(
            "§3.1 a wildcard for another namespace does not match",
            rule(
                "bar",
                "bar-ns",
                &host_tls("*.bar.svc.cluster.local", "ISTIO_MUTUAL"),
            ),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.1 a host with a dot is not expanded",
            rule("bar", "dotted", &host_tls("httpbin.foo", "ISTIO_MUTUAL")),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.2 a rule without tls overrides a mesh-wide ISTIO_MUTUAL (no inheritance)",
            format!(
                "{root_mutual}{}",
                rule(
                    "bar",
                    "lb",
                    " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}"
                )
            ),
            "bar",
            Unset,
            "DestinationRule bar/lb",
        ),
        case(
            "§3.3 a tls block without mode is DISABLE",
            rule(
                "bar",
                "r",
                " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {sni: x}}}",
            ),
            "bar",
            Disable,
            "DestinationRule bar/r",
        ),
        case(
            "§3.4 port-level tls replaces top-level for its port",
            rule(
                "bar",
                "r",
                " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 8000}, tls: {mode: DISABLE}}]}}",
            ),
            "bar",
            Disable,
            "DestinationRule bar/r",
        ),
        case(
            "§3.4 port-level settings of another port leave top-level tls",
            rule(
                "bar",
                "r",
                " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 9000}, tls: {mode: DISABLE}}]}}",
            ),
            "bar",
            IstioMutual,
            "DestinationRule bar/r",
        ),
        case(
            "§3.4 a port-level setting without tls does not inherit the top-level tls",
            rule(
                "bar",
                "r",
                " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 8000}, loadBalancer: {simple: RANDOM}}]}}",
            ),
            "bar",
            Unset,
            "DestinationRule bar/r",
        ),
        case(
            "§3.2 same host, same namespace: the oldest rule's trafficPolicy wins",
            format!(
                "{}{}",
                rule("bar", "old", &tls("SIMPLE")),
                rule("bar", "new", &tls("ISTIO_MUTUAL"))
            ),
            "bar",
            Simple,
            "DestinationRule bar/old",
        ),
        case(
            "§3.2 same host: an older rule without trafficPolicy yields to one with it",
            format!(
                "{}{}",
                rule(
                    "bar",
                    "subsets-only",
                    " {host: httpbin.foo.svc.cluster.local, subsets: [{name: v1, labels: {version: v1}}]}"
                ),
                rule("bar", "tls", &tls("ISTIO_MUTUAL"))
            ),
            "bar",
            IstioMutual,
            "DestinationRule bar/tls",
        ),
        case(
            "PRODUCT §5 (Istio 1.0) another namespace's exported rule applies last",
            rule(
                "walkthrough",
                "default",
                &host_tls("*.local", "ISTIO_MUTUAL"),
            ),
            "bar",
            IstioMutual,
            "DestinationRule walkthrough/default",
        ),
        case(
            "PRODUCT §5 another namespace's rule exported with `.` does not apply",
            rule(
                "other",
                "r",
                " {host: \"*.local\", exportTo: [\".\"], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
            ),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.2 exportTo listing the client namespace makes it visible",
            rule(
                "other",
                "r",
                " {host: \"*.local\", exportTo: [bar], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
            ),
            "bar",
            IstioMutual,
            "DestinationRule other/r",
        ),
        case(
            "§3.2 exportTo listing another namespace hides it",
            rule(
                "other",
                "r",
                " {host: \"*.local\", exportTo: [baz], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
            ),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.2 root namespace beats other namespaces",
            format!(
                "{}{root_mutual}",
                rule("other", "r", &host_tls("*.local", "DISABLE"))
            ),
            "bar",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        case(
            "§3.2 workloadSelector rules apply only to selected workloads",
            rule(
                "bar",
                "sel",
                " {host: httpbin.foo.svc.cluster.local, workloadSelector: {matchLabels: {app: sleep}}, trafficPolicy: {tls: {mode: DISABLE}}}",
            ),
            "bar",
            Unset,
            "-",
        ),
        case(
            "§3.3 SIMPLE",
            rule("bar", "r", &tls("SIMPLE")),
            "bar",
            Simple,
            "DestinationRule bar/r",
        ),
        case(
            "§3.3 MUTUAL with user certificates",
            rule(
                "bar",
                "r",
                " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}}",
            ),
            "bar",
            Mutual,
            "DestinationRule bar/r",
        ),
        case(
            "§3.2 a client in the root namespace uses root rules first",
            format!("{}{root_mutual}", rule("foo", "svc-ns", &tls("DISABLE"))),
            "istio-system",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        Case {
            subset: Some("v1"),
            ..case(
                "§3.4 subset tls overrides the rule's top-level tls",
                rule(
                    "bar",
                    "r",
                    " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v1, trafficPolicy: {tls: {mode: DISABLE}}}]}",
                ),
                "bar",
                Disable,
                "DestinationRule bar/r",
            )
        },
        Case {
            subset: Some("v2"),
            ..case(
                "§3.4 a subset without tls falls back to the rule's tls",
                rule(
                    "bar",
                    "r",
                    " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v2, labels: {version: v2}}]}",
                ),
                "bar",
                IstioMutual,
                "DestinationRule bar/r",
            )
        },
        Case {
            port: 9000,
            subset: Some("v1"),
            ..case(
                "§3.4 subset port-level tls applies to its port",
                rule(
                    "bar",
                    "r",
                    " {host: httpbin.foo.svc.cluster.local, subsets: [{name: v1, trafficPolicy: {portLevelSettings: [{port: {number: 9000}, tls: {mode: SIMPLE}}]}}]}",
                ),
                "bar",
                Simple,
                "DestinationRule bar/r",
            )
        },
        Case {
            subset: Some("v1"),
            ..case(
                "§3.4 subset port-level tls does not apply to other ports (no rule tls: unset)",
                rule(
                    "bar",
                    "r",
                    " {host: httpbin.foo.svc.cluster.local, subsets: [{name: v1, trafficPolicy: {portLevelSettings: [{port: {number: 9000}, tls: {mode: SIMPLE}}]}}]}",
                ),
                "bar",
                Unset,
                "DestinationRule bar/r",
            )
        },
        Case {
            host: "sleep.bar.svc.cluster.local",
            ..case(
                "§3.1 `*.local` covers every cluster service",
                root_mutual.clone(),
                "foo",
                IstioMutual,
                "DestinationRule istio-system/default",
            )
        },
    ]
}

#[test]
fn client_tls_table() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let index = index(&case.yaml, false);
        let decision = index.client_tls_for_subset(case.client, case.host, case.port, case.subset);
        let got = (decision.mode, who(&decision.decided_by));
        if got != (case.mode, case.by.to_string()) {
            failures.push(format!(
                "{}: expected {:?} by {}, got {:?} by {}",
                case.rule, case.mode, case.by, got.0, got.1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn sni_and_subject_alt_names() {
    // §3.3: a user `sni`/`subjectAltNames` override the ISTIO_MUTUAL defaults.
    let index = index(
        &rule(
            "bar",
            "r",
            " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: custom.example, subjectAltNames: [spiffe://td/ns/x/sa/y]}}}",
        ),
        false,
    );
    let decision = index.client_tls("bar", FOO_HTTPBIN, 8000);
    assert_eq!(decision.sni.as_deref(), Some("custom.example"));
    assert_eq!(
        decision.subject_alt_names,
        vec!["spiffe://td/ns/x/sa/y".to_string()]
    );
    // §3.3: ISTIO_MUTUAL default SNI includes the subset.
    let index = index_with_subset();
    let decision = index.client_tls_for_subset("bar", FOO_HTTPBIN, 8000, Some("v1"));
    assert_eq!(
        decision.sni.as_deref(),
        Some("outbound_.8000_.v1_.httpbin.foo.svc.cluster.local")
    );
}

fn index_with_subset() -> ironmesh_api::policy::PolicyIndex {
    index(
        &rule(
            "bar",
            "r",
            " {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v1}]}",
        ),
        false,
    )
}

#[test]
fn auto_mtls_table() {
    let decision = |mode| ClientDecision {
        mode,
        decided_by: None,
        sni: None,
        subject_alt_names: Vec::new(),
    };
    use ServerMode::*;
    let cases: &[(&str, ClientTlsMode, bool, ServerMode, bool, bool)] = &[
        (
            "§4 auto: sidecar endpoint in STRICT gets mTLS",
            Unset,
            true,
            Strict,
            true,
            true,
        ),
        (
            "§4 auto: sidecar endpoint in PERMISSIVE gets mTLS",
            Unset,
            true,
            Permissive,
            true,
            true,
        ),
        (
            "§4 auto: sidecar endpoint in DISABLE gets plaintext (≥1.12)",
            Unset,
            true,
            ServerMode::Disable,
            true,
            false,
        ),
        (
            "§4 auto: endpoint without sidecar gets plaintext",
            Unset,
            false,
            Strict,
            true,
            false,
        ),
        (
            "§4 auto off: unset TLS is plaintext",
            Unset,
            true,
            Strict,
            false,
            false,
        ),
        (
            "§4 explicit ISTIO_MUTUAL wins over auto, even to DISABLE",
            IstioMutual,
            true,
            ServerMode::Disable,
            true,
            true,
        ),
        (
            "§4 explicit ISTIO_MUTUAL without auto",
            IstioMutual,
            false,
            Strict,
            false,
            true,
        ),
        (
            "§4 explicit DISABLE wins over auto",
            ClientTlsMode::Disable,
            true,
            Strict,
            true,
            false,
        ),
        (
            "§4 SIMPLE is not mesh mTLS",
            Simple,
            true,
            Strict,
            true,
            false,
        ),
    ];
    for (rule, mode, sidecar, server, auto, want) in cases {
        assert_eq!(
            effective_client_mtls(&decision(*mode), *sidecar, *server, *auto),
            *want,
            "{rule}"
        );
    }
    // The index method uses the mesh's switch.
    let on = index("", true);
    assert!(on.effective_client_mtls(&decision(Unset), true, Strict));
    let off = index("", false);
    assert!(!off.effective_client_mtls(&decision(Unset), true, Strict));
}

#[test]
fn tls_check_status_table() {
    let httpbin = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  template:\n    metadata:\n      labels:\n        app: httpbin\n        security.istio.io/tlsMode: istio\n    spec:\n      containers:\n      - name: httpbin\n        image: httpbin\n",
        service(
            "foo",
            "httpbin",
            " {selector: {app: httpbin}, ports: [{name: http, port: 8000}]}"
        )
    );
    use TlsCheckStatus::*;
    let servers = [
        ("DISABLE", ServerMode::Disable),
        ("PERMISSIVE", ServerMode::Permissive),
        ("STRICT", ServerMode::Strict),
    ];
    // §6.1 EvaluateTLSState (1.4); an unset client without auto mTLS sends plaintext (§5 row 8).
    let expected: &[(&str, Option<&str>, bool, [TlsCheckStatus; 3])] = &[
        (
            "§6.1 client not set, auto off",
            None,
            false,
            [Ok, Ok, Conflict],
        ),
        (
            "§6.1 client not set, auto on → AUTO",
            None,
            true,
            [Auto, Auto, Auto],
        ),
        (
            "§6.1 client DISABLE",
            Some("DISABLE"),
            false,
            [Ok, Ok, Conflict],
        ),
        (
            "§6.1 client ISTIO_MUTUAL",
            Some("ISTIO_MUTUAL"),
            false,
            [Conflict, Ok, Ok],
        ),
        (
            "§6.1 client SIMPLE",
            Some("SIMPLE"),
            false,
            [Conflict, Conflict, Conflict],
        ),
        (
            "§6.1 explicit DISABLE is not AUTO even with auto on",
            Some("DISABLE"),
            true,
            [Ok, Ok, Conflict],
        ),
    ];
    for (rule_name, client_mode, auto, statuses) in expected {
        for ((server_name, server_mode), want) in servers.iter().zip(statuses) {
            let mut yaml = format!(
                "{httpbin}{}",
                peer_authn(
                    "istio-system",
                    "default",
                    &format!(" {{mtls: {{mode: {server_name}}}}}")
                )
            );
            if let Some(mode) = client_mode {
                yaml.push_str(&rule("istio-system", "default", &host_tls("*.local", mode)));
            }
            let rows = index(&yaml, *auto).tls_check(Some("bar"), None);
            assert_eq!(rows.len(), 1, "{rule_name}");
            assert_eq!(rows[0].server, *server_mode, "{rule_name} / {server_name}");
            assert_eq!(rows[0].status, *want, "{rule_name} / server {server_name}");
            assert_eq!(
                rows[0].authn_policy.as_ref().unwrap().to_string(),
                "istio-system/default"
            );
        }
    }
}

#[test]
fn tls_check_lists_subset_rows_sorted_by_host_then_port() {
    // §6.1: one row per (service, port) plus one per DR subset, `host|subset`.
    let yaml = format!(
        "{}{}{}",
        service(
            "foo",
            "httpbin",
            " {selector: {app: httpbin}, ports: [{name: b, port: 9000}, {name: a, port: 8000}]}"
        ),
        service(
            "bar",
            "sleep",
            " {selector: {app: sleep}, ports: [{name: http, port: 80}]}"
        ),
        rule(
            "foo",
            "r",
            " {host: httpbin, subsets: [{name: v1}], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"
        )
    );
    let rows = index(&yaml, false).tls_check(Some("foo"), None);
    let hosts: Vec<_> = rows.iter().map(|r| r.host_port.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "httpbin.foo.svc.cluster.local:8000",
            "httpbin.foo.svc.cluster.local|v1:8000",
            "httpbin.foo.svc.cluster.local:9000",
            "httpbin.foo.svc.cluster.local|v1:9000",
            "sleep.bar.svc.cluster.local:80",
        ]
    );
    assert_eq!(
        rows[0].destination_rule.as_ref().unwrap().to_string(),
        "foo/r"
    );
    assert_eq!(rows[4].destination_rule, None);
    assert_eq!(rows[4].authn_policy, None, "no policy at all: `-`");
}

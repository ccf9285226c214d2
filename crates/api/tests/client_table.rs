//! Table-driven client TLS cases (DestinationRule lookup and TLS settings). Each names the Istio rule it checks
//! (the docs/SEMANTICS.md anchor it starts with).

mod common;

use common::*;
use ironmesh_api::policy::ClientTlsMode::{self, Disable, IstioMutual, Mutual, Simple, Unset};

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
            "destinationrule-precedence: no rule anywhere leaves TLS unset",
            String::new(),
            "bar",
            Unset,
            "-",
        ),
        case(
            "destinationrule-precedence: a rule in the client namespace applies",
            rule("bar", "r", &tls("ISTIO_MUTUAL")),
            "bar",
            IstioMutual,
            "DestinationRule bar/r",
        ),
        case(
            "destinationrule-hosts: short host resolves against the rule's namespace",
            rule("foo", "r", &host_tls("httpbin", "ISTIO_MUTUAL")),
            "bar",
            IstioMutual,
            "DestinationRule foo/r",
        ),
        case(
            "destinationrule-hosts: short host in another namespace names another service",
            rule("bar", "r", &host_tls("httpbin", "ISTIO_MUTUAL")),
            "bar",
            Unset,
            "-",
        ),
        case(
            "destinationrule-precedence: client namespace beats service namespace",
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
            "destinationrule-precedence: service namespace rule applies when the client namespace has none",
            rule("foo", "svc-ns", &tls("SIMPLE")),
            "bar",
            Simple,
            "DestinationRule foo/svc-ns",
        ),
        case(
            "destinationrule-precedence: exportTo `.` hides a service-namespace rule from other clients",
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
            "destinationrule-precedence: exportTo `.` still applies inside its own namespace",
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
            "destinationrule-precedence: the root namespace rule applies last",
            root_mutual.clone(),
            "bar",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        case(
            "destinationrule-precedence: service namespace beats root namespace",
            format!("{root_mutual}{}", rule("foo", "svc-ns", &tls("DISABLE"))),
            "bar",
            Disable,
            "DestinationRule foo/svc-ns",
        ),
        case(
            "destinationrule-precedence: first namespace with any match wins, even a broader wildcard",
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
            "destinationrule-hosts: exact host beats a wildcard in one namespace",
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
            "destinationrule-hosts: longer wildcard beats shorter",
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
            "destinationrule-hosts: `*` matches every host",
            rule("bar", "all", &host_tls("*", "ISTIO_MUTUAL")),
            "bar",
            IstioMutual,
            "DestinationRule bar/all",
        ),
        case(
            "destinationrule-hosts: a wildcard for another namespace does not match",
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
            "destinationrule-hosts: a host with a dot is not expanded",
            rule("bar", "dotted", &host_tls("httpbin.foo", "ISTIO_MUTUAL")),
            "bar",
            Unset,
            "-",
        ),
        case(
            "destinationrule-precedence: a rule without tls overrides a mesh-wide ISTIO_MUTUAL (no inheritance)",
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
            "destinationrule-tls: a tls block without mode is DISABLE",
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
            "destinationrule-ports-subsets: port-level tls replaces top-level for its port",
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
            "destinationrule-ports-subsets: port-level settings of another port leave top-level tls",
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
            "destinationrule-ports-subsets: a port-level setting without tls does not inherit the top-level tls",
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
            "destinationrule-precedence: same host, same namespace: the oldest rule's trafficPolicy wins",
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
            "destinationrule-precedence: same host: an older rule without trafficPolicy yields to one with it",
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
            "resources: (Istio 1.0) another namespace's exported rule applies last",
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
            "resources: another namespace's rule exported with `.` does not apply",
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
            "destinationrule-precedence: exportTo listing the client namespace makes it visible",
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
            "destinationrule-precedence: exportTo listing another namespace hides it",
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
            "destinationrule-precedence: root namespace beats other namespaces",
            format!(
                "{}{root_mutual}",
                rule("other", "r", &host_tls("*.local", "DISABLE"))
            ),
            "bar",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        case(
            "destinationrule-precedence: workloadSelector rules apply only to selected workloads",
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
            "destinationrule-tls: SIMPLE",
            rule("bar", "r", &tls("SIMPLE")),
            "bar",
            Simple,
            "DestinationRule bar/r",
        ),
        case(
            "destinationrule-tls: MUTUAL with user certificates",
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
            "destinationrule-precedence: a client in the root namespace uses root rules first",
            format!("{}{root_mutual}", rule("foo", "svc-ns", &tls("DISABLE"))),
            "istio-system",
            IstioMutual,
            "DestinationRule istio-system/default",
        ),
        Case {
            subset: Some("v1"),
            ..case(
                "destinationrule-ports-subsets: subset tls overrides the rule's top-level tls",
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
                "destinationrule-ports-subsets: a subset without tls falls back to the rule's tls",
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
                "destinationrule-ports-subsets: subset port-level tls applies to its port",
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
                "destinationrule-ports-subsets: subset port-level tls does not apply to other ports (no rule tls: unset)",
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
                "destinationrule-hosts: `*.local` covers every cluster service",
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
    common::assert_no_failures(&failures);
}

#[test]
fn sni_and_subject_alt_names() {
    // docs/SEMANTICS.md#destinationrule-tls: a user `sni`/`subjectAltNames` override the ISTIO_MUTUAL defaults.
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
    // docs/SEMANTICS.md#destinationrule-tls: ISTIO_MUTUAL default SNI includes the subset.
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

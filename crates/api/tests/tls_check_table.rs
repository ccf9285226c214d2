//! Table-driven auto mTLS and tls-check status cases. Each names the Istio rule it checks
//! (the docs/SEMANTICS.md anchor it starts with).

mod common;

use common::*;
use ironmesh_api::policy::ClientTlsMode::{self, IstioMutual, Simple, Unset};
use ironmesh_api::policy::{ClientDecision, ServerMode, TlsCheckStatus, effective_client_mtls};

fn host_tls(host: &str, mode: &str) -> String {
    format!(" {{host: \"{host}\", trafficPolicy: {{tls: {{mode: {mode}}}}}}}")
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
            "auto-mtls: auto: sidecar endpoint in STRICT gets mTLS",
            Unset,
            true,
            Strict,
            true,
            true,
        ),
        (
            "auto-mtls: auto: sidecar endpoint in PERMISSIVE gets mTLS",
            Unset,
            true,
            Permissive,
            true,
            true,
        ),
        (
            "auto-mtls: auto: sidecar endpoint in DISABLE gets plaintext (≥1.12)",
            Unset,
            true,
            ServerMode::Disable,
            true,
            false,
        ),
        (
            "auto-mtls: auto: endpoint without sidecar gets plaintext",
            Unset,
            false,
            Strict,
            true,
            false,
        ),
        (
            "auto-mtls: auto off: unset TLS is plaintext",
            Unset,
            true,
            Strict,
            false,
            false,
        ),
        (
            "auto-mtls: explicit ISTIO_MUTUAL wins over auto, even to DISABLE",
            IstioMutual,
            true,
            ServerMode::Disable,
            true,
            true,
        ),
        (
            "auto-mtls: explicit ISTIO_MUTUAL without auto",
            IstioMutual,
            false,
            Strict,
            false,
            true,
        ),
        (
            "auto-mtls: explicit DISABLE wins over auto",
            ClientTlsMode::Disable,
            true,
            Strict,
            true,
            false,
        ),
        (
            "auto-mtls: SIMPLE is not mesh mTLS",
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
    // docs/SEMANTICS.md#tls-check EvaluateTLSState (1.4); an unset client without auto mTLS sends plaintext (docs/SEMANTICS.md#outcomes row 8).
    let expected: &[(&str, Option<&str>, bool, [TlsCheckStatus; 3])] = &[
        (
            "tls-check: client not set, auto off",
            None,
            false,
            [Ok, Ok, Conflict],
        ),
        (
            "tls-check: client not set, auto on → AUTO",
            None,
            true,
            [Auto, Auto, Auto],
        ),
        (
            "tls-check: client DISABLE",
            Some("DISABLE"),
            false,
            [Ok, Ok, Conflict],
        ),
        (
            "tls-check: client ISTIO_MUTUAL",
            Some("ISTIO_MUTUAL"),
            false,
            [Conflict, Ok, Ok],
        ),
        (
            "tls-check: client SIMPLE",
            Some("SIMPLE"),
            false,
            [Conflict, Conflict, Conflict],
        ),
        (
            "tls-check: explicit DISABLE is not AUTO even with auto on",
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
    // docs/SEMANTICS.md#tls-check: one row per (service, port) plus one per DR subset, `host|subset`.
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

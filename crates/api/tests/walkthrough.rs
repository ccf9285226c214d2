//! The seed walkthrough, step by step, through the engine: PERMISSIVE install default, then a STRICT
//! MeshPolicy (sidecar services CONFLICT), then the `*.local` ISTIO_MUTUAL rule (OK).

mod common;

use common::*;
use ironmesh_api::policy::{ClientTlsMode, ServerMode, TlsCheckStatus, format_tls_check};

#[test]
fn install_default_is_permissive_and_plaintext_everywhere_is_ok() {
    let yaml = format!("{}{}", walkthrough_apps(), PERMISSIVE_MESH_POLICY);
    let index = index(&yaml, false);
    let rows = index.tls_check(None, None);
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter().all(|r| r.status == TlsCheckStatus::Ok),
        "{}",
        format_tls_check(&rows)
    );
    assert!(rows.iter().all(|r| r.server == ServerMode::Permissive));
}

#[test]
fn strict_mesh_policy_conflicts_for_sidecar_services_until_the_istio_mutual_rule() {
    let yaml = format!("{}{}", walkthrough_apps(), STRICT_MESH_POLICY);
    let rows = index(&yaml, false).tls_check(Some("bar"), Some("httpbin"));
    let text = format_tls_check(&rows);
    assert_eq!(
        text,
        "HOST:PORT                                 STATUS       SERVER     CLIENT     AUTHN POLICY     DESTINATION RULE\n\
         httpbin.bar.svc.cluster.local:8000        CONFLICT     STRICT     -          /default         -\n\
         httpbin.foo.svc.cluster.local:8000        CONFLICT     STRICT     -          /default         -\n\
         httpbin.legacy.svc.cluster.local:8000     OK           STRICT     -          /default         -\n"
    );

    let yaml = format!("{yaml}{ALL_INTERNAL_TRAFFIC}");
    let index = index(&yaml, false);
    let rows = index.tls_check(Some("bar"), Some("httpbin.foo"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TlsCheckStatus::Ok);
    assert_eq!(rows[0].client, ClientTlsMode::IstioMutual);
    assert_eq!(
        rows[0].authn_policy.as_ref().unwrap().to_string(),
        "/default"
    );
    assert_eq!(
        rows[0].destination_rule.as_ref().unwrap().to_string(),
        "default/default"
    );
    // The legacy namespace has no sidecar: ISTIO_MUTUAL towards it fails (docs/SEMANTICS.md#outcomes row 7).
    let legacy = index.tls_check(Some("bar"), Some("httpbin.legacy"));
    assert_eq!(legacy[0].status, TlsCheckStatus::Conflict);

    let decision = index.client_tls("bar", "httpbin.foo.svc.cluster.local", 8000);
    assert_eq!(
        decision.sni.as_deref(),
        Some("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    );
    assert_eq!(
        decision.subject_alt_names,
        vec!["spiffe://cluster.local/ns/foo/sa/default".to_string()]
    );
    let decision = index.client_tls("foo", "sleep.bar.svc.cluster.local", 80);
    assert_eq!(
        decision.subject_alt_names,
        vec!["spiffe://cluster.local/ns/bar/sa/sleep".to_string()]
    );
}

#[test]
fn auto_mtls_reports_auto_without_a_rule() {
    let yaml = format!("{}{}", walkthrough_apps(), STRICT_MESH_POLICY);
    let rows = index(&yaml, true).tls_check(None, Some("sleep.foo"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, TlsCheckStatus::Auto);
}

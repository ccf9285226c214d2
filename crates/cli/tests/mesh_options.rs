//! The mesh options belong to the control plane: `ironmesh up` hands them over (they are not written by
//! the CLI), the control plane keeps them in mesh.json, and `ironmesh status` asks it for them over the API
//! (API only: `IRONMESH_NO_RUNTIME=1`, no root needed).

mod common;

use common::{ApiOnlyControlPlane, ironmesh_api_only as ironmesh, output_text as text};

#[test]
fn up_hands_the_options_to_the_control_plane_and_status_asks_it() {
    let home = ApiOnlyControlPlane(tempfile::tempdir().unwrap());
    let dir = home.0.path();
    common::build_control_plane();
    let up = ironmesh(
        dir,
        &[
            "up",
            "--trust-domain",
            "example.org",
            "--auto-mtls",
            "--workload-cert-ttl",
            "2h",
        ],
    );
    assert!(up.status.success(), "{}", text(&up));

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mesh.json")).unwrap()).unwrap();
    assert_eq!(saved["trustDomain"], "example.org");
    assert_eq!(saved["autoMtls"], true);
    assert_eq!(saved["workloadCertTtlSeconds"], 7200);

    // The file is the control plane's record for its next start; status asks the running one.
    std::fs::remove_file(dir.join("mesh.json")).unwrap();
    let status = text(&ironmesh(dir, &["status"]));
    assert!(
        status.contains(
            "mesh:          trust domain example.org, auto mTLS on, workload certificate TTL 7200s"
        ),
        "{status}"
    );
}

//! ROOT ONLY: `apply --wait` on a real cluster (pods in network namespaces, real sidecars, real curl). The
//! request right after `apply --wait` returns must already see the new policy: without the wait, a request
//! a few milliseconds after the apply still gets the old answer (the sidecars had not received it yet).

mod common;

use std::time::Duration;

use common::{Cluster, samples};

#[test]
fn root_the_first_request_after_apply_wait_sees_the_new_policy() {
    let c = Cluster::up();
    c.deploy();
    c.ok(&["wait", "--timeout", "90s"]);
    c.wait_for("legacy", "foo", "200/0", Duration::from_secs(60));
    let strict = samples().join("default-mesh-policy.yaml");
    let permissive = c.home.path().join("permissive.yaml");
    std::fs::write(
        &permissive,
        "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata:\n  name: default\nspec:\n  peers:\n  - mtls:\n      mode: PERMISSIVE\n",
    )
    .unwrap();
    // Back and forth: each time, the very next call from a pod without a sidecar sees the new mode.
    for round in 0..3 {
        c.ok(&["apply", "-f", strict.to_str().unwrap(), "--wait"]);
        assert_eq!(
            c.call("legacy", "foo"),
            "000/56",
            "round {round}: STRICT must reset plaintext right after apply --wait"
        );
        c.ok(&["apply", "-f", permissive.to_str().unwrap(), "--wait"]);
        assert_eq!(
            c.call("legacy", "foo"),
            "200/0",
            "round {round}: PERMISSIVE must accept plaintext right after apply --wait"
        );
    }
}

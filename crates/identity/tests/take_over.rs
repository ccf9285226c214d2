//! A running CA moved to new keys (on Kubernetes, a changed `cacerts`): what it signs from then on
//! chains to the new root, and the trust bundle's watchers (what the control plane pushes to proxies)
//! hear of the new bundle.

use std::time::Duration;

use ironmesh_identity::{CaOptions, CertificateAuthority, SpiffeId};

#[test]
fn a_ca_that_takes_over_new_keys_signs_with_them_and_announces_their_bundle() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = || CaOptions::new("cluster.local");
    let ca = CertificateAuthority::load_or_create(old_dir.path(), options()).unwrap();
    let old_root = ca.current_root_pem();
    let mut bundle = ca.watch_trust_bundle();
    bundle.borrow_and_update();

    let (cert, key) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
    let fresh =
        CertificateAuthority::plug_in(new_dir.path(), options(), &cert, &key, "", "").unwrap();
    let new_root = fresh.current_root_pem();
    assert_ne!(new_root, old_root);
    ca.take_over(fresh);

    assert!(
        bundle.has_changed().unwrap(),
        "the bundle's watchers were not told"
    );
    assert_eq!(*bundle.borrow_and_update(), std::slice::from_ref(&new_root));
    assert_eq!(ca.signing_certificate_pem().trim(), cert.trim());
    let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/sleep".parse().unwrap();
    let (csr, _key) = ironmesh_identity::csr_for(&id).unwrap();
    let chain = ca
        .sign_workload(&csr, &id, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(chain.last(), Some(&new_root));
}

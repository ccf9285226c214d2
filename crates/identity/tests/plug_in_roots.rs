//! A plug-in CA whose `root-cert.pem` holds more than one root (Istio's way to migrate a plug-in CA from
//! one root to another): every root is trusted, the chain must lead to one of them, and stock `openssl`
//! verifies workload certificates of both the old and the new CA against the bundle.

mod support;

use std::time::Duration;

use ironmesh_identity::{CaOptions, CertificateAuthority, csr_for};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use support::*;

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A self-signed root: (issuer, certificate PEM).
fn root(common_name: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let issuer =
        CertifiedIssuer::self_signed(ca_params(common_name), KeyPair::generate().unwrap()).unwrap();
    let pem = issuer.pem();
    (issuer, pem)
}

/// An intermediate CA signed by `by`: (certificate PEM, PKCS#8 key PEM).
fn intermediate(common_name: &str, by: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(common_name).signed_by(&key, by).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn sign(ca: &CertificateAuthority) -> Vec<String> {
    let (csr, _key) = csr_for(&id("foo", "sleep")).unwrap();
    ca.sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
        .unwrap()
}

#[test]
fn every_root_of_root_cert_pem_is_trusted_and_the_chain_gains_its_root() {
    ironmesh_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (old_root, old_root_pem) = root("Old Root");
    let (new_root, new_root_pem) = root("New Root");
    let (old_int, old_int_key) = intermediate("Old Intermediate", &old_root);
    let (new_int, new_int_key) = intermediate("New Intermediate", &new_root);
    let roots = format!("{old_root_pem}{new_root_pem}");

    // The old CA, with both roots trusted: its chain (cert-chain.pem without the root) gains the old
    // root, which leads the bundle.
    let old = CertificateAuthority::plug_in(
        &dir.path().join("old"),
        CaOptions::new(TD),
        &old_int,
        &old_int_key,
        &old_int,
        &roots,
    )
    .unwrap();
    assert_eq!(
        old.trust_bundle_pems(),
        vec![old_root_pem.clone(), new_root_pem.clone()]
    );
    assert_eq!(old.current_root_pem(), old_root_pem);
    let old_chain = sign(&old);
    assert_eq!(old_chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(old_chain[2], old_root_pem);

    // The new CA, migrated to, with the same bundle in the other order.
    let new = CertificateAuthority::plug_in(
        &dir.path().join("new"),
        CaOptions::new(TD),
        &new_int,
        &new_int_key,
        &format!("{new_int}{new_root_pem}"),
        &roots,
    )
    .unwrap();
    assert_eq!(
        new.trust_bundle_pems(),
        vec![new_root_pem.clone(), old_root_pem.clone()]
    );
    let new_chain = sign(&new);
    assert_eq!(new_chain.len(), 3);

    // A proxy holding the new CA's bundle accepts workloads of both CAs: the migration window.
    for chain in [&old_chain, &new_chain] {
        let verified = openssl_verify(dir.path(), &new.trust_bundle_pem(), chain);
        assert!(verified.contains("leaf.pem: OK"), "{verified}");
    }
    // Once the old root leaves root-cert.pem, the old CA's workloads are no longer trusted.
    let verified = openssl_verify(dir.path(), &new_root_pem, &old_chain);
    assert!(!verified.contains("leaf.pem: OK"), "{verified}");

    // Reopened from its files, and read without its key, the CA keeps both roots.
    let again =
        CertificateAuthority::load_or_create(&dir.path().join("new"), CaOptions::new(TD)).unwrap();
    assert_eq!(again.trust_bundle_pems(), new.trust_bundle_pems());
    assert_eq!(
        CertificateAuthority::read_trust_bundle(&dir.path().join("new")).unwrap(),
        new.trust_bundle_pem()
    );
}

#[test]
fn a_chain_that_leads_to_none_of_the_roots_is_refused_before_anything_is_written() {
    ironmesh_identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (root_a, root_a_pem) = root("Root A");
    let (_, root_b_pem) = root("Root B");
    let (_, root_c_pem) = root("Root C");
    let (int, int_key) = intermediate("Intermediate A", &root_a);

    // Root A is not in root-cert.pem: the CA's chain leads nowhere the proxies would trust.
    let error = CertificateAuthority::plug_in(
        &dir.path().join("ca"),
        CaOptions::new(TD),
        &int,
        &int_key,
        &format!("{int}{root_a_pem}"),
        &format!("{root_b_pem}{root_c_pem}"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("Root A"), "{error}");
    assert!(error.contains("root-cert.pem"), "{error}");
    assert!(
        !dir.path().join("ca/ca-cert.pem").exists(),
        "nothing half-applied"
    );

    // cert-chain.pem naming an issuer that did not sign the CA certificate.
    let error = CertificateAuthority::plug_in(
        &dir.path().join("ca"),
        CaOptions::new(TD),
        &int,
        &int_key,
        &format!("{int}{root_b_pem}"),
        &root_b_pem,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("cert-chain.pem is not a chain"), "{error}");
    assert!(error.contains("Intermediate A"), "{error}");

    // root-cert.pem that holds no certificate.
    let error = CertificateAuthority::plug_in(
        &dir.path().join("ca"),
        CaOptions::new(TD),
        &int,
        &int_key,
        &int,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("root-cert.pem holds no certificate"),
        "{error}"
    );
    assert!(!dir.path().join("ca/ca-cert.pem").exists());
}

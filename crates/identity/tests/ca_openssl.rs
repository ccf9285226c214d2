//! The CA checked by stock `openssl`: chains verify, the SAN is exactly the credential's SPIFFE URI,
//! validity matches the TTL; the CA dir survives reopening; key files are 0600; plug-in CAs chain through.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironmesh_identity::{CaOptions, CertificateAuthority, csr_for};
use support::*;

fn openssl(args: &[&str], dir: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl binary must be installed for this test");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

#[test]
fn openssl_accepts_the_chain_and_sees_only_the_credential_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    // The CSR asks for another identity; the CA must issue the authenticated one instead.
    let (csr, _key) = csr_for(&id("kube-system", "admin")).unwrap();
    let chain = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.current_root_pem());
    let work = dir.path();
    write(work, "leaf.pem", &chain[0]);
    write(work, "root.pem", &ca.trust_bundle_pem());
    let verified = openssl(&["verify", "-CAfile", "root.pem", "leaf.pem"], work);
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
    let text = openssl(
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-ext",
            "subjectAltName,basicConstraints,extendedKeyUsage,keyUsage",
        ],
        work,
    );
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/foo/sa/sleep"),
        "{text}"
    );
    assert!(!text.contains("admin"), "{text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert_eq!(text.matches("URI:").count(), 1, "{text}");
    assert!(!text.contains("DNS:"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(!text.contains("Certificate Sign"), "{text}");
    let subject = openssl(&["x509", "-in", "leaf.pem", "-noout", "-subject"], work);
    assert_eq!(subject.trim(), "subject=", "empty subject");

    // Validity: notAfter - notBefore == TTL.
    let dates = openssl(
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-startdate",
            "-enddate",
        ],
        work,
    );
    let to_unix = |field: &str| -> i64 {
        let line = dates.lines().find(|l| l.starts_with(field)).unwrap();
        let date = line.split_once('=').unwrap().1;
        let out = Command::new("date")
            .args(["-u", "-d", date, "+%s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    assert_eq!(to_unix("notAfter") - to_unix("notBefore"), 3600, "{dates}");
}

#[test]
fn serials_are_random_even_for_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let (csr, _key) = csr_for(&id("foo", "sleep")).unwrap();
    let a = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::ZERO)
        .unwrap();
    let b = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::ZERO)
        .unwrap();
    write(dir.path(), "a.pem", &a[0]);
    write(dir.path(), "b.pem", &b[0]);
    let sa = openssl(&["x509", "-in", "a.pem", "-noout", "-serial"], dir.path());
    let sb = openssl(&["x509", "-in", "b.pem", "-noout", "-serial"], dir.path());
    assert_ne!(sa, sb);
}

#[test]
fn ttl_defaults_to_24h_and_more_than_90_days_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let (csr, _key) = csr_for(&id("foo", "sleep")).unwrap();
    let chain = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::ZERO)
        .unwrap();
    write(dir.path(), "leaf.pem", &chain[0]);
    let end = openssl(
        &["x509", "-in", "leaf.pem", "-noout", "-checkend", "86300"],
        dir.path(),
    );
    assert!(end.contains("will not expire"), "{end}");
    let too_long = ca.sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(91 * 86400));
    let err = too_long.unwrap_err().to_string();
    assert!(err.contains("exceeds the maximum"), "{err}");
    let wrong_td = ironmesh_identity::SpiffeId::new("other.local", "foo", "sleep").unwrap();
    assert!(ca.sign_workload(&csr, &wrong_td, Duration::ZERO).is_err());
    assert!(
        ca.sign_workload("not a csr", &id("foo", "sleep"), Duration::ZERO)
            .is_err()
    );
}

#[test]
fn a_csr_asking_to_be_a_ca_gets_a_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(60))
        .unwrap();
    write(dir.path(), "leaf.pem", &chain[0]);
    let text = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], dir.path());
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(!text.contains("evil.example"), "{text}");
}

#[test]
fn reopening_the_ca_dir_keeps_the_root_and_keys_are_0600() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_ca(dir.path());
    let fingerprint = first.root_fingerprint();
    assert_eq!(fingerprint.len(), 32 * 3 - 1);
    drop(first);
    let again = CertificateAuthority::load_or_create(dir.path(), CaOptions::new(TD)).unwrap();
    assert_eq!(again.root_fingerprint(), fingerprint);
    assert_eq!(
        CertificateAuthority::read_trust_bundle(dir.path()).unwrap(),
        again.trust_bundle_pem()
    );
    let openssl_fp = openssl(
        &[
            "x509",
            "-in",
            "root-cert.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        dir.path(),
    );
    assert!(
        openssl_fp.contains(&fingerprint),
        "{openssl_fp} vs {fingerprint}"
    );
    let mode = std::fs::metadata(dir.path().join("root-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ironmesh_identity::CredentialAuthority::load_or_create(dir.path()).unwrap();
    let mode = std::fs::metadata(dir.path().join("token-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary files are left behind by the atomic writes.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains(".tmp"), "left over {name}");
    }
}

#[test]
fn root_rotation_trusts_both_then_only_the_new_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    let work = dir.path();
    let (csr, _) = csr_for(&id("foo", "sleep")).unwrap();
    let old_leaf = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
        .unwrap();
    let old_fp = ca.root_fingerprint();
    ca.rotate_root().unwrap();
    assert_ne!(ca.root_fingerprint(), old_fp);
    assert_eq!(ca.trust_bundle_pems().len(), 2);
    let new_leaf = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
        .unwrap();
    assert_eq!(
        new_leaf.len(),
        3,
        "leaf, new root cross-signed by the old one, new root"
    );
    // A verifier that only knows the old root still accepts the new leaf through the cross-signed root.
    let old_root_only = ca.trust_bundle_pems()[1].clone();
    write(work, "old-root.pem", &old_root_only);
    write(work, "cross.pem", &new_leaf[1]);
    write(work, "new-leaf.pem", &new_leaf[0]);
    let through_cross = openssl(
        &[
            "verify",
            "-CAfile",
            "old-root.pem",
            "-untrusted",
            "cross.pem",
            "new-leaf.pem",
        ],
        work,
    );
    assert!(
        through_cross.contains("new-leaf.pem: OK"),
        "{through_cross}"
    );
    write(work, "bundle.pem", &ca.trust_bundle_pem());
    write(work, "old.pem", &old_leaf[0]);
    write(work, "new.pem", &new_leaf[0]);
    openssl(
        &["verify", "-CAfile", "bundle.pem", "old.pem", "new.pem"],
        work,
    );
    // Reopening keeps the overlap.
    let reopened =
        CertificateAuthority::load_or_create(&work.join("ca"), CaOptions::new(TD)).unwrap();
    assert_eq!(reopened.trust_bundle_pems().len(), 2);
    assert_eq!(reopened.root_fingerprint(), ca.root_fingerprint());
    let reopened_chain = reopened
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
        .unwrap();
    assert_eq!(
        reopened_chain.len(),
        3,
        "the cross-signed root survives a restart"
    );
    ca.retire_root().unwrap();
    assert_eq!(ca.trust_bundle_pems(), vec![ca.current_root_pem()]);
    let after_retire = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
        .unwrap();
    assert_eq!(
        after_retire.len(),
        2,
        "no cross-signed root once the old root is retired"
    );
    assert_eq!(
        CertificateAuthority::load_or_create(&work.join("ca"), CaOptions::new(TD))
            .unwrap()
            .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
            .unwrap()
            .len(),
        2
    );
    write(work, "bundle.pem", &ca.trust_bundle_pem());
    openssl(&["verify", "-CAfile", "bundle.pem", "new.pem"], work);
    let refused = Command::new("openssl")
        .args(["verify", "-CAfile", "bundle.pem", "old.pem"])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "the retired root must no longer verify old leaves"
    );
    assert!(ca.retire_root().is_err(), "nothing left to retire");
}

#[test]
fn plug_in_ca_issues_leaves_that_chain_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // A user's root and an intermediate made with stock openssl, as an operator would.
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "root-key.ec",
        ],
        work,
    );
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root-key.ec",
            "-subj",
            "/O=Example/CN=Example Root",
            "-days",
            "30",
            "-out",
            "user-root.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        work,
    );
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "int-key.ec",
        ],
        work,
    );
    openssl(
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "int-key.ec",
            "-out",
            "int-key.pem",
        ],
        work,
    );
    openssl(
        &[
            "req",
            "-new",
            "-key",
            "int-key.ec",
            "-subj",
            "/O=Example/CN=Mesh Intermediate",
            "-out",
            "int.csr",
        ],
        work,
    );
    write(
        work,
        "ext.cnf",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "user-root.pem",
            "-CAkey",
            "root-key.ec",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "ext.cnf",
            "-out",
            "int.pem",
        ],
        work,
    );
    let read = |n: &str| std::fs::read_to_string(work.join(n)).unwrap();
    let ca = CertificateAuthority::plug_in(
        &work.join("ca"),
        CaOptions::new(TD),
        &read("int.pem"),
        &read("int-key.pem"),
        &format!("{}{}", read("int.pem"), read("user-root.pem")),
        "",
    )
    .unwrap();
    let (csr, _) = csr_for(&id("foo", "sleep")).unwrap();
    let chain = ca
        .sign_workload(&csr, &id("foo", "sleep"), Duration::from_secs(600))
        .unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(ca.trust_bundle_pem(), read("user-root.pem"));
    let ok = openssl_verify(work, &ca.trust_bundle_pem(), &chain);
    assert!(ok.contains("leaf.pem: OK"), "{ok}");
    // Reopening the directory keeps using the plug-in CA.
    let again = CertificateAuthority::load_or_create(&work.join("ca"), CaOptions::new(TD)).unwrap();
    assert_eq!(again.trust_bundle_pem(), read("user-root.pem"));
    assert_eq!(
        CertificateAuthority::read_trust_bundle(&work.join("ca")).unwrap(),
        read("user-root.pem")
    );
    let mode = std::fs::metadata(work.join("ca/ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A key that does not match the certificate is refused before anything is written.
    let wrong = CertificateAuthority::plug_in(
        &work.join("ca2"),
        CaOptions::new(TD),
        &read("int.pem"),
        &rcgen::KeyPair::generate().unwrap().serialize_pem(),
        "",
        "",
    );
    assert!(wrong.unwrap_err().to_string().contains("does not belong"));
    assert!(!work.join("ca2/ca-cert.pem").exists());
}

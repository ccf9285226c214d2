//! Benchmark certificates from OUR CA: `ironmesh-identity`'s `CertificateAuthority` creates the root in
//! `<dir>/ca` (the same root the in-process control plane signs proxy certificates with), and the two
//! peer workload certificates (client and server sidecar) are signed by that root's key with a SPIFFE
//! URI SAN plus a DNS SAN the peers verify (`server.bench.svc`): nginx, haproxy and stunnel check DNS
//! names, which `sign_workload` (SPIFFE only, by design) does not put in.

use std::fs;
use std::path::{Path, PathBuf};

use ironmesh_identity::{CaOptions, CertificateAuthority};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{BenchError, Result};

/// Trust domain of the benchmark identities.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// DNS name in the server certificate that the peer client sidecars verify.
pub const SERVER_NAME: &str = "server.bench.svc";

/// Paths of one workload's credentials.
#[derive(Debug, Clone)]
pub struct WorkloadFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate followed by key, the format haproxy's `crt` wants.
    pub combined: PathBuf,
    pub spiffe_id: String,
}

/// The root and the two workloads' files.
#[derive(Debug, Clone)]
pub struct BenchCerts {
    pub ca: PathBuf,
    pub client: WorkloadFiles,
    pub server: WorkloadFiles,
}

fn mint_error(error: rcgen::Error) -> BenchError {
    BenchError::Certificates(error.to_string())
}

/// Creates (or loads) our CA under `dir/ca` and mints both workload certificates into `dir`.
pub fn mint(dir: &Path) -> Result<BenchCerts> {
    let ca_dir = dir.join("ca");
    let ca = CertificateAuthority::load_or_create(&ca_dir, CaOptions::new(TRUST_DOMAIN))
        .map_err(|error| BenchError::Certificates(error.to_string()))?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca.trust_bundle_pem())?;
    let read = |name: &str| {
        let path = ca_dir.join(name);
        fs::read_to_string(&path).map_err(|error| BenchError::io(&path, error))
    };
    let root_key = KeyPair::from_pem(&read("root-key.pem")?).map_err(mint_error)?;
    let issuer = Issuer::from_ca_cert_pem(&read("root-cert.pem")?, root_key).map_err(mint_error)?;
    let client = workload(dir, &issuer, "client", "bench-client", None)?;
    let server = workload(dir, &issuer, "server", "bench-server", Some(SERVER_NAME))?;
    Ok(BenchCerts {
        ca: ca_path,
        client,
        server,
    })
}

fn workload(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    file_stem: &str,
    service_account: &str,
    dns_name: Option<&str>,
) -> Result<WorkloadFiles> {
    let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/ns/bench/sa/{service_account}");
    let key = KeyPair::generate().map_err(mint_error)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names.push(SanType::URI(
        spiffe_id.clone().try_into().map_err(mint_error)?,
    ));
    if let Some(dns_name) = dns_name {
        params
            .subject_alt_names
            .push(SanType::DnsName(dns_name.try_into().map_err(mint_error)?));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let cert = params.signed_by(&key, issuer).map_err(mint_error)?;
    let files = WorkloadFiles {
        cert: dir.join(format!("{file_stem}.pem")),
        key: dir.join(format!("{file_stem}.key")),
        combined: dir.join(format!("{file_stem}-combined.pem")),
        spiffe_id,
    };
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())?;
    write(
        &files.combined,
        &format!("{}{}", cert.pem(), key.serialize_pem()),
    )?;
    Ok(files)
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|error| BenchError::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_workload_certificates_chain_to_the_root_with_spiffe_ids() {
        let dir = tempfile::tempdir().unwrap();
        let certs = mint(dir.path()).unwrap();
        let client_pem = fs::read_to_string(&certs.client.cert).unwrap();
        let ca_pem = fs::read_to_string(&certs.ca).unwrap();
        assert!(client_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(client_pem, ca_pem);
        assert_eq!(
            certs.server.spiffe_id,
            "spiffe://cluster.local/ns/bench/sa/bench-server"
        );
        let combined = fs::read_to_string(&certs.server.combined).unwrap();
        assert!(
            combined.contains("PRIVATE KEY"),
            "haproxy needs the key in the crt file"
        );
        // The server certificate must verify against the root for the peers' DNS name.
        let roots = crate::handshake::root_store(&certs.ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let chain = crate::handshake::read_chain(&certs.server.cert).unwrap();
        let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
    }
}

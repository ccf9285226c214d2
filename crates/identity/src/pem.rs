//! Small PEM helpers shared by the CA and the workload side (rustls-pki-types, not rustls-pemfile).

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Every certificate in a PEM text, in order.
pub(crate) fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e}"))
}

/// One certificate as PEM text.
pub(crate) fn cert_to_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Splits a PEM text holding several certificates into one PEM string per certificate.
pub(crate) fn split_certs(pem: &str) -> Result<Vec<String>, String> {
    Ok(certs_from_pem(pem)?.iter().map(cert_to_pem).collect())
}

//! `proxy-config secret POD [-o pem]`: the certificate chain a pod's proxy holds, its SPIFFE ID, validity
//! and next rotation, and the trust bundle it holds, asked of the proxy by the control plane
//! (`/v1/proxy-config/secret`). `proxy-config cluster POD [-o json]`: its outbound clusters, TLS mode and
//! SNI, as the control plane computes them (`/v1/proxy-config/cluster`).

use ironmesh_store::client::ApiClient;
use ironmesh_store::wire::PodQuery;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::Pem;

use crate::error::CliError;
use crate::table::render;

struct CertFacts {
    serial: String,
    not_before: i64,
    not_after: i64,
    spiffe_id: Option<String>,
    is_ca: bool,
}

/// The certificates of PEM texts, in order.
fn pems(texts: &[String]) -> Result<Vec<Pem>, CliError> {
    let mut all = Vec::new();
    for text in texts {
        for pem in Pem::iter_from_buffer(text.as_bytes()) {
            all.push(
                pem.map_err(|e| CliError::Usage(format!("the sidecar answered invalid PEM: {e}")))?,
            );
        }
    }
    Ok(all)
}

fn facts(pem: &Pem) -> Result<CertFacts, CliError> {
    let cert = pem
        .parse_x509()
        .map_err(|e| CliError::Usage(format!("a certificate does not parse: {e}")))?;
    let mut spiffe_id = None;
    let mut is_ca = false;
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                spiffe_id = san.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
                    _ => None,
                });
            }
            ParsedExtension::BasicConstraints(constraints) => is_ca = constraints.ca,
            _ => {}
        }
    }
    Ok(CertFacts {
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spiffe_id,
        is_ca,
    })
}

fn time_text(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

pub(crate) async fn secret(
    client: &ApiClient,
    pod: &str,
    namespace: &str,
    output: Option<&str>,
) -> Result<(), CliError> {
    let query = PodQuery {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
    };
    let held = client
        .proxy_secret(&query)
        .await
        .map_err(CliError::refused)?;
    let chain = pems(&held.chain_pem)?;
    let bundle = pems(&held.trust_bundle_pem)?;
    if chain.is_empty() {
        return Err(CliError::Usage(format!(
            "the sidecar of pod \"{pod}\" holds no certificate yet"
        )));
    }
    match output {
        Some("pem") => {
            for pem in chain.iter().take(1).chain(bundle.iter()) {
                print!("{}", pem_text(pem));
            }
            return Ok(());
        }
        Some(other) => {
            return Err(CliError::Usage(format!(
                "unknown output format {other:?}; use `-o pem` or leave -o out"
            )));
        }
        None => {}
    }
    let now = chrono::Utc::now().timestamp();
    let mut rows = vec![
        [
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let leaf = facts(&chain[0])?;
    let row = |name: &str, kind: &str, f: &CertFacts| {
        let valid = f.not_before <= now && now < f.not_after;
        vec![
            name.to_string(),
            kind.to_string(),
            "ACTIVE".into(),
            valid.to_string(),
            f.serial.clone(),
            time_text(f.not_after),
            time_text(f.not_before),
        ]
    };
    rows.push(row("default", "Cert Chain", &leaf));
    for pem in &bundle {
        let root = facts(pem)?;
        if root.is_ca {
            rows.push(row("ROOTCA", "CA", &root));
        }
    }
    print!("{}", render(&rows));
    println!();
    println!(
        "SPIFFE ID:      {}",
        leaf.spiffe_id.as_deref().unwrap_or("<none>")
    );
    println!("Chain length:   {}", chain.len());
    // The proxy's own schedule: about half the lifetime, jittered so sidecars do not renew at once.
    println!(
        "Next rotation:  {} (as scheduled by the sidecar)",
        time_text(held.next_rotation as i64)
    );
    Ok(())
}

fn pem_text(pem: &Pem) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pem.contents);
    let mut out = format!("-----BEGIN {}-----\n", pem.label);
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {}-----\n", pem.label));
    out
}

/// `proxy-config cluster POD`: the outbound clusters the pod's sidecar is configured with, computed from
/// the stored resources as the control plane computes the pushed configuration, with each cluster's TLS
/// mode and the SNI its mTLS connections carry (`outbound_.<port>_._.<FQDN>`).
pub(crate) async fn cluster(
    client: &ApiClient,
    pod: &str,
    namespace: &str,
    output: Option<&str>,
) -> Result<(), CliError> {
    let query = PodQuery {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
    };
    let rows = client
        .proxy_clusters(&query)
        .await
        .map_err(CliError::refused)?
        .rows;
    match output {
        None => print!("{}", render(&rows)),
        Some("json") => {
            let header = &rows[0];
            let items: Vec<serde_json::Value> = rows[1..]
                .iter()
                .map(|row| {
                    header
                        .iter()
                        .zip(row)
                        .map(|(k, v)| (k.to_ascii_lowercase().replace(' ', "_"), v.clone().into()))
                        .collect::<serde_json::Map<_, _>>()
                        .into()
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&items).unwrap_or_default()
            );
        }
        Some(other) => {
            return Err(CliError::Usage(format!(
                "unknown output format {other:?}; use `-o json` or leave -o out"
            )));
        }
    }
    Ok(())
}

//! `proxy-config secret POD [-o pem]`: the certificate chain a pod's proxy holds (its debugging copy under
//! `pods/<ns>/<pod>/proxy/cert-chain.pem`), its SPIFFE ID, validity and next rotation, and the mesh's
//! trust bundle. `proxy-config cluster POD [-o json]`: its outbound clusters, TLS mode and SNI.

use std::path::Path;

use ironmesh_control::objects::PodView;
use ironmesh_store::ObjectKey;
use ironmesh_store::client::ApiClient;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::Pem;

use crate::error::CliError;
use crate::table::render;
use ironmesh_home::Home;

struct CertFacts {
    serial: String,
    not_before: i64,
    not_after: i64,
    spiffe_id: Option<String>,
    is_ca: bool,
}

fn pems(path: &Path) -> Result<Vec<Pem>, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read {}: {e}; the proxy writes it once it holds a certificate (is the pod injected \
             and running?)",
            path.display()
        ))
    })?;
    Pem::iter_from_buffer(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(format!("{} is not valid PEM: {e}", path.display())))
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
    home: &Home,
    pod: &str,
    namespace: &str,
    output: Option<&str>,
) -> Result<(), CliError> {
    let object = client
        .get(&ObjectKey::new("pods", Some(namespace), pod))
        .await?;
    let has_sidecar = serde_json::from_value::<ironmesh_api::Object>(object)
        .map(|object| PodView::of(&object).has_sidecar())
        .unwrap_or(false);
    if !has_sidecar {
        return Err(CliError::Usage(format!(
            "pod \"{pod}\" in namespace \"{namespace}\" has no sidecar, so it holds no mesh certificate; \
             apply it through `ironmesh kube-inject` (or label the namespace istio-injection=enabled) to give it one"
        )));
    }
    let dir = ironmesh_runtime::pod_dir(home.root(), namespace, pod).join("proxy");
    let path = dir.join("cert-chain.pem");
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "the sidecar of pod \"{pod}\" holds no certificate yet; it gets one once the pod runs: \
             check `ironmesh get pod {pod} -n {namespace}`"
        )));
    }
    let chain = pems(&path)?;
    let bundle = pems(&home.root().join("ca/trust-bundle.pem"))?;
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
    // The proxy renews at half the lifetime (see the identity crate's rotation scheduler).
    let rotation = leaf.not_before + (leaf.not_after - leaf.not_before) / 2;
    println!(
        "Next rotation:  {} (half the lifetime)",
        time_text(rotation)
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

/// One outbound cluster row of `proxy-config cluster`: what the pod's sidecar does for a service port.
fn cluster_rows(config: &ironmesh_proto::pb::ProxyConfig) -> Vec<Vec<String>> {
    use ironmesh_proto::pb::ClientTlsMode;
    let mut rows = vec![
        [
            "SERVICE FQDN",
            "PORT",
            "DIRECTION",
            "TLS",
            "SNI",
            "ENDPOINTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for service in &config.services {
        for port in &service.ports {
            let tls = port.tls.clone().unwrap_or_default();
            let mode = ClientTlsMode::try_from(tls.mode).unwrap_or(ClientTlsMode::Unspecified);
            // The SNI the sidecar sends when this cluster uses mTLS (see ironmesh_proto::client_sni).
            let sni = match mode {
                ClientTlsMode::IstioMutual | ClientTlsMode::Auto => {
                    ironmesh_proto::client_sni(service, port)
                }
                _ => "-".to_owned(),
            };
            let endpoints: Vec<String> = service
                .endpoints
                .iter()
                .filter(|e| !e.ip.is_empty())
                .map(|e| format!("{}:{}", e.ip, port.target_port))
                .collect();
            rows.push(vec![
                service.hostname.clone(),
                port.port.to_string(),
                "outbound".into(),
                mode.as_str_name().to_owned(),
                sni,
                if endpoints.is_empty() {
                    "-".into()
                } else {
                    endpoints.join(",")
                },
            ]);
        }
    }
    rows
}

/// `proxy-config cluster POD`: the outbound clusters the pod's sidecar is configured with, computed from
/// the stored resources as the control plane computes the pushed configuration, with each cluster's TLS
/// mode and the SNI its mTLS connections carry (`outbound_.<port>_._.<FQDN>`).
pub(crate) async fn cluster(
    client: &ApiClient,
    home: &Home,
    pod: &str,
    namespace: &str,
    output: Option<&str>,
) -> Result<(), CliError> {
    use ironmesh_api::Object;
    use ironmesh_control::objects::PodView;
    use ironmesh_control::proxy_config::ClusterSnapshot;
    let mesh =
        ironmesh_control::options::load(home.root()).map_err(|e| CliError::Usage(e.to_string()))?;
    let objects: Vec<Object> = client
        .list(None, None, None)
        .await?
        .items
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect();
    let view = objects
        .iter()
        .filter(|o| o.kind == "Pod")
        .map(PodView::of)
        .find(|p| p.name == pod && p.namespace == namespace)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "pod \"{pod}\" not found in namespace \"{namespace}\"; list pods with `ironmesh get pods -n {namespace}`"
            ))
        })?;
    let config = ClusterSnapshot::new(&objects, &mesh).proxy_config(&view);
    let rows = cluster_rows(&config);
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

#[cfg(test)]
mod cluster_tests {
    use ironmesh_proto::pb;

    #[test]
    fn clusters_show_the_sni_of_mtls_ports() {
        let config = pb::ProxyConfig {
            services: vec![pb::Service {
                hostname: "httpbin.foo.svc.cluster.local".into(),
                ports: vec![
                    pb::ServicePort {
                        port: 8000,
                        target_port: 80,
                        tls: Some(pb::ClientTls {
                            mode: pb::ClientTlsMode::Auto as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    pb::ServicePort {
                        port: 9000,
                        target_port: 9000,
                        tls: Some(pb::ClientTls {
                            mode: pb::ClientTlsMode::ClientDisable as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                endpoints: vec![pb::Endpoint {
                    ip: "198.18.0.5".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let rows = super::cluster_rows(&config);
        assert_eq!(
            rows[1],
            [
                "httpbin.foo.svc.cluster.local",
                "8000",
                "outbound",
                "AUTO",
                "outbound_.8000_._.httpbin.foo.svc.cluster.local",
                "198.18.0.5:80"
            ]
        );
        assert_eq!(rows[2][3], "CLIENT_DISABLE");
        assert_eq!(rows[2][4], "-");
    }
}

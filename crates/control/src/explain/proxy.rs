//! `/v1/proxy-config/cluster` and `/v1/proxy-config/secret` (`ironmesh proxy-config cluster|secret POD`):
//! a sidecar's outbound clusters as the control plane computes its pushed configuration, and the
//! certificates the sidecar holds, asked of the sidecar itself (its admin `/certs` knows the real,
//! jittered rotation time).

use std::net::SocketAddr;

use ironmesh_api::Object;
use ironmesh_api::mesh::MeshOptions;
use ironmesh_proto::pb;
use ironmesh_runtime::Cluster;
use ironmesh_store::wire::{ClusterTable, PodQuery, ProxySecret};
use ironmesh_store::{Reason, RouteError};
use serde_json::Value;

use crate::objects::PodView;
use crate::proxy_config::ClusterSnapshot;

/// The sidecar's localhost admin inside the pod (ironmesh-proxy's `--admin-listen` default).
const PROXY_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

fn refused(message: String) -> RouteError {
    RouteError::new(Reason::BadRequest, message)
}

/// One outbound cluster row per service port of `proxy-config cluster`: what the pod's sidecar does for
/// it, with its TLS mode and the SNI its mTLS connections carry (`outbound_.<port>_._.<FQDN>`).
pub(crate) fn cluster(
    objects: &[Object],
    mesh: &MeshOptions,
    query: &PodQuery,
) -> Result<ClusterTable, RouteError> {
    let PodQuery { pod, namespace } = query;
    let view = objects
        .iter()
        .filter(|o| o.kind == "Pod")
        .map(PodView::of)
        .find(|p| &p.name == pod && &p.namespace == namespace)
        .ok_or_else(|| {
            refused(format!(
                "pod \"{pod}\" not found in namespace \"{namespace}\"; list pods with `ironmesh get pods -n {namespace}`"
            ))
        })?;
    let config = ClusterSnapshot::new(objects, mesh).proxy_config(&view);
    Ok(ClusterTable {
        rows: cluster_rows(&config),
    })
}

fn cluster_rows(config: &pb::ProxyConfig) -> Vec<Vec<String>> {
    use pb::ClientTlsMode;
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

/// The certificates the sidecar of `pod` holds now, from its admin's `/certs`. `pod_object` is the
/// stored pod (`None`: not found).
pub(crate) fn secret(
    cluster: Option<&Cluster>,
    pod_object: Option<Value>,
    query: &PodQuery,
) -> Result<ProxySecret, RouteError> {
    let PodQuery { pod, namespace } = query;
    let object = pod_object
        .ok_or_else(|| RouteError::new(Reason::NotFound, format!("pods \"{pod}\" not found")))?;
    let has_sidecar = serde_json::from_value::<Object>(object)
        .map(|object| PodView::of(&object).has_sidecar())
        .unwrap_or(false);
    if !has_sidecar {
        return Err(refused(format!(
            "pod \"{pod}\" in namespace \"{namespace}\" has no sidecar, so it holds no mesh certificate; \
             apply it through `ironmesh kube-inject` (or label the namespace istio-injection=enabled) to give it one"
        )));
    }
    let not_yet = || {
        refused(format!(
            "the sidecar of pod \"{pod}\" holds no certificate yet; it gets one once the pod runs: \
             check `ironmesh get pod {pod} -n {namespace}`"
        ))
    };
    let cluster = cluster.ok_or_else(|| {
        refused(
            "this control plane runs no pods (IRONMESH_NO_RUNTIME), so no sidecar to ask".into(),
        )
    })?;
    let netns = cluster.id().pod_netns(namespace, pod);
    let body = ironmesh_runtime::http_get_in_netns(&netns, PROXY_ADMIN, "/certs").map_err(|error| {
        tracing::debug!(%error, pod, namespace, "cannot ask the sidecar's admin for its certificates");
        not_yet()
    })?;
    let certs: Value = serde_json::from_str(&body).map_err(|_| not_yet())?;
    let pems = |field: &str| -> Vec<String> {
        certs[field]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|pem| pem.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let chain_pem = pems("chain_pem");
    if chain_pem.is_empty() {
        return Err(not_yet());
    }
    Ok(ProxySecret {
        identity: certs["identity"].as_str().unwrap_or_default().to_owned(),
        chain_pem,
        trust_bundle_pem: pems("trust_bundle_pem"),
        next_rotation: certs["next_rotation"].as_u64().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rows = cluster_rows(&config);
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

    #[test]
    fn a_missing_pod_is_not_found_and_a_pod_without_sidecar_is_refused() {
        let query = PodQuery {
            pod: "sleep".into(),
            namespace: "legacy".into(),
        };
        let missing = secret(None, None, &query).unwrap_err();
        assert_eq!(missing.reason, Reason::NotFound);
        assert_eq!(missing.message, "pods \"sleep\" not found");
        let plain = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sleep", "namespace": "legacy"},
            "spec": {"containers": [{"name": "sleep", "image": "curl"}]},
        });
        let refused = secret(None, Some(plain), &query).unwrap_err();
        assert_eq!(refused.reason, Reason::BadRequest);
        assert!(
            refused.message.contains("has no sidecar"),
            "{}",
            refused.message
        );
    }
}

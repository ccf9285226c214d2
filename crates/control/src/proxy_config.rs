//! What each sidecar is told: its own workload with the inbound mode of every port, and every service it
//! may call with the client TLS decision, all computed with the policy engine from one snapshot of the
//! stored resources, plus the AuthorizationPolicies and the egress (`Sidecar`) that apply to it.
//! Pure: the same objects give the same configurations.

use std::collections::BTreeMap;

use ironmesh_api::Object;
use ironmesh_api::policy::{ClientTlsMode, PolicyIndex, ServerMode, Workload};
use ironmesh_proto::pb;

use crate::authz::{EgressScope, PolicyScope};
use crate::objects::{
    AppProtocol, PROXY_CONTAINER, PodView, ServiceView, app_protocol, selector_matches,
};
use crate::options::MeshOptions;

/// One consistent view of the cluster, indexed for computing proxy configurations.
pub struct ClusterSnapshot {
    index: PolicyIndex,
    services: Vec<ServiceView>,
    pods: Vec<PodView>,
    trust_domain: String,
    auto_mtls: bool,
    policies: PolicyScope,
    egress: EgressScope,
}

fn server_mode(mode: ServerMode) -> pb::ServerMode {
    match mode {
        ServerMode::Disable => pb::ServerMode::Disable,
        ServerMode::Permissive => pb::ServerMode::Permissive,
        ServerMode::Strict => pb::ServerMode::Strict,
    }
}

fn protocol(protocol: AppProtocol) -> pb::Protocol {
    match protocol {
        AppProtocol::Http => pb::Protocol::Http,
        AppProtocol::Http2 => pb::Protocol::Http2,
        AppProtocol::Grpc => pb::Protocol::Grpc,
        AppProtocol::Tcp => pb::Protocol::Tcp,
    }
}

impl ClusterSnapshot {
    /// Indexes `objects` (all kinds from the store).
    pub fn new(objects: &[Object], mesh: &MeshOptions) -> ClusterSnapshot {
        let of_kind = |kind: &'static str| objects.iter().filter(move |o| o.kind == kind);
        let mesh_config = mesh.mesh_config();
        let root_namespace = &mesh_config.root_namespace;
        ClusterSnapshot {
            policies: PolicyScope::new(objects, root_namespace),
            egress: EgressScope::new(
                objects,
                root_namespace,
                match mesh.outbound_traffic_policy {
                    crate::OutboundTrafficPolicy::AllowAny => pb::OutboundTrafficPolicy::AllowAny,
                    crate::OutboundTrafficPolicy::RegistryOnly => {
                        pb::OutboundTrafficPolicy::RegistryOnly
                    }
                },
            ),
            index: PolicyIndex::new(objects, mesh_config),
            services: of_kind("Service").map(ServiceView::of).collect(),
            pods: of_kind("Pod").map(PodView::of).collect(),
            trust_domain: mesh.trust_domain.clone(),
            auto_mtls: mesh.auto_mtls,
        }
    }

    fn workload(pod: &PodView) -> Workload {
        Workload {
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            service_account: pod.service_account.clone(),
        }
    }

    fn spiffe_id(&self, pod: &PodView) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, pod.namespace, pod.service_account
        )
    }

    /// Pods that serve traffic: running, with an address.
    fn endpoints_of<'a>(&'a self, service: &'a ServiceView) -> impl Iterator<Item = &'a PodView> {
        self.pods.iter().filter(move |pod| {
            pod.namespace == service.namespace
                && selector_matches(&service.selector, &pod.labels)
                && pod.pod_ip.is_some()
                && pod.phase.as_deref() == Some("Running")
        })
    }

    /// The configuration of the sidecar of `pod`.
    pub fn proxy_config(&self, pod: &PodView) -> pb::ProxyConfig {
        let egress = self.egress.for_workload(&pod.namespace, &pod.labels);
        let mut workload = self.workload_config(pod);
        workload.authorization_policies = self.policies.for_workload(&pod.namespace, &pod.labels);
        workload.outbound_traffic_policy = egress.mode() as i32;
        pb::ProxyConfig {
            version: String::new(),
            workload: Some(workload),
            // A Sidecar's egress hosts hide every other service: to this proxy they are unknown
            // destinations (passed through under ALLOW_ANY, blocked under REGISTRY_ONLY).
            services: self
                .services
                .iter()
                .filter(|s| s.cluster_ip.is_some() && egress.shows(&s.namespace, &s.hostname()))
                .map(|s| self.service_config(&pod.namespace, s))
                .collect(),
            auto_mtls: self.auto_mtls,
            // The CA's, not the resources': the controller adds it to every configuration it publishes.
            trust_bundle_pem: Vec::new(),
        }
    }

    fn workload_config(&self, pod: &PodView) -> pb::Workload {
        let workload = Self::workload(pod);
        // Container ports, with the protocol a selecting Service declares for them (TCP otherwise).
        let mut ports: BTreeMap<u16, AppProtocol> = pod
            .containers
            .iter()
            .filter(|c| c.name != PROXY_CONTAINER)
            .flat_map(|c| c.ports.iter().map(|(_, n)| (*n, AppProtocol::Tcp)))
            .collect();
        for service in &self.services {
            if service.namespace != pod.namespace
                || !selector_matches(&service.selector, &pod.labels)
            {
                continue;
            }
            for port in &service.ports {
                if let Some(target) = pod.resolve_target_port(&port.target_port) {
                    ports.insert(target, app_protocol(port));
                }
            }
        }
        pb::Workload {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            spiffe_id: self.spiffe_id(pod),
            labels: pod.labels.clone().into_iter().collect(),
            ports: ports
                .into_iter()
                .map(|(port, app)| pb::InboundPort {
                    port: u32::from(port),
                    protocol: protocol(app) as i32,
                    mode: server_mode(self.index.server_mode(&workload, port).mode) as i32,
                })
                .collect(),
            default_mode: server_mode(self.index.server_mode(&workload, 0).mode) as i32,
            ..Default::default()
        }
    }

    fn service_config(&self, client_namespace: &str, service: &ServiceView) -> pb::Service {
        let hostname = service.hostname();
        let endpoints: Vec<&PodView> = self.endpoints_of(service).collect();
        let first_target = |port: &crate::objects::ServicePort| {
            endpoints
                .iter()
                .find_map(|pod| pod.resolve_target_port(&port.target_port))
                .or(match &port.target_port {
                    crate::objects::TargetPort::Number(n) => Some(*n),
                    crate::objects::TargetPort::Name(_) => None,
                })
                .unwrap_or(port.port)
        };
        let ports: Vec<pb::ServicePort> = service
            .ports
            .iter()
            .map(|port| {
                let decision = self
                    .index
                    .client_tls(client_namespace, &hostname, port.port);
                let mode = match decision.mode {
                    ClientTlsMode::IstioMutual => pb::ClientTlsMode::IstioMutual,
                    ClientTlsMode::Unset if self.auto_mtls => pb::ClientTlsMode::Auto,
                    // SIMPLE and MUTUAL carry the user's own certificates, which the local runtime does not
                    // mount; the sidecar sends plaintext, and tls-check reports the conflict.
                    ClientTlsMode::Unset
                    | ClientTlsMode::Disable
                    | ClientTlsMode::Simple
                    | ClientTlsMode::Mutual => pb::ClientTlsMode::ClientDisable,
                };
                // Envoy's cluster SNI for mesh mTLS (ISTIO_MUTUAL and auto mTLS alike):
                // `outbound_.<port>_._.<FQDN>` unless the DestinationRule sets `tls.sni`.
                let sni = match mode {
                    pb::ClientTlsMode::IstioMutual | pb::ClientTlsMode::Auto => decision
                        .sni
                        .unwrap_or_else(|| format!("outbound_.{}_._.{hostname}", port.port)),
                    _ => decision.sni.unwrap_or_default(),
                };
                pb::ServicePort {
                    port: u32::from(port.port),
                    target_port: u32::from(first_target(port)),
                    protocol: protocol(app_protocol(port)) as i32,
                    tls: Some(pb::ClientTls {
                        mode: mode as i32,
                        sni,
                        subject_alt_names: decision.subject_alt_names,
                    }),
                }
            })
            .collect();
        let mtls_port = service.ports.first().map(first_target).unwrap_or_default();
        pb::Service {
            hostname,
            namespace: service.namespace.clone(),
            vip: service
                .cluster_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            ports,
            endpoints: endpoints
                .iter()
                .map(|pod| {
                    let mode = self.index.server_mode(&Self::workload(pod), mtls_port).mode;
                    pb::Endpoint {
                        ip: pod.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        mtls_ready: pod.has_sidecar() && mode != ServerMode::Disable,
                        spiffe_id: self.spiffe_id(pod),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::load;
    use serde_json::json;

    fn service(ns: &str, vip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: httpbin, namespace: {ns}}}\nspec:\n  clusterIP: {vip}\n  selector: {{app: httpbin}}\n  ports: [{{name: http, port: 8000}}]\n---\n"
        )
    }

    fn pod(ns: &str, app: &str, ip: &str, sidecar: bool) -> Object {
        let proxy = if sidecar {
            "\n  - {name: ironmesh-proxy, image: ironmesh/proxy}"
        } else {
            ""
        };
        let mut pod = load(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-x, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  containers:\n  - {{name: {app}, image: img, ports: [{{containerPort: 8000}}]}}{proxy}\n"
        ))
        .remove(0);
        pod.body
            .insert("status".into(), json!({"podIP": ip, "phase": "Running"}));
        pod
    }

    const STRICT_MESH: &str = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec:\n  peers:\n  - mtls: {}\n";
    const PERMISSIVE_MESH: &str = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec:\n  peers:\n  - mtls: {mode: PERMISSIVE}\n";
    const ALL_INTERNAL: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: default, namespace: default}\nspec:\n  host: \"*.local\"\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n";

    /// The walkthrough's cluster: sidecars in foo and bar, none in legacy.
    fn walkthrough(extra: &str) -> (Vec<Object>, PodView) {
        let mut objects = load(&format!(
            "{}{}{}{extra}",
            service("foo", "198.19.0.1"),
            service("bar", "198.19.0.2"),
            service("legacy", "198.19.0.3")
        ));
        objects.push(pod("foo", "httpbin", "198.18.0.2", true));
        objects.push(pod("bar", "httpbin", "198.18.0.3", true));
        objects.push(pod("legacy", "httpbin", "198.18.0.4", false));
        let sleep = pod("bar", "sleep", "198.18.0.5", true);
        objects.push(sleep.clone());
        (objects, PodView::of(&sleep))
    }

    fn config(objects: &[Object], pod: &PodView, auto_mtls: bool) -> pb::ProxyConfig {
        let mesh = MeshOptions {
            auto_mtls,
            ..Default::default()
        };
        ClusterSnapshot::new(objects, &mesh).proxy_config(pod)
    }

    fn tls_to(config: &pb::ProxyConfig, ns: &str) -> pb::ClientTls {
        let host = format!("httpbin.{ns}.svc.cluster.local");
        config
            .services
            .iter()
            .find(|s| s.hostname == host)
            .unwrap()
            .ports[0]
            .tls
            .clone()
            .unwrap()
    }

    fn inbound_mode(objects: &[Object], ns: &str) -> pb::ServerMode {
        let pod = objects
            .iter()
            .filter(|o| o.kind == "Pod")
            .map(PodView::of)
            .find(|p| p.namespace == ns && p.name == "httpbin-x")
            .unwrap();
        let config = config(objects, &pod, false);
        let port = config
            .workload
            .unwrap()
            .ports
            .into_iter()
            .find(|p| p.port == 8000)
            .unwrap();
        assert_eq!(
            port.protocol(),
            pb::Protocol::Http,
            "the Service names port 8000 `http`"
        );
        port.mode()
    }

    #[test]
    fn no_policy_servers_are_permissive_and_clients_send_plaintext() {
        let (objects, sleep) = walkthrough(PERMISSIVE_MESH);
        assert_eq!(inbound_mode(&objects, "foo"), pb::ServerMode::Permissive);
        let config = config(&objects, &sleep, false);
        assert_eq!(
            tls_to(&config, "foo").mode(),
            pb::ClientTlsMode::ClientDisable
        );
        let workload = config.workload.unwrap();
        assert_eq!(
            workload.spiffe_id,
            "spiffe://cluster.local/ns/bar/sa/default"
        );
        assert_eq!(config.services.len(), 3);
        let legacy = config
            .services
            .iter()
            .find(|s| s.namespace == "legacy")
            .unwrap();
        assert_eq!(legacy.vip, "198.19.0.3");
        assert_eq!(legacy.endpoints.len(), 1);
        assert!(!legacy.endpoints[0].mtls_ready, "no sidecar, no mTLS");
    }

    #[test]
    fn strict_mesh_policy_makes_sidecar_servers_strict_and_clients_stay_plaintext() {
        let (objects, sleep) = walkthrough(STRICT_MESH);
        assert_eq!(inbound_mode(&objects, "foo"), pb::ServerMode::Strict);
        assert_eq!(inbound_mode(&objects, "bar"), pb::ServerMode::Strict);
        let config = config(&objects, &sleep, false);
        assert_eq!(
            tls_to(&config, "foo").mode(),
            pb::ClientTlsMode::ClientDisable
        );
    }

    #[test]
    fn the_local_wildcard_rule_makes_clients_use_istio_mutual_with_secure_naming() {
        let (objects, sleep) = walkthrough(&format!("{STRICT_MESH}---\n{ALL_INTERNAL}"));
        let config = config(&objects, &sleep, false);
        for ns in ["foo", "bar", "legacy"] {
            assert_eq!(
                tls_to(&config, ns).mode(),
                pb::ClientTlsMode::IstioMutual,
                "to {ns}"
            );
        }
        let foo = tls_to(&config, "foo");
        assert_eq!(
            foo.subject_alt_names,
            vec!["spiffe://cluster.local/ns/foo/sa/default".to_owned()]
        );
        let endpoint = &config
            .services
            .iter()
            .find(|s| s.namespace == "foo")
            .unwrap()
            .endpoints[0];
        assert_eq!(
            endpoint.spiffe_id,
            "spiffe://cluster.local/ns/foo/sa/default"
        );
    }

    #[test]
    fn auto_mtls_leaves_the_choice_to_each_endpoint() {
        let (objects, sleep) = walkthrough(PERMISSIVE_MESH);
        let config = config(&objects, &sleep, true);
        assert_eq!(tls_to(&config, "foo").mode(), pb::ClientTlsMode::Auto);
        let ready = |ns: &str| {
            config
                .services
                .iter()
                .find(|s| s.namespace == ns)
                .unwrap()
                .endpoints[0]
                .mtls_ready
        };
        assert!(ready("foo"), "a sidecar that is not DISABLE takes mTLS");
        assert!(
            !ready("legacy"),
            "an endpoint without a sidecar gets plaintext"
        );
    }

    #[test]
    fn pending_pods_are_not_endpoints() {
        let (mut objects, sleep) = walkthrough(PERMISSIVE_MESH);
        for object in objects.iter_mut().filter(|o| o.kind == "Pod") {
            object
                .body
                .insert("status".into(), json!({"phase": "Pending"}));
        }
        let config = config(&objects, &sleep, false);
        assert!(config.services.iter().all(|s| s.endpoints.is_empty()));
    }
}

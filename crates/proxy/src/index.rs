//! The proxy's lookup view of a `ProxyConfig`, built in the one compile step the config client runs on
//! each push ([`compile_config`]): inbound mode per port, outbound service by original destination,
//! endpoint choice (round robin), the client TLS decision, the workload's compiled AuthorizationPolicies
//! and its outbound traffic policy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ironmesh_authz::AppliedPolicies;
use ironmesh_identity::SpiffeId;
use ironmesh_proto::pb::{
    Endpoint, OutboundTrafficPolicy, Protocol, ProxyConfig, ServerMode, Service, ServicePort,
};
use ironmesh_proto::{CompiledConfig, ConfigRejection};

/// Whether a port is proxied as HTTP (Istio: http, http2, grpc) or copied as TCP.
pub(crate) fn is_http(protocol: i32) -> bool {
    matches!(
        Protocol::try_from(protocol),
        Ok(Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    )
}

struct Target {
    service: usize,
    /// The route to each endpoint of the service's port (`None` for an endpoint without an IP), built
    /// with the index: parsing the endpoint's IP and SPIFFE identities and cloning the route per
    /// request was ~7,500 instructions of every outbound request (BENCHMARKS.md, issue 15).
    routes: Arc<[Option<Arc<Route>>]>,
    /// The destination was a pod IP: keep that endpoint instead of balancing.
    pinned_endpoint: Option<usize>,
    /// Endpoints with a usable IP (pending pods have none), balanced round robin.
    usable: Arc<[usize]>,
    next: AtomicUsize,
}

/// What the outbound side decided for one connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub hostname: String,
    pub namespace: String,
    pub http: bool,
    pub upstream: SocketAddr,
    /// `upstream` as a request URI's authority, formatted once with the route.
    pub authority: http::uri::Authority,
    pub tls: UpstreamTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamTls {
    Plaintext,
    /// mTLS; the server must prove one of the `expected` identities (secure naming). `sni` is sent in
    /// the ClientHello, as Envoy sends its cluster's SNI (`outbound_.<port>_._.<service FQDN>`).
    Mutual {
        expected: Vec<SpiffeId>,
        sni: Option<Arc<str>>,
    },
}

/// What the data plane serves: a received configuration, checked, compiled and indexed. The default (before
/// the first configuration) refuses every inbound connection and routes nothing.
#[derive(Default)]
pub struct ConfigIndex {
    pub(crate) config: Option<Arc<ProxyConfig>>,
    targets: HashMap<SocketAddr, Target>,
    inbound: HashMap<u16, (ServerMode, bool)>,
    default_mode: Option<ServerMode>,
    /// The AuthorizationPolicies enforced on inbound traffic (none before the first configuration).
    pub(crate) authz: AppliedPolicies,
    /// REGISTRY_ONLY: destinations not in the configuration are blocked instead of passed through.
    pub(crate) registry_only: bool,
    /// Ports on which some known service speaks HTTP: a blocked destination there gets Envoy's 502.
    http_ports: std::collections::HashSet<u16>,
}

fn mode_of(value: i32) -> ServerMode {
    match ServerMode::try_from(value) {
        Ok(ServerMode::Unspecified) | Err(_) => ServerMode::Permissive,
        Ok(mode) => mode,
    }
}

/// Turns a received configuration into the index the data plane serves, in one step: the checks and the
/// policy compilation of [`ironmesh_proto::compile_config`], then the lookup tables. The config client
/// calls it on every push and NACKs an error, keeping the last good index.
pub fn compile_config(config: ProxyConfig) -> Result<ConfigIndex, ConfigRejection> {
    ironmesh_proto::compile_config(config).map(ConfigIndex::new)
}

impl ConfigIndex {
    fn new(compiled: CompiledConfig) -> Self {
        let CompiledConfig { config, authz } = compiled;
        let config = Arc::new(config);
        let mut targets = HashMap::new();
        for (service_index, service) in config.services.iter().enumerate() {
            let usable: Arc<[usize]> = (0..service.endpoints.len())
                .filter(|&index| service.endpoints[index].ip.parse::<IpAddr>().is_ok())
                .collect();
            for port in &service.ports {
                let routes: Arc<[Option<Arc<Route>>]> = service
                    .endpoints
                    .iter()
                    .map(|endpoint| {
                        route_to(service, port, endpoint, config.auto_mtls).map(Arc::new)
                    })
                    .collect();
                let target = |pinned_endpoint| Target {
                    service: service_index,
                    routes: routes.clone(),
                    pinned_endpoint,
                    usable: usable.clone(),
                    next: AtomicUsize::new(0),
                };
                if let Ok(vip) = service.vip.parse::<IpAddr>() {
                    targets.insert(SocketAddr::new(vip, port.port as u16), target(None));
                }
                let target_port = if port.target_port == 0 {
                    port.port
                } else {
                    port.target_port
                } as u16;
                for (endpoint_index, endpoint) in service.endpoints.iter().enumerate() {
                    if let Ok(ip) = endpoint.ip.parse::<IpAddr>() {
                        targets
                            .entry(SocketAddr::new(ip, target_port))
                            .or_insert_with(|| target(Some(endpoint_index)));
                    }
                }
            }
        }
        let (inbound, default_mode) = match &config.workload {
            Some(workload) => (
                workload
                    .ports
                    .iter()
                    .map(|p| (p.port as u16, (mode_of(p.mode), is_http(p.protocol))))
                    .collect(),
                Some(mode_of(workload.default_mode)),
            ),
            None => (HashMap::new(), None),
        };
        let registry_only = config
            .workload
            .as_ref()
            .is_some_and(|w| w.outbound_traffic_policy() == OutboundTrafficPolicy::RegistryOnly);
        let http_ports = config
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .filter(|p| is_http(p.protocol))
            .map(|p| p.port as u16)
            .collect();
        Self {
            config: Some(config),
            targets,
            inbound,
            default_mode,
            authz,
            registry_only,
            http_ports,
        }
    }

    /// The configuration served (`None` before the first one).
    pub fn config(&self) -> Option<&ProxyConfig> {
        self.config.as_deref()
    }

    /// Whether `original` is a service VIP or endpoint of the configuration (known to the registry),
    /// whether or not it has a usable endpoint now.
    pub(crate) fn knows(&self, original: SocketAddr) -> bool {
        self.targets.contains_key(&original)
    }

    /// Whether a blocked destination on `port` is answered as HTTP (502) rather than closed.
    pub(crate) fn is_http_port(&self, port: u16) -> bool {
        self.http_ports.contains(&port)
    }

    /// Mode and "is HTTP" of an inbound port. Before the first configuration every connection is refused
    /// (STRICT without mTLS material is a reset), as Istio has no listeners yet.
    pub(crate) fn inbound(&self, port: u16) -> (ServerMode, bool) {
        match (self.inbound.get(&port), self.default_mode) {
            (Some(known), _) => *known,
            (None, Some(mode)) => (mode, false),
            (None, None) => (ServerMode::Strict, false),
        }
    }

    /// The service an inbound connection addressed (by pod IP and target port), for metrics.
    pub(crate) fn service_at(&self, destination: SocketAddr) -> Option<String> {
        let config = self.config.as_ref()?;
        let target = self.targets.get(&destination)?;
        Some(config.services[target.service].hostname.clone())
    }

    /// The route for an intercepted outbound connection, or `None` to pass it through untouched.
    pub(crate) fn route(&self, original: SocketAddr) -> Option<Arc<Route>> {
        let target = self.targets.get(&original)?;
        let endpoint_index = match target.pinned_endpoint {
            Some(index) => index,
            None if target.usable.is_empty() => return None,
            None => {
                target.usable[target.next.fetch_add(1, Ordering::Relaxed) % target.usable.len()]
            }
        };
        target.routes[endpoint_index].clone()
    }
}

/// The route to `endpoint` of `service`'s `port`; `None` when the endpoint has no IP yet.
fn route_to(
    service: &Service,
    port: &ServicePort,
    endpoint: &Endpoint,
    auto_mtls: bool,
) -> Option<Route> {
    let ip = endpoint.ip.parse::<IpAddr>().ok()?;
    let target_port = if port.target_port == 0 {
        port.port
    } else {
        port.target_port
    } as u16;
    Some(Route {
        hostname: service.hostname.clone(),
        namespace: service.namespace.clone(),
        http: is_http(port.protocol),
        upstream: SocketAddr::new(ip, target_port),
        authority: crate::upstream::authority(SocketAddr::new(ip, target_port)),
        tls: client_tls(service, port, endpoint, auto_mtls),
    })
}

fn parse_ids<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<SpiffeId> {
    ids.filter_map(|id| id.parse().ok()).collect()
}

/// ISTIO_MUTUAL: mTLS checked against the SANs (or the endpoint's identity); DISABLE: plaintext;
/// AUTO: mTLS iff auto mTLS is on and the endpoint has a sidecar that accepts it
/// ([`ironmesh_proto::client_uses_mtls`], which `ironmesh authz check` uses too).
pub(crate) fn client_tls(
    service: &Service,
    port: &ServicePort,
    endpoint: &Endpoint,
    auto_mtls: bool,
) -> UpstreamTls {
    if !ironmesh_proto::client_uses_mtls(port, endpoint, auto_mtls) {
        return UpstreamTls::Plaintext;
    }
    let sans = port
        .tls
        .as_ref()
        .map(|tls| tls.subject_alt_names.as_slice())
        .unwrap_or_default();
    let expected = if sans.is_empty() {
        parse_ids(std::iter::once(&endpoint.spiffe_id))
    } else {
        parse_ids(sans.iter())
    };
    UpstreamTls::Mutual {
        expected,
        sni: Some(ironmesh_proto::client_sni(service, port).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironmesh_proto::pb::{ClientTls, ClientTlsMode, InboundPort, Workload};

    fn config(mode: ClientTlsMode) -> ProxyConfig {
        ProxyConfig {
            version: "1".into(),
            auto_mtls: true,
            workload: Some(Workload {
                name: "a".into(),
                namespace: "foo".into(),
                ports: vec![InboundPort {
                    port: 80,
                    protocol: Protocol::Http as i32,
                    mode: ServerMode::Strict as i32,
                }],
                ..Default::default()
            }),
            services: vec![Service {
                hostname: "httpbin.foo.svc.cluster.local".into(),
                namespace: "foo".into(),
                vip: "10.96.0.10".into(),
                ports: vec![ServicePort {
                    port: 8000,
                    target_port: 80,
                    protocol: Protocol::Http as i32,
                    tls: Some(ClientTls {
                        mode: mode as i32,
                        ..Default::default()
                    }),
                }],
                endpoints: vec![
                    Endpoint {
                        ip: "10.0.0.1".into(),
                        mtls_ready: true,
                        spiffe_id: "spiffe://cluster.local/ns/foo/sa/httpbin".into(),
                    },
                    Endpoint {
                        ip: "10.0.0.2".into(),
                        ..Default::default()
                    },
                ],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn vip_routes_round_robin_and_pod_ip_is_pinned() {
        let index = compile_config(config(ClientTlsMode::Auto)).unwrap();
        let vip: SocketAddr = "10.96.0.10:8000".parse().unwrap();
        let first = index.route(vip).unwrap();
        let second = index.route(vip).unwrap();
        assert_ne!(first.upstream, second.upstream);
        assert!(first.http);
        let pod: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(index.route(pod).unwrap().upstream, pod);
        assert_eq!(index.route(pod).unwrap().upstream, pod);
        assert!(index.route("10.96.0.10:9999".parse().unwrap()).is_none());
    }

    #[test]
    fn auto_mtls_follows_the_endpoint_and_istio_mutual_always_encrypts() {
        let index = compile_config(config(ClientTlsMode::Auto)).unwrap();
        let with_sidecar = index.route("10.0.0.1:80".parse().unwrap()).unwrap();
        assert!(
            matches!(with_sidecar.tls, UpstreamTls::Mutual { ref expected, .. } if expected.len() == 1)
        );
        assert_eq!(
            index.route("10.0.0.2:80".parse().unwrap()).unwrap().tls,
            UpstreamTls::Plaintext
        );
        let index = compile_config(config(ClientTlsMode::IstioMutual)).unwrap();
        assert!(matches!(
            index.route("10.0.0.2:80".parse().unwrap()).unwrap().tls,
            UpstreamTls::Mutual { .. }
        ));
        let index = compile_config(config(ClientTlsMode::ClientDisable)).unwrap();
        assert_eq!(
            index.route("10.0.0.1:80".parse().unwrap()).unwrap().tls,
            UpstreamTls::Plaintext
        );
    }

    #[test]
    fn pending_endpoints_without_ip_are_never_picked() {
        let mut config = config(ClientTlsMode::Auto);
        config.services[0].endpoints.insert(0, Endpoint::default());
        let index = compile_config(config).unwrap();
        let vip: SocketAddr = "10.96.0.10:8000".parse().unwrap();
        for _ in 0..4 {
            let upstream = index.route(vip).unwrap().upstream;
            assert!(
                upstream.ip().to_string().starts_with("10.0.0."),
                "{upstream}"
            );
        }
    }

    #[test]
    fn inbound_modes() {
        let index = compile_config(config(ClientTlsMode::Auto)).unwrap();
        assert_eq!(index.inbound(80), (ServerMode::Strict, true));
        assert_eq!(index.inbound(81), (ServerMode::Permissive, false));
        assert_eq!(ConfigIndex::default().inbound(80).0, ServerMode::Strict);
    }

    #[test]
    fn registry_only_knows_its_services() {
        let mut config = config(ClientTlsMode::Auto);
        let workload = config.workload.as_mut().unwrap();
        workload.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly as i32;
        let index = compile_config(config).unwrap();
        assert!(index.registry_only);
        assert!(index.knows("10.96.0.10:8000".parse().unwrap()));
        assert!(!index.knows("10.96.0.99:8000".parse().unwrap()));
        assert!(index.is_http_port(8000));
        assert!(!ConfigIndex::default().registry_only);
    }

    #[test]
    fn a_policy_that_does_not_compile_refuses_the_whole_configuration() {
        let mut config = config(ClientTlsMode::Auto);
        let workload = config.workload.as_mut().unwrap();
        // A DENY policy without rules never triggers: Istio's validation refuses it, and so does the proxy.
        workload
            .authorization_policies
            .push(ironmesh_proto::pb::AuthorizationPolicy {
                namespace: "foo".into(),
                name: "deny-nothing".into(),
                action: ironmesh_proto::pb::authorization_policy::Action::Deny as i32,
                ..Default::default()
            });
        let rejection = compile_config(config).err().expect("refused");
        assert_eq!(rejection.resource, "authorizationpolicy/foo/deny-nothing");
        assert!(
            rejection.reason.contains("DENY action without `rules`"),
            "{rejection}"
        );
    }
}

//! What a proxy checks and compiles before it applies (ACKs) a pushed configuration, in one step; a
//! refusal names the bad resource.
//!
//! Both functions are pure and total over arbitrary input, so they can be fuzzed directly.

use std::collections::HashSet;
use std::net::IpAddr;

use prost::Message;

use ironmesh_authz::AppliedPolicies;

use crate::pb::{ClientTlsMode, OutboundTrafficPolicy, Protocol, ProxyConfig, ServerMode};

/// A refused configuration: `resource` names what was wrong (sent back in the NACK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "configuration refused at {resource}: {reason}; fix the resource in the control plane and it will be pushed again"
)]
pub struct ConfigRejection {
    /// e.g. `service/httpbin.foo.svc.cluster.local/port/8000` or `workload/port/80`.
    pub resource: String,
    pub reason: String,
}

fn reject(resource: impl Into<String>, reason: impl Into<String>) -> ConfigRejection {
    ConfigRejection {
        resource: resource.into(),
        reason: reason.into(),
    }
}

/// A received configuration, checked, with its AuthorizationPolicies compiled: what a proxy serves.
#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub config: ProxyConfig,
    /// The workload's policies, ready to evaluate (none without a workload: everything is allowed).
    pub authz: AppliedPolicies,
}

/// Checks every resource of a configuration and compiles its policies, once; the first problem found
/// is returned (the proxy NACKs it and keeps its last good configuration).
pub fn compile_config(config: ProxyConfig) -> Result<CompiledConfig, ConfigRejection> {
    check_config(&config)?;
    let authz = match &config.workload {
        Some(workload) => crate::authz::compile_policies(workload)?,
        None => AppliedPolicies::default(),
    };
    Ok(CompiledConfig { config, authz })
}

/// Decodes a protobuf-encoded `ProxyConfig` and compiles it.
pub fn decode_config(bytes: &[u8]) -> Result<CompiledConfig, ConfigRejection> {
    let config = ProxyConfig::decode(bytes)
        .map_err(|error| reject("config", format!("not a ProxyConfig: {error}")))?;
    compile_config(config)
}

fn check_port(resource: &str, port: u32, allow_zero: bool) -> Result<(), ConfigRejection> {
    if port > u32::from(u16::MAX) || (port == 0 && !allow_zero) {
        return Err(reject(resource, format!("port {port} is outside 1..65535")));
    }
    Ok(())
}

fn check_spiffe(resource: &str, id: &str) -> Result<(), ConfigRejection> {
    if !id.is_empty() && !id.starts_with("spiffe://") {
        return Err(reject(
            resource,
            format!("identity {id:?} is not a spiffe:// URI"),
        ));
    }
    Ok(())
}

/// The checks of everything but the policies, which [`compile_config`] checks by compiling them.
fn check_config(config: &ProxyConfig) -> Result<(), ConfigRejection> {
    if config.version.is_empty() {
        return Err(reject("config", "version is empty"));
    }
    // Empty is a control plane that sends no bundle: the proxy keeps the one its CA gave it.
    if !config.trust_bundle_pem.is_empty() {
        ironmesh_identity::check_trust_bundle(&config.trust_bundle_pem)
            .map_err(|error| reject("trust_bundle", error.to_string()))?;
    }
    if let Some(workload) = &config.workload {
        let name = format!("workload/{}.{}", workload.name, workload.namespace);
        if workload.name.is_empty() || workload.namespace.is_empty() {
            return Err(reject(name, "workload name and namespace are required"));
        }
        check_spiffe(&name, &workload.spiffe_id)?;
        if ServerMode::try_from(workload.default_mode).is_err() {
            return Err(reject(
                name,
                format!("unknown server mode {}", workload.default_mode),
            ));
        }
        if OutboundTrafficPolicy::try_from(workload.outbound_traffic_policy).is_err() {
            return Err(reject(
                name,
                format!(
                    "unknown outbound traffic policy {}",
                    workload.outbound_traffic_policy
                ),
            ));
        }
        let mut seen = HashSet::new();
        for port in &workload.ports {
            let resource = format!("workload/port/{}", port.port);
            check_port(&resource, port.port, false)?;
            if !seen.insert(port.port) {
                return Err(reject(resource, "port listed twice"));
            }
            if Protocol::try_from(port.protocol).is_err() {
                return Err(reject(
                    resource,
                    format!("unknown protocol {}", port.protocol),
                ));
            }
            if ServerMode::try_from(port.mode).is_err() {
                return Err(reject(
                    resource,
                    format!("unknown server mode {}", port.mode),
                ));
            }
        }
    }
    for service in &config.services {
        let name = format!("service/{}", service.hostname);
        if service.hostname.is_empty() {
            return Err(reject(name, "hostname is empty"));
        }
        if !service.vip.is_empty() && service.vip.parse::<IpAddr>().is_err() {
            return Err(reject(
                name,
                format!("vip {:?} is not an IP address", service.vip),
            ));
        }
        for port in &service.ports {
            let resource = format!("{name}/port/{}", port.port);
            check_port(&resource, port.port, false)?;
            check_port(&resource, port.target_port, true)?;
            if Protocol::try_from(port.protocol).is_err() {
                return Err(reject(
                    resource,
                    format!("unknown protocol {}", port.protocol),
                ));
            }
            // subject_alt_names are not checked: a non-SPIFFE SAN simply never matches (secure naming fails).
            if let Some(tls) = &port.tls
                && ClientTlsMode::try_from(tls.mode).is_err()
            {
                return Err(reject(
                    resource,
                    format!("unknown client TLS mode {}", tls.mode),
                ));
            }
        }
        for endpoint in &service.endpoints {
            let resource = format!("{name}/endpoint/{}", endpoint.ip);
            // An empty IP is a pod not scheduled yet: the proxy skips it instead of refusing the whole config.
            if !endpoint.ip.is_empty() && endpoint.ip.parse::<IpAddr>().is_err() {
                return Err(reject(resource, "endpoint ip is not an IP address"));
            }
            check_spiffe(&resource, &endpoint.spiffe_id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Endpoint, InboundPort, Service, ServicePort, Workload};
    use proptest::prelude::*;

    fn good() -> ProxyConfig {
        ProxyConfig {
            version: "v1".into(),
            workload: Some(Workload {
                name: "httpbin-1".into(),
                namespace: "foo".into(),
                spiffe_id: "spiffe://cluster.local/ns/foo/sa/httpbin".into(),
                ports: vec![InboundPort {
                    port: 80,
                    protocol: Protocol::Http as i32,
                    mode: ServerMode::Strict as i32,
                }],
                ..Default::default()
            }),
            services: vec![Service {
                hostname: "httpbin.foo.svc.cluster.local".into(),
                vip: "10.96.0.10".into(),
                ports: vec![ServicePort {
                    port: 8000,
                    target_port: 80,
                    protocol: Protocol::Http as i32,
                    tls: None,
                }],
                endpoints: vec![Endpoint {
                    ip: "10.0.0.5".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_config_is_accepted() {
        assert_eq!(check_config(&good()), Ok(()));
    }

    #[test]
    fn a_bad_endpoint_ip_is_refused_by_name() {
        let mut config = good();
        config.services[0].endpoints[0].ip = "not-an-ip".into();
        let rejection = check_config(&config).unwrap_err();
        assert_eq!(
            rejection.resource,
            "service/httpbin.foo.svc.cluster.local/endpoint/not-an-ip"
        );
    }

    #[test]
    fn a_pending_endpoint_without_ip_is_accepted() {
        let mut config = good();
        config.services[0].endpoints[0].ip.clear();
        assert_eq!(check_config(&config), Ok(()));
    }

    #[test]
    fn an_out_of_range_port_is_refused_by_name() {
        let mut config = good();
        config.services[0].ports[0].port = 70000;
        assert_eq!(
            check_config(&config).unwrap_err().resource,
            "service/httpbin.foo.svc.cluster.local/port/70000"
        );
        let mut config = good();
        config.workload.as_mut().unwrap().ports[0].mode = 42;
        assert_eq!(
            check_config(&config).unwrap_err().resource,
            "workload/port/80"
        );
    }

    #[test]
    fn a_bad_trust_bundle_is_refused_by_name() {
        let mut config = good();
        config.trust_bundle_pem = vec!["not a certificate".into()];
        assert_eq!(check_config(&config).unwrap_err().resource, "trust_bundle");
    }

    #[test]
    fn an_encoded_config_round_trips() {
        let bytes = good().encode_to_vec();
        assert_eq!(decode_config(&bytes).unwrap().config, good());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_config(&bytes);
        }
    }
}

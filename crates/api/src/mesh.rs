//! The mesh options `ironmesh up` was given (kept by the control plane in `$IRONMESH_HOME/mesh.json`):
//! plain data here, so that the CLI can hand them to the control plane and show what it answers on
//! `/v1/mesh` without depending on it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Mesh-wide settings chosen at `ironmesh up`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshOptions {
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// Whether client sidecars send mTLS to sidecar endpoints without a DestinationRule.
    pub auto_mtls: bool,
    /// Lifetime of workload certificates, in seconds.
    pub workload_cert_ttl_seconds: u64,
    /// The user's own CA (Istio's plug-in certs): certificate, key and optional chain to a root.
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub ca_chain: Option<PathBuf>,
    /// The roots proxies trust (Istio's `root-cert.pem`), every one of them: a root migration lists the
    /// old and the new root. Unset: the top of the chain.
    pub ca_root: Option<PathBuf>,
    /// What sidecars may call when no `Sidecar` resource says otherwise (Istio's
    /// `meshConfig.outboundTrafficPolicy.mode`).
    pub outbound_traffic_policy: OutboundTrafficPolicy,
}

/// `ALLOW_ANY`: destinations outside the registry pass through; `REGISTRY_ONLY`: they are blocked (502 on
/// HTTP, closed on TCP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    #[default]
    AllowAny,
    RegistryOnly,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            trust_domain: "cluster.local".into(),
            auto_mtls: false,
            workload_cert_ttl_seconds: 24 * 3600,
            ca_cert: None,
            ca_key: None,
            ca_chain: None,
            ca_root: None,
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
        }
    }
}

impl MeshOptions {
    /// The workload certificate lifetime.
    pub fn workload_cert_ttl(&self) -> Duration {
        Duration::from_secs(self.workload_cert_ttl_seconds.max(1))
    }

    /// The policy engine's view of these options.
    pub fn mesh_config(&self) -> crate::policy::MeshConfig {
        crate::policy::MeshConfig {
            trust_domain: self.trust_domain.clone(),
            auto_mtls: self.auto_mtls,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_walkthrough_s() {
        let options: MeshOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(options, MeshOptions::default());
        assert_eq!(options.trust_domain, "cluster.local");
        assert!(
            !options.auto_mtls,
            "auto mTLS is off by default, as in the walkthrough"
        );
        assert_eq!(options.workload_cert_ttl(), Duration::from_secs(86400));
    }

    #[test]
    fn the_outbound_policy_is_spelled_as_istio_does() {
        let options: MeshOptions =
            serde_json::from_str(r#"{"outboundTrafficPolicy": "REGISTRY_ONLY"}"#).unwrap();
        assert_eq!(
            options.outbound_traffic_policy,
            OutboundTrafficPolicy::RegistryOnly
        );
    }
}

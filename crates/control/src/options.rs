//! The mesh options `ironmesh up` was given, kept in `$IRONMESH_HOME/mesh.json` so that every later start of
//! the control plane (and every CLI command that computes policy) sees the same mesh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// File name of the options under `$IRONMESH_HOME`.
pub const MESH_FILE: &str = "mesh.json";

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
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
        }
    }
}

/// Why the options file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("cannot read {path}: {source}; run `ironmesh up` again to rewrite it")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid mesh options ({source}); fix or delete it and run `ironmesh up` again"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}; check that $IRONMESH_HOME is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl MeshOptions {
    /// The workload certificate lifetime.
    pub fn workload_cert_ttl(&self) -> Duration {
        Duration::from_secs(self.workload_cert_ttl_seconds.max(1))
    }

    /// Reads `home/mesh.json`; the defaults when the file does not exist.
    pub fn load(home: &Path) -> Result<MeshOptions, OptionsError> {
        let path = home.join(MESH_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| OptionsError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MeshOptions::default()),
            Err(source) => Err(OptionsError::Read { path, source }),
        }
    }

    /// Writes `home/mesh.json` atomically.
    pub fn save(&self, home: &Path) -> Result<(), OptionsError> {
        let path = home.join(MESH_FILE);
        let tmp = home.join(format!(".{MESH_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).expect("mesh options serialise");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| OptionsError::Write { path, source })
    }

    /// The policy engine's view of these options.
    pub fn mesh_config(&self) -> ironmesh_api::policy::MeshConfig {
        ironmesh_api::policy::MeshConfig {
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
    fn missing_file_gives_the_walkthrough_defaults() {
        let home = tempfile::tempdir().unwrap();
        let options = MeshOptions::load(home.path()).unwrap();
        assert_eq!(options.trust_domain, "cluster.local");
        assert!(
            !options.auto_mtls,
            "auto mTLS is off by default, as in the walkthrough"
        );
        assert_eq!(options.workload_cert_ttl(), Duration::from_secs(86400));
    }

    #[test]
    fn saved_options_load_back() {
        let home = tempfile::tempdir().unwrap();
        let options = MeshOptions {
            trust_domain: "example.org".into(),
            auto_mtls: true,
            workload_cert_ttl_seconds: 2,
            outbound_traffic_policy: OutboundTrafficPolicy::RegistryOnly,
            ..Default::default()
        };
        options.save(home.path()).unwrap();
        assert_eq!(MeshOptions::load(home.path()).unwrap(), options);
    }

    #[test]
    fn a_corrupt_file_names_itself() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(MESH_FILE), b"{not json").unwrap();
        let error = MeshOptions::load(home.path()).unwrap_err().to_string();
        assert!(error.contains("mesh.json"), "{error}");
    }
}

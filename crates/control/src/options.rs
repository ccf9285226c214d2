//! The mesh options `ironmesh up` was given, kept in `$IRONMESH_HOME/mesh.json` so that every later start of
//! the control plane sees the same mesh. The type is the API's ([`ironmesh_api::mesh`]); reading and
//! writing the file is the control plane's.

use std::path::{Path, PathBuf};

pub use ironmesh_api::mesh::{MeshOptions, OutboundTrafficPolicy};

/// File name of the options under `$IRONMESH_HOME`.
pub const MESH_FILE: &str = "mesh.json";

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

/// Reads `home/mesh.json`; the defaults when the file does not exist.
pub fn load(home: &Path) -> Result<MeshOptions, OptionsError> {
    let path = home.join(MESH_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| OptionsError::Parse { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MeshOptions::default()),
        Err(source) => Err(OptionsError::Read { path, source }),
    }
}

/// Writes `home/mesh.json` atomically.
pub fn save(options: &MeshOptions, home: &Path) -> Result<(), OptionsError> {
    let path = home.join(MESH_FILE);
    let tmp = home.join(format!(".{MESH_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(options).expect("mesh options serialise");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| OptionsError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_the_walkthrough_defaults() {
        let home = tempfile::tempdir().unwrap();
        let options = load(home.path()).unwrap();
        assert_eq!(options.trust_domain, "cluster.local");
        assert!(
            !options.auto_mtls,
            "auto mTLS is off by default, as in the walkthrough"
        );
        assert_eq!(
            options.workload_cert_ttl(),
            std::time::Duration::from_secs(86400)
        );
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
        save(&options, home.path()).unwrap();
        assert_eq!(load(home.path()).unwrap(), options);
    }

    #[test]
    fn a_corrupt_file_names_itself() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(MESH_FILE), b"{not json").unwrap();
        let error = load(home.path()).unwrap_err().to_string();
        assert!(error.contains("mesh.json"), "{error}");
    }
}

//! The mesh options `ironmesh up` gives the control plane (JSON on its standard input), kept in
//! `$IRONMESH_HOME/mesh.json` so that every later start sees the same mesh. The type is the API's
//! ([`ironmesh_api::mesh`]); the control plane alone reads and writes the file, and answers `/v1/mesh`
//! for `ironmesh status`.

use std::io::Read;
use std::path::PathBuf;

use ironmesh_home::Home;

pub use ironmesh_api::mesh::{MeshOptions, OutboundTrafficPolicy};

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
    #[error(
        "the mesh options on standard input are not valid ({0}); `ironmesh up` writes them, run it instead"
    )]
    Given(String),
}

/// Reads `home/mesh.json`; the defaults when the file does not exist.
pub fn load(home: &Home) -> Result<MeshOptions, OptionsError> {
    let path = home.mesh_options();
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| OptionsError::Parse { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MeshOptions::default()),
        Err(source) => Err(OptionsError::Read { path, source }),
    }
}

/// Writes `home/mesh.json` atomically.
pub fn save(options: &MeshOptions, home: &Home) -> Result<(), OptionsError> {
    let path = home.mesh_options();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(options).expect("mesh options serialise");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| OptionsError::Write { path, source })
}

/// Reads the options `ironmesh up` writes to the control plane's standard input (JSON).
pub fn read_given(input: impl Read) -> Result<MeshOptions, OptionsError> {
    serde_json::from_reader(input).map_err(|error| OptionsError::Given(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_the_walkthrough_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let options = load(&Home::new(dir.path())).unwrap();
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
    fn given_options_are_saved_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let options = MeshOptions {
            trust_domain: "example.org".into(),
            auto_mtls: true,
            workload_cert_ttl_seconds: 2,
            outbound_traffic_policy: OutboundTrafficPolicy::RegistryOnly,
            ..Default::default()
        };
        let given = read_given(serde_json::to_vec(&options).unwrap().as_slice()).unwrap();
        assert_eq!(given, options);
        save(&given, &home).unwrap();
        assert_eq!(load(&home).unwrap(), options);
        let error = read_given(&b"{\"trustDomain\": 3}"[..])
            .unwrap_err()
            .to_string();
        assert!(error.contains("standard input"), "{error}");
    }

    #[test]
    fn a_corrupt_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::write(home.mesh_options(), b"{not json").unwrap();
        let error = load(&home).unwrap_err().to_string();
        assert!(error.contains("mesh.json"), "{error}");
    }
}

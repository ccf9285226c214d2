//! The control plane: wires the store, the CA and the configuration stream, and runs the controllers of the
//! local runtime.
//!
//! [`run`] is what the `ironmesh-control-plane` binary (started by `ironmesh up`) executes. It serves
//! - the CLI API on `$IRONMESH_HOME/run/api.sock` ([`ironmesh_store::serve_api_with`]), with the routes of
//!   what it owns added to the store's: the mesh options, the CA's roots and their rotation, the
//!   explanations (`authz check`, `tls-check`), the sidecars' clusters and secrets, pod logs (`api`);
//! - gRPC for proxies on `$IRONMESH_HOME/run/xds.sock`: Istio's CA service and the configuration stream;
//!
//! and runs the controllers, level-triggered on every store change ([`controller`]): Deployments → Pods,
//! Pods → processes in network namespaces (the kubelet), Services → virtual IPs, NAT and names, and every
//! sidecar's configuration, computed with the policy engine and pushed through the hub.

mod api;
mod authz;
pub mod controller;
pub mod deployments;
mod explain;
mod grpc;
pub mod kubelet;
pub mod kubernetes;
pub mod objects;
pub mod options;
pub mod proxy_config;
pub mod services;
pub mod source;
pub mod sync;

/// The unit tests' one way to turn YAML into stored objects.
#[cfg(test)]
mod test_objects {
    pub(crate) fn load(yaml: &str) -> Vec<ironmesh_api::Object> {
        ironmesh_api::load_documents("t.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|loaded| loaded.object)
            .collect()
    }
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironmesh_home::Home;
use ironmesh_identity::{CaOptions, CertificateAuthority, CredentialAuthority, MAX_WORKLOAD_TTL};
use ironmesh_runtime::Cluster;
use ironmesh_store::Store;
use tokio_util::sync::CancellationToken;

pub use options::{MeshOptions, OptionsError, OutboundTrafficPolicy};

/// Why the control plane stopped or could not start; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A directory or socket of the home (its message says what to do).
    #[error(transparent)]
    Layout(#[from] ironmesh_home::HomeError),
    #[error("cannot prepare {path}: {source}; check that $IRONMESH_HOME is writable")]
    Home {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the resource store: {0}")]
    Store(#[from] ironmesh_store::StoreError),
    #[error("the certificate authority cannot start: {0}")]
    Ca(#[from] ironmesh_identity::CaError),
    #[error("the pod credential key cannot be loaded: {0}")]
    Credentials(#[from] ironmesh_identity::CredentialError),
    /// The runtime's own message already says what to do (root, a missing package); said once.
    #[error("the local runtime cannot start: {0}")]
    Runtime(#[from] ironmesh_runtime::RuntimeError),
    #[error("the CLI API stopped: {0}")]
    Api(#[from] ironmesh_store::ServeError),
    #[error("the proxies' gRPC server stopped: {0}")]
    Grpc(String),
}

fn prepare_dir(path: &Path) -> Result<(), ControlError> {
    std::fs::create_dir_all(path).map_err(|source| ControlError::Home {
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, ControlError> {
    std::fs::read_to_string(path).map_err(|source| ControlError::Home {
        path: path.to_path_buf(),
        source,
    })
}

/// The CA's settings from the mesh options.
pub(crate) fn ca_options(mesh: &MeshOptions) -> CaOptions {
    CaOptions {
        default_workload_ttl: mesh.workload_cert_ttl(),
        max_workload_ttl: MAX_WORKLOAD_TTL,
        ..CaOptions::new(mesh.trust_domain.clone())
    }
}

/// Opens the CA: the user's own when `up` was given one, else the self-signed root kept under `ca/`.
pub(crate) fn open_ca(
    home: &Home,
    mesh: &MeshOptions,
) -> Result<CertificateAuthority, ControlError> {
    let dir = home.ca_dir();
    prepare_dir(&dir)?;
    let options = ca_options(mesh);
    Ok(match (&mesh.ca_cert, &mesh.ca_key) {
        (Some(cert), Some(key)) => {
            let optional = |path: &Option<std::path::PathBuf>| {
                path.as_deref()
                    .map(read_file)
                    .transpose()
                    .map(Option::unwrap_or_default)
            };
            CertificateAuthority::plug_in(
                &dir,
                options,
                &read_file(cert)?,
                &read_file(key)?,
                &optional(&mesh.ca_chain)?,
                &optional(&mesh.ca_root)?,
            )?
        }
        _ => CertificateAuthority::load_or_create(&dir, options)?,
    })
}

/// Whether pods run: `IRONMESH_NO_RUNTIME` (for unprivileged use of the API alone) turns the runtime off.
fn runtime_enabled() -> bool {
    std::env::var_os("IRONMESH_NO_RUNTIME").is_none_or(|v| v.is_empty())
}

/// Runs the control plane for `home` until `shutdown` is cancelled (SIGTERM, or `ironmesh down` through
/// the API); then stops every pod and removes the cluster's network, keeping the stored state.
pub async fn run(home: &Path, shutdown: CancellationToken) -> Result<(), ControlError> {
    ironmesh_identity::install_crypto_provider();
    let layout = Home::new(home);
    layout.create_dirs()?;
    // First, so that `down` finds a control plane still starting (the API answers only at the end). Only
    // this process writes the pid file; `teardown` removes one a crash left.
    std::fs::write(layout.pid_file(), std::process::id().to_string()).map_err(|source| {
        ControlError::Home {
            path: layout.pid_file(),
            source,
        }
    })?;
    let mesh = options::load(&layout)?;
    let store = Arc::new(Store::open(&layout.store_file())?);
    let ca = Arc::new(open_ca(&layout, &mesh)?);
    let credentials = Arc::new(CredentialAuthority::load_or_create(&layout.ca_dir())?);
    tracing::info!(root = %ca.root_fingerprint(), trust_domain = %mesh.trust_domain, "certificate authority ready");

    let cluster = if runtime_enabled() {
        let cluster = Arc::new(Cluster::open(home)?);
        let setup = cluster.clone();
        tokio::task::spawn_blocking(move || {
            setup.cleanup_stale()?;
            setup.ensure_node()
        })
        .await
        .map_err(|e| ControlError::Grpc(e.to_string()))??;
        Some(cluster)
    } else {
        tracing::warn!(
            "IRONMESH_NO_RUNTIME is set: serving the API, CA and configuration only; no pods run"
        );
        None
    };

    // The embedded store is the resources' source today; a Kubernetes API server is the next one.
    let source: Arc<dyn source::ResourceSource> = store.clone();
    let sync = Arc::new(sync::ConfigSync::default());
    let (hub, grpc_server) = grpc::spawn(
        layout.xds_socket(),
        ca.clone(),
        credentials.clone(),
        source.clone(),
        shutdown.clone(),
    );
    let controllers = tokio::spawn(controller::run(controller::Context {
        home: home.to_path_buf(),
        source: source.clone(),
        store: Some(store.clone()),
        cluster: cluster.clone(),
        credentials,
        hub: hub.clone(),
        mesh: mesh.clone(),
        shutdown: shutdown.clone(),
        sync: sync.clone(),
        trust_bundle: ca.watch_trust_bundle(),
    }));
    let routes = Arc::new(api::ControlRoutes {
        home: layout.clone(),
        source,
        store: store.clone(),
        cluster: cluster.clone(),
        ca,
        mesh,
        hub,
        sync,
    });
    let api =
        ironmesh_store::serve_api_with(store, &layout.api_socket(), shutdown.clone(), Some(routes))
            .await;
    shutdown.cancel();
    let _ = controllers.await;
    let grpc = grpc_server.await;
    if let Some(cluster) = cluster {
        let _ = tokio::task::spawn_blocking(move || cluster.teardown()).await;
    }
    let _ = std::fs::remove_file(layout.pid_file());
    api?;
    match grpc {
        Ok(result) => result,
        Err(e) => Err(ControlError::Grpc(e.to_string())),
    }
}

#[cfg(test)]
mod ca_tests {
    use super::*;

    #[test]
    fn up_with_a_plug_in_ca_and_two_roots_opens_a_ca_that_trusts_both() {
        ironmesh_identity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
        let (next_root, _) = CertificateAuthority::generate_root_pem("cluster.local").unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            Some(path)
        };
        let mesh = MeshOptions {
            ca_cert: file("ca-cert.pem", &cert),
            ca_key: file("ca-key.pem", &key),
            ca_root: file("root-cert.pem", &format!("{cert}{next_root}")),
            ..MeshOptions::default()
        };
        let ca = open_ca(&Home::new(dir.path().join("home")), &mesh).unwrap();
        assert_eq!(ca.trust_bundle_pems(), vec![cert, next_root]);
        // Without --ca-root, the top of the chain alone, as before.
        let mesh = MeshOptions {
            ca_root: None,
            ..mesh
        };
        let ca = open_ca(&Home::new(dir.path().join("home2")), &mesh).unwrap();
        assert_eq!(ca.trust_bundle_pems().len(), 1);
    }
}

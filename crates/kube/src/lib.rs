//! Kubernetes as a source of resources, and what ironmesh installs into a cluster.
//!
//! - [`source`]: [`KubeSource`], watches over a real API server (kube-rs reflectors) that give the
//!   controllers every Namespace, Pod, Service, EndpointSlice, ServiceAccount and Istio resource as an
//!   [`ironmesh_api::Object`]; the control plane puts it behind its `ResourceSource` seam, so the policy
//!   engine and the per-sidecar configuration are the same as on the local runtime.
//! - [`crds`]: Istio's kinds as CustomResourceDefinitions, from ironmesh-api's kind table.
//! - [`extensions`]: the seed's `extensions/v1beta1` Deployments as an aggregated API (stored as
//!   `apps/v1`), for the API server's aggregator only, each request authorized by a SubjectAccessReview.
//! - [`webhook`]: the validating admission webhook (our field errors for `kubectl apply`), on HTTPS, and
//!   the `caBundle` of both webhook configurations.
//! - [`admission`]: the AdmissionReview envelope both admission webhooks read and answer.
//! - [`https`]: the HTTPS accept loop, with its limits, of the servers the API server calls.
//! - [`inject`]: the mutating admission webhook that injects the sidecar into pods as they are created
//!   (the same function as `ironmesh kube-inject`), served by the same HTTPS server.
//! - [`status`]: the `Accepted` condition on stored Istio resources (our field errors when invalid).
//! - [`identity`]: proxies' tokens checked by TokenReview, the CA's keys in `istio-system`'s Secrets
//!   (`cacerts` or `istio-ca-secret`), and the `istio-ca-root-cert` ConfigMap in every namespace.
//! - [`install`]: the manifests `ironmesh install` prints or applies (server-side apply).
//!
//! This crate links kube-rs and k8s-openapi but picks no Kubernetes version: the binary does.

pub mod admission;
pub mod crds;
pub mod extensions;
pub mod https;
pub mod identity;
pub mod inject;
pub mod install;
pub mod source;
pub mod status;
pub mod webhook;

use std::path::Path;

/// The client library, for the binaries that wire this crate (one version of it in the tree).
pub use kube;
pub use source::KubeSource;

/// Why a Kubernetes client could not be made; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `error` is shown, not chained (no `source`): kube-rs' message already carries its cause, and
    /// `{:#}` would print it twice.
    #[error(
        "cannot read the kubeconfig {path}: {error}; pass the file the cluster's admin was given"
    )]
    Kubeconfig {
        path: String,
        error: kube::config::KubeconfigError,
    },
    #[error("cannot use the in-cluster service account: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error(
        "no Kubernetes cluster given: pass --kubeconfig FILE or set KUBECONFIG (or run in a pod, with its service account)"
    )]
    NoCluster,
    #[error("cannot make a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster of `kubeconfig` (its current context), or, without one, for the cluster
/// this process runs in as a pod (`KUBERNETES_SERVICE_HOST` and the mounted service-account token).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |error| ClientError::Kubeconfig {
                path: path.display().to_string(),
                error,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => kube::Config::incluster()?,
        None => return Err(ClientError::NoCluster),
    };
    Ok(kube::Client::try_from(config)?)
}

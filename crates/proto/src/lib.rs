//! The control plane to proxy configuration protocol: protobuf types, push hub and client.
//!
//! - [`pb`]: the generated `ironmesh.mesh.v1` types (`ProxyConfig`, `Workload`, `Service`, ...).
//! - [`ConfigHub`]: the server side; the control plane calls [`ConfigHub::publish`] with each proxy's computed
//!   configuration and mounts [`ConfigHub::service`] on its gRPC server.
//! - [`ConfigClient`]: the proxy side; keeps the last good configuration in a `watch` channel.
//! - [`validate_config`] / [`decode_config`]: the checks a proxy applies before ACKing a push.
//! - [`applied_policies`]: the workload's pushed AuthorizationPolicies compiled with `ironmesh-authz`.

mod authz;
mod client;
mod hub;
mod validate;

/// Generated protobuf and gRPC types of `proto/mesh.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ironmesh.mesh.v1");
}

pub use authz::{applied_policies, client_sni, client_uses_mtls, policy_object, policy_resource};
pub use client::{ClientError, ConfigClient, ConfigClientOptions, ExtraValidator, TokenSource};
pub use hub::{
    AuthError, Authenticator, ConfigHub, HubError, HubOptions, HubService, ProxyStatus,
    content_version,
};
pub use validate::{ConfigRejection, decode_config, validate_config};

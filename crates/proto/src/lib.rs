//! The control plane to proxy configuration protocol: protobuf types, push hub and client.
//!
//! - [`pb`]: the generated `ironmesh.mesh.v1` types (`ProxyConfig`, `Workload`, `Service`, ...).
//! - [`ConfigHub`]: the server side; the control plane calls [`ConfigHub::publish`] with each proxy's computed
//!   configuration and mounts [`ConfigHub::service`] on its gRPC server.
//! - [`ConfigClient`]: the proxy side; compiles each push once (NACK on failure) and keeps the last good
//!   compiled configuration in a `watch` channel.
//! - [`compile_config`] / [`decode_config`]: the checks and the policy compilation a proxy applies before
//!   ACKing a push; [`policy_message`]: the typed AuthorizationPolicy the control plane sends.

mod authz;
mod client;
mod hub;
mod validate;

/// Generated protobuf and gRPC types of `proto/mesh.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ironmesh.mesh.v1");
}

pub use authz::{client_sni, client_uses_mtls, compile_policies, policy_message, policy_resource};
pub use client::{ClientError, Compile, ConfigClient, ConfigClientOptions, TokenSource};
pub use hub::{
    AuthError, Authenticator, ConfigHub, HubError, HubOptions, HubService, ProxyStatus,
    content_version,
};
pub use validate::{CompiledConfig, ConfigRejection, compile_config, decode_config};

//! ironmesh-proxy: the transparent mTLS sidecar.
//!
//! - [`DataPlane`]: the outbound (15001) and inbound (15006) listeners, fed by a `watch` of
//!   [`ConfigIndex`] (each push compiled once by [`compile_config`], which [`config_client`] runs) and
//!   [`ironmesh_identity::WorkloadCertificates`].
//! - [`SocketLayer`]: how the proxy dials and reads original destinations (real or fake in tests).
//! - [`admin`]: readiness (15021), metrics (15020) and the localhost admin (15000).
//! - [`render_rules`] / [`apply_rules`]: the iptables interception script.
//! - [`detect`]: the pure inbound first-bytes decision (fuzzed).

pub mod access_log;
pub mod admin;
mod authz;
mod context;
mod dataplane;
pub mod detect;
mod host;
mod inbound;
mod index;
mod iptables;
mod lean_tls;
mod limits;
pub mod metrics;
mod outbound;
mod replay;
mod sockets;
mod staged;
mod tcp;
mod trim;
mod trust;
mod upstream;

pub use dataplane::{DataPlane, DataPlaneError, DataPlaneOptions, WorkloadInfo};
pub use index::{ConfigIndex, compile_config};
pub use iptables::{InterceptionRules, IptablesError, apply_rules, render_rules};
pub use limits::ConnectionLimits;
pub use metrics::Metrics;
pub use sockets::{BoxFuture, PROXY_MARK, SocketLayer, SystemSockets, reset};
pub use trim::limit_malloc_arenas;
pub use trust::follow_trust_bundle;

/// The configuration stream of a proxy: every push compiled into the [`ConfigIndex`] it serves, NACKed
/// when it does not compile.
pub fn config_client(
    options: ironmesh_proto::ConfigClientOptions,
) -> ironmesh_proto::ConfigClient<ConfigIndex> {
    ironmesh_proto::ConfigClient::spawn_compiling(options, std::sync::Arc::new(compile_config))
}

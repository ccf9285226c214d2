//! ironmesh-proxy: the transparent mTLS sidecar.
//!
//! - [`DataPlane`]: the outbound (15001) and inbound (15006) listeners, fed by a `watch` of
//!   [`ironmesh_proto::pb::ProxyConfig`] and [`ironmesh_identity::WorkloadCertificates`].
//! - [`SocketLayer`]: how the proxy dials and reads original destinations (real or fake in tests).
//! - [`admin`]: readiness (15021), metrics (15020) and the localhost admin (15000).
//! - [`render_rules`] / [`apply_rules`]: the iptables interception script.
//! - [`detect`]: the pure inbound first-bytes decision (fuzzed).

pub mod admin;
mod authz;
mod context;
mod dataplane;
pub mod detect;
mod host;
mod inbound;
mod index;
mod iptables;
mod limits;
pub mod metrics;
mod outbound;
mod replay;
mod sockets;
mod tcp;
mod trust;
mod upstream;

pub use dataplane::{DataPlane, DataPlaneError, DataPlaneOptions, WorkloadInfo};
pub use iptables::{InterceptionRules, IptablesError, apply_rules, render_rules};
pub use limits::ConnectionLimits;
pub use metrics::Metrics;
pub use sockets::{BoxFuture, PROXY_MARK, SocketLayer, SystemSockets, reset};
pub use trust::follow_trust_bundle;

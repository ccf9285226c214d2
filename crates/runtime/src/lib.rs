//! The local runtime's mechanisms: node and pod network namespaces, service NAT, name resolution,
//! container processes, restart supervision, logs and exec. The control plane decides WHAT runs; this
//! crate provides HOW. Everything here needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN).
//!
//! # Using it from the control plane
//!
//! ```no_run
//! # async fn demo() -> Result<(), ironmesh_runtime::RuntimeError> {
//! use ironmesh_runtime::*;
//! use std::net::Ipv4Addr;
//! let home = std::path::Path::new("/var/lib/ironmesh");
//! let cluster = Cluster::open(home)?;        // id = short hash of the canonical home
//! cluster.cleanup_stale()?;                  // after a crash: kill + remove what is left (not adopted)
//! cluster.ensure_node()?;                    // node netns `im-<cid>-node`, bridge, 198.18.0.1/16
//!
//! let mut pod_ips = Ipam::pods();            // persist it (serde) with the rest of your state
//! let ip = pod_ips.allocate("foo/httpbin-6d8f9c7b5-x2x9z")?;
//! let net = cluster.add_pod("foo", "httpbin-6d8f9c7b5-x2x9z", ip)?;
//!
//! let handle = PodHandle::start(PodSpec {
//!     namespace: "foo".into(),
//!     name: "httpbin-6d8f9c7b5-x2x9z".into(),
//!     node_name: "ironmesh-node".into(),
//!     netns: net.netns.clone(),
//!     home: home.to_path_buf(),
//!     pod_dir: pod_dir(home, "foo", "httpbin-6d8f9c7b5-x2x9z"),
//!     env: vec![("POD_NAME".into(), "httpbin-6d8f9c7b5-x2x9z".into())],
//!     init_containers: vec![],
//!     containers: vec![ContainerSpec { name: "httpbin".into(), image: "citizenstig/httpbin".into(), ..Default::default() }],
//!     restart_policy: RestartPolicy::Always,
//!     termination_grace: std::time::Duration::from_secs(5),
//!     bin_dir: bin_dir(),
//! });
//! let vip = Ipv4Addr::new(198, 19, 0, 1);
//! cluster.sync_services(&[ServiceNat { vip, port: 8000, protocol: Protocol::Tcp, endpoints: vec![(ip, 8000)] }])?;
//! cluster.sync_names(&[ServiceName { namespace: "foo".into(), name: "httpbin".into(), vip }])?;
//! // ... later
//! handle.stop().await;                       // SIGTERM, grace, SIGKILL
//! cluster.remove_pod("foo", "httpbin-6d8f9c7b5-x2x9z");
//! cluster.teardown()?;                       // `ironmesh down`
//! # Ok(()) }
//! ```
//!
//! * [`Cluster`] methods are synchronous (they run `ip` and `iptables-restore`): call them from
//!   `spawn_blocking` in async code. [`PodHandle`] needs a tokio runtime.
//! * `sync_services` and `sync_names` take the *whole* desired set each time (level-triggered).
//! * Crash recovery: containers are **killed, not adopted**. Pid files (`<pod dir>/pids/<c>.pid`, "pid
//!   start-time") let [`Cluster::cleanup_stale`] kill even processes whose namespace is already gone; the
//!   control plane then recreates the pods.
//! * Stop [`PodHandle`]s before [`Cluster::teardown`], or their supervisors restart what it kills.
//! * Containers are OCI containers run by runc (see the `oci` and `runc` modules): their own mount, PID,
//!   IPC and UTS namespaces in the pod's network namespace, Kubernetes' default capabilities, the
//!   RuntimeDefault seccomp profile, a read-only view of the host with ironmesh's state masked.
//! * `ironmesh exec`: [`exec`]`(home, ns, pod, container, &argv, tty)` returns the command's exit code;
//!   `ironmesh logs`: [`logs`]`(&pod_dir, container, follow, &mut stdout, &|| true)`.
//! * Container states, restart counts and events: [`PodHandle::status`] (kubectl columns via
//!   [`PodStatus::ready_count`], [`PodStatus::restarts`], [`PodStatus::display_status`]); changes are
//!   signalled by [`PodHandle::subscribe`].
//!
//! Tests: `cargo test -p ironmesh-runtime` (the `root_*` tests need root); benches:
//! `cargo bench -p ironmesh-runtime --bench root_network` (root).

mod cmd;
mod error;
mod exec;
mod hosts;
mod ipam;
mod logfile;
mod names;
mod nat;
mod netns_http;
mod network;
mod oci;
mod process;
mod runc;
mod seccomp;
mod status;
mod supervisor;

pub use error::{Result, RuntimeError};
pub use exec::{exec, logs};
pub use hosts::{CLUSTER_DOMAIN, ServiceName};
pub use ipam::Ipam;
pub use logfile::{MAX_LOG_BYTES, MAX_LOG_FILES, RotatingLog};
pub use names::{ClusterId, GATEWAY, POD_NETWORK, SERVICE_NETWORK};
pub use nat::{Protocol, ServiceNat};
pub use netns_http::http_get_in_netns;
pub use network::{Cluster, PodNetwork};
pub use oci::{ConfigError, DEFAULT_CAPABILITIES, SecurityContext, VolumeMount};
pub use process::{
    ContainerSpec, bin_dir, find_program, kill_recorded_under, log_path, resolve_launch,
};
pub use runc::{container_id, containers_of};
pub use status::{ContainerState, ContainerStatus, EventType, PodEvent, PodPhase, PodStatus};
pub use supervisor::{MAX_BACKOFF, PodHandle, PodSpec, RestartPolicy, pod_dir};

//! Naming of everything a cluster creates on the host: cluster id, namespace, link and file names.
//!
//! Everything carries the cluster id so several clusters (one per `$IRONMESH_HOME`) coexist and a teardown
//! finds exactly what is its own.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The node's gateway address on the pod bridge; every pod routes through it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Pod addresses come from this /16.
pub const POD_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);
/// Service virtual IPs come from this /16.
pub const SERVICE_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);
/// Bridge name inside the node namespace (private to it, so no cluster id needed).
pub(crate) const BRIDGE: &str = "br0";
/// Fixed bridge MAC: a bridge otherwise takes the lowest port MAC, which changes as pods come and go and
/// leaves stale gateway ARP entries in running pods.
pub(crate) const BRIDGE_MAC: &str = "02:69:6d:00:00:01";
/// Where `ip netns exec` finds per-namespace `/etc` overrides.
pub(crate) const ETC_NETNS: &str = "/etc/netns";

pub use ironmesh_home::ClusterId;
pub(crate) use ironmesh_home::fnv1a64;

/// The per-namespace `/etc` override directory `ip netns exec` bind-mounts from.
pub(crate) fn etc_dir(netns: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(netns)
}

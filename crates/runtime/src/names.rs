//! Naming of everything a cluster creates on the host: cluster id, namespace, link and file names.
//!
//! Everything carries the cluster id so several clusters (one per `$IRONMESH_HOME`) coexist and a teardown
//! finds exactly what is its own.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

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

/// Short stable id of one cluster, derived from its canonical `$IRONMESH_HOME` path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId(String);

impl ClusterId {
    /// Derives the id from `home` (created if missing, then canonicalised so `./x` and `/abs/x` agree).
    pub fn from_home(home: &Path) -> Result<Self> {
        std::fs::create_dir_all(home).map_err(|e| RuntimeError::io("create", home, e))?;
        let canonical =
            std::fs::canonicalize(home).map_err(|e| RuntimeError::io("resolve", home, e))?;
        Ok(Self::from_canonical_path(&canonical))
    }

    pub(crate) fn from_canonical_path(path: &Path) -> Self {
        let hash = fnv1a64(path.as_os_str().as_encoded_bytes());
        ClusterId(format!("{:06x}", hash & 0xff_ffff))
    }

    /// The id as text (6 lowercase hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefix of every network namespace of this cluster.
    pub fn netns_prefix(&self) -> String {
        format!("im-{}-", self.0)
    }

    /// The node network namespace: `im-<cid>-node`.
    pub fn node_netns(&self) -> String {
        format!("im-{}-node", self.0)
    }

    /// A pod's network namespace: `im-<cid>-<8 hex of ns/name>`.
    pub fn pod_netns(&self, namespace: &str, name: &str) -> String {
        format!("im-{}-{:08x}", self.0, pod_hash(namespace, name))
    }

    /// The node-side veth end of a pod (15 characters, the kernel's limit).
    pub(crate) fn host_veth(&self, namespace: &str, name: &str) -> String {
        format!("v{}{:08x}", self.0, pod_hash(namespace, name))
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn pod_hash(namespace: &str, name: &str) -> u32 {
    let hash = fnv1a64(format!("{namespace}/{name}").as_bytes());
    (hash ^ (hash >> 32)) as u32
}

/// The per-namespace `/etc` override directory `ip netns exec` bind-mounts from.
pub(crate) fn etc_dir(netns: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(netns)
}

/// FNV-1a: tiny, stable across releases and platforms (std's hasher is neither), good enough for names.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_kernel_limits_and_differ_per_home() {
        let a = ClusterId::from_canonical_path(Path::new("/var/lib/ironmesh"));
        let b = ClusterId::from_canonical_path(Path::new("/tmp/other-home"));
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 6);
        assert_eq!(a.host_veth("foo", "httpbin-7dc47f96b6-7dfld").len(), 15);
        assert_ne!(a.pod_netns("foo", "sleep"), a.pod_netns("bar", "sleep"));
        assert!(a.pod_netns("foo", "sleep").starts_with(&a.netns_prefix()));
        assert!(a.node_netns().starts_with(&a.netns_prefix()));
        assert!(!b.pod_netns("foo", "sleep").starts_with(&a.netns_prefix()));
    }

    #[test]
    fn from_home_canonicalises() {
        let dir = tempfile::tempdir().unwrap();
        let direct = ClusterId::from_home(dir.path()).unwrap();
        let dotted = ClusterId::from_home(&dir.path().join(".")).unwrap();
        assert_eq!(direct, dotted);
    }
}

//! The `$IRONMESH_HOME` directory (default `/var/lib/ironmesh`) and the files in it.

use std::path::{Path, PathBuf};

use crate::HomeError;

/// The home when `IRONMESH_HOME` is unset or empty.
pub const DEFAULT_HOME: &str = "/var/lib/ironmesh";
/// Where a cluster keeps its runtime state on the host (tmpfs: gone at reboot, as the containers are).
pub const RUNTIME_ROOT: &str = "/run/ironmesh";

/// The layout of one `$IRONMESH_HOME`: every path a process of the cluster opens under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// `$IRONMESH_HOME`, or [`DEFAULT_HOME`] when it is unset or empty.
    pub fn from_env() -> Home {
        let root = std::env::var_os("IRONMESH_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HOME));
        Home { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `run/`: sockets and the pid file.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The CLI API (and the control plane's routes): `run/api.sock`.
    pub fn api_socket(&self) -> PathBuf {
        self.run_dir().join("api.sock")
    }

    /// The proxies' gRPC (CA and configuration stream): `run/xds.sock`.
    pub fn xds_socket(&self) -> PathBuf {
        self.run_dir().join("xds.sock")
    }

    /// The running control plane's pid: `run/control-plane.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("control-plane.pid")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The control plane's log (`up` sends its output there).
    pub fn log_file(&self) -> PathBuf {
        self.logs_dir().join("control-plane.log")
    }

    /// The mesh options `up` gave the control plane, which alone reads and writes them.
    pub fn mesh_options(&self) -> PathBuf {
        self.root.join("mesh.json")
    }

    /// The CA's key and certificate files; only the control plane opens them.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// The resource store's database.
    pub fn store_file(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// `pods/`: one directory per pod.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// `pods/<namespace>/<name>`: a pod's logs and pid files.
    pub fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.pods_dir().join(namespace).join(name)
    }

    /// The pid the pid file names, if it holds one.
    pub fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates `run/`, `logs/` and `pods/`.
    pub fn create_dirs(&self) -> Result<(), HomeError> {
        for dir in [self.run_dir(), self.logs_dir(), self.pods_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| HomeError::io("create", &dir, e))?;
        }
        Ok(())
    }

    /// The cluster's id (the home is created if missing).
    pub fn cluster_id(&self) -> Result<ClusterId, HomeError> {
        ClusterId::from_home(&self.root)
    }
}

/// Short stable id of one cluster, derived from its canonical `$IRONMESH_HOME` path: everything the cluster
/// creates on the host carries it, so several clusters coexist and a teardown finds exactly its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId(String);

impl ClusterId {
    /// Derives the id from `home` (created if missing, then canonicalised so `./x` and `/abs/x` agree).
    pub fn from_home(home: &Path) -> Result<Self, HomeError> {
        std::fs::create_dir_all(home).map_err(|e| HomeError::io("create", home, e))?;
        let canonical =
            std::fs::canonicalize(home).map_err(|e| HomeError::io("resolve", home, e))?;
        Ok(Self::from_canonical_path(&canonical))
    }

    /// The id of the home at `path`, which must already be canonical.
    pub fn from_canonical_path(path: &Path) -> Self {
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
    pub fn host_veth(&self, namespace: &str, name: &str) -> String {
        format!("v{}{:08x}", self.0, pod_hash(namespace, name))
    }

    /// `/run/ironmesh/<cid>`: the cluster's runtime state on the host.
    pub fn runtime_dir(&self) -> PathBuf {
        Path::new(RUNTIME_ROOT).join(&self.0)
    }

    /// runc's `--root` for the cluster's containers.
    pub fn runc_root(&self) -> PathBuf {
        self.runtime_dir().join("runc")
    }

    /// The runc id of a pod's container: `<pod netns>-<container>`.
    pub fn container_id(&self, namespace: &str, pod: &str, container: &str) -> String {
        format!("{}-{container}", self.pod_netns(namespace, pod))
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

/// FNV-1a: tiny, stable across releases and platforms (std's hasher is neither), good enough for names.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
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

    #[test]
    fn the_layout_is_below_the_home() {
        let home = Home::new("/h");
        assert_eq!(home.api_socket(), Path::new("/h/run/api.sock"));
        assert_eq!(home.xds_socket(), Path::new("/h/run/xds.sock"));
        assert_eq!(home.pid_file(), Path::new("/h/run/control-plane.pid"));
        assert_eq!(home.log_file(), Path::new("/h/logs/control-plane.log"));
        assert_eq!(home.mesh_options(), Path::new("/h/mesh.json"));
        assert_eq!(home.ca_dir(), Path::new("/h/ca"));
        assert_eq!(home.pod_dir("foo", "sleep"), Path::new("/h/pods/foo/sleep"));
    }

    #[test]
    fn a_pid_file_with_garbage_names_no_pid() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        home.create_dirs().unwrap();
        assert_eq!(home.read_pid(), None);
        std::fs::write(home.pid_file(), "not a pid\n").unwrap();
        assert_eq!(home.read_pid(), None);
        std::fs::write(home.pid_file(), "4242\n").unwrap();
        assert_eq!(home.read_pid(), Some(4242));
    }

    #[test]
    fn runc_names_carry_the_cluster_id() {
        let id = ClusterId::from_canonical_path(Path::new("/var/lib/ironmesh"));
        assert!(id.runc_root().starts_with(RUNTIME_ROOT));
        assert!(id.runc_root().to_string_lossy().contains(id.as_str()));
        assert_eq!(
            id.container_id("foo", "sleep", "istio-proxy"),
            format!("{}-istio-proxy", id.pod_netns("foo", "sleep"))
        );
    }
}

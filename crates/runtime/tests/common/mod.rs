//! Shared rig of the ROOT-ONLY tests: a cluster in a temporary home torn down by a Drop guard (also on
//! panic), the bundled httpbin build, and helpers that run commands inside pod namespaces.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ironmesh_runtime::*;
/// Builds the bundled httpbin once (the runtime crate cannot depend on a binary of another package) and
/// returns the directory holding it, used as `IRONMESH_BIN_DIR`.
pub fn bundled_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let output = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "ironmesh-samples",
                "--bin",
                "ironmesh-httpbin",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo to build ironmesh-httpbin");
        assert!(
            output.status.success(),
            "building ironmesh-httpbin failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let executable = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the ironmesh-httpbin executable");
        executable.parent().unwrap().to_path_buf()
    })
    .clone()
}

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "root_* tests need root (network namespaces, iptables): run them as root"
    );
}

/// Tears the cluster down whatever happens, then checks nothing of it is left.
pub struct ClusterGuard {
    pub cluster: Cluster,
    pub pods: Vec<PodHandle>,
    pub home_dir: tempfile::TempDir,
}

impl ClusterGuard {
    pub fn new() -> Self {
        require_root();
        let home = tempfile::tempdir().expect("temporary IRONMESH_HOME");
        let cluster = Cluster::open(home.path()).expect("open cluster");
        cluster.cleanup_stale().expect("cleanup_stale");
        cluster
            .ensure_node()
            .expect("create the node namespace (are iproute2 and iptables installed?)");
        ClusterGuard {
            cluster,
            pods: Vec::new(),
            home_dir: home,
        }
    }

    pub fn home(&self) -> &Path {
        self.cluster.home()
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        self.pods.clear();
        if let Err(error) = self.cluster.teardown() {
            eprintln!("teardown of cluster {} failed: {error}", self.cluster.id());
        }
    }
}

pub fn netns_of_cluster(id: &ClusterId) -> Vec<String> {
    let listing = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&id.netns_prefix()))
        .map(str::to_owned)
        .collect()
}

pub fn assert_cluster_gone(id: &ClusterId, pids: &[u32]) {
    assert_eq!(
        netns_of_cluster(id),
        Vec::<String>::new(),
        "network namespaces left behind"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let veth_prefix = format!("v{}", id.as_str());
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&veth_prefix),
        "host links left behind"
    );
    let etc_left: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !etc_left.iter().any(|n| n.starts_with(&id.netns_prefix())),
        "/etc/netns left behind: {etc_left:?}"
    );
    assert_eq!(
        containers_of(id),
        Vec::<String>::new(),
        "runc containers left behind"
    );
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "process {pid} of the cluster is still running");
    }
}

/// Runs a command inside a pod's namespace (with its /etc view) and captures its output.
pub fn in_pod(netns: &str, argv: &[&str]) -> (i32, String) {
    let output = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .output()
        .expect("ip netns exec");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

pub fn curl(netns: &str, url: &str) -> (i32, String) {
    in_pod(
        netns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "-w",
            "\n%{http_code}",
            url,
        ],
    )
}

pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn pod_spec(guard: &ClusterGuard, net: &PodNetwork, containers: Vec<ContainerSpec>) -> PodSpec {
    PodSpec {
        namespace: net.namespace.clone(),
        name: net.name.clone(),
        node_name: "ironmesh-node".into(),
        netns: net.netns.clone(),
        home: guard.home().to_path_buf(),
        pod_dir: pod_dir(guard.home(), &net.namespace, &net.name),
        env: vec![
            ("POD_NAME".into(), net.name.clone()),
            ("POD_IP".into(), net.ip.to_string()),
        ],
        init_containers: vec![],
        containers,
        restart_policy: RestartPolicy::Always,
        termination_grace: Duration::from_secs(2),
        bin_dir: Some(bundled_bin_dir()),
    }
}

pub fn httpbin_container() -> ContainerSpec {
    ContainerSpec {
        name: "httpbin".into(),
        image: "docker.io/citizenstig/httpbin".into(),
        ..Default::default()
    }
}

pub fn sleep_container(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "pstauffer/curl".into(),
        command: vec!["/bin/sleep".into(), "3650d".into()],
        ..Default::default()
    }
}

pub fn running_pid(handle: &PodHandle, container: &str) -> Option<u32> {
    let status = handle.status();
    let c = status.containers.iter().find(|c| c.name == container)?;
    matches!(c.state, ContainerState::Running { .. })
        .then_some(c.pid)
        .flatten()
}

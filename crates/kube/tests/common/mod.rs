//! A real Kubernetes control plane for tests (kube-apiserver, etcd, controller-manager, scheduler): the
//! one scripts/k8s-env.sh starts with `up --control-plane-only` in a state dir of the test's own, or a
//! running one whose admin kubeconfig `IRONMESH_K8S_KUBECONFIG` names (only the cluster scripts/k8s-env.sh
//! runs on this machine: the tests delete their install's cluster-wide objects). Without the binaries of
//! scripts/k8s-build.sh (in /var/cache/ironmesh/k8s/v1.34.4/bin, or `IRONMESH_K8S_BIN`) it fails and says
//! to build them. Shared by the crates whose tests run against it (`#[path]`-included), with
//! [`control_plane`], our control plane run against it.
#![allow(dead_code, reason = "each test file uses part of it")]

pub mod control_plane;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const KUBERNETES_VERSION: &str = "v1.34.4";
/// Waits for outcomes (not timing assertions): the watch and the API server are fast; a slow CI still passes.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("IRONMESH_K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("IRONMESH_K8S_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/cache/ironmesh/k8s"));
            cache.join(KUBERNETES_VERSION).join("bin")
        });
    for binary in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
    ] {
        assert!(
            dir.join(binary).is_file(),
            "{binary} is not in {}: this test runs the real Kubernetes control plane; build it once with \
             scripts/k8s-build.sh (or point IRONMESH_K8S_BIN at the binaries)",
            dir.display()
        );
    }
    dir
}

/// A cluster: ours (brought down on drop) or a running one given by `IRONMESH_K8S_KUBECONFIG`.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// The state dir of the cluster this test started.
    own: Option<tempfile::TempDir>,
}

impl Cluster {
    pub fn get() -> Cluster {
        let kubectl = bin_dir().join("kubectl");
        if let Some(kubeconfig) = std::env::var_os("IRONMESH_K8S_KUBECONFIG") {
            let kubeconfig = PathBuf::from(kubeconfig);
            if let Err(why) = made_for_tests(&kubeconfig) {
                panic!(
                    "IRONMESH_K8S_KUBECONFIG={} is refused: {why}. These tests install the mesh and \
                     delete what the install makes (istio-system, the webhook configurations, the \
                     control plane's RBAC), so they only reuse the cluster scripts/k8s-env.sh runs on \
                     this machine; unset it to let them start their own",
                    kubeconfig.display()
                );
            }
            return Cluster {
                kubeconfig,
                kubectl,
                own: None,
            };
        }
        // scripts/k8s-env.sh's ports, bridge, network namespaces and cgroups are machine-wide names:
        // a second cluster cannot run beside one, and its `down` would remove the other's.
        if let Some(found) = machine_cluster() {
            panic!(
                "a Kubernetes test cluster already runs on this machine ({found}): set \
                 IRONMESH_K8S_KUBECONFIG to its admin kubeconfig to reuse it, or stop it with \
                 scripts/k8s-env.sh down"
            );
        }
        let state = tempfile::Builder::new()
            .prefix("ironmesh-k8s-test-")
            .tempdir()
            .unwrap();
        let up = Command::new(repo().join("scripts/k8s-env.sh"))
            .args(["up", "--control-plane-only"])
            .env("IRONMESH_K8S_STATE", state.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !up.status.success() {
            // Not `down`: it removes machine-wide names, which may be another cluster's by now.
            stop_started(state.path());
            panic!(
                "scripts/k8s-env.sh up --control-plane-only failed (it needs root):\n{}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
        Cluster {
            kubeconfig: state.path().join("admin.kubeconfig"),
            kubectl,
            own: Some(state),
        }
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Deletes each object (`["namespace", "foo", "--wait=false"]`, ...) if it exists; for the clean-up of
    /// what a test made, which runs even when the test failed half way, so errors are not reported.
    pub fn delete_if_present(&self, objects: &[&[&str]]) {
        for object in objects {
            let mut args = vec!["delete"];
            args.extend_from_slice(object);
            args.push("--ignore-not-found");
            let _ = self.kubectl(&args, None);
        }
    }

    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `Ok` when `kubeconfig` is the admin kubeconfig of the cluster scripts/k8s-env.sh runs on this
/// machine: `<state>/admin.kubeconfig` where `<state>` is the state dir `up` recorded as the owner of
/// the machine's cluster names and holds the certificates `up` generated.
fn made_for_tests(kubeconfig: &Path) -> Result<(), String> {
    let state = kubeconfig
        .canonicalize()
        .map_err(|e| format!("cannot read it ({e})"))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let owner = std::fs::read_to_string("/run/ironmesh-k8s.owner").map_err(|_| {
        "no cluster of scripts/k8s-env.sh runs here (/run/ironmesh-k8s.owner is missing)".to_owned()
    })?;
    let owner = Path::new(owner.trim())
        .canonicalize()
        .map_err(|e| format!("the cluster of scripts/k8s-env.sh has no state dir {owner} ({e})"))?;
    if kubeconfig
        .file_name()
        .is_none_or(|n| n != "admin.kubeconfig")
        || state != owner
        || !owner.join("pki").is_dir()
    {
        return Err(format!(
            "it is not the admin kubeconfig of the cluster scripts/k8s-env.sh runs here ({}/admin.kubeconfig)",
            owner.display()
        ));
    }
    Ok(())
}

/// What shows that a cluster of scripts/k8s-env.sh runs here, if anything does.
fn machine_cluster() -> Option<String> {
    for port in ["127.0.0.1:16443", "127.0.0.1:12379"] {
        if std::net::TcpStream::connect(port).is_ok() {
            return Some(format!("something listens on {port}"));
        }
    }
    if Path::new("/sys/class/net/imk8s0").exists() {
        return Some("bridge imk8s0 exists".into());
    }
    ["imk8s-node1", "imk8s-node2"]
        .iter()
        .find(|node| Path::new("/run/netns").join(node).exists())
        .map(|node| format!("network namespace {node} exists"))
}

/// Stops the processes a failed `up` started (their pids are in its state dir, so they are its own).
fn stop_started(state: &Path) {
    let Ok(pids) = std::fs::read_dir(state.join("pids")) else {
        return;
    };
    for pid in pids.flatten() {
        if let Ok(pid) = std::fs::read_to_string(pid.path()) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(state) = &self.own {
            let _ = Command::new(repo().join("scripts/k8s-env.sh"))
                .arg("down")
                .env("IRONMESH_K8S_STATE", state.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}

//! Shared harness of the root end-to-end tests: a cluster of its own per test (real `ironmesh`,
//! `ironmesh-proxy` and `ironmesh-httpbin` binaries, network namespaces, iptables, `curl`), torn down by a
//! Drop guard even when the test fails. Each test file uses a part of it.
#![allow(unsafe_code, reason = "require_root checks geteuid through libc")]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ironmesh");

/// The walkthrough's mesh-wide DestinationRule: ISTIO_MUTUAL for every `*.local` host.
pub const ISTIO_MUTUAL_EVERYWHERE: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: default\n  namespace: default\nspec:\n  host: \"*.local\"\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n";

pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

/// Builds `packages` and checks that `binaries` sit next to `ironmesh` (where `up` and the runtime look
/// first). A nested cargo: `cargo test -p ironmesh-cli` builds only this package's binaries.
fn build_next_to_ironmesh(packages: &[&str], binaries: &[&str]) {
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "-q"]);
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("run cargo to build {packages:?}: {e}"));
    assert!(status.success(), "building {packages:?} failed");
    let dir = Path::new(BIN).parent().unwrap();
    for binary in binaries {
        assert!(
            dir.join(binary).exists(),
            "{binary} is not next to {BIN}; build the workspace"
        );
    }
}

/// The control plane's binary, which `ironmesh up` starts.
pub fn build_control_plane() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT
        .get_or_init(|| build_next_to_ironmesh(&["ironmesh-control"], &["ironmesh-control-plane"]));
}

/// The control plane, the proxy and the sample server must sit next to `ironmesh`.
pub fn build_companions() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_next_to_ironmesh(
            &["ironmesh-control", "ironmesh-proxy", "ironmesh-samples"],
            &[
                "ironmesh-control-plane",
                "ironmesh-proxy",
                "ironmesh-httpbin",
            ],
        )
    });
}

/// Runs `ironmesh ARGS` in `home` with the control plane API-only (`IRONMESH_NO_RUNTIME=1`: no root, no
/// network runtime).
pub fn ironmesh_api_only(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("IRONMESH_HOME", home)
        .env("IRONMESH_NO_RUNTIME", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// An API-only control plane in its own home, stopped (`down`) on drop.
pub struct ApiOnlyControlPlane(pub tempfile::TempDir);

impl Drop for ApiOnlyControlPlane {
    fn drop(&mut self) {
        let _ = ironmesh_api_only(self.0.path(), &["down"]);
    }
}

/// stdout then stderr of a finished command.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn require_root() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "this test needs root: the local runtime creates network namespaces and iptables rules"
    );
}

/// A cluster of its own; the Drop guard runs `down` and kills a control plane that is left.
pub struct Cluster {
    pub home: tempfile::TempDir,
}

impl Cluster {
    pub fn up() -> Cluster {
        require_root();
        build_companions();
        let cluster = Cluster {
            home: tempfile::tempdir().unwrap(),
        };
        cluster.ok(&["up"]);
        cluster
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("IRONMESH_HOME", self.home.path())
            .stdin(Stdio::null());
        command
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "ironmesh {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A cluster whose workload certificates live `workload_cert_ttl`, with httpbin and sleep (sidecars
    /// injected) in `foo` and ISTIO_MUTUAL everywhere, once sleep reaches httpbin over mutual TLS.
    pub fn up_foo_with_mutual_tls(workload_cert_ttl: &str, ready: Duration) -> Cluster {
        let c = Cluster {
            home: tempfile::tempdir().unwrap(),
        };
        c.ok(&["up", "--workload-cert-ttl", workload_cert_ttl]);
        c.ok(&["create", "ns", "foo"]);
        c.apply_injected("httpbin/httpbin.yaml", "foo");
        c.apply_injected("sleep/sleep.yaml", "foo");
        let rule = c.home.path().join("rule.yaml");
        std::fs::write(&rule, ISTIO_MUTUAL_EVERYWHERE).unwrap();
        c.ok(&["apply", "-f", rule.to_str().unwrap()]);
        c.wait_for("foo", "foo", "200/0", ready);
        c
    }

    pub fn apply_injected(&self, file: &str, namespace: &str) {
        let injected = self.ok(&["kube-inject", "-f", samples().join(file).to_str().unwrap()]);
        let path = self
            .home
            .path()
            .join(format!("{namespace}-{}", file.replace('/', "-")));
        std::fs::write(&path, injected).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap(), "-n", namespace]);
    }

    pub fn deploy(&self) {
        self.ok(&["create", "ns", "foo"]);
        self.apply_injected("httpbin/httpbin.yaml", "foo");
        self.apply_injected("sleep/sleep.yaml", "foo");
        self.ok(&["create", "ns", "legacy"]);
        for file in ["httpbin/httpbin.yaml", "sleep/sleep.yaml"] {
            self.ok(&[
                "apply",
                "-f",
                samples().join(file).to_str().unwrap(),
                "-n",
                "legacy",
            ]);
        }
    }

    pub fn pod(&self, app: &str, namespace: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let name = self.ok(&[
                "get",
                "pod",
                "-l",
                &format!("app={app}"),
                "-n",
                namespace,
                "-o",
                "jsonpath={.items..metadata.name}",
            ]);
            if !name.trim().is_empty() && !name.contains(' ') {
                return name.trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no single {app} pod in {namespace}: {name:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `curl http://httpbin.DST:8000/ip` from the sleep pod of `src`: "CODE/EXIT".
    pub fn call(&self, src: &str, dst: &str) -> String {
        self.call_path(src, dst, "/ip")
    }

    /// `curl http://httpbin.DST:8000PATH` from the sleep pod of `src`: "CODE/EXIT".
    pub fn call_path(&self, src: &str, dst: &str, path: &str) -> String {
        let pod = self.pod("sleep", src);
        let url = format!("http://httpbin.{dst}:8000{path}");
        let output = self
            .command(&[
                "exec",
                &pod,
                "-n",
                src,
                "-c",
                "sleep",
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "5",
                &url,
                "-w",
                "%{http_code}",
            ])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}/{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            output.status.code().unwrap_or(-1)
        )
    }

    pub fn wait_for(&self, src: &str, dst: &str, want: &str, within: Duration) {
        self.wait_for_path(src, dst, "/ip", want, within)
    }

    pub fn wait_for_path(&self, src: &str, dst: &str, path: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.call_path(src, dst, path);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{src} -> {dst}{path}: want {want}, still {got} after {within:?}; logs in {}",
                self.home.path().join("logs").display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The pid of a container (from the runtime's pid file "pid start-time").
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> i32 {
        let file = self
            .home
            .path()
            .join(format!("pods/{namespace}/{pod}/pids/{container}.pid"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Waits until a container's restart count (as the API reports it) reaches `want`, and returns
    /// the count it last read. The supervisor counts the restart before the container runs again,
    /// but the status reaches the store through a writer that may lag behind traffic on a busy
    /// machine; so a caller that saw traffic recover waits here for the status, then asserts on it.
    pub fn wait_restarts(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        want: u64,
        within: Duration,
    ) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let got = self.restarts(namespace, pod, container);
            if got >= want || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn restarts(&self, namespace: &str, pod: &str, container: &str) -> u64 {
        let path = format!(
            "jsonpath={{.status.containerStatuses[?(@.name==\"{container}\")].restartCount}}"
        );
        let out = self.ok(&["get", "pod", pod, "-n", namespace, "-o", &path]);
        out.trim().parse().unwrap_or_else(|_| {
            // Fall back to the full status when the template engine lacks filters.
            let json: serde_json::Value =
                serde_json::from_str(&self.ok(&["get", "pod", pod, "-n", namespace, "-o", "json"]))
                    .unwrap();
            json["status"]["containerStatuses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == container)
                .and_then(|c| c["restartCount"].as_u64())
                .unwrap()
        })
    }

    pub fn control_plane_pid(&self) -> i32 {
        std::fs::read_to_string(self.home.path().join("run/control-plane.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        ironmesh_home::ClusterId::from_home(self.home.path())
            .unwrap()
            .pod_netns(namespace, pod)
    }

    /// `im-<cluster id>-`: every network namespace of this cluster starts with it.
    pub fn netns_prefix(&self) -> String {
        ironmesh_home::ClusterId::from_home(self.home.path())
            .unwrap()
            .netns_prefix()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.home.path().join("run/control-plane.pid")).ok();
        let _ = self.command(&["down"]).output();
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok())
            && alive(pid)
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// `ip netns list`, as text: what a test checks its cluster left behind.
pub fn netns_list() -> String {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

/// `curl http://httpbin.DST:8000/ip` run with `ip netns exec` (which also maps the pod's hosts file).
pub fn curl_in(netns: &str, dst: &str) -> String {
    let url = format!("http://httpbin.{dst}:8000/ip");
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "5",
            &url,
            "-w",
            "%{http_code}",
        ])
        .output()
        .unwrap();
    format!(
        "{}/{}",
        String::from_utf8_lossy(&output.stdout).trim(),
        output.status.code().unwrap_or(-1)
    )
}

pub fn kill9(pid: i32) {
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

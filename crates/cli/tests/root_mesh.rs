//! Root only: the mesh on the local runtime, end to end, with the real binaries (`ironmesh`,
//! `ironmesh-proxy`, `ironmesh-httpbin`), real network namespaces, iptables and `curl`.
//! It checks what users rely on beyond the walkthrough: a killed container comes back and traffic
//! resumes while other pods never notice; a killed control plane leaves traffic working on cached
//! configuration and certificates; `down` leaves nothing of the cluster behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh");

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

/// The proxy and the sample server must sit next to `ironmesh` (the runtime looks there first).
fn build_companions() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "ironmesh-proxy",
                "-p",
                "ironmesh-samples",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build ironmesh-proxy and ironmesh-httpbin");
        assert!(
            status.success(),
            "building ironmesh-proxy and ironmesh-httpbin failed"
        );
        let dir = Path::new(BIN).parent().unwrap();
        for companion in ["ironmesh-proxy", "ironmesh-httpbin"] {
            assert!(
                dir.join(companion).exists(),
                "{companion} is not next to {BIN}; build the workspace"
            );
        }
    });
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root: the local runtime creates network namespaces and iptables rules"
    );
}

/// A cluster of its own; the Drop guard runs `down` and kills a control plane that is left.
struct Cluster {
    home: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        require_root();
        build_companions();
        let cluster = Cluster {
            home: tempfile::tempdir().unwrap(),
        };
        cluster.ok(&["up"]);
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("IRONMESH_HOME", self.home.path())
            .stdin(Stdio::null());
        command
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "ironmesh {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn apply_injected(&self, file: &str, namespace: &str) {
        let injected = self.ok(&["kube-inject", "-f", samples().join(file).to_str().unwrap()]);
        let path = self
            .home
            .path()
            .join(format!("{namespace}-{}", file.replace('/', "-")));
        std::fs::write(&path, injected).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap(), "-n", namespace]);
    }

    fn deploy(&self) {
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

    fn pod(&self, app: &str, namespace: &str) -> String {
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
    fn call(&self, src: &str, dst: &str) -> String {
        let pod = self.pod("sleep", src);
        let url = format!("http://httpbin.{dst}:8000/ip");
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

    fn wait_for(&self, src: &str, dst: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.call(src, dst);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{src} -> {dst}: want {want}, still {got} after {within:?}; logs in {}",
                self.home.path().join("logs").display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The pid of a container (from the runtime's pid file "pid start-time").
    fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> i32 {
        let file = self
            .home
            .path()
            .join(format!("pods/{namespace}/{pod}/pids/{container}.pid"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn restarts(&self, namespace: &str, pod: &str, container: &str) -> u64 {
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

    fn control_plane_pid(&self) -> i32 {
        std::fs::read_to_string(self.home.path().join("run/control-plane.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        ironmesh_runtime::ClusterId::from_home(self.home.path())
            .unwrap()
            .pod_netns(namespace, pod)
    }

    /// `im-<cluster id>-`: every network namespace of this cluster starts with it.
    fn netns_prefix(&self) -> String {
        ironmesh_runtime::ClusterId::from_home(self.home.path())
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

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

/// `curl http://httpbin.DST:8000/ip` run with `ip netns exec` (which also maps the pod's hosts file).
fn curl_in(netns: &str, dst: &str) -> String {
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

fn kill9(pid: i32) {
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

const READY: Duration = Duration::from_secs(90);
const RECOVER: Duration = Duration::from_secs(30);

#[test]
fn root_killed_containers_restart_and_only_their_pod_notices() {
    let c = Cluster::up();
    c.deploy();
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("legacy", "legacy", "200/0", READY);
    let httpbin = c.pod("httpbin", "foo");
    let legacy_httpbin = c.pod("httpbin", "legacy");

    for container in ["httpbin", "ironmesh-proxy"] {
        let before = c.restarts("foo", &httpbin, container);
        kill9(c.container_pid("foo", &httpbin, container));
        // The other pods never notice: legacy traffic keeps flowing while foo's container is down.
        assert_eq!(
            c.call("legacy", "legacy"),
            "200/0",
            "legacy pods are untouched"
        );
        c.wait_for("foo", "foo", "200/0", RECOVER);
        assert_eq!(
            c.restarts("foo", &httpbin, container),
            before + 1,
            "{container} restarted once"
        );
    }
    assert_eq!(
        c.restarts("legacy", &legacy_httpbin, "httpbin"),
        0,
        "no other pod restarted"
    );
    assert_eq!(
        c.pod("httpbin", "foo"),
        httpbin,
        "the pod was restarted in place, not replaced"
    );
}

#[test]
fn root_traffic_survives_a_dead_control_plane_and_down_leaves_nothing() {
    let c = Cluster::up();
    c.deploy();
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("foo", "legacy", "200/0", READY);
    let prefix = c.netns_prefix();
    let foo_sleep = c.pod("sleep", "foo");

    let root = c.ok(&["ca", "root", "-o", "pem"]);
    // Proxies keep their last configuration and certificates.
    let control_plane = c.control_plane_pid();
    kill9(control_plane);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!alive(control_plane));
    // (`ironmesh exec` needs the API, so curl runs straight in the pod's network namespace.)
    let sleep = c.pod_netns("foo", &foo_sleep);
    for _ in 0..5 {
        assert_eq!(
            curl_in(&sleep, "foo"),
            "200/0",
            "new connections work on cached config"
        );
        assert_eq!(curl_in(&sleep, "legacy"), "200/0");
    }

    // `up` after the crash cleans what was left and brings the pods back.
    c.ok(&["up"]);
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("legacy", "foo", "200/0", READY);
    assert_eq!(
        c.ok(&["ca", "root", "-o", "pem"]),
        root,
        "the restarted control plane keeps its root CA"
    );

    let pids: Vec<i32> = ["foo", "legacy"]
        .iter()
        .flat_map(|ns| {
            let pod = c.pod("sleep", ns);
            [c.container_pid(ns, &pod, "sleep")]
        })
        .collect();
    let restarted_control_plane = c.control_plane_pid();
    c.ok(&["down"]);
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !netns.contains(&prefix),
        "network namespaces left after down:\n{netns}"
    );
    for pid in pids {
        assert!(!alive(pid), "container process {pid} left after down");
    }
    assert!(
        !alive(restarted_control_plane),
        "control plane left after down"
    );
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let cluster_id = prefix.trim_start_matches("im-").trim_end_matches('-');
    assert!(
        !links.contains(cluster_id),
        "links of the cluster left in the host namespace:\n{links}"
    );
    let etc = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        etc.iter().all(|n| !n.starts_with(&prefix)),
        "/etc/netns files left: {etc:?}"
    );
}

const ISTIO_MUTUAL_EVERYWHERE: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: default\n  namespace: default\nspec:\n  host: \"*.local\"\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n";

#[test]
fn root_certificate_and_root_rotation_under_traffic_fail_no_request() {
    require_root();
    build_companions();
    let c = Cluster {
        home: tempfile::tempdir().unwrap(),
    };
    // Certificates live 4 s, so every workload renews (at half its life) several times during the test.
    c.ok(&["up", "--workload-cert-ttl", "4s"]);
    c.ok(&["create", "ns", "foo"]);
    c.apply_injected("httpbin/httpbin.yaml", "foo");
    c.apply_injected("sleep/sleep.yaml", "foo");
    let rule = c.home.path().join("rule.yaml");
    std::fs::write(&rule, ISTIO_MUTUAL_EVERYWHERE).unwrap();
    c.ok(&["apply", "-f", rule.to_str().unwrap()]);
    c.wait_for("foo", "foo", "200/0", READY);
    let root_before = c.ok(&["ca", "root", "-o", "pem"]);
    assert_eq!(root_before.matches("BEGIN CERTIFICATE").count(), 1);

    // Requests flow from the sleep pod for the whole test, each on a new connection (a new curl).
    let sleep = c.pod_netns("foo", &c.pod("sleep", "foo"));
    let load = Command::new("ip")
        .args(["netns", "exec", &sleep, "sh", "-c"])
        .arg(
            "ok=0; bad=0; end=$(($(date +%s) + 22)); while [ $(date +%s) -lt $end ]; do \
             c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' http://httpbin.foo:8000/ip); \
             if [ \"$c\" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); echo \"failed: $c\" >&2; fi; \
             sleep 0.05; done; echo \"$ok $bad\"",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let rotated = c.ok(&["ca", "rotate-root"]);
    assert!(rotated.contains("new root"), "{rotated}");
    assert_eq!(
        c.ok(&["ca", "root", "-o", "pem"])
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "overlap: both roots"
    );
    // Every workload renews from the new root within half a lifetime (plus jitter and backoff).
    std::thread::sleep(Duration::from_secs(8));
    c.ok(&["ca", "retire-root"]);
    let root_after = c.ok(&["ca", "root", "-o", "pem"]);
    assert_eq!(root_after.matches("BEGIN CERTIFICATE").count(), 1);
    assert_ne!(root_after, root_before, "the trusted root changed");

    let output = load.wait_with_output().unwrap();
    let counts = String::from_utf8_lossy(&output.stdout);
    let mut numbers = counts.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (ok, bad) = (numbers.next().unwrap(), numbers.next().unwrap());
    assert!(ok > 50, "too few requests to mean anything: {ok}");
    assert_eq!(
        bad,
        0,
        "requests failed across rotations: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The workload certificate now chains to the new root and lives 4 s.
    let secret = c.ok(&[
        "proxy-config",
        "secret",
        &c.pod("httpbin", "foo"),
        "-n",
        "foo",
        "-o",
        "pem",
    ]);
    let leaf_end =
        secret.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let leaf = &secret[..leaf_end];
    let dir = c.home.path();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    std::fs::write(dir.join("root.pem"), &root_after).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("root.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

fn peer_authentication(namespace: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: {namespace}\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

/// PRODUCT §6 rows the walkthrough does not visit: a DISABLE server (plaintext 200, ISTIO_MUTUAL 503) and
/// ISTIO_MUTUAL to a PERMISSIVE server (200 over mTLS), with the modern PeerAuthentication API.
#[test]
fn root_disable_and_permissive_servers_behave_as_istio() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "foo"]);
    c.apply_injected("httpbin/httpbin.yaml", "foo");
    c.apply_injected("sleep/sleep.yaml", "foo");
    c.ok(&["create", "ns", "legacy"]);
    c.ok(&[
        "apply",
        "-f",
        samples().join("sleep/sleep.yaml").to_str().unwrap(),
        "-n",
        "legacy",
    ]);
    c.wait_for("foo", "foo", "200/0", READY);
    let apply = |name: &str, yaml: &str| {
        let path = c.home.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        c.ok(&["apply", "-f", path.to_str().unwrap()]);
    };
    let settle = Duration::from_secs(5);

    apply("pa.yaml", &peer_authentication("foo", "DISABLE"));
    c.wait_for("foo", "foo", "200/0", settle);
    c.wait_for("legacy", "foo", "200/0", settle);

    apply("rule.yaml", ISTIO_MUTUAL_EVERYWHERE);
    c.wait_for("foo", "foo", "503/0", settle);
    let body = {
        let pod = c.pod("sleep", "foo");
        c.ok(&[
            "exec",
            &pod,
            "-n",
            "foo",
            "-c",
            "sleep",
            "--",
            "curl",
            "-s",
            "http://httpbin.foo:8000/ip",
        ])
    };
    assert!(
        body.starts_with(
            "upstream connect error or disconnect/reset before headers. reset reason:"
        ),
        "Envoy's 503 body: {body}"
    );

    apply("pa.yaml", &peer_authentication("foo", "PERMISSIVE"));
    c.wait_for("foo", "foo", "200/0", settle);
    c.wait_for("legacy", "foo", "200/0", settle);
    let pod = c.pod("sleep", "foo");
    let headers = c.ok(&[
        "exec",
        &pod,
        "-n",
        "foo",
        "-c",
        "sleep",
        "--",
        "curl",
        "-s",
        "http://httpbin.foo:8000/headers",
    ]);
    assert!(
        headers.contains("URI=spiffe://cluster.local/ns/foo/sa/default"),
        "over mTLS the server sees the client's identity: {headers}"
    );
}

//! ROOT-ONLY tests: real network namespaces, veth pairs, iptables and processes. They need root
//! (CAP_NET_ADMIN + CAP_SYS_ADMIN), iproute2, iptables and curl, and fail loudly without them. Every test
//! tears its cluster down in a Drop guard, also when it panics. Traffic stays inside namespaces the
//! tests create.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ironmesh_runtime::*;

/// Builds the bundled httpbin once (the runtime crate cannot depend on a binary of another package) and
/// returns the directory holding it, used as `IRONMESH_BIN_DIR`.
fn bundled_bin_dir() -> PathBuf {
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

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "root_* tests need root (network namespaces, iptables): run them as root"
    );
}

/// Tears the cluster down whatever happens, then checks nothing of it is left.
struct ClusterGuard {
    cluster: Cluster,
    pods: Vec<PodHandle>,
    _home: tempfile::TempDir,
}

impl ClusterGuard {
    fn new() -> Self {
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
            _home: home,
        }
    }

    fn home(&self) -> &Path {
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

fn netns_of_cluster(id: &ClusterId) -> Vec<String> {
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

fn assert_cluster_gone(id: &ClusterId, pids: &[u32]) {
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
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "process {pid} of the cluster is still running");
    }
}

/// Runs a command inside a pod's namespace (with its /etc view) and captures its output.
fn in_pod(netns: &str, argv: &[&str]) -> (i32, String) {
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

fn curl(netns: &str, url: &str) -> (i32, String) {
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

async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
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

fn pod_spec(guard: &ClusterGuard, net: &PodNetwork, containers: Vec<ContainerSpec>) -> PodSpec {
    PodSpec {
        namespace: net.namespace.clone(),
        name: net.name.clone(),
        node_name: "ironmesh-node".into(),
        netns: net.netns.clone(),
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

fn httpbin_container() -> ContainerSpec {
    ContainerSpec {
        name: "httpbin".into(),
        image: "docker.io/citizenstig/httpbin".into(),
        ..Default::default()
    }
}

fn sleep_container(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "pstauffer/curl".into(),
        command: vec!["/bin/sleep".into(), "3650d".into()],
        ..Default::default()
    }
}

fn running_pid(handle: &PodHandle, container: &str) -> Option<u32> {
    let status = handle.status();
    let c = status.containers.iter().find(|c| c.name == container)?;
    matches!(c.state, ContainerState::Running { .. })
        .then_some(c.pid)
        .flatten()
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);

/// Two pods in `foo`: `sleep-a` (client) and `httpbin-b` (the real sample), a service VIP and names.
async fn httpbin_cluster() -> (ClusterGuard, PodNetwork, PodNetwork) {
    let mut guard = ClusterGuard::new();
    let mut ips = Ipam::pods();
    let a = guard
        .cluster
        .add_pod("foo", "sleep-a", ips.allocate("foo/sleep-a").unwrap())
        .expect("add pod A");
    let b = guard
        .cluster
        .add_pod("foo", "httpbin-b", ips.allocate("foo/httpbin-b").unwrap())
        .expect("add pod B");
    let handle = PodHandle::start(pod_spec(&guard, &b, vec![httpbin_container()]));
    guard.pods.push(handle);
    guard
        .cluster
        .sync_services(&[
            ServiceNat {
                vip: VIP,
                port: 8000,
                protocol: Protocol::Tcp,
                endpoints: vec![(b.ip, 8000)],
            },
            ServiceNat {
                vip: Ipv4Addr::new(198, 19, 0, 11),
                port: 80,
                protocol: Protocol::Tcp,
                endpoints: vec![],
            },
        ])
        .expect("sync services");
    guard
        .cluster
        .sync_names(&[
            ServiceName {
                namespace: "foo".into(),
                name: "httpbin".into(),
                vip: VIP,
            },
            ServiceName {
                namespace: "foo".into(),
                name: "empty".into(),
                vip: Ipv4Addr::new(198, 19, 0, 11),
            },
        ])
        .expect("sync names");
    let b_netns = b.netns.clone();
    eventually(
        "httpbin to listen in pod B",
        Duration::from_secs(10),
        || {
            (curl(&b_netns, "http://127.0.0.1:8000/ip")
                .1
                .ends_with("200"))
            .then_some(())
        },
    )
    .await;
    (guard, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn root_service_vip_names_hairpin_and_teardown() {
    let (guard, a, b) = httpbin_cluster().await;
    for name in [
        "httpbin",
        "httpbin.foo",
        "httpbin.foo.svc",
        "httpbin.foo.svc.cluster.local",
    ] {
        let (code, out) = in_pod(&a.netns, &["getent", "hosts", name]);
        assert_eq!(code, 0, "getent hosts {name} failed in pod A");
        assert!(
            out.starts_with(&VIP.to_string()),
            "{name} resolved to {out:?}"
        );
    }
    let (code, own) = in_pod(&a.netns, &["getent", "hosts", "sleep-a"]);
    assert_eq!(
        (code, own.split_whitespace().next()),
        (0, Some(a.ip.to_string().as_str()))
    );

    let (code, out) = curl(&a.netns, "http://httpbin.foo:8000/ip");
    assert_eq!(code, 0, "curl from A via the VIP failed: {out}");
    assert!(out.ends_with("\n200"), "expected 200, got {out:?}");
    let body: serde_json::Value = serde_json::from_str(out.rsplit_once('\n').unwrap().0).unwrap();
    assert_eq!(
        body["origin"],
        a.ip.to_string(),
        "pod traffic is routed, not masqueraded"
    );

    let (_, index) = curl(&a.netns, "http://httpbin.foo.svc.cluster.local:8000/");
    assert!(index.contains("<h2 id=\"AUTHOR\">AUTHOR</h2>") && index.ends_with("</html>\n200"));

    let (code, hairpin) = curl(&b.netns, "http://httpbin:8000/ip");
    assert_eq!(
        code, 0,
        "hairpin (pod B calling its own service) failed: {hairpin}"
    );
    assert!(hairpin.ends_with("\n200"), "hairpin got {hairpin:?}");

    let started = Instant::now();
    let (code, _) = curl(&a.netns, "http://empty.foo:80/");
    assert_ne!(code, 0, "a service without endpoints must refuse");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no endpoints must fail fast, took {:?}",
        started.elapsed()
    );

    assert_eq!(
        exec(
            &a.netns,
            &["sh".into(), "-c".into(), "exit 3".into()],
            false
        )
        .unwrap(),
        3
    );

    let id = guard.cluster.id().clone();
    let httpbin_pid = running_pid(&guard.pods[0], "httpbin").expect("httpbin running");
    drop(guard);
    assert_cluster_gone(&id, &[httpbin_pid]);
}

#[tokio::test(flavor = "multi_thread")]
async fn root_names_update_in_place_for_running_containers() {
    let mut guard = ClusterGuard::new();
    let net = guard
        .cluster
        .add_pod("foo", "watcher", Ipv4Addr::new(198, 18, 0, 20))
        .expect("add pod");
    // The container's mount namespace was made at start: only an in-place rewrite reaches it.
    let watcher = ContainerSpec {
        name: "watcher".into(),
        image: "x".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "until getent hosts late.foo; do sleep 0.1; done; exec sleep 3650d".into(),
        ],
        ..Default::default()
    };
    let spec = pod_spec(&guard, &net, vec![watcher]);
    let log = log_path(&spec.pod_dir, "watcher");
    guard.pods.push(PodHandle::start(spec));
    let handle = &guard.pods[0];
    eventually("the watcher to run", Duration::from_secs(10), || {
        running_pid(handle, "watcher")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("198.19"),
        "late.foo resolved too early"
    );
    let vip = Ipv4Addr::new(198, 19, 3, 4);
    guard
        .cluster
        .sync_names(&[ServiceName {
            namespace: "foo".into(),
            name: "late".into(),
            vip,
        }])
        .expect("sync names");
    let seen = eventually(
        "the running container to resolve the new name",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("late.foo"))
        },
    )
    .await;
    assert!(seen.starts_with("198.19.3.4"), "resolved to {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn root_two_clusters_coexist() {
    let (first, first_a, _) = httpbin_cluster().await;
    let (second, second_a, _) = httpbin_cluster().await;
    assert_ne!(first.cluster.id(), second.cluster.id());
    assert_eq!(
        first_a.ip, second_a.ip,
        "same addresses, separate namespaces"
    );
    for (guard, a) in [(&first, &first_a), (&second, &second_a)] {
        let (code, out) = curl(&a.netns, "http://httpbin.foo:8000/ip");
        assert!(
            code == 0 && out.ends_with("\n200"),
            "cluster {} broken: {out}",
            guard.cluster.id()
        );
    }
    let first_id = first.cluster.id().clone();
    drop(first);
    assert_cluster_gone(&first_id, &[]);
    let (code, out) = curl(&second_a.netns, "http://httpbin.foo:8000/ip");
    assert!(
        code == 0 && out.ends_with("\n200"),
        "second cluster broken by the first's teardown: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn root_kill_9_restarts_only_that_container() {
    let mut guard = ClusterGuard::new();
    let net = guard
        .cluster
        .add_pod("bar", "sleep-k", Ipv4Addr::new(198, 18, 0, 7))
        .expect("add pod");
    let mut spec = pod_spec(
        &guard,
        &net,
        vec![sleep_container("sleep"), sleep_container("ironmesh-proxy")],
    );
    spec.containers.push(ContainerSpec {
        name: "broken".into(),
        image: "nginx:1.25".into(),
        ..Default::default()
    });
    spec.containers.push(ContainerSpec {
        name: "env".into(),
        image: "x".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo pod=$POD_NAME; exec sleep 3650d".into(),
        ],
        ..Default::default()
    });
    spec.init_containers = vec![ContainerSpec {
        name: "init".into(),
        image: "x".into(),
        command: vec!["sh".into(), "-c".into(), "echo init-ran".into()],
        ..Default::default()
    }];
    let pod_dir = spec.pod_dir.clone();
    guard.pods.push(PodHandle::start(spec));
    let handle = &guard.pods[0];
    let first_pid = eventually("sleep to run", Duration::from_secs(10), || {
        running_pid(handle, "sleep")
    })
    .await;
    let proxy_pid = eventually(
        "the second container to run",
        Duration::from_secs(10),
        || running_pid(handle, "ironmesh-proxy"),
    )
    .await;
    eventually("the env container to log", Duration::from_secs(10), || {
        std::fs::read_to_string(log_path(&pod_dir, "env"))
            .ok()
            .filter(|l| l.contains("pod=sleep-k"))
    })
    .await;
    assert!(
        std::fs::read_to_string(log_path(&pod_dir, "init"))
            .unwrap()
            .contains("init-ran")
    );
    let status = handle.status();
    assert_eq!(
        status.init_containers[0].state,
        ContainerState::Terminated {
            exit_code: 0,
            signal: None,
            reason: "Completed".into(),
            started_at: match status.init_containers[0].state {
                ContainerState::Terminated { started_at, .. } => started_at,
                _ => unreachable!(),
            },
            finished_at: match status.init_containers[0].state {
                ContainerState::Terminated { finished_at, .. } => finished_at,
                _ => unreachable!(),
            },
        }
    );
    let broken = status
        .containers
        .iter()
        .find(|c| c.name == "broken")
        .unwrap();
    assert!(
        matches!(&broken.state, ContainerState::Waiting { reason, message } if reason == "ErrImagePull" && message.contains("nginx")),
        "unknown image must be a clear error on that container: {:?}",
        broken.state
    );
    let recorded = std::fs::read_to_string(pod_dir.join("pids/sleep.pid")).unwrap();
    assert!(
        recorded.starts_with(&format!("{first_pid} ")),
        "pid file {recorded:?}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = eventually(
        "sleep to restart after kill -9",
        Duration::from_secs(15),
        || {
            let status = handle.status();
            let sleep = status.containers.iter().find(|c| c.name == "sleep")?;
            (sleep.restart_count == 1 && matches!(sleep.state, ContainerState::Running { .. }))
                .then(|| sleep.clone())
        },
    )
    .await;
    assert_ne!(restarted.pid, Some(first_pid));
    assert!(matches!(
        restarted.last_state,
        Some(ContainerState::Terminated { exit_code: 137, .. })
    ));
    let status = handle.status();
    let proxy = status
        .containers
        .iter()
        .find(|c| c.name == "ironmesh-proxy")
        .unwrap();
    assert_eq!(
        (proxy.restart_count, proxy.pid),
        (0, Some(proxy_pid)),
        "the other container must not notice"
    );
    assert_eq!(status.restarts(), 1);
    let reasons: Vec<&str> = status.events.iter().map(|e| e.reason.as_str()).collect();
    for expected in [
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
        "BackOff",
        "Failed",
    ] {
        assert!(
            reasons.contains(&expected),
            "missing {expected} event in {reasons:?}"
        );
    }

    let handle = guard.pods.pop().unwrap();
    let final_status = handle.stop().await;
    assert!(final_status.events.iter().any(|e| e.reason == "Killing"));
    assert!(
        !pod_dir.join("pids/sleep.pid").exists(),
        "pid files are removed on stop"
    );
    let new_pid = restarted.pid.unwrap();
    assert!(
        !Path::new(&format!("/proc/{new_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{new_pid}/stat"))
                .unwrap()
                .contains(") Z ")
    );
    let id = guard.cluster.id().clone();
    drop(guard);
    assert_cluster_gone(&id, &[new_pid, proxy_pid]);
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cleanup_stale_removes_what_a_crash_left() {
    require_root();
    let home = tempfile::tempdir().unwrap();
    let crashed = Cluster::open(home.path()).unwrap();
    let guard = ClusterGuard {
        cluster: Cluster::open(home.path()).unwrap(),
        pods: Vec::new(),
        _home: home,
    };
    crashed.ensure_node().unwrap();
    let net = crashed
        .add_pod("foo", "orphan", Ipv4Addr::new(198, 18, 0, 9))
        .unwrap();
    // A process the "crashed" control plane left running inside the pod.
    let orphan = Command::new("ip")
        .args(["netns", "exec", &net.netns, "sleep", "3650"])
        .spawn()
        .expect("start an orphan process");
    let orphan_pid = orphan.id();
    std::mem::forget(crashed);
    guard.cluster.cleanup_stale().expect("cleanup_stale");
    let mut orphan = orphan;
    let _ = orphan.wait();
    let id = guard.cluster.id().clone();
    assert_cluster_gone(&id, &[orphan_pid]);
    // And the cluster comes back up on the same home.
    guard.cluster.ensure_node().unwrap();
    let again = guard
        .cluster
        .add_pod("foo", "orphan", Ipv4Addr::new(198, 18, 0, 9))
        .expect("re-add the same pod");
    guard.cluster.remove_pod("foo", "orphan");
    guard
        .cluster
        .add_pod("foo", "orphan", again.ip)
        .expect("re-add right after removal (veth name reused)");
    drop(guard);
    assert_cluster_gone(&id, &[]);
}

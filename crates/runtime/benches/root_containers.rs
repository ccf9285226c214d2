//! ROOT-ONLY: container start latency and memory per container, before (a process started with
//! `ip netns exec`, as the runtime did until issue 11) and after (an OCI container started by runc,
//! detached, through `PodHandle`). Not criterion: each sample starts real processes, and memory is a
//! level, not a time. Run: `cargo bench -p ironmesh-runtime --bench root_containers` (as root).
//!
//! * latency: from the start request to `/bin/sleep` running in the pod's network namespace (median
//!   and p90 over `RUNS` starts);
//! * memory: `MemAvailable` drop with `COUNT` containers of `/bin/sleep` running, divided by `COUNT`
//!   (everything a container costs: its processes, runc leftovers if any, namespaces, mounts), and the
//!   RSS of processes left per container besides the sleep itself.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironmesh_runtime::{
    Cluster, ContainerSpec, ContainerState, PodHandle, PodSpec, RestartPolicy, pod_dir,
};

const RUNS: usize = 20;
const COUNT: usize = 20;

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// RSS (KiB) of every `runc` process on the machine: what the runtime leaves per container.
fn runc_rss_kib() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim() == "runc" {
            total += std::fs::read_to_string(path.join("status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0);
        }
    }
    total
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn is_sleeping(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|exe| exe.ends_with("sleep"))
        .unwrap_or(false)
}

fn before(netns: &str) -> (Vec<Duration>, f64) {
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "/bin/sleep", "60"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        while !is_sleeping(child.id()) {
            std::thread::yield_now();
        }
        samples.push(started.elapsed());
        child.kill().unwrap();
        child.wait().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let available = mem_available_kib();
    let mut children: Vec<_> = (0..COUNT)
        .map(|_| {
            Command::new("ip")
                .args(["netns", "exec", netns, "/bin/sleep", "60"])
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let per = (available as f64 - mem_available_kib() as f64) / COUNT as f64;
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    (samples, per)
}

fn spec(cluster: &Cluster, home: &std::path::Path, netns: &str, name: &str) -> PodSpec {
    let _ = cluster;
    PodSpec {
        namespace: "bench".into(),
        name: name.into(),
        node_name: "bench".into(),
        netns: netns.into(),
        home: home.to_path_buf(),
        pod_dir: pod_dir(home, "bench", name),
        env: vec![],
        init_containers: vec![],
        // One network namespace for all: container names (runc ids) must differ.
        containers: vec![ContainerSpec {
            name: name.into(),
            image: "x".into(),
            command: vec!["/bin/sleep".into(), "60".into()],
            ..Default::default()
        }],
        restart_policy: RestartPolicy::Never,
        termination_grace: Duration::from_secs(1),
        bin_dir: None,
    }
}

async fn running(handle: &PodHandle) {
    loop {
        if let Some(ContainerState::Running { .. }) =
            handle.status().containers.first().map(|c| c.state.clone())
        {
            return;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn after(
    cluster: &Cluster,
    home: &std::path::Path,
    netns: &str,
) -> (Vec<Duration>, f64, u64) {
    let mut samples = Vec::new();
    for i in 0..RUNS {
        let started = Instant::now();
        let handle = PodHandle::start(spec(cluster, home, netns, &format!("lat-{i}")));
        running(&handle).await;
        samples.push(started.elapsed());
        handle.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let available = mem_available_kib();
    let mut handles = Vec::new();
    for i in 0..COUNT {
        let handle = PodHandle::start(spec(cluster, home, netns, &format!("mem-{i}")));
        running(&handle).await;
        handles.push(handle);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per = (available as f64 - mem_available_kib() as f64) / COUNT as f64;
    let runc = runc_rss_kib();
    for handle in handles {
        handle.stop().await;
    }
    (samples, per, runc)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` lists harness=false benches; nothing to list.
    }
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "root_containers needs root (network namespaces, runc)"
    );
    let home = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(home.path()).unwrap();
    cluster.cleanup_stale().unwrap();
    cluster.ensure_node().unwrap();
    let net = cluster
        .add_pod("bench", "bench", Ipv4Addr::new(198, 18, 9, 10))
        .unwrap();

    let (mut old, old_mem) = before(&net.netns);
    let (mut new, new_mem, runc) = after(&cluster, cluster.home(), &net.netns).await;
    println!("container start, {RUNS} runs; memory with {COUNT} containers of /bin/sleep");
    println!(
        "before (ip netns exec):  start median {:>7.1?}  p90 {:>7.1?}  memory {:>7.0} KiB/container",
        percentile(&mut old, 0.5),
        percentile(&mut old, 0.9),
        old_mem
    );
    println!(
        "after  (runc, detached): start median {:>7.1?}  p90 {:>7.1?}  memory {:>7.0} KiB/container  (runc processes left: {runc} KiB RSS)",
        percentile(&mut new, 0.5),
        percentile(&mut new, 0.9),
        new_mem
    );
    if let Err(error) = cluster.teardown() {
        eprintln!("teardown failed: {error}");
    }
}

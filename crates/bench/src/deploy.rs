//! The deployment-path rows (issue 15): the local runtime itself, as users run it. The harness brings
//! up a cluster of its own (`ironmesh up` with a private `$IRONMESH_HOME`), deploys the walkthrough's
//! httpbin and sleep with sidecars in `foo` and `bar` and without in `legacy`, and runs the load
//! generator in the sleep pods' network namespaces: `legacy → httpbin.legacy` (direct: bridge and
//! service NAT, no proxy) and `bar → httpbin.foo` (mesh: two sidecars, mutual TLS, access logs as in
//! every pod). Nothing is pinned, as on a user's node. The mesh is in the walkthrough's end state (STRICT
//! MeshPolicy, `ISTIO_MUTUAL` DestinationRule): the run starts once the mesh route serves without errors
//! and a client without a sidecar is refused by the mesh route's server, so the mesh route is mTLS.
//!
//! Rounds are interleaved (direct and mesh alternate, ABBA across rounds) and each point is the median
//! of its rounds. The busy condition runs the same pair with the other core kept busy by a CPU burner
//! (`ironmesh-bench burn`, pinned to CPU 1, bounded in time, killed after the pair). The one-CPU
//! condition pins every process of the route (generator, sidecars, app) to CPU 0 for its run and gives
//! them every CPU back after: what the mesh costs without wake-ups that cross vCPUs. oha, when
//! installed, runs beside our generator from the same namespaces. The cluster is torn down
//! (`ironmesh down --purge`) when [`Cluster`] drops, on success, error and Ctrl-C alike; `bench/run`
//! also removes a leftover cluster home after a crash.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::load::LoadSummary;
use crate::measure::{self, Bench, FixedRate, INTERRUPTED, LatencyRun, ProxyUsage};
use crate::process::Launch;

/// Prefix of the cluster homes under the temp dir (`bench/run` removes leftovers after a crash).
pub const HOME_PREFIX: &str = "ironmesh-bench-cluster-";
/// The httpbin port of the walkthrough's service.
const HTTPBIN_PORT: u16 = 8000;
/// The sidecar's container name (`ironmesh kube-inject`).
const SIDECAR: &str = "ironmesh-proxy";
/// CPU the burner of the busy condition spins on ("the other core").
pub const BURNER_CPU: &str = "1";
/// The CPU every process of a route shares in the [`Condition::OneCpu`] rows.
pub const ONE_CPU: &str = "0";
/// How long the cluster may take until both routes serve.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

const HTTPBIN_YAML: &str = include_str!("../../../samples/httpbin/httpbin.yaml");
const SLEEP_YAML: &str = include_str!("../../../samples/sleep/sleep.yaml");
/// The walkthrough's end state, so the mesh route is mutual TLS: the seed's MeshPolicy (STRICT everywhere)
/// and its DestinationRule (`ISTIO_MUTUAL` for `*.local`). Without them sidecars talk plaintext to each
/// other (auto mTLS is off, as in the seed's Istio), which is not what the mesh row claims to measure.
const MESH_POLICY_YAML: &str = include_str!("../../../samples/default-mesh-policy.yml");
const MUTUAL_TLS_YAML: &str = include_str!("../../../samples/all-internal-traffic.yml");

/// Which calls a row makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// `sleep.legacy → httpbin.legacy`: no sidecar on either side.
    Direct,
    /// `sleep.bar → httpbin.foo`: both sidecars, mutual TLS.
    Mesh,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::Direct => "legacy→legacy (direct)",
            Route::Mesh => "bar→foo (mesh, mTLS)",
        }
    }
}

/// Whether the other core was busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Quiet,
    /// A CPU burner spins on CPU 1 for the whole pair.
    Busy,
    /// Every process of the route (generator, sidecars, app) pinned to [`ONE_CPU`], the other core
    /// left idle: the mesh's cost without wake-ups that cross to another vCPU, which on a virtual
    /// machine wait for the hypervisor to run that vCPU (BENCHMARKS.md#vcpu-wakeups).
    OneCpu,
}

impl Condition {
    /// The report's word for the other core: "idle" or "busy".
    pub fn label(self) -> &'static str {
        match self {
            Condition::Quiet => "idle",
            Condition::Busy => "busy",
            Condition::OneCpu => "idle, route on one CPU",
        }
    }
}

/// Which generator measured a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generator {
    /// `ironmesh-bench load`: per-connection schedule, clock from the due time only when late.
    Ours,
    /// `oha -q RATE --latency-correction`: clock from the scheduler's tick.
    OhaCorrected,
    /// `oha -q RATE`: clock from the send.
    Oha,
}

impl Generator {
    pub fn label(self) -> &'static str {
        match self {
            Generator::Ours => "ironmesh-bench load",
            Generator::OhaCorrected => "oha --latency-correction",
            Generator::Oha => "oha (uncorrected)",
        }
    }
}

/// One point: the median of its rounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployRow {
    pub generator: Generator,
    pub condition: Condition,
    pub route: Route,
    pub connections: u32,
    pub summary: LoadSummary,
    /// The two sidecars (client pod's, then server pod's) for the mesh route; empty for direct.
    pub sidecars: Vec<ProxyUsage>,
    /// The httpbin container the route ends at (its wake-ups per request; the same app on both routes).
    #[serde(default)]
    pub app: Option<ProxyUsage>,
    pub runs: u32,
}

/// Everything the deployment path produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeploymentFigures {
    pub rows: Vec<DeployRow>,
    /// `/proc/loadavg` when the rows started and when they ended.
    pub load_before: String,
    pub load_after: String,
    pub notes: Vec<String>,
}

impl DeploymentFigures {
    /// The row for a point, if measured.
    pub fn row(
        &self,
        generator: Generator,
        condition: Condition,
        route: Route,
        connections: u32,
    ) -> Option<&DeployRow> {
        self.rows.iter().find(|row| {
            row.generator == generator
                && row.condition == condition
                && row.route == route
                && row.connections == connections
        })
    }

    /// Mesh minus direct for the same generator, condition and connections.
    pub fn added(
        &self,
        generator: Generator,
        condition: Condition,
        connections: u32,
        pick: fn(&LoadSummary) -> f64,
    ) -> Option<f64> {
        let mesh = self.row(generator, condition, Route::Mesh, connections)?;
        let direct = self.row(generator, condition, Route::Direct, connections)?;
        (mesh.clean() && direct.clean()).then(|| pick(&mesh.summary) - pick(&direct.summary))
    }

    /// p90 increase from quiet to busy of `route` (our generator).
    pub fn busy_increase(&self, route: Route, connections: u32) -> Option<f64> {
        let quiet = self.row(Generator::Ours, Condition::Quiet, route, connections)?;
        let busy = self.row(Generator::Ours, Condition::Busy, route, connections)?;
        (quiet.clean() && busy.clean()).then_some(busy.summary.p90_ms - quiet.summary.p90_ms)
    }
}

impl DeployRow {
    /// Every request answered 2xx: a row with errors has percentiles of the answered part only (none
    /// at all when every request failed), so it is not compared against a goal.
    fn clean(&self) -> bool {
        self.summary.requests > 0 && self.summary.errors == 0
    }
}

/// How long and how often.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub rounds: u32,
    pub connections: Vec<u32>,
    pub rate: u32,
    pub warmup: Duration,
    pub duration: Duration,
    /// oha's binary, when installed.
    pub oha: Option<PathBuf>,
}

impl DeployPlan {
    pub fn new(quick: bool) -> DeployPlan {
        let oha = crate::process::which("oha");
        if quick {
            DeployPlan {
                rounds: 1,
                connections: vec![16],
                rate: crate::runner::RATE,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(3),
                oha,
            }
        } else {
            DeployPlan {
                rounds: 3,
                connections: crate::runner::CONNECTIONS.to_vec(),
                rate: crate::runner::RATE,
                warmup: Duration::from_secs(2),
                duration: Duration::from_secs(10),
                oha,
            }
        }
    }
}

/// A local-runtime cluster with a private home; `ironmesh down --purge` and the home removed on drop.
pub struct Cluster {
    cli: PathBuf,
    pub home: PathBuf,
}

impl Cluster {
    /// `ironmesh up` with `$IRONMESH_HOME` under the temp dir.
    pub fn up(cli: &Path) -> Result<Cluster> {
        let home = std::env::temp_dir().join(format!("{HOME_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&home).map_err(|error| BenchError::io(&home, error))?;
        let cluster = Cluster {
            cli: cli.to_path_buf(),
            home,
        };
        cluster.run(&["up"])?;
        Ok(cluster)
    }

    /// Runs `ironmesh ARGS` against this cluster; non-zero exit is an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.cli)
            .args(args)
            .env("IRONMESH_HOME", &self.home)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| BenchError::Command {
                command: format!("ironmesh {}", args.join(" ")),
                detail: error.to_string(),
            })?;
        if !output.status.success() {
            return Err(BenchError::Command {
                command: format!("ironmesh {}", args.join(" ")),
                detail: format!(
                    "{}; logs under {}/logs",
                    String::from_utf8_lossy(&output.stderr).trim(),
                    self.home.display()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `ironmesh apply -f FILE -n NS`, through `ironmesh kube-inject` first when `inject`.
    fn apply(&self, file: &Path, namespace: &str, inject: bool) -> Result<()> {
        let file_text = file.display().to_string();
        let applied = if inject {
            let injected = self.run(&["kube-inject", "-f", &file_text])?;
            let path = self.home.join(format!(
                "{namespace}-injected-{}",
                file.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::write(&path, injected).map_err(|error| BenchError::io(&path, error))?;
            path.display().to_string()
        } else {
            file_text
        };
        self.run(&["apply", "-f", &applied, "-n", namespace])?;
        Ok(())
    }

    /// The one pod of `app` in `namespace` once it exists.
    fn pod(&self, namespace: &str, app: &str) -> Result<String> {
        let label = format!("app={app}");
        poll(&format!("the {app} pod of {namespace}"), || {
            let names = self.run(&[
                "get",
                "pod",
                "-l",
                &label,
                "-n",
                namespace,
                "-o",
                "jsonpath={.items..metadata.name}",
            ])?;
            let names = names.trim();
            Ok((!names.is_empty() && !names.contains(' ')).then(|| names.to_string()))
        })
    }

    /// The service's virtual IP.
    fn service_ip(&self, namespace: &str, service: &str) -> Result<IpAddr> {
        poll(&format!("the address of {service}.{namespace}"), || {
            let text = self.run(&[
                "get",
                "svc",
                service,
                "-n",
                namespace,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])?;
            Ok(text.trim().parse().ok())
        })
    }

    /// The running process of a pod's container, from runc's state of the cluster's container.
    fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Result<u32> {
        let cluster = self.cluster_id()?;
        let root = cluster.runc_root().display().to_string();
        let id = cluster.container_id(namespace, pod, container);
        poll(&format!("container {id}"), || {
            let state = crate::netns::run(&["runc", "--root", &root, "state", &id])?;
            let value: serde_json::Value =
                serde_json::from_str(&state).map_err(|error| BenchError::Parse {
                    tool: "runc state".into(),
                    detail: error.to_string(),
                })?;
            Ok(value
                .get("pid")
                .and_then(serde_json::Value::as_u64)
                .filter(|pid| *pid > 0)
                .map(|pid| pid as u32))
        })
    }

    /// The `ip netns` name of a pod's network namespace.
    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<String> {
        Ok(self.cluster_id()?.pod_netns(namespace, pod))
    }

    fn cluster_id(&self) -> Result<ironmesh_home::ClusterId> {
        ironmesh_home::ClusterId::from_home(&self.home).map_err(|error| BenchError::Command {
            command: format!("cluster id of {}", self.home.display()),
            detail: error.to_string(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.cli)
            .args(["down", "--purge"])
            .env("IRONMESH_HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Calls `probe` every 200 ms until it yields a value, [`READY_TIMEOUT`] passes, or Ctrl-C.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_error = String::new();
    loop {
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = error.to_string(),
        }
        if Instant::now() > deadline {
            return Err(BenchError::Command {
                command: format!("waiting for {what}"),
                detail: format!(
                    "not there after {} s{}",
                    READY_TIMEOUT.as_secs(),
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!("; last error: {last_error}")
                    }
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `ironmesh` CLI next to the harness binary (same target dir), else on PATH.
pub fn cli_binary(self_exe: &Path) -> Option<PathBuf> {
    let sibling = self_exe.parent()?.join("ironmesh");
    if sibling.is_file() {
        Some(sibling)
    } else {
        crate::process::which("ironmesh")
    }
}

/// One route, ready to measure: where its generator runs and what it dials.
struct Endpoint {
    bench: Bench,
    target: SocketAddr,
    /// The sidecars' pids (client pod's first); empty for direct.
    sidecars: Vec<u32>,
    /// The pid of the httpbin container the route ends at.
    app: u32,
}

impl Endpoint {
    /// The processes measured around a run: the sidecars, then the app.
    fn watched(&self) -> Vec<u32> {
        let mut pids = self.sidecars.clone();
        pids.push(self.app);
        pids
    }
}

/// The deployed walkthrough: both routes.
struct Deployment {
    direct: Endpoint,
    mesh: Endpoint,
}

impl Deployment {
    fn endpoint(&self, route: Route) -> &Endpoint {
        match route {
            Route::Direct => &self.direct,
            Route::Mesh => &self.mesh,
        }
    }
}

fn deploy(cluster: &Cluster, work_dir: &Path, self_exe: &Path) -> Result<Deployment> {
    let files = work_dir.join("deploy");
    std::fs::create_dir_all(&files).map_err(|error| BenchError::io(&files, error))?;
    let httpbin = files.join("httpbin.yaml");
    let sleep = files.join("sleep.yaml");
    for (path, text) in [(&httpbin, HTTPBIN_YAML), (&sleep, SLEEP_YAML)] {
        std::fs::write(path, text).map_err(|error| BenchError::io(path, error))?;
    }
    for namespace in ["foo", "bar", "legacy"] {
        cluster.run(&["create", "ns", namespace])?;
    }
    cluster.apply(&httpbin, "foo", true)?;
    cluster.apply(&sleep, "bar", true)?;
    cluster.apply(&httpbin, "legacy", false)?;
    cluster.apply(&sleep, "legacy", false)?;
    // Under STRICT a sidecar's plaintext gets 503 and a client without a sidecar is reset: `run` waits
    // for both the mesh route to serve without errors and legacy's client to be refused by it.
    for (name, text) in [
        ("default-mesh-policy.yml", MESH_POLICY_YAML),
        ("all-internal-traffic.yml", MUTUAL_TLS_YAML),
    ] {
        let path = files.join(name);
        std::fs::write(&path, text).map_err(|error| BenchError::io(&path, error))?;
        cluster.run(&["apply", "-f", &path.display().to_string()])?;
    }
    let cpus = format!(
        "0-{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .saturating_sub(1)
    );
    let bench_in = |namespace: &str, app: &str| -> Result<Bench> {
        let pod = cluster.pod(namespace, app)?;
        let netns = cluster.pod_netns(namespace, &pod)?;
        poll(&format!("network namespace {netns}"), || {
            Ok(crate::netns::namespace_exists(&netns).then_some(()))
        })?;
        Ok(Bench {
            client_namespace: netns,
            cpus: cpus.clone(),
            work_dir: work_dir.to_path_buf(),
            self_exe: self_exe.to_path_buf(),
        })
    };
    let container = |namespace: &str, app: &str, container: &str| -> Result<u32> {
        let pod = cluster.pod(namespace, app)?;
        cluster.container_pid(namespace, &pod, container)
    };
    let sidecar = |namespace: &str, app: &str| container(namespace, app, SIDECAR);
    let target = |namespace: &str| -> Result<SocketAddr> {
        Ok(SocketAddr::new(
            cluster.service_ip(namespace, "httpbin")?,
            HTTPBIN_PORT,
        ))
    };
    Ok(Deployment {
        direct: Endpoint {
            bench: bench_in("legacy", "sleep")?,
            target: target("legacy")?,
            sidecars: Vec::new(),
            app: container("legacy", "httpbin", "httpbin")?,
        },
        mesh: Endpoint {
            bench: bench_in("bar", "sleep")?,
            target: target("foo")?,
            sidecars: vec![sidecar("bar", "sleep")?, sidecar("foo", "httpbin")?],
            app: container("foo", "httpbin", "httpbin")?,
        },
    })
}

/// Waits until a short load from the route's pod succeeds (sidecars have certificates and config).
fn wait_serving(endpoint: &Endpoint) -> Result<()> {
    poll(&format!("traffic to {}", endpoint.target), || {
        Ok(probe(&endpoint.bench, endpoint.target)?
            .filter(|s| s.requests > 0 && s.errors == 0)
            .map(|_| ()))
    })
}

/// Waits until a client without a sidecar is refused by the mesh route's server sidecar: STRICT is in
/// force there, so the mesh route's successful requests (`wait_serving`) are mutual TLS, not plaintext
/// that PERMISSIVE let through before the policies arrived. The same probe from the same pod has just
/// served the direct route, so "no report" here is the refusal, not a generator that cannot run.
fn wait_strict(plaintext_client: &Bench, mesh_target: SocketAddr) -> Result<()> {
    poll(
        &format!("STRICT at {mesh_target} (a client without a sidecar refused)"),
        || {
            let refused = probe(plaintext_client, mesh_target)?.is_none_or(|s| s.requests == 0);
            Ok(refused.then_some(()))
        },
    )
}

/// A 200 ms load at 50 rps from `bench`'s pod; `None` when the generator could not even report
/// (every connection refused or reset).
fn probe(bench: &Bench, target: SocketAddr) -> Result<Option<LoadSummary>> {
    let output = Command::new("ip")
        .args(["netns", "exec", &bench.client_namespace])
        .arg(&bench.self_exe)
        .args(["load", "--target", &target.to_string()])
        .args(["--rate", "50", "--connections", "1"])
        .args(["--warmup-ms", "0", "--duration-ms", "200"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| BenchError::Command {
            command: "ironmesh-bench load".into(),
            detail: error.to_string(),
        })?;
    Ok(serde_json::from_slice(&output.stdout).ok())
}

/// Brings up the cluster, measures every point of `plan`, tears the cluster down.
pub fn run(
    plan: &DeployPlan,
    work_dir: &Path,
    self_exe: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<DeploymentFigures> {
    let cli = cli_binary(self_exe).ok_or_else(|| BenchError::Command {
        command: "ironmesh".into(),
        detail: "the ironmesh CLI is not next to ironmesh-bench nor on PATH; cargo build --release --workspace".into(),
    })?;
    log("deployment path: ironmesh up (a cluster of the harness's own)");
    let cluster = Cluster::up(&cli)?;
    let deployment = deploy(&cluster, work_dir, self_exe)?;
    for route in [Route::Direct, Route::Mesh] {
        wait_serving(deployment.endpoint(route))?;
    }
    wait_strict(&deployment.direct.bench, deployment.mesh.target)?;
    let mut figures = DeploymentFigures {
        load_before: loadavg(),
        ..Default::default()
    };
    let mut runs: Vec<(Generator, Condition, Route, LatencyRun)> = Vec::new();
    for round in 0..plan.rounds {
        // ABBA: the route measured first alternates between rounds, so a drift does not favour one.
        let order = if round % 2 == 0 {
            [Route::Direct, Route::Mesh]
        } else {
            [Route::Mesh, Route::Direct]
        };
        for &connections in &plan.connections {
            for condition in [Condition::Quiet, Condition::Busy, Condition::OneCpu] {
                log(&format!(
                    "deployment path: round {}/{}, {connections} connections, other core {}",
                    round + 1,
                    plan.rounds,
                    condition.label()
                ));
                let pair_time = 2 * (plan.warmup + plan.duration) + Duration::from_secs(10);
                let _burner = match condition {
                    Condition::Quiet | Condition::OneCpu => None,
                    Condition::Busy => Some(start_burner(work_dir, self_exe, pair_time)?),
                };
                for route in order {
                    let endpoint = deployment.endpoint(route);
                    let shape = FixedRate {
                        rate: plan.rate,
                        connections,
                        warmup: plan.warmup,
                        duration: plan.duration,
                    };
                    let label = format!("deploy-{route:?}-{condition:?}").to_lowercase();
                    let mut bench = endpoint.bench.clone();
                    let _pinned = match condition {
                        Condition::OneCpu => {
                            bench.cpus = ONE_CPU.into();
                            Some(Pinned::to(
                                &endpoint.watched(),
                                ONE_CPU,
                                &endpoint.bench.cpus,
                            )?)
                        }
                        Condition::Quiet | Condition::Busy => None,
                    };
                    match bench.latency(&label, endpoint.target, shape, &endpoint.watched()) {
                        Ok(run) => runs.push((Generator::Ours, condition, route, run)),
                        Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                        Err(error) => figures.notes.push(format!(
                            "{} {connections} conns {condition:?}: {error}",
                            route.label()
                        )),
                    }
                }
            }
            // oha from the same pods, quiet only, at the lowest connection count of the plan.
            if let (Some(oha), true) = (&plan.oha, connections == plan.connections[0]) {
                for generator in [Generator::OhaCorrected, Generator::Oha] {
                    for route in order {
                        let endpoint = deployment.endpoint(route);
                        match run_oha(oha, endpoint, generator, connections, plan) {
                            Ok(run) => runs.push((generator, Condition::Quiet, route, run)),
                            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                            Err(error) => figures.notes.push(format!(
                                "{} {}: {error}",
                                generator.label(),
                                route.label()
                            )),
                        }
                    }
                }
            }
        }
    }
    if plan.oha.is_none() {
        figures
            .notes
            .push("oha is not installed (cargo install oha): no oha rows".into());
    }
    figures.load_after = loadavg();
    let mut keys: Vec<(Generator, Condition, Route, u32)> = Vec::new();
    for (generator, condition, route, run) in &runs {
        let key = (*generator, *condition, *route, run.connections);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (generator, condition, route, connections) in keys {
        let same: Vec<LatencyRun> = runs
            .iter()
            .filter(|(g, c, r, run)| {
                (*g, *c, *r, run.connections) == (generator, condition, route, connections)
            })
            .map(|(_, _, _, run)| run.clone())
            .collect();
        if let Some(median) = measure::median_of_runs(&same) {
            figures.rows.push(DeployRow {
                generator,
                condition,
                route,
                connections,
                summary: median.summary,
                app: median.proxies.last().cloned(),
                sidecars: median.proxies[..median.proxies.len().saturating_sub(1)].to_vec(),
                runs: median.runs,
            });
        }
    }
    log("deployment path: ironmesh down --purge");
    drop(cluster);
    Ok(figures)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `ironmesh-bench burn` on [`BURNER_CPU`] for at most `limit`; killed when the guard drops.
fn start_burner(
    work_dir: &Path,
    self_exe: &Path,
    limit: Duration,
) -> Result<crate::process::Running> {
    Launch {
        name: "burner",
        namespace: "",
        cpus: BURNER_CPU,
        argv: vec![
            self_exe.display().to_string(),
            "burn".into(),
            "--seconds".into(),
            limit.as_secs().to_string(),
        ],
        env: Vec::new(),
        log_dir: work_dir,
    }
    .spawn()
}

/// Every thread of some running processes pinned to a CPU list until dropped, then given `restore`.
struct Pinned {
    pids: Vec<u32>,
    restore: String,
}

impl Pinned {
    fn to(pids: &[u32], cpus: &str, restore: &str) -> Result<Pinned> {
        let pinned = Pinned {
            pids: pids.to_vec(),
            restore: restore.to_owned(),
        };
        for pid in pids {
            set_affinity(*pid, cpus)?;
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = set_affinity(*pid, &self.restore);
        }
    }
}

/// `taskset -a -p -c CPUS PID`: every thread of the process (threads started later inherit it).
fn set_affinity(pid: u32, cpus: &str) -> Result<()> {
    crate::netns::run(&["taskset", "-a", "-p", "-c", cpus, &pid.to_string()]).map(|_| ())
}

/// Spins the calling thread for `limit` (the bounded CPU load of the busy condition).
pub fn burn(limit: Duration) {
    let end = Instant::now() + limit;
    let mut value: u64 = 0;
    while Instant::now() < end {
        for _ in 0..100_000 {
            value = std::hint::black_box(value.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// One oha run from the route's pod: a warm-up run (discarded), then the measured one.
fn run_oha(
    oha: &Path,
    endpoint: &Endpoint,
    generator: Generator,
    connections: u32,
    plan: &DeployPlan,
) -> Result<LatencyRun> {
    let url = format!("http://{}/bytes/1024", endpoint.target);
    // oha's resolver (hickory) applies the pod's search list (ndots:5) even to an IP address and asks
    // 127.0.0.1:53, where the local runtime runs no DNS server; its unconnected UDP sockets never see
    // the port-unreachable, so each of the search names waits out its timeout (~9-10 s before the first
    // connect; glibc's resolver gets the refusal at once). oha alone gets a resolv.conf without a
    // search list, in a mount namespace of its own; the pod's file, which its containers share, stays.
    let resolv = endpoint.bench.work_dir.join("oha-resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n")
        .map_err(|error| BenchError::io(&resolv, error))?;
    let argv = |seconds: u64| {
        let mut argv = vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"".into(),
            resolv.display().to_string(),
            "nsenter".into(),
            format!("--net=/run/netns/{}", endpoint.bench.client_namespace),
            oha.display().to_string(),
            "-z".into(),
            format!("{seconds}s"),
            "-q".into(),
            plan.rate.to_string(),
            "-c".into(),
            connections.to_string(),
            "--no-tui".into(),
            "--output-format".into(),
            "json".into(),
        ];
        if generator == Generator::OhaCorrected {
            argv.push("--latency-correction".into());
        }
        argv.push(url.clone());
        argv
    };
    let launch = |name: &str, argv: Vec<String>| -> Result<String> {
        let mut child = Launch {
            name,
            // Entered by `nsenter` inside the argv, after the mount namespace is set up.
            namespace: "",
            cpus: &endpoint.bench.cpus,
            argv,
            env: Vec::new(),
            log_dir: &endpoint.bench.work_dir,
        }
        .spawn()?;
        let limit = plan.warmup + plan.duration + Duration::from_secs(30);
        measure::wait_for(&mut child, limit, true, None)?;
        std::fs::read_to_string(&child.log).map_err(|error| BenchError::io(&child.log, error))
    };
    let name = format!("oha-{generator:?}-{:?}-{connections}", endpoint.target.ip()).to_lowercase();
    launch(&name, argv(plan.warmup.as_secs().max(1)))?;
    let text = launch(&name, argv(plan.duration.as_secs().max(1)))?;
    let summary = parse_oha(&text)?;
    Ok(LatencyRun {
        connections,
        rate: plan.rate,
        summary,
        proxies: Vec::new(),
        runs: 1,
    })
}

/// oha's `--output-format json`: `latencyPercentiles` in seconds, `summary.requestsPerSec`.
pub(crate) fn parse_oha(text: &str) -> Result<LoadSummary> {
    // The log holds stderr too: read the first JSON value and ignore whatever surrounds it.
    let start = text.find('{').unwrap_or(0);
    let value: serde_json::Value = serde_json::Deserializer::from_str(&text[start..])
        .into_iter()
        .next()
        .unwrap_or_else(|| serde_json::from_str(""))
        .map_err(|error| BenchError::Parse {
            tool: "oha".into(),
            detail: format!("{error}: {}", text.chars().take(300).collect::<String>()),
        })?;
    let ms = |key: &str| {
        value
            .pointer(&format!("/latencyPercentiles/{key}"))
            .and_then(serde_json::Value::as_f64)
            .map(|seconds| seconds * 1000.0)
            .ok_or_else(|| BenchError::Parse {
                tool: "oha".into(),
                detail: format!("no latencyPercentiles.{key}"),
            })
    };
    let rps = value
        .pointer("/summary/requestsPerSec")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let total = value
        .pointer("/summary/total")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let success_rate = value
        .pointer("/summary/successRate")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(1.0);
    let requests = (rps * total).round() as u64;
    // oha's success rate counts every complete response; a status other than 2xx is an error here, as
    // in our generator.
    let refused: u64 = value
        .pointer("/statusCodeDistribution")
        .and_then(serde_json::Value::as_object)
        .map(|codes| {
            codes
                .iter()
                .filter(|(code, _)| !code.starts_with('2'))
                .filter_map(|(_, count)| count.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(LoadSummary {
        requests,
        errors: ((1.0 - success_rate) * requests as f64).round() as u64 + refused,
        seconds: total,
        achieved_rps: rps,
        p50_ms: ms("p50")?,
        p90_ms: ms("p90")?,
        p99_ms: ms("p99")?,
        p999_ms: ms("p99.9")?,
        max_ms: value
            .pointer("/summary/slowest")
            .and_then(serde_json::Value::as_f64)
            .map(|seconds| seconds * 1000.0)
            .unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oha_json_percentiles_are_converted_to_milliseconds() {
        let text = r#"{"summary":{"successRate":1.0,"total":10.0,"slowest":0.004,"requestsPerSec":999.5},
            "latencyPercentiles":{"p10":0.0001,"p50":0.0002,"p90":0.0005,"p99":0.001,"p99.9":0.002}}
            a line oha printed on stderr"#;
        let summary = parse_oha(text).unwrap();
        assert!((summary.p50_ms - 0.2).abs() < 1e-9, "{summary:?}");
        assert!((summary.p90_ms - 0.5).abs() < 1e-9);
        assert!((summary.p999_ms - 2.0).abs() < 1e-9);
        assert_eq!(summary.requests, 9995);
        assert_eq!(summary.errors, 0);
        assert!(parse_oha(r#"{"summary":{}}"#).is_err());
        let refused = r#"{"summary":{"successRate":1.0,"total":1.0,"requestsPerSec":100.0},
            "latencyPercentiles":{"p50":0.0002,"p90":0.0005,"p99":0.001,"p99.9":0.002},
            "statusCodeDistribution":{"200":60,"503":40}}"#;
        assert_eq!(parse_oha(refused).unwrap().errors, 40);
    }

    fn row(condition: Condition, route: Route, p90: f64) -> DeployRow {
        DeployRow {
            generator: Generator::Ours,
            condition,
            route,
            connections: 16,
            summary: LoadSummary {
                p90_ms: p90,
                requests: 1000,
                ..Default::default()
            },
            sidecars: Vec::new(),
            app: None,
            runs: 1,
        }
    }

    #[test]
    fn added_latency_and_busy_increases_compare_the_same_point() {
        let figures = DeploymentFigures {
            rows: vec![
                row(Condition::Quiet, Route::Direct, 0.25),
                row(Condition::Quiet, Route::Mesh, 0.75),
                row(Condition::Busy, Route::Direct, 0.5),
                row(Condition::Busy, Route::Mesh, 2.0),
            ],
            ..Default::default()
        };
        let added = figures
            .added(Generator::Ours, Condition::Quiet, 16, |s| s.p90_ms)
            .unwrap();
        assert!((added - 0.5).abs() < 1e-9);
        assert!((figures.busy_increase(Route::Direct, 16).unwrap() - 0.25).abs() < 1e-9);
        assert!((figures.busy_increase(Route::Mesh, 16).unwrap() - 1.25).abs() < 1e-9);
        assert!(figures.busy_increase(Route::Mesh, 64).is_none());
    }

    #[test]
    fn rows_with_errors_are_not_compared() {
        let mut failing = row(Condition::Quiet, Route::Mesh, 0.0);
        // Every request refused: no latency sample, so a p90 of 0 that must not count as "fast".
        failing.summary.requests = 0;
        failing.summary.errors = 1000;
        let mut some_errors = row(Condition::Busy, Route::Mesh, 0.9);
        some_errors.summary.errors = 3;
        let figures = DeploymentFigures {
            rows: vec![
                row(Condition::Quiet, Route::Direct, 0.25),
                failing,
                row(Condition::Busy, Route::Direct, 0.5),
                some_errors,
            ],
            ..Default::default()
        };
        assert!(
            figures
                .added(Generator::Ours, Condition::Quiet, 16, |s| s.p90_ms)
                .is_none()
        );
        assert!(
            figures
                .added(Generator::Ours, Condition::Busy, 16, |s| s.p90_ms)
                .is_none()
        );
        assert!(figures.busy_increase(Route::Mesh, 16).is_none());
        assert!(figures.busy_increase(Route::Direct, 16).is_some());
    }
}

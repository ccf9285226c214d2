//! The whole run: topology, upstream, then every configuration in turn (direct, peer pairs, ironmesh
//! pairs), each measured with the same steps; a configuration that cannot start is recorded with its
//! reason and the run goes on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::certs::{self, BenchCerts};
use crate::controlplane::ControlPlane;
use crate::error::{BenchError, Result};
use crate::handshake::HandshakeSummary;
use crate::ironmesh::{self, IronmeshMode};
use crate::measure::{self, Bench, FixedRate, GENERATOR_CPUS, HandshakeClient, LatencyRun};
use crate::netns::{SERVER_IP, Topology};
use crate::peers::{self, Peer};
use crate::process::{Launch, Running};

/// CPU the proxies under test are pinned to.
pub const PROXY_CPUS: &str = "1";
/// Fixed rate of the latency runs, as in Istio's harness.
pub const RATE: u32 = 1000;
/// Connection counts of the latency runs.
pub const CONNECTIONS: [u32; 2] = [16, 64];
/// Connections of the closed-loop run.
pub const MAX_RPS_CONNECTIONS: u32 = 64;

/// How long each step runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Durations {
    pub warmup: Duration,
    /// Length of one latency run; each point is `latency_runs` runs, reported as medians.
    pub latency: Duration,
    pub latency_runs: u32,
    pub closed_loop: Duration,
    pub handshakes: Duration,
    pub bulk: Duration,
}

impl Durations {
    pub fn new(quick: bool) -> Durations {
        if quick {
            Durations {
                warmup: Duration::from_secs(1),
                latency: Duration::from_secs(3),
                latency_runs: 1,
                closed_loop: Duration::from_secs(2),
                handshakes: Duration::from_secs(2),
                bulk: Duration::from_secs(2),
            }
        } else {
            Durations {
                warmup: Duration::from_secs(5),
                latency: Duration::from_secs(10),
                latency_runs: 3,
                closed_loop: Duration::from_secs(10),
                handshakes: Duration::from_secs(5),
                bulk: Duration::from_secs(10),
            }
        }
    }
}

/// Full mTLS handshake figures at the server side of a pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HandshakeFigures {
    pub run: HandshakeSummary,
    /// Handshakes per CPU-second of the server proxy: handshakes per second per core.
    pub per_server_core: f64,
}

/// Everything measured for one configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigResult {
    pub name: String,
    pub latency: Vec<LatencyRun>,
    pub max_rps: Option<f64>,
    pub handshakes: Option<HandshakeFigures>,
    pub bulk_gbps: Option<f64>,
    /// Why a step or the whole configuration was not measured.
    pub skipped: Vec<String>,
}

/// A started pair of sidecars (none for direct) and where the generator connects.
pub(crate) struct Pair {
    pub client: Option<Running>,
    pub server: Option<Running>,
    pub http_target: SocketAddr,
    pub handshake_target: Option<SocketAddr>,
    pub handshake_client: HandshakeClient,
    pub bulk_target: Option<SocketAddr>,
    /// Kept alive for the pair's lifetime (the ironmesh control plane, for instance).
    pub _keep: Vec<Box<dyn std::any::Any>>,
}

/// Shared state of the run.
pub struct Runner {
    pub durations: Durations,
    pub topology: Topology,
    pub bench: Bench,
    pub certs: BenchCerts,
    pub control: ControlPlane,
    _upstream: Running,
    _iperf: Option<Running>,
    _work: tempfile::TempDir,
}

impl Runner {
    /// Builds the namespaces, mints certificates and starts the upstream (and iperf3's server).
    pub fn start(quick: bool, self_exe: PathBuf) -> Result<Runner> {
        let work = tempfile::Builder::new()
            .prefix("ironmesh-bench-")
            .tempdir()
            .map_err(|e| crate::error::BenchError::io("/tmp", e))?;
        let topology = Topology::create()?;
        let certs = certs::mint(work.path())?;
        // Loads the root certs::mint just created: peers and ironmesh share one CA.
        let control = ControlPlane::start(work.path())?;
        let upstream_argv = vec![
            self_exe.display().to_string(),
            "upstream".into(),
            "--listen".into(),
            format!("0.0.0.0:{}", peers::UPSTREAM_PORT),
            "--listen".into(),
            format!("0.0.0.0:{}", ironmesh::UPSTREAM_TCP_PORT),
        ];
        let mut upstream = Launch {
            name: "upstream",
            namespace: &topology.server,
            cpus: GENERATOR_CPUS,
            argv: upstream_argv,
            env: Vec::new(),
            log_dir: work.path(),
        }
        .spawn()?;
        upstream.wait_listening(peers::UPSTREAM_PORT, Duration::from_secs(10))?;
        let iperf = if measure::have("iperf3") {
            let mut iperf = Launch {
                name: "iperf3-server",
                namespace: &topology.server,
                cpus: GENERATOR_CPUS,
                argv: vec![
                    "iperf3".into(),
                    "-s".into(),
                    "-p".into(),
                    peers::IPERF_PORT.to_string(),
                ],
                env: Vec::new(),
                log_dir: work.path(),
            }
            .spawn()?;
            iperf.wait_listening(peers::IPERF_PORT, Duration::from_secs(10))?;
            Some(iperf)
        } else {
            None
        };
        let bench = Bench {
            client_namespace: topology.client.clone(),
            cpus: GENERATOR_CPUS.into(),
            work_dir: work.path().to_path_buf(),
            self_exe,
        };
        Ok(Runner {
            durations: Durations::new(quick),
            topology,
            bench,
            certs,
            control,
            _upstream: upstream,
            _iperf: iperf,
            _work: work,
        })
    }

    /// Measures the direct path, every peer pair and the ironmesh pairs.
    pub fn run_all(&self, log: &mut dyn FnMut(&str)) -> Result<Vec<ConfigResult>> {
        let mut results = Vec::new();
        let server =
            |port: u16| SocketAddr::new(SERVER_IP.parse().expect("constant address"), port);
        log("direct");
        let direct = Pair {
            client: None,
            server: None,
            http_target: server(peers::UPSTREAM_PORT),
            handshake_target: None,
            handshake_client: HandshakeClient::default(),
            bulk_target: Some(server(peers::IPERF_PORT)),
            _keep: Vec::new(),
        };
        results.push(self.measure("direct", &direct)?);
        for peer in Peer::ALL {
            log(peer.name());
            let result = match self.start_peer(peer) {
                Ok(pair) => self.measure(peer.name(), &pair)?,
                Err(error) => skipped(peer.name(), error.to_string()),
            };
            results.push(result);
        }
        for mode in [IronmeshMode::Http, IronmeshMode::Tcp] {
            log(mode.row_name());
            let result = match ironmesh::start_pair(self, mode) {
                Ok(pair) => self.measure(mode.row_name(), &pair),
                Err(error) => Ok(skipped(mode.row_name(), error.to_string())),
            };
            self.topology.flush_iptables();
            results.push(result?);
        }
        Ok(results)
    }

    fn start_peer(&self, peer: Peer) -> Result<Pair> {
        let (binary, package) = peer.tool();
        crate::process::require_tool(binary, package)?;
        let (client_argv, server_argv) = peer.configure(&self.bench.work_dir, &self.certs)?;
        let server_name = format!("{}-server", peer.name());
        let client_name = format!("{}-client", peer.name());
        let mut server = self
            .proxy_launch(&server_name, &self.topology.server, server_argv)
            .spawn()?;
        server.wait_listening(peers::SERVER_SIDECAR_PORT, Duration::from_secs(10))?;
        let mut client = self
            .proxy_launch(&client_name, &self.topology.client, client_argv)
            .spawn()?;
        client.wait_listening(peers::CLIENT_SIDECAR_PORT, Duration::from_secs(10))?;
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let server_addr = SocketAddr::new(
            SERVER_IP.parse().expect("constant address"),
            peers::SERVER_SIDECAR_PORT,
        );
        Ok(Pair {
            client: Some(client),
            server: Some(server),
            http_target: local(peers::CLIENT_SIDECAR_PORT),
            handshake_target: Some(server_addr),
            handshake_client: HandshakeClient::default(),
            bulk_target: peer
                .has_tcp_tunnel()
                .then(|| local(peers::CLIENT_SIDECAR_TCP_PORT)),
            _keep: Vec::new(),
        })
    }

    pub(crate) fn proxy_launch<'a>(
        &'a self,
        name: &'a str,
        namespace: &'a str,
        argv: Vec<String>,
    ) -> Launch<'a> {
        Launch {
            name,
            namespace,
            cpus: PROXY_CPUS,
            argv,
            env: Vec::new(),
            log_dir: &self.bench.work_dir,
        }
    }

    pub(crate) fn measure(&self, name: &str, pair: &Pair) -> Result<ConfigResult> {
        let d = self.durations;
        let mut result = ConfigResult {
            name: name.to_string(),
            ..Default::default()
        };
        let proxies: Vec<&Running> = pair.client.iter().chain(pair.server.iter()).collect();
        let pids: Vec<u32> = proxies.iter().map(|proxy| proxy.pid).collect();
        // Let the proxies settle so "idle" RSS is after start-up allocations.
        std::thread::sleep(Duration::from_millis(300));
        for connections in CONNECTIONS {
            let mut runs = Vec::new();
            for index in 0..d.latency_runs {
                // Only the first run of a point needs the full warm-up; later ones reuse warm pools.
                let warmup = if index == 0 {
                    d.warmup
                } else {
                    d.warmup.min(Duration::from_secs(1))
                };
                let shape = FixedRate {
                    rate: RATE,
                    connections,
                    warmup,
                    duration: d.latency,
                };
                match self.bench.latency(name, pair.http_target, shape, &pids) {
                    Ok(run) => runs.push(run),
                    Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                    Err(error) => result
                        .skipped
                        .push(format!("latency at {connections} connections: {error}")),
                }
            }
            result.latency.extend(measure::median_of_runs(&runs));
        }
        if measure::have("wrk") {
            match self
                .bench
                .max_rps(name, pair.http_target, MAX_RPS_CONNECTIONS, d.closed_loop)
            {
                Ok(rps) => result.max_rps = Some(rps),
                Err(error) => result.skipped.push(format!("max rps: {error}")),
            }
        } else {
            result
                .skipped
                .push("max rps: wrk is not installed (bench/install-deps.sh)".into());
        }
        if let (Some(target), Some(server)) = (pair.handshake_target, pair.server.as_ref()) {
            match self.bench.handshakes(
                name,
                target,
                (&self.certs.client.cert, &self.certs.client.key),
                d.handshakes,
                &pair.handshake_client,
                server,
            ) {
                Ok((run, server_cpu)) => {
                    let per_server_core = if server_cpu > 0.0 {
                        run.handshakes as f64 / server_cpu
                    } else {
                        0.0
                    };
                    result.handshakes = Some(HandshakeFigures {
                        run,
                        per_server_core,
                    });
                }
                Err(error) => result.skipped.push(format!("handshakes: {error}")),
            }
        }
        if let Some(target) = pair.bulk_target {
            if measure::have("iperf3") {
                match self.bench.bulk(name, target, d.bulk) {
                    Ok(gbps) => result.bulk_gbps = Some(gbps),
                    Err(error) => result.skipped.push(format!("bulk: {error}")),
                }
            } else {
                result
                    .skipped
                    .push("bulk: iperf3 is not installed (bench/install-deps.sh)".into());
            }
        }
        for proxy in &proxies {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", proxy.pid)).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                result.skipped.push(format!(
                    "{} exited during the run; see {}",
                    proxy.name,
                    proxy.log.display()
                ));
            }
        }
        Ok(result)
    }
}

fn skipped(name: &str, reason: String) -> ConfigResult {
    ConfigResult {
        name: name.to_string(),
        skipped: vec![reason],
        ..Default::default()
    }
}

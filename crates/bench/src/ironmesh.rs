//! The ironmesh rows: the real `ironmesh-proxy run` binaries in the two namespaces behind the real
//! `ironmesh-proxy iptables --apply` rules, fed by the in-process CA and `ConfigHub`
//! ([`crate::controlplane`]). The load generator dials the server's address exactly as a pod would and
//! is intercepted by the client sidecar.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ironmesh_proto::pb::{
    ClientTls, ClientTlsMode, Endpoint, InboundPort, Protocol, ProxyConfig, ServerMode, Service,
    ServicePort, Workload,
};

use crate::certs::TRUST_DOMAIN;
use crate::error::{BenchError, Result};
use crate::measure::HandshakeClient;
use crate::netns::SERVER_IP;
use crate::peers::{IPERF_PORT, UPSTREAM_PORT};
use crate::runner::{Pair, Runner};

/// A second upstream port, declared as plain TCP in the mesh config (the "TCP port" row).
pub const UPSTREAM_TCP_PORT: u16 = 9080;
/// The mark the proxy's iptables rules exempt; the handshake client uses it to reach the server
/// sidecar without being captured by the client sidecar.
pub const PROXY_MARK: u32 = 1337;
/// ALPN an ironmesh client sidecar offers for an HTTP port.
pub const HTTP_ALPN: &str = "istio-http/1.1";

const NAMESPACE: &str = "bench";
const CLIENT_POD: (&str, &str) = ("bench-client-1", "bench-client");
const SERVER_POD: (&str, &str) = ("bench-server-1", "bench-server");

/// Which ironmesh row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IronmeshMode {
    /// HTTP port: the proxies parse HTTP/1.1 and pool upstream connections.
    Http,
    /// TCP port: the proxies tunnel bytes over mTLS.
    Tcp,
}

impl IronmeshMode {
    pub fn row_name(self) -> &'static str {
        match self {
            IronmeshMode::Http => "ironmesh-http",
            IronmeshMode::Tcp => "ironmesh-tcp",
        }
    }
}

/// `IRONMESH_BENCH_PROXY` if set (to compare builds of the proxy), else `ironmesh-proxy` next to the
/// harness binary (same target dir), else on PATH.
pub(crate) fn proxy_binary(self_exe: &std::path::Path) -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os("IRONMESH_BENCH_PROXY") {
        return Some(PathBuf::from(chosen));
    }
    let sibling = self_exe.parent()?.join("ironmesh-proxy");
    if sibling.is_file() {
        Some(sibling)
    } else {
        crate::process::which("ironmesh-proxy")
    }
}

/// The configuration the control plane would compute for the two bench pods.
pub(crate) fn configs() -> (ProxyConfig, ProxyConfig) {
    let spiffe = |sa: &str| format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{sa}");
    let ports = [
        (UPSTREAM_PORT, Protocol::Http),
        (UPSTREAM_TCP_PORT, Protocol::Tcp),
        (IPERF_PORT, Protocol::Tcp),
    ];
    let workload = |(name, sa): (&str, &str)| Workload {
        name: name.into(),
        namespace: NAMESPACE.into(),
        service_account: sa.into(),
        spiffe_id: spiffe(sa),
        ports: ports
            .iter()
            .map(|(port, protocol)| InboundPort {
                port: (*port).into(),
                protocol: *protocol as i32,
                mode: ServerMode::Strict as i32,
            })
            .collect(),
        default_mode: ServerMode::Strict as i32,
        ..Default::default()
    };
    let services = vec![Service {
        hostname: format!("bench-server.{NAMESPACE}.svc.cluster.local"),
        namespace: NAMESPACE.into(),
        vip: String::new(),
        ports: ports
            .iter()
            .map(|(port, protocol)| ServicePort {
                port: (*port).into(),
                target_port: (*port).into(),
                protocol: *protocol as i32,
                tls: Some(ClientTls {
                    mode: ClientTlsMode::IstioMutual as i32,
                    ..Default::default()
                }),
            })
            .collect(),
        endpoints: vec![Endpoint {
            ip: SERVER_IP.into(),
            mtls_ready: true,
            spiffe_id: spiffe(SERVER_POD.1),
        }],
    }];
    let config = |workload| ProxyConfig {
        version: String::new(),
        workload: Some(workload),
        services: services.clone(),
        auto_mtls: true,
        ..Default::default()
    };
    (config(workload(CLIENT_POD)), config(workload(SERVER_POD)))
}

/// Starts the ironmesh pair for `mode`, or says why it cannot.
pub(crate) fn start_pair(runner: &Runner, mode: IronmeshMode) -> Result<Pair> {
    start_pair_with(runner, mode, &[])
}

/// [`start_pair`] with `extra_env` set for both proxies (an `LD_PRELOAD`ed allocator, for instance).
pub(crate) fn start_pair_with(
    runner: &Runner,
    mode: IronmeshMode,
    extra_env: &[(String, String)],
) -> Result<Pair> {
    let binary = proxy_binary(&runner.bench.self_exe).ok_or_else(|| BenchError::Command {
        command: "ironmesh-proxy".into(),
        detail: "binary not found next to ironmesh-bench; build it with cargo build --release -p ironmesh-proxy".into(),
    })?;
    let binary_text = binary.display().to_string();
    let control = &runner.control;
    let (client_config, server_config) = configs();
    control
        .hub
        .publish(&format!("{}.{NAMESPACE}", CLIENT_POD.0), client_config);
    control
        .hub
        .publish(&format!("{}.{NAMESPACE}", SERVER_POD.0), server_config);
    for namespace in [&runner.topology.client, &runner.topology.server] {
        crate::netns::run(&[
            "ip",
            "netns",
            "exec",
            namespace,
            &binary_text,
            "iptables",
            "--apply",
        ])?;
    }
    let work = &runner.bench.work_dir;
    let env = |(pod, sa): (&str, &str)| -> Result<Vec<(String, String)>> {
        let token = control.token_file(work, pod, NAMESPACE, sa)?;
        Ok([
            ("POD_NAME".into(), pod.into()),
            ("POD_NAMESPACE".into(), NAMESPACE.into()),
            ("SERVICE_ACCOUNT".into(), sa.into()),
            (
                "IRONMESH_CONTROL_PLANE".into(),
                format!("unix://{}", control.socket.display()),
            ),
            ("IRONMESH_TOKEN_FILE".into(), token.display().to_string()),
            (
                "IRONMESH_STATE_DIR".into(),
                work.join(pod).display().to_string(),
            ),
            ("IRONMESH_TRUST_DOMAIN".into(), TRUST_DOMAIN.into()),
            ("RUST_LOG".into(), "warn".into()),
        ]
        .into_iter()
        .chain(extra_env.iter().cloned())
        .collect())
    };
    let row = mode.row_name();
    let server_name = format!("{row}-server");
    let client_name = format!("{row}-client");
    let argv = vec![binary_text.clone(), "run".to_string()];
    let mut server_launch =
        runner.proxy_launch(&server_name, &runner.topology.server, argv.clone());
    server_launch.env = env(SERVER_POD)?;
    let mut server = server_launch.spawn()?;
    let mut client_launch = runner.proxy_launch(&client_name, &runner.topology.client, argv);
    client_launch.env = env(CLIENT_POD)?;
    let mut client = client_launch.spawn()?;
    server.wait_listening(15006, Duration::from_secs(10))?;
    client.wait_listening(15001, Duration::from_secs(10))?;
    let server_addr =
        |port: u16| SocketAddr::new(SERVER_IP.parse().expect("constant address"), port);
    let http_target = match mode {
        IronmeshMode::Http => server_addr(UPSTREAM_PORT),
        IronmeshMode::Tcp => server_addr(UPSTREAM_TCP_PORT),
    };
    wait_serving(runner, row, http_target, Duration::from_secs(15))?;
    Ok(Pair {
        client: Some(client),
        server: Some(server),
        http_target,
        handshake_target: (mode == IronmeshMode::Http).then(|| server_addr(UPSTREAM_PORT)),
        handshake_client: HandshakeClient {
            mark: Some(PROXY_MARK),
            alpn: vec![HTTP_ALPN.into()],
        },
        bulk_target: (mode == IronmeshMode::Tcp).then(|| server_addr(IPERF_PORT)),
        _keep: Vec::new(),
    })
}

/// Waits until a short load through the pair succeeds: certificates issued and configuration applied.
pub(crate) fn wait_serving(
    runner: &Runner,
    row: &str,
    target: SocketAddr,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let output = Command::new("ip")
            .args(["netns", "exec", &runner.topology.client])
            .arg(&runner.bench.self_exe)
            .args([
                "load",
                "--target",
                &target.to_string(),
                "--rate",
                "50",
                "--connections",
                "1",
            ])
            .args(["--warmup-ms", "0", "--duration-ms", "200"])
            .output()
            .map_err(|error| BenchError::Command {
                command: "ironmesh-bench load".into(),
                detail: error.to_string(),
            })?;
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        if let Ok(summary) = serde_json::from_str::<crate::load::LoadSummary>(&text)
            && summary.requests > 0
            && summary.errors == 0
        {
            return Ok(());
        }
        last = format!("{text}{}", String::from_utf8_lossy(&output.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(BenchError::Command {
        command: format!("{row}: probe through the pair"),
        detail: format!(
            "no successful request in {} s; last output: {}",
            timeout.as_secs(),
            last.trim()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_configs_pass_the_proxy_side_validation() {
        let (client, server) = configs();
        for mut config in [client, server] {
            // The hub stamps the content version before pushing; the proxy validates what it receives.
            config.version = ironmesh_proto::content_version(&config);
            ironmesh_proto::compile_config(config.clone()).unwrap();
            let workload = config.workload.as_ref().unwrap();
            assert!(
                workload
                    .ports
                    .iter()
                    .any(|p| p.port == u32::from(UPSTREAM_TCP_PORT)
                        && p.protocol == Protocol::Tcp as i32)
            );
        }
    }
}

//! The `ztunnel` peer row (`bench/run --ztunnel BIN`): a ztunnel binary the user built from Istio's
//! repository (bench/README.md says how), run in the same two namespaces as the ironmesh pair and
//! measured with the same steps. Nothing of ztunnel's is in this repository: the harness writes a
//! local configuration file (the two bench workloads, HBONE) and starts the binary with ztunnel's own
//! documented local-development settings: `FAKE_CA=true` (self-signed certificates, needs the
//! `testing` feature), no XDS (`XDS_ADDRESS=""`, `LOCAL_XDS_PATH=<file>`), `PROXY_MODE=dedicated`, one
//! worker thread, no source-address spoofing towards the app, and packet mark 1337 so our interception rules (`ironmesh-proxy iptables --apply`,
//! with ztunnel's HBONE port 15008 excluded from the inbound redirect) let its own sockets through.
//!
//! ztunnel is a layer-4 proxy: the generator's HTTP/1.1 rides inside its HBONE (HTTP/2 CONNECT over
//! mutual TLS) tunnel, so this row compares with `ironmesh-tcp` first. No handshake figure: ztunnel's
//! server side speaks HBONE, not the HTTP/1.1 over mTLS our handshake client sends.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::certs::TRUST_DOMAIN;
use crate::error::{BenchError, Result};
use crate::measure::HandshakeClient;
use crate::netns::{CLIENT_IP, SERVER_IP};
use crate::peers::{IPERF_PORT, UPSTREAM_PORT};
use crate::runner::{ConfigResult, Pair, Runner};

/// Row name in the report.
pub const ROW: &str = "ztunnel";
/// ztunnel's HBONE (inbound mTLS) port.
pub const HBONE_PORT: u16 = 15008;
/// ztunnel's outbound capture port (the same as ironmesh's).
pub const OUTBOUND_PORT: u16 = 15001;

/// ztunnel's local configuration (the format of its `examples/localhost.yaml`): the two bench pods
/// as HBONE workloads, each on a node of its own so no same-node shortcut applies.
pub fn local_config() -> String {
    let workload = |name: &str, account: &str, ip: &str, node: &str| {
        format!(
            "- uid: Kubernetes//v1/Pod/bench/{name}\n  name: {name}\n  namespace: bench\n  serviceAccount: {account}\n  workloadIps: [\"{ip}\"]\n  protocol: HBONE\n  node: {node}\n  network: \"\"\n  trustDomain: {TRUST_DOMAIN}\n  services: {{}}\n"
        )
    };
    format!(
        "workloads:\n{}{}policies: []\nservices: []\n",
        workload("bench-client-1", "bench-client", CLIENT_IP, "client-node"),
        workload("bench-server-1", "bench-server", SERVER_IP, "server-node"),
    )
}

/// The environment of one ztunnel: local mode, fake CA, dedicated, one worker, mark 1337.
pub fn environment(config: &Path, workload: &str, node: &str) -> Vec<(String, String)> {
    [
        ("FAKE_CA", "true"),
        ("XDS_ADDRESS", ""),
        ("LOCAL_XDS_PATH", &config.display().to_string()),
        ("PROXY_MODE", "dedicated"),
        ("PROXY_WORKLOAD_INFO", workload),
        ("NODE_NAME", node),
        ("ZTUNNEL_WORKER_THREADS", "1"),
        ("PACKET_MARK", "1337"),
        // Connect to the app from ztunnel's own address: spoofing the client's (its default with
        // transparent listeners) needs the node's TPROXY routing, which these namespaces do not have.
        ("ENABLE_ORIG_SRC", "false"),
        // As the ironmesh rows run (RUST_LOG=warn): no per-connection log lines.
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

impl Runner {
    /// Starts the ztunnel pair from `binary`, measures it, and removes its rules; a pair that cannot
    /// start is a skipped row with the reason.
    pub fn run_ztunnel(&self, binary: &Path) -> Result<ConfigResult> {
        let result = match self.start_ztunnel(binary) {
            Ok(pair) => self.measure(ROW, &pair),
            Err(error) => Ok(ConfigResult {
                name: ROW.into(),
                skipped: vec![error.to_string()],
                ..Default::default()
            }),
        };
        self.topology.flush_iptables();
        result
    }

    fn start_ztunnel(&self, binary: &Path) -> Result<Pair> {
        if !binary.is_file() {
            return Err(BenchError::Command {
                command: binary.display().to_string(),
                detail: "no such file; build ztunnel as bench/README.md says and pass its path"
                    .into(),
            });
        }
        let proxy = crate::ironmesh::proxy_binary(&self.bench.self_exe).ok_or_else(|| {
            BenchError::Command {
                command: "ironmesh-proxy iptables".into(),
                detail: "ironmesh-proxy not found next to ironmesh-bench; cargo build --release --workspace".into(),
            }
        })?;
        let work = &self.bench.work_dir;
        let config = work.join("ztunnel-local.yaml");
        std::fs::write(&config, local_config()).map_err(|error| BenchError::io(&config, error))?;
        for namespace in [&self.topology.client, &self.topology.server] {
            crate::netns::run(&[
                "ip",
                "netns",
                "exec",
                namespace,
                &proxy.display().to_string(),
                "iptables",
                "--apply",
                "--exclude-inbound-ports",
                &format!("15000,{HBONE_PORT},15020,15021"),
            ])?;
        }
        let argv = vec![binary.display().to_string()];
        let mut server_launch =
            self.proxy_launch("ztunnel-server", &self.topology.server, argv.clone());
        server_launch.env =
            environment(&config, "bench/bench-server-1/bench-server", "server-node");
        let mut server = server_launch.spawn()?;
        let mut client_launch = self.proxy_launch("ztunnel-client", &self.topology.client, argv);
        client_launch.env =
            environment(&config, "bench/bench-client-1/bench-client", "client-node");
        let mut client = client_launch.spawn()?;
        server.wait_listening(HBONE_PORT, Duration::from_secs(20))?;
        client.wait_listening(OUTBOUND_PORT, Duration::from_secs(20))?;
        let server_addr =
            |port: u16| SocketAddr::new(SERVER_IP.parse().expect("constant address"), port);
        let http_target = server_addr(UPSTREAM_PORT);
        crate::ironmesh::wait_serving(self, ROW, http_target, Duration::from_secs(20))?;
        Ok(Pair {
            client: Some(client),
            server: Some(server),
            http_target,
            handshake_target: None,
            handshake_client: HandshakeClient::default(),
            bulk_target: Some(server_addr(IPERF_PORT)),
            _keep: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_config_names_both_bench_workloads_as_hbone() {
        let text = local_config();
        assert!(text.contains("workloadIps: [\"198.18.0.1\"]"), "{text}");
        assert!(text.contains("workloadIps: [\"198.18.0.2\"]"), "{text}");
        assert_eq!(text.matches("protocol: HBONE").count(), 2);
        assert!(text.contains("serviceAccount: bench-server"));
        assert_eq!(text.matches("trustDomain: cluster.local").count(), 2);
    }

    #[test]
    fn the_environment_is_local_dedicated_single_worker() {
        let env = environment(Path::new("/tmp/z.yaml"), "bench/p/sa", "n");
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("FAKE_CA"), Some("true"));
        assert_eq!(get("XDS_ADDRESS"), Some(""));
        assert_eq!(get("PROXY_MODE"), Some("dedicated"));
        assert_eq!(get("ZTUNNEL_WORKER_THREADS"), Some("1"));
        assert_eq!(get("PACKET_MARK"), Some("1337"));
    }
}

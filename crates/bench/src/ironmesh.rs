//! The ironmesh rows: the real `ironmesh-proxy` binaries in the two namespaces with the real iptables
//! rules, fed by a CA and a `ConfigHub` the harness serves in-process over a Unix socket.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{BenchError, Result};
use crate::runner::{Pair, Runner};

/// A second upstream port, declared as plain TCP in the mesh config (the "TCP port" row and iperf3).
pub const UPSTREAM_TCP_PORT: u16 = 9080;

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

/// `ironmesh-proxy` next to the harness binary (same target dir), else on PATH.
pub(crate) fn proxy_binary(runner: &Runner) -> Option<PathBuf> {
    let sibling = runner.bench.self_exe.parent()?.join("ironmesh-proxy");
    if sibling.is_file() {
        Some(sibling)
    } else {
        crate::process::which("ironmesh-proxy")
    }
}

/// Starts the ironmesh pair for `mode`, or says why it cannot.
pub(crate) fn start_pair(runner: &Runner, mode: IronmeshMode) -> Result<Pair> {
    let binary = proxy_binary(runner).ok_or_else(|| BenchError::Command {
        command: "ironmesh-proxy".into(),
        detail: "binary not found next to ironmesh-bench; build it with cargo build --release -p ironmesh-proxy".into(),
    })?;
    let help = Command::new(&binary)
        .args(["run", "--help"])
        .output()
        .map_err(|error| BenchError::Command {
            command: format!("{} run --help", binary.display()),
            detail: error.to_string(),
        })?;
    if !help.status.success() {
        return Err(BenchError::Command {
            command: format!("{} run --help", binary.display()),
            detail: format!(
                "ironmesh-proxy has no `run` subcommand yet, so the {} row is not measured",
                mode.row_name()
            ),
        });
    }
    Err(BenchError::Command {
        command: format!("{} run", binary.display()),
        detail: "the harness does not yet serve the CA and ConfigHub the proxy needs".into(),
    })
}

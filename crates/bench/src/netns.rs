//! The two-namespace topology: a client netns and a server netns joined by one veth pair.
//!
//! Addresses are taken from 198.18.0.0/16 (RFC 2544 benchmarking range) and exist only inside the
//! namespaces created here. [`Topology`] removes both namespaces on drop, which also removes the veth.

use std::process::Command;

use crate::error::{BenchError, Result};

/// Address of the client end of the veth (inside the client namespace).
pub const CLIENT_IP: &str = "198.18.0.1";
/// Address of the server end of the veth (inside the server namespace).
pub const SERVER_IP: &str = "198.18.0.2";
/// Prefix of every namespace the harness creates, so `bench/run` can clean leftovers after a crash.
pub const NAMESPACE_PREFIX: &str = "imbench";

/// A client and a server namespace joined by veth; both are deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub client: String,
    pub server: String,
}

impl Topology {
    /// Creates `imbench-<pid>-c` and `imbench-<pid>-s`, the veth between them, and brings up loopback.
    pub fn create() -> Result<Topology> {
        let id = std::process::id();
        let topology = Topology {
            client: format!("{NAMESPACE_PREFIX}-{id}-c"),
            server: format!("{NAMESPACE_PREFIX}-{id}-s"),
        };
        // Built field by field so a failure half-way still drops (and removes) what exists.
        run(&["ip", "netns", "add", &topology.client])?;
        run(&["ip", "netns", "add", &topology.server])?;
        let veth_client = format!("imb{id}c");
        let veth_server = format!("imb{id}s");
        run(&[
            "ip",
            "link",
            "add",
            &veth_client,
            "netns",
            &topology.client,
            "type",
            "veth",
            "peer",
            "name",
            &veth_server,
            "netns",
            &topology.server,
        ])?;
        for (namespace, device, address) in [
            (&topology.client, &veth_client, CLIENT_IP),
            (&topology.server, &veth_server, SERVER_IP),
        ] {
            let cidr = format!("{address}/24");
            run(&["ip", "-n", namespace, "addr", "add", &cidr, "dev", device])?;
            run(&["ip", "-n", namespace, "link", "set", device, "up"])?;
            run(&["ip", "-n", namespace, "link", "set", "lo", "up"])?;
        }
        Ok(topology)
    }

    /// Removes every rule in the nat and mangle tables of both namespaces (after the ironmesh rows).
    pub fn flush_iptables(&self) {
        for namespace in [&self.client, &self.server] {
            for table in ["nat", "mangle"] {
                let _ = quiet(&[
                    "ip", "netns", "exec", namespace, "iptables", "-t", table, "-F",
                ]);
                let _ = quiet(&[
                    "ip", "netns", "exec", namespace, "iptables", "-t", table, "-X",
                ]);
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for namespace in [&self.client, &self.server] {
            let _ = quiet(&["ip", "netns", "del", namespace]);
        }
    }
}

/// Whether a namespace of that name currently exists.
pub fn namespace_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(argv: &[&str]) -> Result<String> {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|error| BenchError::Command {
            command: argv.join(" "),
            detail: error.to_string(),
        })?;
    if !output.status.success() {
        return Err(BenchError::Command {
            command: argv.join(" "),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn quiet(argv: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}

#[cfg(test)]
mod root_only_tests {
    use super::*;

    /// ROOT ONLY: creates real namespaces; fails loudly without root, and the guard removes them.
    #[test]
    #[allow(unsafe_code, reason = "the root check reads geteuid through libc")]
    fn root_only_topology_links_both_namespaces_and_is_removed_on_drop() {
        assert_eq!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
            0,
            "root_only tests need root (ip netns)"
        );
        let (client, server) = {
            let topology = Topology::create().expect("creating the bench namespaces");
            assert!(namespace_exists(&topology.client) && namespace_exists(&topology.server));
            let addresses = run(&["ip", "-n", &topology.client, "-4", "addr"]).unwrap();
            assert!(addresses.contains(CLIENT_IP), "{addresses}");
            let route = run(&["ip", "-n", &topology.client, "route", "get", SERVER_IP]).unwrap();
            assert!(
                route.contains("dev imb"),
                "the server must be reached over the veth: {route}"
            );
            (topology.client.clone(), topology.server.clone())
        };
        assert!(
            !namespace_exists(&client) && !namespace_exists(&server),
            "drop must remove both namespaces"
        );
    }
}

//! The interception rules, rendered as one `iptables-restore --noflush` script for the nat table (the same
//! chains as istio-iptables), and applying them in the current network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

/// Inputs of the rules; defaults are Istio's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptionRules {
    pub proxy_uid: u32,
    pub proxy_mark: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// Inbound ports never redirected (the proxy's own admin, metrics and readiness ports).
    pub exclude_inbound_ports: Vec<u16>,
}

impl Default for InterceptionRules {
    fn default() -> Self {
        Self {
            proxy_uid: 1337,
            proxy_mark: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: vec![15000, 15020, 15021],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(
        "cannot run iptables-restore: {0}; install iptables and run as root inside the pod's network namespace"
    )]
    Spawn(std::io::Error),
    #[error("iptables-restore refused the rules ({status}): {stderr}")]
    Refused {
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Renders the `iptables-restore --noflush` script.
pub fn render_rules(rules: &InterceptionRules) -> String {
    let mut script = String::from("*nat\n");
    for chain in [
        "IRONMESH_INBOUND",
        "IRONMESH_IN_REDIRECT",
        "IRONMESH_OUTPUT",
        "IRONMESH_REDIRECT",
    ] {
        script.push_str(&format!(":{chain} - [0:0]\n"));
    }
    let mut rule = |line: String| {
        script.push_str(&line);
        script.push('\n');
    };
    rule(format!(
        "-A IRONMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        rules.inbound_port
    ));
    rule(format!(
        "-A IRONMESH_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        rules.outbound_port
    ));
    // Inbound: everything arriving for the pod except the proxy's own ports goes to the inbound listener.
    rule("-A PREROUTING -p tcp -j IRONMESH_INBOUND".to_string());
    for port in &rules.exclude_inbound_ports {
        rule(format!(
            "-A IRONMESH_INBOUND -p tcp --dport {port} -j RETURN"
        ));
    }
    rule("-A IRONMESH_INBOUND -p tcp -j IRONMESH_IN_REDIRECT".to_string());
    // Outbound: the proxy's own sockets (mark or uid), loopback and 127.0.0.1 are left alone.
    rule("-A OUTPUT -p tcp -j IRONMESH_OUTPUT".to_string());
    // Mark 0 drops the mark exemption: since Linux 5.17 SO_MARK needs only CAP_NET_RAW, which
    // Kubernetes' default capabilities include, so any app could mark its sockets and skip the sidecar.
    // Pods exempt the proxy by uid alone, as istio-iptables does in REDIRECT mode (docs/SECURITY.md).
    if rules.proxy_mark != 0 {
        rule(format!(
            "-A IRONMESH_OUTPUT -m mark --mark {} -j RETURN",
            rules.proxy_mark
        ));
    }
    rule(format!(
        "-A IRONMESH_OUTPUT -m owner --uid-owner {} -j RETURN",
        rules.proxy_uid
    ));
    rule("-A IRONMESH_OUTPUT -o lo -j RETURN".to_string());
    rule("-A IRONMESH_OUTPUT -d 127.0.0.1/32 -j RETURN".to_string());
    rule("-A IRONMESH_OUTPUT -j IRONMESH_REDIRECT".to_string());
    script.push_str("COMMIT\n");
    script
}

/// Pipes the script into `iptables-restore --noflush` in the current network namespace.
pub fn apply_rules(rules: &InterceptionRules) -> Result<(), IptablesError> {
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(IptablesError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(render_rules(rules).as_bytes())
            .map_err(IptablesError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(IptablesError::Spawn)?;
    if !output.status.success() {
        return Err(IptablesError::Refused {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_script_snapshot() {
        let expected = "\
*nat
:IRONMESH_INBOUND - [0:0]
:IRONMESH_IN_REDIRECT - [0:0]
:IRONMESH_OUTPUT - [0:0]
:IRONMESH_REDIRECT - [0:0]
-A IRONMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A IRONMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -j IRONMESH_INBOUND
-A IRONMESH_INBOUND -p tcp --dport 15000 -j RETURN
-A IRONMESH_INBOUND -p tcp --dport 15020 -j RETURN
-A IRONMESH_INBOUND -p tcp --dport 15021 -j RETURN
-A IRONMESH_INBOUND -p tcp -j IRONMESH_IN_REDIRECT
-A OUTPUT -p tcp -j IRONMESH_OUTPUT
-A IRONMESH_OUTPUT -m mark --mark 1337 -j RETURN
-A IRONMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A IRONMESH_OUTPUT -o lo -j RETURN
-A IRONMESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A IRONMESH_OUTPUT -j IRONMESH_REDIRECT
COMMIT
";
        assert_eq!(render_rules(&InterceptionRules::default()), expected);
    }

    #[test]
    fn flags_change_the_ports_and_identity() {
        let rules = InterceptionRules {
            proxy_uid: 7,
            proxy_mark: 9,
            inbound_port: 16006,
            outbound_port: 16001,
            exclude_inbound_ports: vec![22],
        };
        let script = render_rules(&rules);
        assert!(script.contains("--to-ports 16006\n") && script.contains("--to-ports 16001\n"));
        assert!(
            script.contains("--mark 9 -j RETURN") && script.contains("--uid-owner 7 -j RETURN")
        );
        assert!(script.contains("--dport 22 -j RETURN") && !script.contains("--dport 15000"));
        let by_uid_only = render_rules(&InterceptionRules {
            proxy_mark: 0,
            ..InterceptionRules::default()
        });
        assert!(
            !by_uid_only.contains("--mark") && by_uid_only.contains("--uid-owner 1337 -j RETURN")
        );
    }
}

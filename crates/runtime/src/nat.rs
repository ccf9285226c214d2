//! Service NAT (kube-proxy's job): renders the node namespace's `nat` and `filter` tables as one
//! `iptables-restore` script, loaded atomically.
//!
//! The node namespace belongs to the cluster alone, so the script replaces both tables whole: no stale
//! per-service chains can survive a sync.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::names::fnv1a64;

/// Mark set on hairpin connections (a pod calling its own service) so they are masqueraded: otherwise
/// the pod would see a packet from itself and drop it.
const MASQUERADE_MARK: &str = "0x4000/0x4000";

/// Transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    fn as_iptables(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One service port: traffic to `vip:port` is balanced across `endpoints` (pod IP, target port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNat {
    /// The service's virtual IP (from 198.19.0.0/16).
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// Ready endpoints; empty means clients are rejected at once.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

fn chain_suffix(parts: &str) -> String {
    format!("{:016X}", fnv1a64(parts.as_bytes()))
}

/// Renders the full `nat` and `filter` tables for the node namespace.
pub(crate) fn render_rules(services: &[ServiceNat]) -> String {
    let mut sorted: Vec<&ServiceNat> = services.iter().collect();
    sorted.sort_by_key(|s| (s.vip, s.port, s.protocol));
    let mut chains = String::new();
    let mut rules = String::new();
    let mut rejects = String::new();
    for service in sorted {
        let proto = service.protocol.as_iptables();
        let (vip, port) = (service.vip, service.port);
        let comment = format!("-m comment --comment \"{vip}:{port}/{proto}\"");
        if service.endpoints.is_empty() {
            let _ = writeln!(
                rejects,
                "-A IM-REJECT -d {vip}/32 -p {proto} --dport {port} {comment} -j REJECT --reject-with icmp-port-unreachable"
            );
            continue;
        }
        let svc_chain = format!("IM-SVC-{}", chain_suffix(&format!("{vip}:{port}/{proto}")));
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A IM-SERVICES -d {vip}/32 -p {proto} --dport {port} {comment} -j {svc_chain}"
        );
        let count = service.endpoints.len();
        for (index, (ip, target)) in service.endpoints.iter().enumerate() {
            let sep_chain = format!(
                "IM-SEP-{}",
                chain_suffix(&format!("{vip}:{port}/{proto}>{ip}:{target}"))
            );
            let _ = writeln!(chains, ":{sep_chain} - [0:0]");
            let remaining = count - index;
            if remaining > 1 {
                // Each rule takes 1/remaining of what is left, so every endpoint gets 1/count overall.
                let probability = 1.0 / remaining as f64;
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -m statistic --mode random --probability {probability:.10} -j {sep_chain}"
                );
            } else {
                let _ = writeln!(rules, "-A {svc_chain} -j {sep_chain}");
            }
            let _ = writeln!(
                rules,
                "-A {sep_chain} -s {ip}/32 -j MARK --set-xmark {MASQUERADE_MARK}"
            );
            let _ = writeln!(
                rules,
                "-A {sep_chain} -p {proto} -j DNAT --to-destination {ip}:{target}"
            );
        }
    }
    let mut script = String::new();
    script.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    script.push_str(":IM-SERVICES - [0:0]\n:IM-POSTROUTING - [0:0]\n");
    script.push_str(&chains);
    script.push_str("-A PREROUTING -j IM-SERVICES\n-A OUTPUT -j IM-SERVICES\n-A POSTROUTING -j IM-POSTROUTING\n");
    let _ = writeln!(
        script,
        "-A IM-POSTROUTING -m mark --mark {MASQUERADE_MARK} -j MASQUERADE"
    );
    script.push_str(&rules);
    script.push_str("COMMIT\n");
    script.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:IM-REJECT - [0:0]\n");
    script.push_str("-A INPUT -j IM-REJECT\n-A FORWARD -j IM-REJECT\n-A OUTPUT -j IM-REJECT\n");
    script.push_str(&rejects);
    script.push_str("COMMIT\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(vip: [u8; 4], endpoints: Vec<(Ipv4Addr, u16)>) -> ServiceNat {
        ServiceNat {
            vip: Ipv4Addr::from(vip),
            port: 8000,
            protocol: Protocol::Tcp,
            endpoints,
        }
    }

    #[test]
    fn balances_evenly_and_marks_hairpin() {
        let eps = vec![
            (Ipv4Addr::new(198, 18, 0, 2), 8000),
            (Ipv4Addr::new(198, 18, 0, 3), 8000),
            (Ipv4Addr::new(198, 18, 0, 4), 8000),
        ];
        let script = render_rules(&[svc([198, 19, 0, 1], eps)]);
        assert!(script.contains("-d 198.19.0.1/32 -p tcp --dport 8000"));
        assert!(script.contains("--probability 0.3333333333"));
        assert!(script.contains("--probability 0.5000000000"));
        assert_eq!(
            script.matches("-m statistic").count(),
            2,
            "the last endpoint takes the rest"
        );
        assert!(script.contains("-s 198.18.0.4/32 -j MARK --set-xmark 0x4000/0x4000"));
        assert!(script.contains("-j DNAT --to-destination 198.18.0.3:8000"));
        assert!(script.contains("-m mark --mark 0x4000/0x4000 -j MASQUERADE"));
        assert_eq!(script.matches("COMMIT").count(), 2);
    }

    #[test]
    fn no_endpoints_rejects_and_output_is_order_independent() {
        let a = svc([198, 19, 0, 1], vec![]);
        let b = svc([198, 19, 0, 2], vec![(Ipv4Addr::new(198, 18, 0, 9), 80)]);
        let script = render_rules(&[a.clone(), b.clone()]);
        assert!(script.contains("-A IM-REJECT -d 198.19.0.1/32 -p tcp --dport 8000"));
        assert!(!script.contains("IM-REJECT -d 198.19.0.2/32"));
        assert_eq!(script, render_rules(&[b, a]));
        for line in script.lines().filter(|l| l.starts_with(':')) {
            let chain = line[1..].split(' ').next().unwrap();
            assert!(
                chain.len() <= 28,
                "iptables chain names are at most 28 characters: {chain}"
            );
        }
    }
}

//! Node and pod networking of one cluster: the node namespace and its bridge, pod namespaces joined by
//! veth pairs, service NAT and per-pod name files; plus teardown and crash cleanup.
//!
//! Topology: every pod has a /32 address and a default route via the node's gateway (198.18.0.1 on the
//! bridge), so all pod traffic, pod to pod included, is *routed* by the node namespace and passes its
//! iptables (a plain L2 bridge would let replies bypass the service DNAT). The node namespace has no
//! uplink and no default route, so nothing leaves it; the host namespace is never touched.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd::{self, in_netns, ip};
use crate::error::{Result, RuntimeError};
use crate::hosts::{self, ServiceName};
use crate::names::{BRIDGE, BRIDGE_MAC, ClusterId, GATEWAY, POD_NETWORK, SERVICE_NETWORK, etc_dir};
use crate::nat::{self, ServiceNat};
use crate::process;

/// A pod's network as created by [`Cluster::add_pod`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// The pod's Kubernetes namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its network namespace (pass it to containers and `exec`).
    pub netns: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

#[derive(Default)]
struct NetState {
    pods: BTreeMap<(String, String), PodNetwork>,
    names: Vec<ServiceName>,
}

/// One cluster's network: everything it creates is named after its [`ClusterId`].
///
/// All methods are synchronous and spawn `ip`/`iptables-restore`; from async code call them through
/// `tokio::task::spawn_blocking`. The type is `Sync`: share it in an `Arc`.
pub struct Cluster {
    id: ClusterId,
    home: PathBuf,
    state: Mutex<NetState>,
}

impl Cluster {
    /// The cluster of `home` (`$IRONMESH_HOME`). Creates nothing on the network.
    pub fn open(home: &Path) -> Result<Self> {
        let id = ClusterId::from_home(home)?;
        let home = std::fs::canonicalize(home).map_err(|e| RuntimeError::io("resolve", home, e))?;
        Ok(Cluster {
            id,
            home,
            state: Mutex::new(NetState::default()),
        })
    }

    /// The cluster's id.
    pub fn id(&self) -> &ClusterId {
        &self.id
    }

    /// The canonical `$IRONMESH_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The node network namespace's name.
    pub fn node_netns(&self) -> String {
        self.id.node_netns()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        // A panic while holding the lock leaves only plain data behind; keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates the node namespace (bridge, gateway address, forwarding, empty service tables) if it does
    /// not exist yet; leaves an existing one, and the pods attached to it, alone.
    pub fn ensure_node(&self) -> Result<()> {
        let node = self.node_netns();
        if cmd::list_netns()?.contains(&node) {
            return Ok(());
        }
        ip(&["netns", "add", &node])?;
        let setup = || -> Result<()> {
            // `default` first, so the bridge created below inherits "no redirects": pods must keep
            // sending to the gateway, never straight to each other.
            in_netns(
                &node,
                "sysctl",
                &[
                    "-qw",
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.default.send_redirects=0",
                ],
                None,
            )?;
            disable_ipv6(&node)?;
            ip(&["-n", &node, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &node, "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge",
            ])?;
            let gateway = format!("{GATEWAY}/{}", POD_NETWORK.1);
            ip(&["-n", &node, "addr", "add", &gateway, "dev", BRIDGE])?;
            ip(&["-n", &node, "link", "set", BRIDGE, "up"])?;
            // VIPs are local to the node: unmatched VIP traffic reaches INPUT, where it is rejected
            // (no endpoints) or reset (unknown port), instead of vanishing for lack of a route.
            let vips = format!("{}/{}", SERVICE_NETWORK.0, SERVICE_NETWORK.1);
            ip(&[
                "-n", &node, "route", "add", "local", &vips, "dev", "lo", "table", "local",
            ])?;
            self.load_rules(&[])
        };
        setup().inspect_err(|_| {
            // Half a node is worse than none: the next attempt starts clean.
            let _ = ip(&["netns", "del", &node]);
        })
    }

    /// Creates the pod's namespace, veth pair, /32 address, routes and name files. If a namespace of
    /// that pod already exists (e.g. left by a crash), it is removed first.
    pub fn add_pod(&self, namespace: &str, name: &str, pod_ip: Ipv4Addr) -> Result<PodNetwork> {
        let node = self.node_netns();
        let netns = self.id.pod_netns(namespace, name);
        let veth = self.id.host_veth(namespace, name);
        if cmd::list_netns()?.contains(&netns) {
            remove_netns(&netns);
        }
        // A deleted namespace frees its veth pair asynchronously; delete our end now so the name is free.
        let _ = ip(&["-n", &node, "link", "del", &veth]);
        // Again per pod: br_netfilter may have been loaded on the host since the node was created.
        disable_bridge_netfilter(&node)?;
        self.write_pod_files(&netns, namespace, name, pod_ip, &self.lock().names)?;
        ip(&["netns", "add", &netns])?;
        let setup = || -> Result<()> {
            disable_ipv6(&netns)?;
            ip(&[
                "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ])?;
            ip(&["-n", &node, "link", "set", &veth, "master", BRIDGE, "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{pod_ip}/32"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                &GATEWAY.to_string(),
                "dev",
                "eth0",
                "scope",
                "link",
            ])?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                "default",
                "via",
                &GATEWAY.to_string(),
                "dev",
                "eth0",
            ])?;
            Ok(())
        };
        if let Err(error) = setup() {
            remove_netns(&netns);
            return Err(error);
        }
        let pod = PodNetwork {
            namespace: namespace.into(),
            name: name.into(),
            netns,
            ip: pod_ip,
        };
        self.lock()
            .pods
            .insert((namespace.into(), name.into()), pod.clone());
        Ok(pod)
    }

    /// Kills whatever still runs in the pod's namespace and deletes it (the veth pair goes with it).
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let netns = self.id.pod_netns(namespace, name);
        // Deleting the node end first removes the pair synchronously (namespace teardown is deferred).
        let _ = ip(&[
            "-n",
            &self.node_netns(),
            "link",
            "del",
            &self.id.host_veth(namespace, name),
        ]);
        remove_netns(&netns);
        self.lock()
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Pods added through this handle and not removed.
    pub fn pods(&self) -> Vec<PodNetwork> {
        self.lock().pods.values().cloned().collect()
    }

    /// Replaces all service NAT rules in the node namespace at once (`iptables-restore`, atomic).
    pub fn sync_services(&self, services: &[ServiceNat]) -> Result<()> {
        self.load_rules(services)
    }

    fn load_rules(&self, services: &[ServiceNat]) -> Result<()> {
        let script = nat::render_rules(services);
        in_netns(&self.node_netns(), "iptables-restore", &[], Some(&script)).map(|_| ())
    }

    /// Publishes the service names to every pod (hosts files rewritten in place) and remembers them for
    /// pods added later.
    pub fn sync_names(&self, services: &[ServiceName]) -> Result<()> {
        let mut state = self.lock();
        state.names = services.to_vec();
        for pod in state.pods.values() {
            self.write_pod_files(&pod.netns, &pod.namespace, &pod.name, pod.ip, &state.names)?;
        }
        Ok(())
    }

    fn write_pod_files(
        &self,
        netns: &str,
        namespace: &str,
        name: &str,
        pod_ip: Ipv4Addr,
        names: &[ServiceName],
    ) -> Result<()> {
        let dir = etc_dir(netns);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
        hosts::write_in_place(
            &dir.join("hosts"),
            &hosts::render_hosts(namespace, name, pod_ip, names),
        )?;
        hosts::write_in_place(&dir.join("resolv.conf"), &hosts::render_resolv(namespace))?;
        if Path::new("/etc/nsswitch.conf").exists() {
            hosts::write_in_place(&dir.join("nsswitch.conf"), hosts::NSSWITCH)?;
        }
        Ok(())
    }

    /// Removes everything of this cluster: processes in its namespaces (and those recorded under
    /// `$IRONMESH_HOME/pods`), the namespaces (links go with them), and its `/etc/netns` files.
    /// Stop pod supervisors first, or they will try to restart what this kills.
    pub fn teardown(&self) -> Result<()> {
        crate::runc::delete_all(&self.id);
        process::kill_recorded_under(&self.home.join("pods"));
        let prefix = self.id.netns_prefix();
        let node = self.node_netns();
        let mut namespaces: Vec<String> = cmd::list_netns()?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        // Pods first: their veth ends leave the node's bridge cleanly before the node goes.
        namespaces.sort_by_key(|n| *n == node);
        for netns in &namespaces {
            remove_netns(netns);
        }
        if let Ok(entries) = std::fs::read_dir(crate::names::ETC_NETNS) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        self.lock().pods.clear();
        let left: Vec<String> = cmd::list_netns()?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if !left.is_empty() {
            return Err(RuntimeError::CommandFailed {
                command: format!("ip netns del {}", left.join(" ")),
                status: "namespaces still present".into(),
                stderr: "they may be held by a mount; retry `ironmesh down`".into(),
            });
        }
        Ok(())
    }

    /// What a start after a crash calls before [`Cluster::ensure_node`]: the same as
    /// [`Cluster::teardown`] (kill, then recreate; running containers are not adopted).
    pub fn cleanup_stale(&self) -> Result<()> {
        self.teardown()
    }
}

/// IPv6 off in a namespace, before its links exist (new links inherit `default`): pods and the node
/// have no IPv6 address at all, not even link-local, so nothing reaches a dual-stack app around the
/// IPv4 interception rules (docs/SECURITY.md, "IPv6"). `-e`: a kernel without IPv6 has nothing to disable.
fn disable_ipv6(netns: &str) -> Result<()> {
    in_netns(
        netns,
        "sysctl",
        &[
            "-qwe",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        None,
    )
    .map(|_| ())
}

/// Pods are routed, not bridged: if `br_netfilter` is loaded on the host (Docker loads it), it would push
/// frames between bridge ports through iptables at L2, and a DNAT back to the sender (hairpin) would be
/// "bridged" out of the port it came in, and dropped. Switching it off in the node namespace keeps all pod
/// traffic on the routed path; `-e` makes it a no-op when the module is not loaded.
fn disable_bridge_netfilter(node: &str) -> Result<()> {
    in_netns(
        node,
        "sysctl",
        &[
            "-qwe",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ],
        None,
    )
    .map(|_| ())
}

/// SIGKILLs every process in `netns`, waits briefly for them to exit, then deletes the namespace and its
/// `/etc/netns` directory. Best effort: it is the last resort of teardown.
fn remove_netns(netns: &str) {
    let pids = cmd::netns_pids(netns);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|pid| process::is_alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ip(&["netns", "del", netns]);
    let _ = std::fs::remove_dir_all(etc_dir(netns));
}

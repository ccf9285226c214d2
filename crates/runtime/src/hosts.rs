//! Name resolution as in Kubernetes, without a DNS server: per-pod `/etc/netns/<netns>/hosts` (bind-mounted
//! over `/etc/hosts` by `ip netns exec`) listing every service's spellings and the pod's own name.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// Cluster DNS suffix, as Kubernetes' default.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A service name to publish: `name.namespace[.svc[.cluster.local]]` → `vip`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceName {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Its virtual IP.
    pub vip: Ipv4Addr,
}

/// The hosts file of one pod: the short `name` form only for services of the pod's own namespace.
pub(crate) fn render_hosts(
    pod_namespace: &str,
    pod_name: &str,
    pod_ip: Ipv4Addr,
    services: &[ServiceName],
) -> String {
    let mut out =
        String::from("# written by ironmesh: one line per service spelling; rewritten in place\n");
    out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{pod_ip}\t{pod_name}");
    let mut sorted: Vec<&ServiceName> = services.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for service in sorted {
        let (name, ns) = (&service.name, &service.namespace);
        let _ = write!(
            out,
            "{}\t{name}.{ns}.svc.{CLUSTER_DOMAIN} {name}.{ns}.svc {name}.{ns}",
            service.vip
        );
        if ns == pod_namespace {
            let _ = write!(out, " {name}");
        }
        out.push('\n');
    }
    out
}

/// `resolv.conf` for a pod: Kubernetes' search path; the resolver at 127.0.0.1 does not exist, so a
/// name missing from the hosts file fails at once instead of leaking a query to the host's DNS.
pub(crate) fn render_resolv(pod_namespace: &str) -> String {
    format!(
        "# written by ironmesh: names come from /etc/hosts\nsearch {pod_namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\nnameserver 127.0.0.1\noptions ndots:5 attempts:1 timeout:1\n"
    )
}

/// Pins the lookup order whatever the host's nsswitch says (e.g. `resolve` before `files`).
pub(crate) const NSSWITCH: &str = "# written by ironmesh\npasswd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";

/// Writes `content` into `path` keeping its inode (overwrite in place), because running pods see the file
/// through a bind mount that pins the inode: a rename would leave them on the old file.
pub(crate) fn write_in_place(path: &Path, content: &str) -> Result<()> {
    // Resolvers in running pods read this file at any time: leave it alone when nothing changed, and
    // never truncate first (a reader would see an empty file and fail to resolve). Overwrite from the
    // start, then cut what is left of a longer old version.
    if std::fs::read(path).is_ok_and(|current| current == content.as_bytes()) {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| RuntimeError::io("open", path, e))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.set_len(content.len() as u64))
        .map_err(|e| RuntimeError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_every_spelling_and_short_name_only_in_own_namespace() {
        let services = vec![
            ServiceName {
                namespace: "foo".into(),
                name: "httpbin".into(),
                vip: Ipv4Addr::new(198, 19, 0, 1),
            },
            ServiceName {
                namespace: "bar".into(),
                name: "httpbin".into(),
                vip: Ipv4Addr::new(198, 19, 0, 2),
            },
        ];
        let hosts = render_hosts("foo", "sleep-1", Ipv4Addr::new(198, 18, 0, 5), &services);
        assert!(hosts.contains("198.18.0.5\tsleep-1\n"));
        assert!(hosts.contains(
            "198.19.0.1\thttpbin.foo.svc.cluster.local httpbin.foo.svc httpbin.foo httpbin\n"
        ));
        assert!(
            hosts.contains(
                "198.19.0.2\thttpbin.bar.svc.cluster.local httpbin.bar.svc httpbin.bar\n"
            )
        );
        assert!(render_resolv("foo").contains("search foo.svc.cluster.local"));
    }

    #[test]
    fn write_in_place_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_in_place(&path, "a long first version\n").unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
    }
}

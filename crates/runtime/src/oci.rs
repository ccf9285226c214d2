//! The OCI runtime spec of one container (pure: no I/O), as a Kubernetes node would give it.
//!
//! * Namespaces: its own mount, PID, IPC and UTS namespaces; the pod's network namespace
//!   (`/run/netns/<netns>`), shared by the pod's containers as a pause container's would be.
//! * Capabilities: Kubernetes' (containerd's) default set, `securityContext.capabilities` add/drop,
//!   everything for `privileged`. Non-root users keep them only in the bounding set (no ambient
//!   capabilities, as containerd after CVE-2022-24769).
//! * The RuntimeDefault seccomp profile ([`crate::seccomp`]) unless privileged or `Unconfined`;
//!   `no_new_privileges` unless `allowPrivilegeEscalation: true` or privileged.
//! * Root filesystem: there are no images. The root is a read-only view of the host's (every top-level
//!   directory bound recursively read-only), with `/root`, `/home`, `/run` and ironmesh's state
//!   directory masked by empty tmpfs, a private `/tmp`, the pod's own `/etc/hosts`, `/etc/resolv.conf`
//!   and `/etc/nsswitch.conf`, the directory of ironmesh's binaries bound back read-only (it may live under
//!   a masked directory), then the container's volumes.
//!
//! Kubernetes' defaults: `pkg/kubelet/kuberuntime/security_context.go`, containerd's
//! `pkg/cri/opts/spec_linux.go` (default capabilities, masked and read-only paths).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, Process, Root, Spec, User, get_default_maskedpaths,
    get_default_readonly_paths,
};
use serde::{Deserialize, Serialize};

use crate::seccomp;

/// Kubernetes' default capabilities (containerd's `defaultCapabilities`): no NET_ADMIN, SYS_ADMIN,
/// SYS_PTRACE, SYS_MODULE...
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability, for `privileged` and `add: [ALL]`.
const ALL_CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// A container's `securityContext`, the pod's merged under the container's (the container wins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    /// `runAsUser`; the "image default" is root.
    pub run_as_user: Option<u32>,
    /// `runAsGroup`; defaults to 0.
    pub run_as_group: Option<u32>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `capabilities.add` (Kubernetes spelling, `NET_ADMIN`; `CAP_` prefixes are accepted).
    pub capabilities_add: Vec<String>,
    /// `capabilities.drop` (`ALL` drops the default set).
    pub capabilities_drop: Vec<String>,
    /// `privileged`.
    pub privileged: bool,
    /// `readOnlyRootFilesystem`: `/tmp` is read-only too (the host view always is). `/run` stays a
    /// writable tmpfs: the mount points of volumes are made there.
    pub read_only_root_filesystem: bool,
    /// `allowPrivilegeEscalation`; unset means false here (ironmesh's default is stricter than
    /// Kubernetes': `no_new_privileges` unless asked otherwise).
    pub allow_privilege_escalation: Option<bool>,
    /// `seccompProfile.type: Unconfined`.
    pub seccomp_unconfined: bool,
}

/// A host path mounted into a container (a volume, or one of the proxy's own files).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The file or directory on the host.
    pub source: PathBuf,
    /// Where the container sees it.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Why a container's spec cannot be built (kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `runAsNonRoot: true` with root as the user.
    #[error(
        "container has runAsNonRoot and image will run as root (container: {container}); set securityContext.runAsUser to a non-zero uid"
    )]
    RunsAsRoot { container: String },
    /// An unknown capability name.
    #[error(
        "container {container}: securityContext.capabilities: unknown capability {name:?}; use Linux names without CAP_ (e.g. NET_ADMIN)"
    )]
    UnknownCapability { container: String, name: String },
    /// `allowPrivilegeEscalation: false` with `privileged: true` (Kubernetes refuses it too).
    #[error(
        "container {container}: cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
    )]
    EscalationConflict { container: String },
}

/// What the host offers every container of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    /// The directory runc pivots into: one empty directory per top-level host directory, and the host's
    /// top-level symlinks (`/bin -> usr/bin`).
    pub rootfs: PathBuf,
    /// Top-level host directories bound read-only into the view (absolute, e.g. `/usr`).
    pub bound: Vec<PathBuf>,
    /// Directories hidden behind an empty tmpfs (`/root`, `/home`, ironmesh's state directories).
    pub masked: Vec<PathBuf>,
    /// The directory of ironmesh's binaries, bound back read-only.
    pub bin_dir: Option<PathBuf>,
}

/// One container to launch.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    /// Container name (for error messages).
    pub container: &'a str,
    /// Hostname (the pod's name, as Kubernetes sets it).
    pub hostname: &'a str,
    /// `/run/netns/<netns>`.
    pub netns_path: PathBuf,
    /// The executable and its arguments.
    pub argv: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<(String, String)>,
    /// `securityContext`.
    pub security: &'a SecurityContext,
    /// `(host file, container path)` for the pod's `/etc/hosts`, `/etc/resolv.conf`, `/etc/nsswitch.conf`.
    pub etc_files: Vec<(PathBuf, PathBuf)>,
    /// The container's volumes, in order.
    pub volumes: &'a [VolumeMount],
    /// The cgroup (under each hierarchy) runc creates for the container.
    pub cgroup: PathBuf,
}

fn capability(container: &str, name: &str) -> Result<Capability, ConfigError> {
    let bare = name
        .trim()
        .to_ascii_uppercase()
        .trim_start_matches("CAP_")
        .to_owned();
    Capability::from_str(&bare).map_err(|_| ConfigError::UnknownCapability {
        container: container.to_owned(),
        name: name.to_owned(),
    })
}

/// The capability set after `privileged`, `drop` then `add` (Kubernetes' order: add wins).
pub fn capabilities(
    container: &str,
    security: &SecurityContext,
) -> Result<HashSet<Capability>, ConfigError> {
    let all = || {
        ALL_CAPABILITIES
            .iter()
            .map(|n| capability(container, n))
            .collect::<Result<HashSet<_>, _>>()
    };
    if security.privileged {
        return all();
    }
    let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES
        .iter()
        .map(|n| capability(container, n))
        .collect::<Result<_, _>>()?;
    for name in &security.capabilities_drop {
        if name.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            set.remove(&capability(container, name)?);
        }
    }
    for name in &security.capabilities_add {
        if name.eq_ignore_ascii_case("ALL") {
            set.extend(all()?);
        } else {
            set.insert(capability(container, name)?);
        }
    }
    Ok(set)
}

fn mount(destination: &Path, kind: &str, source: &Path, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(destination.to_path_buf());
    mount.set_typ(Some(kind.to_owned()));
    mount.set_source(Some(source.to_path_buf()));
    mount.set_options(Some(options.iter().map(|o| (*o).to_owned()).collect()));
    mount
}

fn bind(source: &Path, destination: &Path, read_only: bool) -> Mount {
    let options: &[&str] = if read_only {
        // rro: recursively read-only (mount_setattr), so submounts of the host are not left writable.
        &["rbind", "rro", "nosuid", "nodev"]
    } else {
        &["rbind", "nosuid", "nodev"]
    };
    mount(destination, "bind", source, options)
}

/// The container's OCI runtime spec.
pub fn container_spec(host: &HostView, launch: &Launch<'_>) -> Result<Spec, ConfigError> {
    let security = launch.security;
    let container = launch.container;
    let uid = security.run_as_user.unwrap_or(0);
    let gid = security.run_as_group.unwrap_or(0);
    if security.run_as_non_root == Some(true) && uid == 0 {
        return Err(ConfigError::RunsAsRoot {
            container: container.to_owned(),
        });
    }
    if security.privileged && security.allow_privilege_escalation == Some(false) {
        return Err(ConfigError::EscalationConflict {
            container: container.to_owned(),
        });
    }
    let caps = capabilities(container, security)?;

    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps.clone()));
    capabilities.set_inheritable(Some(HashSet::new()));
    capabilities.set_ambient(Some(HashSet::new()));
    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_user(user);
    process.set_args(Some(launch.argv.clone()));
    process.set_env(Some(
        launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    ));
    process.set_cwd(PathBuf::from("/"));
    process.set_capabilities(Some(capabilities));
    // Inherit the runtime's limits (file descriptors above all), as `ip netns exec` did.
    process.set_rlimits(None);
    let escalation = security.privileged || security.allow_privilege_escalation == Some(true);
    process.set_no_new_privileges(Some(!escalation));

    let writable_scratch = !security.read_only_root_filesystem;
    let mut mounts = vec![
        mount(
            Path::new("/proc"),
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            Path::new("/dev"),
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            Path::new("/dev/pts"),
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            Path::new("/dev/shm"),
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            Path::new("/dev/mqueue"),
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            Path::new("/sys"),
            "sysfs",
            Path::new("sysfs"),
            if security.privileged {
                &["nosuid", "noexec", "nodev"]
            } else {
                &["nosuid", "noexec", "nodev", "ro"]
            },
        ),
    ];
    for dir in &host.bound {
        mounts.push(bind(dir, dir, true));
    }
    let scratch: &[&str] = if writable_scratch {
        &["nosuid", "nodev", "mode=1777"]
    } else {
        &["nosuid", "nodev", "mode=1777", "ro"]
    };
    mounts.push(mount(
        Path::new("/tmp"),
        "tmpfs",
        Path::new("tmpfs"),
        scratch,
    ));
    // Volume mount points are created under /run (the host view is read-only), so it stays writable.
    mounts.push(mount(
        Path::new("/run"),
        "tmpfs",
        Path::new("tmpfs"),
        &["nosuid", "nodev", "mode=755", "size=16m"],
    ));
    // Later mounts under a mask need their mount points created in it, so such a mask is writable
    // (it is a private, empty, size-capped tmpfs either way).
    let later: Vec<&Path> = host
        .bin_dir
        .iter()
        .map(PathBuf::as_path)
        .chain(launch.volumes.iter().map(|v| v.destination.as_path()))
        .collect();
    for masked in &host.masked {
        let nested = later.iter().any(|p| p.starts_with(masked) && *p != masked);
        let options: &[&str] = if nested {
            &["nosuid", "nodev", "noexec", "mode=755", "size=1m"]
        } else {
            &["nosuid", "nodev", "noexec", "mode=755", "size=1m", "ro"]
        };
        mounts.push(mount(masked, "tmpfs", Path::new("tmpfs"), options));
    }
    if let Some(bin_dir) = &host.bin_dir {
        mounts.push(bind(bin_dir, bin_dir, true));
    }
    for (source, destination) in &launch.etc_files {
        let mut file = mount(
            destination,
            "bind",
            source,
            &["bind", "ro", "nosuid", "nodev"],
        );
        file.set_typ(Some("bind".into()));
        mounts.push(file);
    }
    for volume in launch.volumes {
        mounts.push(bind(&volume.source, &volume.destination, volume.read_only));
    }

    let namespaces = [
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Ipc, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::Network, Some(launch.netns_path.clone())),
    ]
    .into_iter()
    .map(|(kind, path)| {
        let mut namespace = LinuxNamespace::default();
        namespace.set_typ(kind);
        namespace.set_path(path);
        namespace
    })
    .collect::<Vec<_>>();
    let mut deny_devices = LinuxDeviceCgroup::default();
    deny_devices.set_allow(false);
    deny_devices.set_access(Some("rwm".into()));
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![deny_devices]));
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(launch.cgroup.clone())
        .build()
        .unwrap_or_default();
    if !security.privileged {
        linux.set_masked_paths(Some(get_default_maskedpaths()));
        linux.set_readonly_paths(Some(get_default_readonly_paths()));
        if !security.seccomp_unconfined {
            linux.set_seccomp(Some(seccomp::runtime_default(&caps)));
        }
    }

    let mut root = Root::default();
    root.set_path(host.rootfs.clone());
    root.set_readonly(Some(true));
    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());
    spec.set_hostname(Some(launch.hostname.to_owned()));
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(None);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostView {
        HostView {
            rootfs: "/run/ironmesh/abc/rootfs".into(),
            bound: vec!["/etc".into(), "/usr".into(), "/var".into()],
            masked: vec!["/root".into(), "/home".into(), "/var/lib/ironmesh".into()],
            bin_dir: Some("/root/src/ironmesh/target/release".into()),
        }
    }

    fn launch<'a>(security: &'a SecurityContext, volumes: &'a [VolumeMount]) -> Launch<'a> {
        Launch {
            container: "app",
            hostname: "sleep-1",
            netns_path: "/run/netns/im-abc-1".into(),
            argv: vec!["/bin/sleep".into(), "1d".into()],
            env: vec![("POD_NAME".into(), "sleep-1".into())],
            security,
            etc_files: vec![("/etc/netns/im-abc-1/hosts".into(), "/etc/hosts".into())],
            volumes,
            cgroup: "/ironmesh/im-abc-1-app".into(),
        }
    }

    fn caps(names: &[&str]) -> HashSet<Capability> {
        names.iter().map(|n| capability("t", n).unwrap()).collect()
    }

    #[test]
    fn capabilities_follow_kubernetes_rules() {
        let default = SecurityContext::default();
        let table: Vec<(&str, SecurityContext, HashSet<Capability>)> = vec![
            ("default set", default.clone(), caps(DEFAULT_CAPABILITIES)),
            (
                "drop ALL",
                SecurityContext {
                    capabilities_drop: vec!["ALL".into()],
                    ..default.clone()
                },
                HashSet::new(),
            ),
            (
                "init: drop ALL, add NET_ADMIN and NET_RAW",
                SecurityContext {
                    capabilities_drop: vec!["ALL".into()],
                    capabilities_add: vec!["NET_ADMIN".into(), "CAP_NET_RAW".into()],
                    ..default.clone()
                },
                caps(&["NET_ADMIN", "NET_RAW"]),
            ),
            (
                "drop one",
                SecurityContext {
                    capabilities_drop: vec!["NET_RAW".into()],
                    ..default.clone()
                },
                caps(
                    &DEFAULT_CAPABILITIES
                        .iter()
                        .copied()
                        .filter(|c| *c != "NET_RAW")
                        .collect::<Vec<_>>(),
                ),
            ),
            (
                "privileged has everything",
                SecurityContext {
                    privileged: true,
                    ..default.clone()
                },
                caps(ALL_CAPABILITIES),
            ),
        ];
        for (name, security, expected) in table {
            assert_eq!(capabilities("t", &security).unwrap(), expected, "{name}");
        }
        for absent in ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE"] {
            assert!(!caps(DEFAULT_CAPABILITIES).contains(&capability("t", absent).unwrap()));
        }
        let bad = SecurityContext {
            capabilities_add: vec!["NET_ADMN".into()],
            ..default
        };
        assert!(matches!(
            capabilities("t", &bad),
            Err(ConfigError::UnknownCapability { name, .. }) if name == "NET_ADMN"
        ));
    }

    #[test]
    fn user_escalation_and_seccomp_follow_the_security_context() {
        let default = SecurityContext::default();
        let spec = container_spec(&host(), &launch(&default, &[])).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
        assert_eq!(process.no_new_privileges(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        let kinds: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert!(kinds.contains(&(
            LinuxNamespaceType::Network,
            Some("/run/netns/im-abc-1".into())
        )));
        for own in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ] {
            assert!(kinds.contains(&(own, None)), "{own:?}");
        }

        let proxy = SecurityContext {
            run_as_user: Some(1337),
            run_as_group: Some(1337),
            run_as_non_root: Some(true),
            capabilities_drop: vec!["ALL".into()],
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: true,
            ..Default::default()
        };
        let spec = container_spec(&host(), &launch(&proxy, &[])).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (1337, 1337));
        let held = process.capabilities().as_ref().unwrap();
        assert_eq!(held.bounding().as_ref().unwrap().len(), 0);
        assert_eq!(held.ambient().as_ref().unwrap().len(), 0);
        let tmp = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/tmp"))
            .unwrap();
        assert!(
            tmp.options().as_ref().unwrap().contains(&"ro".to_owned()),
            "readOnlyRootFilesystem"
        );

        let escalate = SecurityContext {
            allow_privilege_escalation: Some(true),
            ..Default::default()
        };
        let spec = container_spec(&host(), &launch(&escalate, &[])).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(false)
        );

        let privileged = SecurityContext {
            privileged: true,
            ..Default::default()
        };
        let spec = container_spec(&host(), &launch(&privileged, &[])).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());

        let unconfined = SecurityContext {
            seccomp_unconfined: true,
            ..Default::default()
        };
        let spec = container_spec(&host(), &launch(&unconfined, &[])).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());

        let non_root = SecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        assert!(matches!(
            container_spec(&host(), &launch(&non_root, &[])),
            Err(ConfigError::RunsAsRoot { .. })
        ));
        let conflict = SecurityContext {
            privileged: true,
            allow_privilege_escalation: Some(false),
            ..Default::default()
        };
        assert!(matches!(
            container_spec(&host(), &launch(&conflict, &[])),
            Err(ConfigError::EscalationConflict { .. })
        ));
    }

    #[test]
    fn the_root_is_a_read_only_host_view_with_masks_and_the_pods_own_files() {
        let security = SecurityContext::default();
        let volumes = [VolumeMount {
            source: "/var/lib/ironmesh/pods/foo/p/proxy".into(),
            destination: "/run/ironmesh/proxy".into(),
            read_only: false,
        }];
        let spec = container_spec(&host(), &launch(&security, &volumes)).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let mounts = spec.mounts().as_ref().unwrap();
        let find = |dest: &str| {
            mounts
                .iter()
                .rposition(|m| m.destination() == Path::new(dest))
                .unwrap_or_else(|| panic!("no mount at {dest}"))
        };
        let options = |i: usize| mounts[i].options().clone().unwrap_or_default();
        assert!(options(find("/usr")).contains(&"rro".to_owned()));
        assert_eq!(
            mounts[find("/var/lib/ironmesh")].typ().as_deref(),
            Some("tmpfs")
        );
        assert!(
            find("/var/lib/ironmesh") > find("/var"),
            "the mask comes after the view"
        );
        assert!(options(find("/home")).contains(&"ro".to_owned()));
        // The binaries live under /root here: its mask must take their mount point, and they come after.
        assert!(!options(find("/root")).contains(&"ro".to_owned()));
        assert!(find("/root/src/ironmesh/target/release") > find("/root"));
        assert!(!options(find("/tmp")).contains(&"ro".to_owned()));
        assert_eq!(
            mounts[find("/etc/hosts")].source().as_deref(),
            Some(Path::new("/etc/netns/im-abc-1/hosts"))
        );
        let proxy_state = find("/run/ironmesh/proxy");
        assert!(
            !options(proxy_state).contains(&"rro".to_owned()),
            "a writable volume"
        );
        assert!(proxy_state > find("/var/lib/ironmesh"));
    }
}

//! Containers run by runc (Debian's `runc` package), one OCI bundle per container.
//!
//! Why runc: crun refuses to start any container on hosts with hybrid cgroups (v1 controllers plus a
//! v2 hierarchy that has a controller, as on this project's CI machines: "cgroups in hybrid mode not
//! supported"), and youki's libcontainer would add a large dependency tree for the same job. runc runs
//! **detached**: it sets the container up and exits, so no runtime process stays per container (a
//! foreground `runc run` costs ~10 MiB RSS each). The container's init is re-parented to us (we are a
//! child subreaper) and waited for through a pidfd, which also makes signals immune to pid reuse.
//!
//! Everything of one cluster lives under `/run/ironmesh/<cluster id>/`: `runc/` (runc's state, so a
//! teardown finds every container even after a crash) and `rootfs/` (the skeleton of the host view, see
//! [`crate::oci`]). Container ids are `<pod netns>-<container>`.
#![allow(
    unsafe_code,
    reason = "pidfd_open and pidfd_send_signal have no safe wrapper in nix or std"
)]

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::io::unix::AsyncFd;

use crate::error::{Result, RuntimeError};
use crate::names::ClusterId;
use crate::oci::HostView;

/// The default `$IRONMESH_HOME`: masked in every container even when another home is in use.
use ironmesh_home::DEFAULT_HOME;
/// Top-level host directories never bound into a container: replaced by the container's own (`/proc`,
/// `/sys`, `/dev`, `/tmp`, `/run`) or useless.
const NOT_BOUND: &[&str] = &["proc", "sys", "dev", "tmp", "run", "lost+found"];
/// Top-level host directories hidden behind an empty tmpfs (people's files and keys).
const MASKED_TOP: &[&str] = &["root", "home"];

/// `/run/ironmesh/<cid>`.
pub(crate) fn cluster_dir(id: &ClusterId) -> PathBuf {
    id.runtime_dir()
}

/// runc's `--root` for the cluster.
pub(crate) fn state_root(id: &ClusterId) -> PathBuf {
    id.runc_root()
}

/// The runc id of a container (see [`ClusterId::container_id`]).
pub fn container_id(netns: &str, container: &str) -> String {
    format!("{netns}-{container}")
}

fn runc_missing(source: std::io::Error) -> RuntimeError {
    RuntimeError::MissingProgram {
        program: "runc".into(),
        package: "runc",
        source,
    }
}

/// Builds (idempotently) the cluster's rootfs skeleton and says what is bound and masked.
pub(crate) fn host_view(id: &ClusterId, home: &Path, bin_dir: Option<&Path>) -> Result<HostView> {
    let rootfs = cluster_dir(id).join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| RuntimeError::io("create", &rootfs, e))?;
    let mut bound = Vec::new();
    let mut masked = Vec::new();
    let entries = std::fs::read_dir("/").map_err(|e| RuntimeError::io("list", "/", e))?;
    let mut names: Vec<_> = entries.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let target = rootfs.join(&name);
        if kind.is_symlink() {
            if std::fs::symlink_metadata(&target).is_err()
                && let Ok(link) = std::fs::read_link(entry.path())
            {
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| RuntimeError::io("create", &target, e))?;
            }
            continue;
        }
        if !kind.is_dir() {
            continue;
        }
        if !target.is_dir() {
            std::fs::create_dir(&target).map_err(|e| RuntimeError::io("create", &target, e))?;
        }
        if NOT_BOUND.contains(&name_str.as_ref()) {
            continue;
        }
        let path = Path::new("/").join(&name);
        if MASKED_TOP.contains(&name_str.as_ref()) {
            masked.push(path);
        } else {
            bound.push(path);
        }
    }
    let hidden_already = |path: &Path, masked: &[PathBuf]| {
        ["/tmp", "/run", "/proc", "/sys", "/dev"]
            .iter()
            .any(|p| path.starts_with(p))
            || masked.iter().any(|m| path.starts_with(m))
    };
    let mut state_dirs = vec![home.to_path_buf()];
    if Path::new(DEFAULT_HOME).is_dir() {
        state_dirs.push(PathBuf::from(DEFAULT_HOME));
    }
    for dir in state_dirs {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if !hidden_already(&dir, &masked) {
            masked.push(dir);
        }
    }
    Ok(HostView {
        rootfs,
        bound,
        masked,
        bin_dir: bin_dir.map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf())),
    })
}

/// A running container: its init's pid and a pidfd on it.
pub(crate) struct Container {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    root: PathBuf,
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else holds it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Container {
    /// Creates and starts `id` from the bundle (`config.json` written by the caller), stdout and stderr
    /// going to `output`. Returns once the container's process runs.
    pub(crate) async fn start(
        root: &Path,
        id: &str,
        bundle: &Path,
        output: OwnedFd,
    ) -> Result<Container> {
        // A container of the same name left by a crash or a kill of the supervisor: replace it.
        if root.join(id).exists() {
            delete(root, id).await;
        }
        let pid_file = bundle.join("pid");
        let log_file = bundle.join("runc.log");
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&log_file);
        let stderr = output
            .try_clone()
            .map_err(|e| RuntimeError::io("duplicate", bundle, e))?;
        let status = tokio::process::Command::new("runc")
            .arg("--root")
            .arg(root)
            .arg("--log")
            .arg(&log_file)
            .args(["run", "--detach", "--pid-file"])
            .arg(&pid_file)
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(stderr))
            .status()
            .await
            .map_err(runc_missing)?;
        if !status.success() {
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            let reason = log
                .lines()
                .rev()
                .find(|l| l.contains("level=error"))
                .or_else(|| log.lines().last())
                .unwrap_or("no log")
                .to_owned();
            delete(root, id).await;
            return Err(RuntimeError::CommandFailed {
                command: format!("runc run {id}"),
                status: status.to_string(),
                stderr: reason,
            });
        }
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| RuntimeError::CommandFailed {
                command: format!("runc run {id}"),
                status: "no pid file".into(),
                stderr: format!("{} is missing or not a pid", pid_file.display()),
            })?;
        let pidfd = pidfd_open(pid)
            .and_then(|fd| {
                // SAFETY: the OwnedFd is moved into the AsyncFd and stays open until it is dropped.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .map_err(|e| RuntimeError::io("open a pidfd on", format!("/proc/{pid}"), e))?;
        Ok(Container {
            id: id.to_owned(),
            pid,
            pidfd,
            root: root.to_path_buf(),
        })
    }

    /// Waits for the container's process to exit; its exit code as a shell reports it (128 + signal).
    pub(crate) async fn wait(&self) -> (i32, Option<i32>) {
        loop {
            let Ok(mut guard) = self.pidfd.readable().await else {
                return (255, None);
            };
            match waitid(
                Id::PIDFd(self.pidfd.get_ref().as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::Exited(_, code)) => return (code, None),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    return (128 + signal as i32, Some(signal as i32));
                }
                Ok(WaitStatus::StillAlive) => guard.clear_ready(),
                Ok(_) => guard.clear_ready(),
                // Not our child (no subreaper): the process is gone, its status unknown.
                Err(_) => return (255, None),
            }
        }
    }

    /// Sends `signal` to the container's init (through the pidfd: never to a recycled pid).
    pub(crate) fn signal(&self, signal: Signal) {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number and no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; removes runc's state. Returns the exit code.
    pub(crate) async fn terminate(&self, grace: Duration) -> (i32, Option<i32>) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let exit = match tokio::time::timeout_at(deadline.into(), self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        };
        self.remove().await;
        exit
    }

    /// Removes runc's record of the (exited) container and its cgroup.
    pub(crate) async fn remove(&self) {
        delete(&self.root, &self.id).await;
    }
}

/// `runc delete --force id` (kills what is left of it, removes its state and cgroup).
pub(crate) async fn delete(root: &Path, id: &str) {
    let _ = tokio::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Deletes every container of the cluster (teardown, crash cleanup) and its runtime directory.
pub(crate) fn delete_all(id: &ClusterId) {
    let root = state_root(id);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(entry.file_name())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = std::fs::remove_dir_all(cluster_dir(id));
}

/// Names of the cluster's containers that runc knows (for tests and `down`'s check).
pub fn containers_of(id: &ClusterId) -> Vec<String> {
    std::fs::read_dir(state_root(id))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `argv` inside a running container (`runc exec`): its namespaces, user, capabilities, seccomp
/// profile and no_new_privileges, as `kubectl exec` does. Returns runc's exit status.
pub(crate) fn exec(
    id: &ClusterId,
    container: &str,
    argv: &[String],
    tty: bool,
    env: &[(String, String)],
) -> Result<std::process::Command> {
    let root = state_root(id);
    if !root.join(container).exists() {
        return Err(RuntimeError::ContainerNotRunning {
            container: container.to_owned(),
        });
    }
    let mut command = std::process::Command::new("runc");
    command.arg("--root").arg(&root).arg("exec");
    if tty {
        command.arg("--tty");
    }
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command.arg(container).args(argv);
    Ok(command)
}

/// Makes this process the reaper of orphaned descendants, so detached containers' processes stay our
/// children and their exit status reaches us. Idempotent.
pub(crate) fn become_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

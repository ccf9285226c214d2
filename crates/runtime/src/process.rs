//! Container processes: resolving what to run, generating its OCI spec and starting it with runc in the
//! pod's network namespace with the pod's environment and a rotating log, pid files.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::names::{ClusterId, etc_dir};
use crate::oci::{self, ConfigError, SecurityContext, VolumeMount};
use crate::runc;

/// Image substring → bundled sample binary and its default arguments.
const BUNDLED_SAMPLES: &[(&str, &str, &[&str])] =
    &[("httpbin", "ironmesh-httpbin", &["--port", "8000"])];

/// PATH given to containers (the bundled binaries directory is put in front of it).
const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One container of a pod, as written in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name (unique in the pod).
    pub name: String,
    /// Image; only used to pick a bundled sample when `command` is empty.
    pub image: String,
    /// `command:` (the entrypoint); empty means "the image's".
    pub command: Vec<String>,
    /// `args:`.
    pub args: Vec<String>,
    /// `env:` (name, value), added after the pod environment so it wins.
    pub env: Vec<(String, String)>,
    /// `securityContext` (the pod's merged under the container's).
    pub security: SecurityContext,
    /// Volumes and files mounted into this container only.
    pub volumes: Vec<VolumeMount>,
}

pub use ironmesh_home::{bin_dir, find_program};
pub(crate) use ironmesh_home::{is_alive, start_time};

/// Turns a container spec into the executable and arguments to run, following Kubernetes' rules
/// (`command` replaces the entrypoint, `args` its arguments) with bundled samples as "images".
pub fn resolve_launch(
    spec: &ContainerSpec,
    bundled: Option<&Path>,
) -> Result<(PathBuf, Vec<String>)> {
    let (program, args) = if let Some((first, rest)) = spec.command.split_first() {
        (
            first.clone(),
            rest.iter().chain(&spec.args).cloned().collect::<Vec<_>>(),
        )
    } else {
        let image = spec.image.to_ascii_lowercase();
        let Some((_, binary, default_args)) = BUNDLED_SAMPLES
            .iter()
            .find(|(key, _, _)| image.contains(key))
        else {
            return Err(RuntimeError::UnknownImage {
                container: spec.name.clone(),
                image: spec.image.clone(),
            });
        };
        let args = if spec.args.is_empty() {
            default_args.iter().map(|a| (*a).to_owned()).collect()
        } else {
            spec.args.clone()
        };
        ((*binary).to_owned(), args)
    };
    let resolved =
        find_program(&program, bundled).ok_or_else(|| RuntimeError::ExecutableNotFound {
            container: spec.name.clone(),
            program: program.clone(),
            searched: format!(
                "{}PATH",
                bundled
                    .map(|d| format!("{} (IRONMESH_BIN_DIR) and ", d.display()))
                    .unwrap_or_default()
            ),
        })?;
    Ok((resolved, args))
}

/// The environment of a container: a minimal base, then the pod environment, then the container's `env`.
pub(crate) fn container_env(
    pod_name: &str,
    pod_env: &[(String, String)],
    spec: &ContainerSpec,
    bundled: Option<&Path>,
) -> Vec<(String, String)> {
    let path = match bundled {
        Some(dir) => format!("{}:{CONTAINER_PATH}", dir.display()),
        None => CONTAINER_PATH.to_owned(),
    };
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("HOSTNAME".to_owned(), pod_name.to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    env.extend(pod_env.iter().cloned());
    env.extend(spec.env.iter().cloned());
    env
}

/// Where a container's stdout and stderr go.
pub fn log_path(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(format!("{container}.log"))
}

fn pid_path(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("pids").join(format!("{container}.pid"))
}

/// Why a container did not start: its configuration (not retried, kubelet's
/// `CreateContainerConfigError`) or the runtime (retried, `CreateContainerError`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What a container needs from its pod.
pub(crate) struct PodContext<'a> {
    /// `$IRONMESH_HOME` of the cluster.
    pub home: &'a Path,
    /// The pod's network namespace.
    pub netns: &'a str,
    /// The pod's name (the container's hostname).
    pub pod_name: &'a str,
    /// `$IRONMESH_HOME/pods/<ns>/<pod>`.
    pub pod_dir: &'a Path,
    /// Bundled binaries.
    pub bin_dir: Option<&'a Path>,
}

/// Writes the container's OCI bundle and starts it with runc (detached), its output going to the
/// container's rotating log; records its pid.
pub(crate) async fn start_container(
    pod: &PodContext<'_>,
    container: &ContainerSpec,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<runc::Container, StartError> {
    let cluster = ClusterId::from_home(pod.home).map_err(RuntimeError::from)?;
    let home = std::fs::canonicalize(pod.home).unwrap_or_else(|_| pod.home.to_path_buf());
    let host = runc::host_view(&cluster, &home, pod.bin_dir)?;
    let etc = etc_dir(pod.netns);
    let mut etc_files = vec![
        (etc.join("hosts"), PathBuf::from("/etc/hosts")),
        (etc.join("resolv.conf"), PathBuf::from("/etc/resolv.conf")),
    ];
    if etc.join("nsswitch.conf").exists() && Path::new("/etc/nsswitch.conf").exists() {
        etc_files.push((
            etc.join("nsswitch.conf"),
            PathBuf::from("/etc/nsswitch.conf"),
        ));
    }
    let id = runc::container_id(pod.netns, &container.name);
    let argv = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect();
    let spec = oci::container_spec(
        &host,
        &oci::Launch {
            container: &container.name,
            hostname: pod.pod_name,
            netns_path: Path::new("/run/netns").join(pod.netns),
            argv,
            env: env.to_vec(),
            security: &container.security,
            etc_files,
            volumes: &container.volumes,
            cgroup: Path::new("/ironmesh").join(&id),
        },
    )?;
    let bundle = pod.pod_dir.join("bundles").join(&container.name);
    std::fs::create_dir_all(&bundle).map_err(|e| RuntimeError::io("create", &bundle, e))?;
    let config = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec)
        .map_err(|e| RuntimeError::io("serialise", &config, std::io::Error::other(e)))?;
    std::fs::write(&config, json).map_err(|e| RuntimeError::io("write", &config, e))?;
    let logs_dir = pod.pod_dir.join("logs");
    std::fs::create_dir_all(&logs_dir).map_err(|e| RuntimeError::io("create", &logs_dir, e))?;
    let log = log_path(pod.pod_dir, &container.name);
    let output = crate::logfile::pipe_into(&log).map_err(|e| RuntimeError::io("open", &log, e))?;
    let started = runc::Container::start(&runc::state_root(&cluster), &id, &bundle, output).await?;
    record_pid(pod.pod_dir, &container.name, started.pid as i32)?;
    Ok(started)
}

fn record_pid(pod_dir: &Path, container: &str, pid: i32) -> Result<()> {
    let dir = pod_dir.join("pids");
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
    let path = pid_path(pod_dir, container);
    let start = start_time(pid).unwrap_or(0);
    std::fs::write(&path, format!("{pid} {start}\n"))
        .map_err(|e| RuntimeError::io("write", &path, e))
}

pub(crate) fn forget_pid(pod_dir: &Path, container: &str) {
    let _ = std::fs::remove_file(pid_path(pod_dir, container));
}

/// Kills (SIGKILL, whole process group) every container recorded in pid files under `pods_root`
/// (`$IRONMESH_HOME/pods`) whose pid still names the same process, and removes the pid files.
/// A restarted control plane calls this (through `Cluster::cleanup_stale`): containers are killed and
/// recreated, never adopted.
pub fn kill_recorded_under(pods_root: &Path) {
    let mut stack = vec![pods_root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "pid") && dir.ends_with("pids") {
                kill_recorded(&path);
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn kill_recorded(pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let mut parts = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        parts.next().map(str::parse::<i32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    if pid > 1 && start_time(pid) == Some(start) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "c".into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_is_taken_as_written_and_searched_in_bin_dir_then_path() {
        let (program, args) =
            resolve_launch(&spec("pstauffer/curl", &["/bin/sleep", "3650d"]), None).unwrap();
        assert_eq!(program, PathBuf::from("/bin/sleep"));
        assert_eq!(args, vec!["3650d"]);
        let (program, _) = resolve_launch(&spec("x", &["sleep", "1"]), None).unwrap();
        assert!(program.ends_with("sleep") && program.is_absolute());

        let bundled = tempfile::tempdir().unwrap();
        let fake = bundled.path().join("sleep");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (program, _) =
            resolve_launch(&spec("x", &["sleep", "1"]), Some(bundled.path())).unwrap();
        assert_eq!(program, fake, "the bundled directory wins over PATH");
    }

    #[test]
    fn httpbin_images_run_the_bundled_sample_and_unknown_images_are_errors() {
        let bundled = tempfile::tempdir().unwrap();
        let sample = bundled.path().join("ironmesh-httpbin");
        std::fs::write(&sample, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sample, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (program, args) = resolve_launch(
            &spec("docker.io/citizenstig/httpbin", &[]),
            Some(bundled.path()),
        )
        .unwrap();
        assert_eq!(program, sample);
        assert_eq!(args, vec!["--port", "8000"]);
        let error = resolve_launch(&spec("nginx:1.25", &[]), Some(bundled.path())).unwrap_err();
        assert!(
            matches!(error, RuntimeError::UnknownImage { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("no `command:`"));
        let missing = resolve_launch(&spec("x", &["no-such-binary-ironmesh"]), None).unwrap_err();
        assert!(matches!(missing, RuntimeError::ExecutableNotFound { .. }));
    }

    #[test]
    fn container_env_layers_pod_then_container() {
        let pod_env = vec![
            ("POD_NAME".to_owned(), "sleep-1".to_owned()),
            ("X".to_owned(), "pod".to_owned()),
        ];
        let mut c = spec("x", &["true"]);
        c.env = vec![("X".to_owned(), "container".to_owned())];
        let env = container_env("sleep-1", &pod_env, &c, Some(Path::new("/opt/im")));
        let last_x = env.iter().rev().find(|(k, _)| k == "X").unwrap();
        assert_eq!(last_x.1, "container");
        assert!(
            env.iter()
                .any(|(k, v)| k == "PATH" && v.starts_with("/opt/im:"))
        );
        assert!(env.iter().any(|(k, v)| k == "POD_NAME" && v == "sleep-1"));
    }
}

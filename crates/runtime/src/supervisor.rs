//! The pod supervisor: runs init containers to completion in order, then every app container, restarts
//! them with exponential backoff (1 s doubling, capped at 10 s) per the restart policy, records states
//! and events, and stops the pod (SIGTERM, grace, SIGKILL).
//!
//! One tokio task per pod plus one per app container. Containers are started by runc (detached, see
//! [`crate::runc`]); this process becomes a child subreaper so their processes stay its children.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::process::{self, ContainerSpec};
use crate::status::{ContainerState, ContainerStatus, EventType, PodPhase, PodStatus};

/// Longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A container that ran this long before exiting starts its backoff afresh.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// Kubernetes `restartPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart whatever the exit code (Deployments).
    #[default]
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

/// Everything the supervisor needs to run one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The node name shown in the `Scheduled` event.
    pub node_name: String,
    /// The pod's network namespace (from `Cluster::add_pod`).
    pub netns: String,
    /// `$IRONMESH_HOME` of the cluster (masked in containers; runc's state is named after it).
    pub home: PathBuf,
    /// `$IRONMESH_HOME/pods/<ns>/<pod>`: logs and pid files go below it.
    pub pod_dir: PathBuf,
    /// The pod environment (ARCHITECTURE.md "Pod environment"), given to every container.
    pub env: Vec<(String, String)>,
    /// Init containers, run to completion in order before the app containers.
    pub init_containers: Vec<ContainerSpec>,
    /// App containers.
    pub containers: Vec<ContainerSpec>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// `terminationGracePeriodSeconds`.
    pub termination_grace: Duration,
    /// Directory of bundled binaries (see [`crate::process::bin_dir`]).
    pub bin_dir: Option<PathBuf>,
}

struct Shared {
    status: Mutex<PodStatus>,
    changes: watch::Sender<u64>,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut PodStatus)) {
        {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut status);
            refresh_phase(&mut status);
        }
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn container(&self, init: bool, index: usize, change: impl FnOnce(&mut ContainerStatus)) {
        self.update(|status| {
            let list = if init {
                &mut status.init_containers
            } else {
                &mut status.containers
            };
            change(&mut list[index]);
        });
    }
}

fn refresh_phase(status: &mut PodStatus) {
    if status.phase == PodPhase::Failed && status.containers.iter().all(|c| c.pid.is_none()) {
        return;
    }
    let init_done = status
        .init_containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }));
    if !init_done {
        status.phase = PodPhase::Pending;
        return;
    }
    let running = status
        .containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Running { .. }));
    let all_terminated = status
        .containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Terminated { .. }));
    status.phase = if running {
        PodPhase::Running
    } else if all_terminated && !status.containers.is_empty() {
        if status
            .containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }))
        {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        }
    } else if status
        .containers
        .iter()
        .any(|c| c.restart_count > 0 || c.last_state.is_some())
    {
        PodPhase::Running
    } else {
        PodPhase::Pending
    };
}

/// A running pod. Dropping the handle tells the supervisor to stop the pod (in the background, while the
/// runtime lives); call [`PodHandle::stop`] to wait for it.
pub struct PodHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    changes: watch::Receiver<u64>,
}

impl PodHandle {
    /// Starts supervising `spec`. Must be called inside a tokio runtime. Returns at once; progress shows
    /// in [`PodHandle::status`].
    pub fn start(spec: PodSpec) -> PodHandle {
        crate::runc::become_subreaper();
        let status = PodStatus {
            phase: PodPhase::Pending,
            init_containers: spec
                .init_containers
                .iter()
                .map(|c| ContainerStatus::new(&c.name, "PodInitializing"))
                .collect(),
            containers: spec
                .containers
                .iter()
                .map(|c| {
                    let reason = if spec.init_containers.is_empty() {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    };
                    ContainerStatus::new(&c.name, reason)
                })
                .collect(),
            events: Vec::new(),
        };
        let (changes_tx, changes_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            changes: changes_tx,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_pod(Arc::new(spec), shared.clone(), stop_rx));
        PodHandle {
            shared,
            stop: stop_tx,
            task: Some(task),
            changes: changes_rx,
        }
    }

    /// The pod's current status.
    pub fn status(&self) -> PodStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver that changes whenever the status does (its value is a generation counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Stops every container (SIGTERM, the grace period, then SIGKILL), waits for them, and returns the
    /// final status. The network namespace is the caller's (`Cluster::remove_pod`).
    pub async fn stop(mut self) -> PodStatus {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.status()
    }
}

impl Drop for PodHandle {
    fn drop(&mut self) {
        // No supervisor may outlive its handle: it would restart containers nobody can stop.
        let _ = self.stop.send(true);
    }
}

async fn run_pod(spec: Arc<PodSpec>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    shared.update(|s| {
        s.push_event(
            EventType::Normal,
            "Scheduled",
            format!(
                "Successfully assigned {}/{} to {}",
                spec.namespace, spec.name, spec.node_name
            ),
        )
    });
    for index in 0..spec.init_containers.len() {
        if !run_init_container(&spec, &shared, index, &mut stop).await {
            return;
        }
    }
    let mut tasks = Vec::new();
    for index in 0..spec.containers.len() {
        tasks.push(tokio::spawn(supervise_container(
            spec.clone(),
            shared.clone(),
            index,
            stop.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Runs one init container until it succeeds (retrying with backoff unless the policy is `Never`).
/// Returns false when the pod must not proceed (stopped, or failed for good).
async fn run_init_container(
    spec: &PodSpec,
    shared: &Shared,
    index: usize,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let container = &spec.init_containers[index];
    let mut backoff = Backoff::default();
    loop {
        match run_once(spec, shared, true, index, stop).await {
            RunOutcome::Exited { code: 0, .. } => return true,
            RunOutcome::Stopped | RunOutcome::Unlaunchable => return false,
            RunOutcome::Exited { .. } | RunOutcome::SpawnFailed => {
                if spec.restart_policy == RestartPolicy::Never {
                    shared.update(|s| s.phase = PodPhase::Failed);
                    return false;
                }
                let delay = backoff.next_delay(Duration::ZERO);
                if !wait_backoff(spec, shared, true, index, &container.name, delay, stop).await {
                    return false;
                }
            }
        }
    }
}

async fn supervise_container(
    spec: Arc<PodSpec>,
    shared: Arc<Shared>,
    index: usize,
    mut stop: watch::Receiver<bool>,
) {
    let name = spec.containers[index].name.clone();
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let outcome = run_once(&spec, &shared, false, index, &mut stop).await;
        let restart = match outcome {
            RunOutcome::Stopped | RunOutcome::Unlaunchable => return,
            RunOutcome::SpawnFailed => spec.restart_policy != RestartPolicy::Never,
            RunOutcome::Exited { code, .. } => match spec.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => code != 0,
                RestartPolicy::Never => false,
            },
        };
        if !restart {
            return;
        }
        let delay = backoff.next_delay(started.elapsed());
        if !wait_backoff(&spec, &shared, false, index, &name, delay, &mut stop).await {
            return;
        }
        shared.container(false, index, |c| c.restart_count += 1);
    }
}

/// Waits out a restart backoff as `CrashLoopBackOff`; false if the pod was stopped meanwhile.
async fn wait_backoff(
    spec: &PodSpec,
    shared: &Shared,
    init: bool,
    index: usize,
    name: &str,
    delay: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let message = format!(
        "back-off {}s restarting failed container={name} pod={}",
        delay.as_secs(),
        spec.name
    );
    shared.container(init, index, |c| {
        let previous = std::mem::replace(
            &mut c.state,
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: message.clone(),
            },
        );
        if matches!(previous, ContainerState::Terminated { .. }) {
            c.last_state = Some(previous);
        }
    });
    shared.update(|s| {
        s.push_event(
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container".into(),
        )
    });
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped(stop) => false,
    }
}

#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= BACKOFF_RESET_AFTER {
            self.failures = 0;
        }
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(4))
            .min(MAX_BACKOFF);
        self.failures += 1;
        delay
    }
}

enum RunOutcome {
    Exited {
        code: i32,
    },
    Stopped,
    /// The spec cannot run (unknown image, missing executable): retrying will not help.
    Unlaunchable,
    SpawnFailed,
}

/// Launches one container and waits for it to exit or for the pod to stop.
async fn run_once(
    spec: &PodSpec,
    shared: &Shared,
    init: bool,
    index: usize,
    stop: &mut watch::Receiver<bool>,
) -> RunOutcome {
    if *stop.borrow() {
        return RunOutcome::Stopped;
    }
    let container = if init {
        &spec.init_containers[index]
    } else {
        &spec.containers[index]
    };
    let bundled = spec.bin_dir.as_deref();
    let (program, args) = match process::resolve_launch(container, bundled) {
        Ok(launch) => launch,
        Err(error) => {
            let message = error.to_string();
            shared.container(init, index, |c| {
                c.state = ContainerState::Waiting {
                    reason: "ErrImagePull".into(),
                    message: message.clone(),
                };
            });
            shared.update(|s| s.push_event(EventType::Warning, "Failed", message));
            let _ = stopped(stop).await;
            return RunOutcome::Unlaunchable;
        }
    };
    let first_run = {
        let status = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        let list = if init {
            &status.init_containers
        } else {
            &status.containers
        };
        list[index].restart_count == 0 && list[index].last_state.is_none()
    };
    if first_run {
        shared.update(|s| {
            s.push_event(
                EventType::Normal,
                "Pulled",
                format!(
                    "Container image \"{}\" already present on machine",
                    container.image
                ),
            )
        });
    }
    let env = process::container_env(&spec.name, &spec.env, container, bundled);
    let pod = process::PodContext {
        home: &spec.home,
        netns: &spec.netns,
        pod_name: &spec.name,
        pod_dir: &spec.pod_dir,
        bin_dir: bundled,
    };
    let running = match process::start_container(&pod, container, &program, &args, &env).await {
        Ok(running) => running,
        Err(error) => {
            let unlaunchable = matches!(error, process::StartError::Config(_));
            let message = error.to_string();
            let reason = if unlaunchable {
                "CreateContainerConfigError"
            } else {
                "CreateContainerError"
            };
            shared.container(init, index, |c| {
                c.state = ContainerState::Waiting {
                    reason: reason.into(),
                    message: message.clone(),
                };
            });
            shared.update(|s| s.push_event(EventType::Warning, "Failed", message));
            if unlaunchable {
                let _ = stopped(stop).await;
                return RunOutcome::Unlaunchable;
            }
            return RunOutcome::SpawnFailed;
        }
    };
    let started_at = SystemTime::now();
    let pid = Some(running.pid);
    shared.update(|s| {
        s.push_event(
            EventType::Normal,
            "Created",
            format!("Created container {}", container.name),
        )
    });
    shared.container(init, index, |c| {
        c.state = ContainerState::Running { started_at };
        c.ready = !init;
        c.pid = pid;
    });
    shared.update(|s| {
        s.push_event(
            EventType::Normal,
            "Started",
            format!("Started container {}", container.name),
        )
    });
    let ((code, signal), stopped) = tokio::select! {
        exit = running.wait() => {
            running.remove().await;
            (exit, false)
        }
        _ = stopped(stop) => {
            shared.update(|s| s.push_event(EventType::Normal, "Killing", format!("Stopping container {}", container.name)));
            (running.terminate(spec.termination_grace).await, true)
        }
    };
    process::forget_pid(&spec.pod_dir, &container.name);
    let reason = if code == 0 { "Completed" } else { "Error" };
    shared.container(init, index, |c| {
        c.state = ContainerState::Terminated {
            exit_code: code,
            signal,
            reason: reason.into(),
            started_at,
            finished_at: SystemTime::now(),
        };
        c.ready = false;
        c.pid = None;
    });
    if stopped {
        RunOutcome::Stopped
    } else {
        RunOutcome::Exited { code }
    }
}

/// Resolves once the pod is told to stop (the watch guard is dropped before returning, keeping the
/// task `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Exit code as a shell reports it: the code, or 128 + signal number.
pub(crate) fn exit_code(status: Option<std::process::ExitStatus>) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(signal)) => (128 + signal, Some(signal)),
            (None, None) => (255, None),
        },
        None => (255, None),
    }
}

/// `$IRONMESH_HOME/pods/<ns>/<pod>`.
pub fn pod_dir(home: &Path, namespace: &str, name: &str) -> PathBuf {
    ironmesh_home::Home::new(home).pod_dir(namespace, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.next_delay(Duration::ZERO).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff.next_delay(BACKOFF_RESET_AFTER).as_secs(), 1);
    }
}

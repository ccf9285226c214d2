//! What a pod supervisor reports: container states, restart counts, pod phase and events, shaped like
//! Kubernetes' `PodStatus` so `get pods` and `describe pod` can print them directly.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A container's state, as `kubectl describe` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Not running: `reason` is `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`, `ErrImagePull`,
    /// `CreateContainerError`.
    Waiting { reason: String, message: String },
    /// Running since `started_at`.
    Running { started_at: SystemTime },
    /// Exited: `reason` is `Completed` (exit 0), `Error`, or `OOMKilled`-like names for signals.
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        started_at: SystemTime,
        finished_at: SystemTime,
    },
}

/// One container's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// The previous run's terminated state, after a restart.
    pub last_state: Option<ContainerState>,
    /// Times the container was restarted.
    pub restart_count: u32,
    /// Running (the runtime has no probes; readiness is "running").
    pub ready: bool,
    /// The current process id while running.
    pub pid: Option<u32>,
}

impl ContainerStatus {
    pub(crate) fn new(name: &str, reason: &str) -> Self {
        ContainerStatus {
            name: name.to_owned(),
            state: ContainerState::Waiting {
                reason: reason.to_owned(),
                message: String::new(),
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            pid: None,
        }
    }
}

/// Kubernetes pod phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Init containers running, or containers not started yet.
    Pending,
    /// Containers started.
    Running,
    /// All containers exited 0 and will not restart.
    Succeeded,
    /// A container failed and will not restart (or an init container failed under `Never`).
    Failed,
}

/// `Normal` or `Warning`, as Kubernetes events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something the user should look at.
    Warning,
}

/// One event for `describe pod` (`Scheduled`, `Pulled`, `Created`, `Started`, `BackOff`, `Killing`,
/// `Failed`). Repeats of the latest event bump `count` instead of adding a line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEvent {
    /// Normal or Warning.
    pub event_type: EventType,
    /// Short CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// First occurrence.
    pub first_seen: SystemTime,
    /// Latest occurrence.
    pub last_seen: SystemTime,
    /// Occurrences.
    pub count: u32,
}

/// A snapshot of a supervised pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    /// Phase.
    pub phase: PodPhase,
    /// Init containers, in order.
    pub init_containers: Vec<ContainerStatus>,
    /// App containers, in spec order.
    pub containers: Vec<ContainerStatus>,
    /// Events, oldest first.
    pub events: Vec<PodEvent>,
}

impl PodStatus {
    pub(crate) fn push_event(&mut self, event_type: EventType, reason: &str, message: String) {
        let now = SystemTime::now();
        if let Some(last) = self
            .events
            .iter_mut()
            .rev()
            .find(|e| e.reason == reason && e.message == message)
        {
            last.count += 1;
            last.last_seen = now;
            return;
        }
        self.events.push(PodEvent {
            event_type,
            reason: reason.to_owned(),
            message,
            first_seen: now,
            last_seen: now,
            count: 1,
        });
    }

    /// `READY` column: ready containers / containers.
    pub fn ready_count(&self) -> (usize, usize) {
        (
            self.containers.iter().filter(|c| c.ready).count(),
            self.containers.len(),
        )
    }

    /// Sum of restarts of the app containers (`RESTARTS` column).
    pub fn restarts(&self) -> u32 {
        self.containers.iter().map(|c| c.restart_count).sum()
    }

    /// kubectl's `STATUS` column: a waiting/terminated container's reason wins over the phase.
    pub fn display_status(&self) -> String {
        let total = self.init_containers.len();
        for (done, container) in self.init_containers.iter().enumerate() {
            match &container.state {
                ContainerState::Waiting { reason, .. } if reason != "PodInitializing" => {
                    return format!("Init:{reason}");
                }
                ContainerState::Running { .. } => return format!("Init:{done}/{total}"),
                ContainerState::Terminated { exit_code, .. } if *exit_code != 0 => {
                    return "Init:Error".to_owned();
                }
                _ => {}
            }
        }
        for container in &self.containers {
            match &container.state {
                ContainerState::Waiting { reason, .. } => return reason.clone(),
                ContainerState::Terminated { reason, .. } if self.phase == PodPhase::Running => {
                    return reason.clone();
                }
                _ => {}
            }
        }
        format!("{:?}", self.phase)
    }
}

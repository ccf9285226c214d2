//! The kubelet of the local runtime: makes the stored Pods run. Each Pod gets an address, a network
//! namespace, a credential and a supervisor for its containers; its status (phase, IP, container states,
//! restarts, events) is written back to the store as it changes. Pods that leave the store are stopped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use ironmesh_api::Object;
use ironmesh_identity::{CredentialAuthority, PodClaims, write_token_file};
use ironmesh_runtime::{
    Cluster, ContainerSpec, ContainerState, ContainerStatus, Ipam, PodHandle, PodSpec, PodStatus,
    RestartPolicy, pod_dir,
};
use ironmesh_store::{ObjectKey, Store};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::objects::{ContainerView, PodView};
use crate::options::MeshOptions;

/// How long a pod credential is valid; the kubelet rewrites it well before (like a projected token).
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The node every pod is scheduled on.
pub const NODE_NAME: &str = "ironmesh-node";

struct RunningPod {
    uid: String,
    /// Shared with the status writer, which is stopped before the pod is.
    handle: Arc<PodHandle>,
    status_writer: JoinHandle<()>,
}

/// Runs the stored Pods.
pub struct Kubelet {
    home: PathBuf,
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    credentials: Arc<CredentialAuthority>,
    mesh: MeshOptions,
    ipam: Ipam,
    running: HashMap<String, RunningPod>,
}

fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn container_state(state: &ContainerState) -> Value {
    match state {
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        ContainerState::Running { started_at } => {
            json!({"running": {"startedAt": rfc3339(*started_at)}})
        }
        ContainerState::Terminated {
            exit_code,
            signal,
            reason,
            started_at,
            finished_at,
        } => json!({
            "terminated": {
                "exitCode": exit_code,
                "signal": signal,
                "reason": reason,
                "startedAt": rfc3339(*started_at),
                "finishedAt": rfc3339(*finished_at),
            }
        }),
    }
}

fn container_statuses(statuses: &[ContainerStatus], images: &[ContainerView]) -> Value {
    Value::Array(
        statuses
            .iter()
            .map(|c| {
                let image = images.iter().find(|i| i.name == c.name).map(|i| i.image.clone());
                json!({
                    "name": c.name,
                    "ready": c.ready,
                    "restartCount": c.restart_count,
                    "state": container_state(&c.state),
                    "lastState": c.last_state.as_ref().map(container_state).unwrap_or_else(|| json!({})),
                    "image": image.unwrap_or_default(),
                    "started": matches!(c.state, ContainerState::Running { .. }),
                })
            })
            .collect(),
    )
}

/// The Kubernetes-shaped `status` of a pod (`events` is ironmesh's addition, read by `describe pod`).
fn pod_status_json(status: &PodStatus, pod: &PodView, ip: Ipv4Addr, started: SystemTime) -> Value {
    let (ready, total) = status.ready_count();
    let all_ready = total > 0 && ready == total;
    let condition =
        |kind: &str, ok: bool| json!({"type": kind, "status": if ok { "True" } else { "False" }});
    json!({
        "phase": format!("{:?}", status.phase),
        "reason": status.display_status(),
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "hostIP": ironmesh_runtime::GATEWAY.to_string(),
        "startTime": rfc3339(started),
        "conditions": [
            condition("Initialized", status.init_containers.iter().all(|c| matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }))),
            condition("Ready", all_ready),
            condition("ContainersReady", all_ready),
            condition("PodScheduled", true),
        ],
        "initContainerStatuses": container_statuses(&status.init_containers, &pod.init_containers),
        "containerStatuses": container_statuses(&status.containers, &pod.containers),
        "events": status.events.iter().map(|e| json!({
            "type": format!("{:?}", e.event_type),
            "reason": e.reason,
            "message": e.message,
            "count": e.count,
            "firstTimestamp": rfc3339(e.first_seen),
            "lastTimestamp": rfc3339(e.last_seen),
        })).collect::<Vec<_>>(),
    })
}

fn container_spec(container: &ContainerView) -> ContainerSpec {
    ContainerSpec {
        name: container.name.clone(),
        image: container.image.clone(),
        command: container.command.clone(),
        args: container.args.clone(),
        env: container.env.clone(),
    }
}

impl Kubelet {
    pub fn new(
        home: &Path,
        cluster: Arc<Cluster>,
        store: Arc<Store>,
        credentials: Arc<CredentialAuthority>,
        mesh: MeshOptions,
    ) -> Kubelet {
        Kubelet {
            home: home.to_path_buf(),
            cluster,
            store,
            credentials,
            mesh,
            ipam: Ipam::pods(),
            running: HashMap::new(),
        }
    }

    /// Starts the pods in `objects` that do not run yet and stops those that are gone.
    pub async fn reconcile(&mut self, objects: &[Object]) {
        let pods: HashMap<String, PodView> = objects
            .iter()
            .filter(|o| o.kind == "Pod")
            .map(|o| {
                let pod = PodView::of(o);
                (pod.key(), pod)
            })
            .collect();
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(key, running)| pods.get(*key).is_none_or(|p| p.uid != running.uid))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            self.stop(&key).await;
        }
        for (key, pod) in pods {
            if !self.running.contains_key(&key)
                && let Err(error) = self.start(&pod).await
            {
                tracing::warn!(pod = %key, %error, "cannot start the pod; it will be retried");
            }
        }
    }

    fn write_token(&self, pod: &PodView) -> std::io::Result<PathBuf> {
        let dir = pod_dir(&self.home, &pod.namespace, &pod.name);
        std::fs::create_dir_all(dir.join("proxy"))?;
        let token = self.credentials.issue(
            &PodClaims {
                namespace: pod.namespace.clone(),
                service_account: pod.service_account.clone(),
                pod: pod.name.clone(),
                pod_uid: pod.uid.clone(),
            },
            TOKEN_TTL,
        );
        let path = dir.join("token");
        write_token_file(&path, &token)?;
        Ok(path)
    }

    async fn start(&mut self, pod: &PodView) -> Result<(), String> {
        let key = pod.key();
        let ip = match pod.pod_ip {
            Some(ip) if self.ipam.reserve(ip, &key).is_ok() => ip,
            _ => self.ipam.allocate(&key).map_err(|e| e.to_string())?,
        };
        let cluster = self.cluster.clone();
        let (namespace, name) = (pod.namespace.clone(), pod.name.clone());
        let network = tokio::task::spawn_blocking(move || cluster.add_pod(&namespace, &name, ip))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                self.ipam.release(&key);
                e.to_string()
            })?;
        let token_file = self
            .write_token(pod)
            .map_err(|e| format!("cannot write the pod token: {e}"))?;
        let dir = pod_dir(&self.home, &pod.namespace, &pod.name);
        let env = vec![
            ("POD_NAME".to_owned(), pod.name.clone()),
            ("POD_NAMESPACE".to_owned(), pod.namespace.clone()),
            ("SERVICE_ACCOUNT".to_owned(), pod.service_account.clone()),
            ("POD_IP".to_owned(), ip.to_string()),
            (
                "IRONMESH_CONTROL_PLANE".to_owned(),
                format!("unix://{}", self.home.join("run/xds.sock").display()),
            ),
            (
                "IRONMESH_TOKEN_FILE".to_owned(),
                token_file.display().to_string(),
            ),
            (
                "IRONMESH_STATE_DIR".to_owned(),
                dir.join("proxy").display().to_string(),
            ),
            (
                "IRONMESH_TRUST_DOMAIN".to_owned(),
                self.mesh.trust_domain.clone(),
            ),
            (
                "IRONMESH_CERT_TTL_SECONDS".to_owned(),
                self.mesh.workload_cert_ttl_seconds.to_string(),
            ),
        ];
        let handle = PodHandle::start(PodSpec {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node_name: NODE_NAME.to_owned(),
            netns: network.netns,
            pod_dir: dir,
            env,
            init_containers: pod.init_containers.iter().map(container_spec).collect(),
            containers: pod.containers.iter().map(container_spec).collect(),
            restart_policy: RestartPolicy::Always,
            termination_grace: Duration::from_secs(pod.termination_grace_seconds),
            bin_dir: ironmesh_runtime::bin_dir(),
        });
        let handle = Arc::new(handle);
        let status_writer = tokio::spawn(write_statuses(
            self.store.clone(),
            handle.clone(),
            pod.clone(),
            ip,
        ));
        tracing::info!(pod = %key, %ip, "pod started");
        self.running.insert(
            key,
            RunningPod {
                uid: pod.uid.clone(),
                handle,
                status_writer,
            },
        );
        Ok(())
    }

    async fn stop(&mut self, key: &str) {
        let Some(running) = self.running.remove(key) else {
            return;
        };
        teardown_pod(running, self.cluster.clone(), self.home.clone(), key).await;
        self.ipam.release(key);
    }

    /// Rewrites every running pod's credential (they expire after a day).
    pub fn refresh_tokens(&self, objects: &[Object]) {
        for pod in objects.iter().filter(|o| o.kind == "Pod").map(PodView::of) {
            if self.running.contains_key(&pod.key())
                && let Err(error) = self.write_token(&pod)
            {
                tracing::warn!(pod = %pod.key(), %error, "cannot refresh the pod token");
            }
        }
    }

    /// Stops every pod at once (for `ironmesh down`): each gets its grace period, in parallel.
    pub async fn stop_all(&mut self) {
        let running: Vec<(String, RunningPod)> = self.running.drain().collect();
        let stops = running
            .iter()
            .map(|(key, _)| key.clone())
            .collect::<Vec<_>>();
        futures::future::join_all(running.into_iter().map(|(key, running)| {
            let (cluster, home) = (self.cluster.clone(), self.home.clone());
            async move { teardown_pod(running, cluster, home, &key).await }
        }))
        .await;
        for key in stops {
            self.ipam.release(&key);
        }
    }
}

/// Stops the status writer, then the containers (SIGTERM, grace, SIGKILL), then removes the pod's
/// network namespace and directory.
async fn teardown_pod(running: RunningPod, cluster: Arc<Cluster>, home: PathBuf, key: &str) {
    running.status_writer.abort();
    let _ = running.status_writer.await;
    match Arc::try_unwrap(running.handle) {
        Ok(handle) => {
            handle.stop().await;
        }
        // Unreachable once the writer is gone; dropping the handle still stops the pod.
        Err(handle) => drop(handle),
    }
    let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
    let (ns, n) = (namespace.to_owned(), name.to_owned());
    let _ = tokio::task::spawn_blocking(move || cluster.remove_pod(&ns, &n)).await;
    let _ = std::fs::remove_dir_all(pod_dir(&home, namespace, name));
    tracing::info!(pod = %key, "pod stopped");
}

/// Mirrors the supervisor's status into the store whenever it changes (coalescing bursts).
async fn write_statuses(store: Arc<Store>, handle: Arc<PodHandle>, pod: PodView, ip: Ipv4Addr) {
    let started = SystemTime::now();
    let key = ObjectKey::new("pods", Some(&pod.namespace), &pod.name);
    let mut changes = handle.subscribe();
    let mut last: Option<Value> = None;
    loop {
        let status = pod_status_json(&handle.status(), &pod, ip, started);
        if last.as_ref() != Some(&status) {
            let store = store.clone();
            let key = key.clone();
            let value = status.clone();
            let written =
                tokio::task::spawn_blocking(move || store.update_status(&key, value)).await;
            match written {
                Ok(Ok(_)) => last = Some(status),
                // The pod was deleted: the kubelet stops this writer soon.
                Ok(Err(error)) => tracing::debug!(pod = %pod.key(), %error, "status not written"),
                Err(_) => return,
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The kubelet of the local runtime: makes the stored Pods run. Each Pod gets an address, a network
//! namespace, a credential and a supervisor for its containers; its status (phase, IP, container states,
//! restarts, events) is written back to the store as it changes. Pods that leave the store are stopped.
//!
//! Containers are OCI containers (see `ironmesh_runtime`): this module turns the manifest's
//! `securityContext` and `volumes` into what the runtime mounts and enforces. The pod's credential, the
//! proxy's state directory and the control plane's socket go into the `ironmesh-proxy` container only,
//! as Istio mounts `istio-token` into `istio-proxy` only (docs/SECURITY.md).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use ironmesh_api::Object;
use ironmesh_identity::{CA_AUDIENCE, CredentialAuthority, PodClaims, write_token_file};
use ironmesh_runtime::{
    Cluster, ContainerSpec, ContainerState, ContainerStatus, Ipam, PodHandle, PodSpec, PodStatus,
    RestartPolicy, SecurityContext, VolumeMount, pod_dir,
};
use ironmesh_store::{ObjectKey, Store};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::objects::{ContainerView, PROXY_CONTAINER, PodView};
use crate::options::MeshOptions;

/// How long a pod credential is valid; the kubelet rewrites it well before (like a projected token).
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The node every pod is scheduled on.
pub const NODE_NAME: &str = "ironmesh-node";
/// The proxy's group (Istio's 1337): the only group allowed on the control plane's socket.
pub const PROXY_GID: u32 = 1337;
/// Where the proxy container finds its credential (Istio's `istio-token` path, under `/run`).
pub const PROXY_TOKEN_DIR: &str = "/run/secrets/tokens";
/// The credential's file name in [`PROXY_TOKEN_DIR`] and in the pod directory's `tokens/`.
pub const PROXY_TOKEN_FILE: &str = "istio-token";
/// The proxy container's state directory.
pub const PROXY_STATE_DIR: &str = "/run/ironmesh/proxy";
/// The control plane's socket as the proxy container sees it.
pub const PROXY_XDS_SOCKET: &str = "/run/ironmesh/xds.sock";
/// The volumes `ironmesh kube-inject` gives the proxy for Kubernetes (its projected `istio-ca` token
/// and the namespace's `istio-ca-root-cert`). Here the kubelet gives the proxy its own credential and
/// socket instead, so they are neither made nor mounted.
const KUBERNETES_MESH_VOLUMES: [&str; 2] = ["istio-token", "istiod-ca-cert"];
/// What the proxy's environment names for Kubernetes and the kubelet sets for the local runtime:
/// the kubelet's values win over the manifest's.
const CONTROL_PLANE_ENV: [&str; 3] = [
    "IRONMESH_CONTROL_PLANE",
    "IRONMESH_CONTROL_PLANE_ROOT",
    "IRONMESH_TOKEN_FILE",
];

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

fn id(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn names(value: &Value, pointer: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A container's effective `securityContext`: the pod's `runAsUser`, `runAsGroup`, `runAsNonRoot` and
/// `seccompProfile` under the container's own (Kubernetes' `DetermineEffectiveSecurityContext`,
/// `pkg/securitycontext/util.go`).
pub fn security_context(pod: &Value, container: &Value) -> SecurityContext {
    let either = |field: &str| {
        container
            .get(field)
            .filter(|v| !v.is_null())
            .or_else(|| pod.get(field))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let seccomp = either("seccompProfile");
    SecurityContext {
        run_as_user: id(&either("runAsUser")),
        run_as_group: id(&either("runAsGroup")),
        run_as_non_root: either("runAsNonRoot").as_bool(),
        capabilities_add: names(container, "/capabilities/add"),
        capabilities_drop: names(container, "/capabilities/drop"),
        privileged: container
            .get("privileged")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        read_only_root_filesystem: container
            .get("readOnlyRootFilesystem")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        allow_privilege_escalation: container
            .get("allowPrivilegeEscalation")
            .and_then(Value::as_bool),
        seccomp_unconfined: seccomp.get("type").and_then(Value::as_str) == Some("Unconfined"),
    }
}

/// The runtime's view of one container: its security context, and its volumes resolved to host paths
/// (`volumes`: volume name → host directory).
/// The value of a downward-API field of `pod` (the fields Istio's injection uses); `None` for others.
fn field_value(pod: &PodView, ip: Ipv4Addr, path: &str) -> Option<String> {
    Some(match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        "spec.nodeName" => NODE_NAME.to_owned(),
        "status.podIP" => ip.to_string(),
        _ => return None,
    })
}

fn container_spec(
    container: &ContainerView,
    pod: &PodView,
    ip: Ipv4Addr,
    volumes: &HashMap<String, PathBuf>,
) -> ContainerSpec {
    let mut env = container.env.clone();
    for (name, path) in &container.field_env {
        match field_value(pod, ip, path) {
            Some(value) => env.push((name.clone(), value)),
            None => {
                tracing::warn!(pod = %pod.key(), container = %container.name, variable = %name, field = %path,
                "downward-API field not supported by the local runtime; variable not set")
            }
        }
    }
    let mounts = container
        .volume_mounts
        .iter()
        .filter(|(name, _, _)| {
            !(container.name == PROXY_CONTAINER && KUBERNETES_MESH_VOLUMES.contains(&name.as_str()))
        })
        .filter_map(|(name, path, read_only)| {
            let Some(source) = volumes.get(name) else {
                tracing::warn!(pod = %pod.key(), container = %container.name, volume = %name,
                    "volumeMount of an unknown or unsupported volume (only emptyDir and projected serviceAccountToken); not mounted");
                return None;
            };
            Some(VolumeMount {
                source: source.clone(),
                destination: PathBuf::from(path),
                read_only: *read_only,
            })
        })
        .collect();
    ContainerSpec {
        name: container.name.clone(),
        image: container.image.clone(),
        command: container.command.clone(),
        args: container.args.clone(),
        env,
        security: security_context(&pod.security, &container.security),
        volumes: mounts,
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
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

    /// The uid and gid the pod's proxy container runs as (its credential is given to them).
    fn proxy_ids(pod: &PodView) -> Option<(u32, u32)> {
        let proxy = pod.containers.iter().find(|c| c.name == PROXY_CONTAINER)?;
        let security = security_context(&pod.security, &proxy.security);
        Some((
            security.run_as_user.unwrap_or(0),
            security.run_as_group.unwrap_or(0),
        ))
    }

    fn claims(pod: &PodView) -> PodClaims {
        PodClaims {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
        }
    }

    /// Writes the pod's credential (`tokens/istio-token`, readable by the proxy's user only) and
    /// prepares the proxy's state directory.
    fn write_token(&self, pod: &PodView) -> std::io::Result<PathBuf> {
        let dir = pod_dir(&self.home, &pod.namespace, &pod.name);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(dir.join("proxy"))?;
        std::fs::create_dir_all(&tokens)?;
        let token = self.credentials.issue(&Self::claims(pod), TOKEN_TTL);
        let path = tokens.join(PROXY_TOKEN_FILE);
        write_token_file(&path, &token)?;
        if let Some((uid, gid)) = Self::proxy_ids(pod) {
            for owned in [&tokens, &path, &dir.join("proxy")] {
                chown(owned, uid, gid)?;
            }
        }
        Ok(path)
    }

    /// Creates the pod's volumes: `emptyDir` (a directory of the pod) and `projected`
    /// `serviceAccountToken` sources (a token of the pod's service account, audience as asked, default
    /// the mesh CA's). Other volume types are not supported by the local runtime. Returns name → host
    /// directory.
    fn write_volumes(&self, pod: &PodView) -> std::io::Result<HashMap<String, PathBuf>> {
        use std::os::unix::fs::PermissionsExt;
        let root = pod_dir(&self.home, &pod.namespace, &pod.name).join("volumes");
        let mut volumes = HashMap::new();
        for volume in &pod.volumes {
            let Some(name) = volume.get("name").and_then(Value::as_str) else {
                continue;
            };
            if KUBERNETES_MESH_VOLUMES.contains(&name) {
                continue;
            }
            let dir = root.join(name);
            if volume.get("emptyDir").is_some() {
                std::fs::create_dir_all(&dir)?;
                // Kubernetes' emptyDir is world-writable, so any container user can use it.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
                volumes.insert(name.to_owned(), dir);
            } else if let Some(sources) = volume
                .pointer("/projected/sources")
                .and_then(Value::as_array)
            {
                std::fs::create_dir_all(&dir)?;
                for source in sources {
                    let Some(token) = source.get("serviceAccountToken") else {
                        continue;
                    };
                    let file = token.get("path").and_then(Value::as_str).unwrap_or("token");
                    if file.contains('/') || file.starts_with('.') {
                        tracing::warn!(pod = %pod.key(), volume = %name, path = %file, "projected token path must be a plain file name; skipped");
                        continue;
                    }
                    let audience = token
                        .get("audience")
                        .and_then(Value::as_str)
                        .unwrap_or(CA_AUDIENCE);
                    let issued = self.credentials.issue_at(
                        &Self::claims(pod),
                        audience,
                        SystemTime::now(),
                        TOKEN_TTL,
                    );
                    let path = dir.join(file);
                    write_token_file(&path, &issued)?;
                    // Kubernetes' projected volumes default to 0644: readable by the container's user.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
                }
                volumes.insert(name.to_owned(), dir);
            } else {
                tracing::warn!(pod = %pod.key(), volume = %name, "volume type not supported by the local runtime (emptyDir and projected serviceAccountToken are); not mounted");
            }
        }
        Ok(volumes)
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
        self.write_token(pod)
            .map_err(|e| format!("cannot write the pod token: {e}"))?;
        let volumes = self
            .write_volumes(pod)
            .map_err(|e| format!("cannot create the pod's volumes: {e}"))?;
        let dir = pod_dir(&self.home, &pod.namespace, &pod.name);
        let env = vec![
            ("POD_NAME".to_owned(), pod.name.clone()),
            ("POD_NAMESPACE".to_owned(), pod.namespace.clone()),
            ("SERVICE_ACCOUNT".to_owned(), pod.service_account.clone()),
            ("POD_IP".to_owned(), ip.to_string()),
        ];
        let containers = pod
            .containers
            .iter()
            .map(|c| {
                let mut spec = container_spec(c, pod, ip, &volumes);
                if c.name == PROXY_CONTAINER {
                    self.give_proxy_its_files(&mut spec, &dir);
                }
                spec
            })
            .collect();
        let handle = PodHandle::start(PodSpec {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node_name: NODE_NAME.to_owned(),
            netns: network.netns,
            home: self.home.clone(),
            pod_dir: dir,
            env,
            init_containers: pod
                .init_containers
                .iter()
                .map(|c| container_spec(c, pod, ip, &volumes))
                .collect(),
            containers,
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

    /// The proxy's credential, state directory and the control plane's socket, mounted into the proxy
    /// container only, and the environment that points it at them.
    fn give_proxy_its_files(&self, spec: &mut ContainerSpec, dir: &Path) {
        spec.volumes.extend([
            VolumeMount {
                source: dir.join("tokens"),
                destination: PathBuf::from(PROXY_TOKEN_DIR),
                read_only: true,
            },
            VolumeMount {
                source: dir.join("proxy"),
                destination: PathBuf::from(PROXY_STATE_DIR),
                read_only: false,
            },
            VolumeMount {
                source: ironmesh_home::Home::new(&self.home).xds_socket(),
                destination: PathBuf::from(PROXY_XDS_SOCKET),
                read_only: false,
            },
        ]);
        let env = [
            (
                "IRONMESH_CONTROL_PLANE",
                format!("unix://{PROXY_XDS_SOCKET}"),
            ),
            (
                "IRONMESH_TOKEN_FILE",
                format!("{PROXY_TOKEN_DIR}/{PROXY_TOKEN_FILE}"),
            ),
            ("IRONMESH_STATE_DIR", PROXY_STATE_DIR.to_owned()),
            ("IRONMESH_TRUST_DOMAIN", self.mesh.trust_domain.clone()),
            (
                "IRONMESH_CERT_TTL_SECONDS",
                self.mesh.workload_cert_ttl_seconds.to_string(),
            ),
        ];
        // Before the manifest's own env, which wins (as the pod environment does), but for the control
        // plane's address, root and token: the manifest's name the Kubernetes control plane.
        let own: Vec<(String, String)> = std::mem::take(&mut spec.env)
            .into_iter()
            .filter(|(name, _)| !CONTROL_PLANE_ENV.contains(&name.as_str()))
            .collect();
        spec.env = env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(own)
            .collect();
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
                && let Err(error) = self
                    .write_token(&pod)
                    .and_then(|_| self.write_volumes(&pod))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_context_merges_pod_under_container() {
        let table = [
            (
                "nothing",
                json!(null),
                json!(null),
                SecurityContext::default(),
            ),
            (
                "pod user, container group",
                json!({"runAsUser": 1000, "runAsNonRoot": true}),
                json!({"runAsGroup": 3000}),
                SecurityContext {
                    run_as_user: Some(1000),
                    run_as_group: Some(3000),
                    run_as_non_root: Some(true),
                    ..Default::default()
                },
            ),
            (
                "container wins",
                json!({"runAsUser": 1000, "seccompProfile": {"type": "Unconfined"}}),
                json!({"runAsUser": 1337, "seccompProfile": {"type": "RuntimeDefault"}}),
                SecurityContext {
                    run_as_user: Some(1337),
                    ..Default::default()
                },
            ),
            (
                "the injected init container",
                json!(null),
                json!({"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}, "runAsUser": 0,
                       "allowPrivilegeEscalation": false, "privileged": false, "readOnlyRootFilesystem": false}),
                SecurityContext {
                    run_as_user: Some(0),
                    capabilities_add: vec!["NET_ADMIN".into(), "NET_RAW".into()],
                    capabilities_drop: vec!["ALL".into()],
                    allow_privilege_escalation: Some(false),
                    ..Default::default()
                },
            ),
            (
                "privileged, read-only root, unconfined from the pod",
                json!({"seccompProfile": {"type": "Unconfined"}}),
                json!({"privileged": true, "readOnlyRootFilesystem": true}),
                SecurityContext {
                    privileged: true,
                    read_only_root_filesystem: true,
                    seccomp_unconfined: true,
                    ..Default::default()
                },
            ),
        ];
        for (name, pod, container, expected) in table {
            assert_eq!(security_context(&pod, &container), expected, "{name}");
        }
    }

    #[test]
    fn an_injected_pod_gets_its_downward_api_values_and_not_the_kubernetes_mesh_volumes() {
        let objects = crate::test_objects::load(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: sleep-1, namespace: foo, uid: u-1}\nspec:\n  \
             serviceAccountName: sleep\n  containers:\n  - name: ironmesh-proxy\n    image: ironmesh/proxy\n    env:\n    \
             - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    \
             - {name: SERVICE_ACCOUNT, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}\n    \
             - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n    \
             - {name: LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n    \
             - {name: MODE, value: x}\n    volumeMounts:\n    \
             - {name: istio-token, mountPath: /var/run/secrets/tokens}\n    \
             - {name: istiod-ca-cert, mountPath: /var/run/secrets/istio}\n    \
             - {name: data, mountPath: /data}\n  \
             volumes:\n  - {name: data, emptyDir: {}}\n",
        );
        let pod = PodView::of(&objects[0]);
        let volumes = HashMap::from([
            ("data".to_owned(), PathBuf::from("/pods/data")),
            ("istio-token".to_owned(), PathBuf::from("/pods/istio-token")),
        ]);
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        let spec = container_spec(&pod.containers[0], &pod, ip, &volumes);
        let env: HashMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["POD_NAME"], "sleep-1");
        assert_eq!(env["SERVICE_ACCOUNT"], "sleep");
        assert_eq!(env["POD_IP"], "10.0.0.7");
        assert_eq!(env["MODE"], "x");
        // Not a fieldRef: the local runtime has no such source, so it is not set (rather than empty).
        assert!(!env.contains_key("LIMIT"), "{env:?}");
        let mounted: Vec<_> = spec.volumes.iter().map(|m| m.destination.clone()).collect();
        assert_eq!(mounted, [PathBuf::from("/data")]);
    }
}

//! The CLI API's request and answer bodies (JSON), shared by the server and the client.
//!
//! Routes, all `POST` with a JSON body: `/v1/info`, `/v1/apply`, `/v1/get`, `/v1/list`, `/v1/delete`,
//! `/v1/status`, `/v1/watch` (newline-delimited JSON events, chunked), `/v1/shutdown`; and the control
//! plane's (see `ironmesh_store::Routes`): `/v1/proxy-status`, `/v1/ca/root`, `/v1/ca/rotate-root`,
//! `/v1/ca/retire-root`, `/v1/explain/authz`, `/v1/explain/tls-check`, `/v1/proxy-config/cluster`,
//! `/v1/proxy-config/secret`, `/v1/logs`. A failure answers a 4xx/5xx status with an [`ErrorBody`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Reason;
use crate::object::ObjectKey;
use crate::store::{ApplyItem, ApplyOptions};

/// `/v1/apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub items: Vec<ApplyItem>,
    #[serde(default)]
    pub options: ApplyOptions,
}

/// `/v1/list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRequest {
    /// Every kind when `None`.
    pub plural: Option<String>,
    /// Every namespace when `None`.
    pub namespace: Option<String>,
    /// kubectl's `-l`, e.g. `app=sleep`.
    pub label_selector: Option<String>,
}

/// `/v1/status`: replace `status` of one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest {
    pub key: ObjectKey,
    pub status: Value,
}

/// `/v1/watch`. Without `resource_version` the stream starts with the current objects as `ADDED` events
/// (list then watch, without a gap); with it, every event after that version (replayed from the store's
/// recent history, then live), or `Expired` (410) when it is too old: list again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchRequest {
    pub plural: Option<String>,
    pub namespace: Option<String>,
    pub resource_version: Option<u64>,
}

/// `/v1/info`: what `ironmesh status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub pid: u32,
    pub version: String,
    pub store_path: String,
    pub resource_version: u64,
    pub objects: usize,
}

/// `/v1/proxy-status`: how far every sidecar's configuration has gone (what `ironmesh wait` polls). Served
/// by the control plane, which owns the configuration stream; the store only carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySyncReport {
    /// The store resourceVersion the control plane last computed every sidecar's configuration from.
    pub configured_resource_version: u64,
    /// Every sidecar the control plane configures, sorted by id.
    pub proxies: Vec<ProxySync>,
}

/// One sidecar in a [`ProxySyncReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySync {
    /// `<pod>.<namespace>`.
    pub id: String,
    /// Content version of the configuration published for it.
    pub version: String,
    /// The resourceVersion of the store snapshot that first produced `version`: a change committed at a
    /// resourceVersion above this one did not alter this sidecar's configuration.
    pub changed_at: u64,
    /// The version the sidecar last acknowledged.
    pub acked_version: Option<String>,
    /// Whether its configuration stream is open.
    pub connected: bool,
    /// The sidecar's refusal of `version` (NACK), if any.
    pub rejected: Option<String>,
}

/// The body of every failed request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub reason: Reason,
    pub message: String,
}

/// `/v1/ca/root`, `/v1/ca/rotate-root` and `/v1/ca/retire-root` answer the CA's roots after the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaRoots {
    /// SHA-256 fingerprint of the root new certificates chain to (openssl's format).
    pub current_root_fingerprint: String,
    /// Every trusted root, one PEM per root, the current one first.
    pub trust_bundle: Vec<String>,
    /// The workload certificate lifetime: workloads renew within half of it.
    pub workload_cert_ttl_seconds: u64,
}

/// `/v1/explain/authz`: the request `ironmesh authz check` explains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzQuery {
    /// The server pod (`NAME` or `NAME.NAMESPACE`).
    pub pod: String,
    pub namespace: Option<String>,
    /// The calling pod (`NAME` or `NAME.NAMESPACE`).
    pub from: Option<String>,
    pub from_namespace: Option<String>,
    pub path: String,
    pub method: String,
    /// The pod's (container) port; its first port when `None`.
    pub port: Option<u16>,
}

/// `/v1/explain/tls-check`: whose view (a pod, `NAME[.NAMESPACE]`) and which service host to check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCheckQuery {
    pub pod: Option<String>,
    pub host: Option<String>,
    pub namespace: Option<String>,
}

/// What an explanation route answers: the text to print, and a note for stderr (kubectl's
/// `No resources found.`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub text: String,
    pub note: Option<String>,
}

/// `/v1/proxy-config/cluster` and `/v1/proxy-config/secret`: one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodQuery {
    pub pod: String,
    pub namespace: String,
}

/// `/v1/proxy-config/cluster`: the table's rows, the header first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTable {
    pub rows: Vec<Vec<String>>,
}

/// `/v1/proxy-config/secret`: what the pod's sidecar holds, as its admin `/certs` tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySecret {
    /// Its SPIFFE ID.
    pub identity: String,
    /// The leaf, then the certificates above it (PEM each).
    pub chain_pem: Vec<String>,
    /// The roots it trusts (PEM each).
    pub trust_bundle_pem: Vec<String>,
    /// When the sidecar renews, in seconds since the epoch (jittered, so asked, not derived).
    pub next_rotation: u64,
}

/// `/v1/logs`: a container's log, as raw bytes (with `follow`, until the client goes away).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsQuery {
    pub pod: String,
    pub namespace: String,
    pub container: String,
    pub follow: bool,
}

//! The pure policy engine: which mTLS mode a server workload enforces, which TLS a client sends to a
//! service, and `tls-check` rows, with exactly Istio's semantics (see docs/SEMANTICS.md,
//! from #resources to #tls-check).
//!
//! Build a [`PolicyIndex`] once from the stored objects (policies, rules, services, namespaces,
//! deployments, pods) and a [`MeshConfig`], then ask it questions; lookups do not allocate much and
//! do not scan unrelated namespaces.

mod client;
mod index;
mod resources;
mod server;
mod tls_check;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use tls_check::{TlsCheckRow, TlsCheckStatus, format_tls_check};

use crate::object::Object;
use index::Index;

/// DNS suffix of cluster services (`<svc>.<ns>.svc.cluster.local`); independent of the trust domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Mesh-wide settings the engine needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// SPIFFE trust domain (`cluster.local` by default).
    pub trust_domain: String,
    /// Namespace whose un-selected PeerAuthentications and DestinationRules are mesh-wide.
    pub root_namespace: String,
    /// Whether clients without a DestinationRule `tls` send mTLS to sidecar endpoints automatically.
    pub auto_mtls: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            auto_mtls: false,
        }
    }
}

/// A server workload as the engine sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
}

/// What the server side accepts on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerMode {
    /// Plaintext only.
    Disable,
    /// Plaintext or mTLS.
    Permissive,
    /// mTLS only.
    Strict,
}

impl fmt::Display for ServerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerMode::Disable => "DISABLE",
            ServerMode::Permissive => "PERMISSIVE",
            ServerMode::Strict => "STRICT",
        })
    }
}

/// The resource that decided something.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    pub kind: String,
    /// `""` for cluster-scoped kinds (MeshPolicy).
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    /// Istio 1.4 `tls-check` form: `namespace/name`, MeshPolicy → `/default`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The server mode on one port and who decided it (`None`: nothing applies, the built-in default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerDecision {
    pub mode: ServerMode,
    pub decided_by: Option<PolicyRef>,
}

/// The TLS a client sidecar originates, from DestinationRule `tls.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// No DestinationRule `tls` applies (auto mTLS decides, or plaintext when it is off).
    Unset,
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

impl ClientTlsMode {
    /// The DestinationRule spelling; `-` for unset (as `tls-check` prints it).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTlsMode::Unset => "-",
            ClientTlsMode::Disable => "DISABLE",
            ClientTlsMode::Simple => "SIMPLE",
            ClientTlsMode::Mutual => "MUTUAL",
            ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
        }
    }
}

impl fmt::Display for ClientTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client-side TLS for one (client namespace, host, port) and the DestinationRule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDecision {
    pub mode: ClientTlsMode,
    pub decided_by: Option<PolicyRef>,
    /// SNI to present: the rule's `sni`, or Istio's `outbound_.<port>_.<subset>_.<fqdn>` for ISTIO_MUTUAL.
    pub sni: Option<String>,
    /// SANs to verify: the rule's `subjectAltNames`, or for ISTIO_MUTUAL the SPIFFE IDs of the service's
    /// service accounts (secure naming).
    pub subject_alt_names: Vec<String>,
}

/// Everything the engine knows, indexed for lookups.
#[derive(Debug)]
pub struct PolicyIndex {
    mesh: MeshConfig,
    index: Index,
}

impl PolicyIndex {
    /// Indexes `objects` (any kinds; unrelated ones are ignored, malformed policies are skipped).
    pub fn new(objects: &[Object], mesh: MeshConfig) -> PolicyIndex {
        PolicyIndex {
            index: Index::build(objects),
            mesh,
        }
    }

    /// The mesh settings this index was built with.
    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    /// Whether a sidecar client actually sends mesh mTLS to an endpoint (docs/SEMANTICS.md#auto-mtls): an explicit
    /// DestinationRule mode always wins (only ISTIO_MUTUAL is mesh mTLS); with no `tls`, auto mTLS sends
    /// mTLS to endpoints that have a sidecar and do not DISABLE it, and plaintext otherwise.
    pub fn effective_client_mtls(
        &self,
        decision: &ClientDecision,
        endpoint_has_sidecar: bool,
        endpoint_server_mode: ServerMode,
    ) -> bool {
        effective_client_mtls(
            decision,
            endpoint_has_sidecar,
            endpoint_server_mode,
            self.mesh.auto_mtls,
        )
    }
}

/// [`PolicyIndex::effective_client_mtls`] with the auto mTLS switch passed explicitly.
pub fn effective_client_mtls(
    decision: &ClientDecision,
    endpoint_has_sidecar: bool,
    endpoint_server_mode: ServerMode,
    auto_mtls: bool,
) -> bool {
    match decision.mode {
        ClientTlsMode::IstioMutual => true,
        ClientTlsMode::Disable | ClientTlsMode::Simple | ClientTlsMode::Mutual => false,
        ClientTlsMode::Unset => {
            auto_mtls && endpoint_has_sidecar && endpoint_server_mode != ServerMode::Disable
        }
    }
}

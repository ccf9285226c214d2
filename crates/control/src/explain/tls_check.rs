//! `/v1/explain/tls-check` (`ironmesh tls-check [POD] [HOST]`): the policy engine's verdict per service
//! port, computed from the stored resources and the mesh options, printed as `istioctl authn tls-check`
//! does.

use ironmesh_api::Object;
use ironmesh_api::mesh::MeshOptions;
use ironmesh_api::policy::{PolicyIndex, format_tls_check};
use ironmesh_store::wire::{Explanation, TlsCheckQuery};
use ironmesh_store::{Reason, RouteError};

/// Splits `name.namespace` (istioctl's pod spelling) unless `-n` was given.
fn pod_and_namespace<'a>(pod: &'a str, namespace: Option<&'a str>) -> (&'a str, &'a str) {
    match (namespace, pod.split_once('.')) {
        (Some(ns), _) => (pod, ns),
        (None, Some((name, ns))) => (name, ns),
        (None, None) => (pod, "default"),
    }
}

fn not_found(message: String) -> RouteError {
    RouteError::new(Reason::NotFound, message)
}

/// The rows `tls-check` prints for `query`, from the stored `objects`.
pub(crate) fn tls_check(
    objects: &[Object],
    mesh: &MeshOptions,
    query: &TlsCheckQuery,
) -> Result<Explanation, RouteError> {
    let namespace = query.namespace.as_deref();
    let pod_exists = |name: &str, ns: &str| {
        objects.iter().any(|o| {
            o.kind == "Pod"
                && o.metadata.name == name
                && o.metadata.namespace.as_deref() == Some(ns)
        })
    };
    // One argument is a pod when such a pod exists, else a host (istioctl 1.0 took only a host).
    let mut pod_or_host = None;
    let (client_namespace, host) = match (query.pod.as_deref(), query.host.as_deref()) {
        (Some(pod), host) => {
            let (name, ns) = pod_and_namespace(pod, namespace);
            match (pod_exists(name, ns), host) {
                (true, host) => (Some(ns.to_string()), host),
                (false, None) => {
                    pod_or_host = Some(name);
                    (namespace.map(str::to_string), Some(pod))
                }
                (false, Some(_)) => return Err(not_found(format!("pods \"{name}\" not found"))),
            }
        }
        (None, host) => (namespace.map(str::to_string), host),
    };
    let index = PolicyIndex::new(objects, mesh.mesh_config());
    let rows = index.tls_check(client_namespace.as_deref(), host);
    match (rows.is_empty(), host, pod_or_host) {
        // A mistyped pod or host is an error, as kubectl's `get` of a missing name is.
        (true, Some(host), Some(pod)) => Err(not_found(format!(
            "pods \"{pod}\" not found, and no service host matches \"{host}\""
        ))),
        (true, Some(host), None) => Err(not_found(format!("services \"{host}\" not found"))),
        // Nothing to check in an empty mesh is not an error (kubectl's empty list).
        (true, None, _) => Ok(Explanation {
            text: String::new(),
            note: Some("No resources found.".into()),
        }),
        (false, _, _) => Ok(Explanation {
            text: format_tls_check(&rows),
            note: None,
        }),
    }
}

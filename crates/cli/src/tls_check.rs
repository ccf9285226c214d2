//! `tls-check [POD] [HOST]`: the policy engine's verdict per service port, computed from the stored
//! resources and the mesh options, printed as `istioctl authn tls-check` does.

use ironmesh_api::Object;
use ironmesh_api::policy::{PolicyIndex, format_tls_check};
use ironmesh_store::ObjectKey;
use ironmesh_store::Reason;
use ironmesh_store::client::{ApiClient, ClientError};

use crate::error::CliError;
use ironmesh_home::Home;

/// Splits `name.namespace` (istioctl's pod spelling) unless `-n` was given.
fn pod_and_namespace<'a>(pod: &'a str, namespace: Option<&'a str>) -> (&'a str, &'a str) {
    match (namespace, pod.split_once('.')) {
        (Some(ns), _) => (pod, ns),
        (None, Some((name, ns))) => (name, ns),
        (None, None) => (pod, "default"),
    }
}

pub(crate) async fn tls_check(
    client: &ApiClient,
    home: &Home,
    pod: Option<&str>,
    host: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let mesh =
        ironmesh_control::options::load(home.root()).map_err(|e| CliError::Usage(e.to_string()))?;
    let objects: Vec<Object> = client
        .list(None, None, None)
        .await?
        .items
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect();
    // One argument is a pod when such a pod exists, else a host (istioctl 1.0 took only a host).
    let mut pod_or_host = None;
    let (client_namespace, host) = match (pod, host) {
        (Some(pod), host) => {
            let (name, ns) = pod_and_namespace(pod, namespace);
            let found = client
                .get(&ObjectKey::new("pods", Some(ns), name))
                .await
                .is_ok();
            match (found, host) {
                (true, host) => (Some(ns.to_string()), host),
                (false, None) => {
                    pod_or_host = Some(name);
                    (namespace.map(str::to_string), Some(pod))
                }
                (false, Some(_)) => return Err(CliError::not_found("pods", name)),
            }
        }
        (None, host) => (namespace.map(str::to_string), host),
    };
    let index = PolicyIndex::new(&objects, mesh.mesh_config());
    let rows = index.tls_check(client_namespace.as_deref(), host);
    match (rows.is_empty(), host, pod_or_host) {
        // A mistyped pod or host is an error, as kubectl's `get` of a missing name is.
        (true, Some(host), Some(pod)) => {
            return Err(CliError::Client(ClientError::Server {
                reason: Reason::NotFound,
                message: format!(
                    "pods \"{pod}\" not found, and no service host matches \"{host}\""
                ),
            }));
        }
        (true, Some(host), None) => return Err(CliError::not_found("services", host)),
        // Nothing to check in an empty mesh is not an error (kubectl's empty list).
        (true, None, _) => {
            eprintln!("No resources found.");
            return Ok(());
        }
        (false, _, _) => {}
    }
    print!("{}", format_tls_check(&rows));
    Ok(())
}

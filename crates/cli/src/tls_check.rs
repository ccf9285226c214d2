//! `tls-check [POD] [HOST]`: the policy engine's verdict per service port, computed from the stored
//! resources and the mesh options, printed as `istioctl authn tls-check` does.

use ironmesh_api::Object;
use ironmesh_api::policy::{PolicyIndex, format_tls_check};
use ironmesh_control::MeshOptions;
use ironmesh_store::ObjectKey;
use ironmesh_store::client::ApiClient;

use crate::error::CliError;
use crate::home::Home;

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
    let mesh = MeshOptions::load(home.root()).map_err(|e| CliError::Usage(e.to_string()))?;
    let objects: Vec<Object> = client
        .list(None, None, None)
        .await?
        .items
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect();
    // One argument is a pod when such a pod exists, else a host (istioctl 1.0 took only a host).
    let (client_namespace, host) = match (pod, host) {
        (Some(pod), host) => {
            let (name, ns) = pod_and_namespace(pod, namespace);
            let found = client
                .get(&ObjectKey::new("pods", Some(ns), name))
                .await
                .is_ok();
            match (found, host) {
                (true, host) => (Some(ns.to_string()), host),
                (false, None) => (namespace.map(str::to_string), Some(pod)),
                (false, Some(_)) => {
                    return Err(CliError::Usage(format!(
                        "pod \"{name}\" not found in namespace \"{ns}\"; list pods with `ironmesh get pods -n {ns}`"
                    )));
                }
            }
        }
        (None, host) => (namespace.map(str::to_string), host),
    };
    let index = PolicyIndex::new(&objects, mesh.mesh_config());
    let rows = index.tls_check(client_namespace.as_deref(), host);
    if rows.is_empty() {
        eprintln!("No resources found.");
        return Ok(());
    }
    print!("{}", format_tls_check(&rows));
    Ok(())
}

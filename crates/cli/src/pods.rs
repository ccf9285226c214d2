//! Commands that reach into running pods through the local runtime: `exec` (kubectl's messages and exit
//! codes) and `logs`.

use ironmesh_store::ObjectKey;
use ironmesh_store::client::ApiClient;
use serde_json::Value;

use crate::error::CliError;
use ironmesh_home::Home;

/// The pod object, and the container to use: `-c`, or the first one (saying so when there are several).
async fn pod_and_container(
    client: &ApiClient,
    pod: &str,
    namespace: &str,
    container: Option<&str>,
    announce: impl Fn(&str, &[String]),
) -> Result<(Value, String), CliError> {
    let object = client
        .get(&ObjectKey::new("pods", Some(namespace), pod))
        .await?;
    let names: Vec<String> = object
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let chosen = match container {
        Some(wanted) if names.iter().any(|n| n == wanted) => wanted.to_string(),
        Some(wanted) => {
            return Err(CliError::Usage(format!(
                "container {wanted} is not valid for pod {pod}; its containers are {}",
                names.join(", ")
            )));
        }
        None => {
            let first = names
                .first()
                .cloned()
                .ok_or_else(|| CliError::Usage(format!("pod {pod} has no containers")))?;
            if names.len() > 1 {
                announce(&first, &names);
            }
            first
        }
    };
    Ok((object, chosen))
}

pub(crate) struct ExecRequest<'a> {
    pub pod: &'a str,
    pub namespace: &'a str,
    pub container: Option<&'a str>,
    pub tty: bool,
    pub command: &'a [String],
}

pub(crate) async fn exec(
    client: &ApiClient,
    home: &Home,
    request: ExecRequest<'_>,
) -> Result<(), CliError> {
    let pod_name = request.pod;
    let (pod, container) = pod_and_container(
        client,
        pod_name,
        request.namespace,
        request.container,
        |first, _| {
            eprintln!("Defaulting container name to {first}.");
            eprintln!(
                "Use 'ironmesh describe pod/{pod_name} -n {}' to see all of the containers in this pod.",
                request.namespace
            );
        },
    )
    .await?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if phase != "Running" {
        return Err(CliError::Usage(format!(
            "cannot exec into a container in a completed or not yet running pod; current phase is {phase}"
        )));
    }
    let command = request.command.to_vec();
    // A terminal only when there is one to give (kubectl: "Unable to use a TTY - input is not a terminal").
    let tty = request.tty && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let (root, namespace) = (home.root().to_path_buf(), request.namespace.to_owned());
    let pod_name = pod_name.to_owned();
    let code = tokio::task::spawn_blocking(move || {
        ironmesh_runtime::exec(&root, &namespace, &pod_name, &container, &command, tty)
    })
    .await
    .map_err(|e| CliError::Usage(format!("exec failed: {e}")))?
    .map_err(|e| CliError::Usage(e.to_string()))?;
    if code != 0 {
        eprintln!("command terminated with exit code {code}");
        return Err(CliError::Exit(code));
    }
    Ok(())
}

pub(crate) async fn logs(
    client: &ApiClient,
    home: &Home,
    pod: &str,
    namespace: &str,
    container: Option<&str>,
    follow: bool,
) -> Result<(), CliError> {
    let (_, container) = pod_and_container(client, pod, namespace, container, |first, all| {
        eprintln!("Defaulted container \"{first}\" out of: {}", all.join(", "));
    })
    .await?;
    let dir = ironmesh_runtime::pod_dir(home.root(), namespace, pod);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout();
        ironmesh_runtime::logs(&dir, &container, follow, &mut out, &|| true)
    })
    .await
    .map_err(|e| CliError::Usage(format!("logs failed: {e}")))?
    .map_err(|e| CliError::Usage(e.to_string()))
}

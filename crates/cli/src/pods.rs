//! Commands that reach into running pods: `exec` (kubectl's messages and exit codes), which runs
//! `runc exec` in the cluster's runc state as `kubectl exec` asks the kubelet, and `logs`, which the control
//! plane streams (`/v1/logs`).
#![allow(
    unsafe_code,
    reason = "exec hands Ctrl-C to the command: signal(2) around runc, and in its pre_exec"
)]

use std::os::unix::process::CommandExt;

use ironmesh_home::{ClusterId, Home};
use ironmesh_store::ObjectKey;
use ironmesh_store::client::ApiClient;
use ironmesh_store::wire::LogsQuery;
use serde_json::Value;

use crate::error::CliError;

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
    let cluster = home
        .cluster_id()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let id = cluster.container_id(request.namespace, pod_name, &container);
    let code = tokio::task::spawn_blocking(move || run_in_container(&cluster, &id, &command, tty))
        .await
        .map_err(|e| CliError::Usage(format!("exec failed: {e}")))??;
    if code != 0 {
        eprintln!("command terminated with exit code {code}");
        return Err(CliError::Exit(code));
    }
    Ok(())
}

/// Runs `argv` in container `id` with `runc exec` (its namespaces, user, capabilities, seccomp profile
/// and no_new_privileges) with this process's stdin, stdout and stderr, and returns its exit code (128 +
/// signal if killed). With `tty`, runc gives the command a terminal.
fn run_in_container(
    cluster: &ClusterId,
    id: &str,
    argv: &[String],
    tty: bool,
) -> Result<i32, CliError> {
    let root = cluster.runc_root();
    if !root.join(id).exists() {
        return Err(CliError::Usage(format!(
            "container {id} is not running; check `ironmesh get pods` and `ironmesh describe pod`"
        )));
    }
    let mut command = std::process::Command::new("runc");
    command.arg("--root").arg(&root).arg("exec");
    if tty {
        command.arg("--tty").arg("--env").arg(format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into())
        ));
    }
    command.arg(id).args(argv);
    // Like system(3): while the command owns the terminal, Ctrl-C and Ctrl-\ are for it, not for us.
    // Ignored dispositions survive exec, so the child gets the defaults back first.
    // SAFETY: installing SIG_IGN/SIG_DFL runs no handler code; the pre_exec closure only calls the
    // async-signal-safe signal(2).
    let previous = unsafe {
        [
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        ]
    };
    // SAFETY: the closure runs between fork and exec and only calls the async-signal-safe signal(2).
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let status = command.status();
    // SAFETY: puts back exactly the handlers that were installed before.
    unsafe {
        libc::signal(libc::SIGINT, previous[0]);
        libc::signal(libc::SIGQUIT, previous[1]);
    }
    let status = status.map_err(|e| {
        CliError::Usage(format!(
            "cannot run `runc`: {e}; install the `runc` package (apt-get install runc)"
        ))
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    })
}

pub(crate) async fn logs(
    client: &ApiClient,
    pod: &str,
    namespace: &str,
    container: Option<&str>,
    follow: bool,
) -> Result<(), CliError> {
    let (_, container) = pod_and_container(client, pod, namespace, container, |first, all| {
        eprintln!("Defaulted container \"{first}\" out of: {}", all.join(", "));
    })
    .await?;
    let query = LogsQuery {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
        container,
        follow,
    };
    let mut out = std::io::stdout();
    client
        .logs(&query, &mut out)
        .await
        .map_err(CliError::refused)
}

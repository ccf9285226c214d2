//! ironmesh: the command line, with kubectl and istioctl habits. The library target holds what other
//! crates may reuse (sidecar injection, the jsonpath templates); [`run`] is the `ironmesh` binary.

mod analyze;
mod ca;
mod cli;
mod demo;
mod error;
mod explain;
mod get;

/// Sidecar injection lives in ironmesh-api, where the control plane's admission webhook calls the same function
/// as `kube-inject`; re-exported so `ironmesh_cli::inject` keeps working.
pub use ironmesh_api::inject;
pub mod jsonpath;
mod lifecycle;
mod pods;
mod proxy_config;
mod table;
mod wait;
mod write;
mod yaml_out;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ironmesh_store::client::ApiClient;

use crate::cli::{CaCommand, Cli, Command};
use crate::error::CliError;
use ironmesh_home::Home;

/// Runs the `ironmesh` command line with the process's arguments.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(command: Command) -> Result<(), CliError> {
    let home = Home::from_env();
    let client = ApiClient::new(&home.api_socket());
    let block_on =
        |work: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CliError>> + '_>>| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?
                .block_on(work)
        };
    match command {
        Command::Up(args) => lifecycle::up(&home, &args),
        Command::Down { purge } => lifecycle::down(&home, purge),
        Command::Status => lifecycle::status(&home),
        Command::ControlPlane => lifecycle::control_plane(&home),
        Command::Create { kind, name } => block_on(Box::pin(write::create(&client, &kind, &name))),
        Command::Label {
            kind,
            name,
            labels,
            overwrite,
            namespace,
        } => block_on(Box::pin(write::label(
            &client,
            &kind,
            &name,
            &labels,
            overwrite,
            namespace.as_deref(),
        ))),
        Command::Apply {
            file,
            namespace,
            wait,
            timeout,
        } => block_on(Box::pin(write::apply(
            &client,
            &file,
            namespace.as_deref(),
            wait.then_some(timeout.as_str()),
        ))),
        Command::Wait {
            kind,
            name,
            namespace,
            timeout,
        } => block_on(Box::pin(wait::wait(
            &client,
            kind.as_deref(),
            name.as_deref(),
            namespace.as_deref(),
            &timeout,
        ))),
        Command::Analyze { files } => analyze::analyze(&files),
        Command::Delete {
            file,
            kind,
            name,
            namespace,
        } => block_on(Box::pin(write::delete(
            &client,
            file.as_deref(),
            kind.as_deref(),
            name.as_deref(),
            namespace.as_deref(),
        ))),
        Command::Get(args) => block_on(Box::pin(get::get(&client, &args))),
        Command::Describe {
            kind,
            name,
            namespace,
        } => block_on(Box::pin(get::describe(
            &client,
            &kind,
            name.as_deref(),
            namespace.as_deref(),
        ))),
        Command::Install(args) => lifecycle::install(&args),
        Command::KubeInject { file, apps_v1 } => write::kube_inject(&file, apps_v1),
        Command::Authz { command } => block_on(Box::pin(explain::authz(&client, command))),
        Command::TlsCheck {
            pod,
            host,
            namespace,
        } => block_on(Box::pin(explain::tls_check(
            &client,
            pod.as_deref(),
            host.as_deref(),
            namespace.as_deref(),
        ))),
        Command::Exec {
            pod,
            namespace,
            container,
            stdin: _,
            tty,
            command,
        } => block_on(Box::pin(pods::exec(
            &client,
            &home,
            pods::ExecRequest {
                pod: &pod,
                namespace: namespace.as_deref().unwrap_or("default"),
                container: container.as_deref(),
                tty,
                command: &command,
            },
        ))),
        Command::Logs {
            pod,
            namespace,
            container,
            follow,
        } => block_on(Box::pin(pods::logs(
            &client,
            &pod,
            namespace.as_deref().unwrap_or("default"),
            container.as_deref(),
            follow,
        ))),
        Command::ProxyConfig {
            what,
            pod,
            namespace,
            output,
        } => {
            if what == "cluster" || what == "clusters" {
                return block_on(Box::pin(proxy_config::cluster(
                    &client,
                    &pod,
                    namespace.as_deref().unwrap_or("default"),
                    output.as_deref(),
                )));
            }
            if what != "secret" {
                return Err(CliError::Usage(format!(
                    "proxy-config shows `secret` or `cluster` (got {what:?}): ironmesh proxy-config secret|cluster POD"
                )));
            }
            block_on(Box::pin(proxy_config::secret(
                &client,
                &pod,
                namespace.as_deref().unwrap_or("default"),
                output.as_deref(),
            )))
        }
        Command::Demo { keep } => demo::run(keep),
        Command::Ca { command } => match command {
            CaCommand::Root { output } => block_on(Box::pin(ca::root(&client, output.as_deref()))),
            CaCommand::RotateRoot => block_on(Box::pin(ca::rotate_root(&client))),
            CaCommand::RetireRoot => block_on(Box::pin(ca::retire_root(&client))),
        },
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ironmesh",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

//! `ironmesh authz check POD` and `ironmesh tls-check [POD] [HOST]`: explanations the control plane
//! computes (`/v1/explain/...`) from the resources and mesh options its controllers use; printed here.

use clap::Subcommand;
use ironmesh_store::client::ApiClient;
use ironmesh_store::wire::{AuthzQuery, Explanation, TlsCheckQuery};

use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum AuthzCommand {
    /// Explain which AuthorizationPolicy allows or denies a request to POD.
    Check {
        /// The server pod (`NAME` or `NAME.NAMESPACE`).
        pod: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The calling pod (`NAME` or `NAME.NAMESPACE`); its service account is the caller's identity.
        #[arg(long)]
        from: Option<String>,
        /// Namespace of `--from` (default: the server's); alone, a caller with a sidecar in this namespace
        /// and service account `default`.
        #[arg(long)]
        from_namespace: Option<String>,
        /// Request path (HTTP ports).
        #[arg(long, default_value = "/")]
        path: String,
        /// Request method (HTTP ports).
        #[arg(long, default_value = "GET")]
        method: String,
        /// The pod's (container) port; default: its first port.
        #[arg(long)]
        port: Option<u16>,
    },
}

fn print(explanation: Explanation) {
    print!("{}", explanation.text);
    if let Some(note) = explanation.note {
        eprintln!("{note}");
    }
}

pub(crate) async fn authz(client: &ApiClient, command: AuthzCommand) -> Result<(), CliError> {
    let AuthzCommand::Check {
        pod,
        namespace,
        from,
        from_namespace,
        path,
        method,
        port,
    } = command;
    let query = AuthzQuery {
        pod,
        namespace,
        from,
        from_namespace,
        path,
        method,
        port,
    };
    print(
        client
            .explain_authz(&query)
            .await
            .map_err(CliError::refused)?,
    );
    Ok(())
}

pub(crate) async fn tls_check(
    client: &ApiClient,
    pod: Option<&str>,
    host: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let query = TlsCheckQuery {
        pod: pod.map(str::to_owned),
        host: host.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
    };
    print(
        client
            .explain_tls_check(&query)
            .await
            .map_err(CliError::refused)?,
    );
    Ok(())
}

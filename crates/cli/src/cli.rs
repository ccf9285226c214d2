//! The `ironmesh` command line (clap derive): commands and flags with kubectl's and istioctl's habits.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ironmesh",
    version,
    about = "A service mesh with kubectl and istioctl habits"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start the control plane (idempotent).
    Up(UpArgs),
    /// Stop the control plane; --purge also forgets all state.
    Down {
        #[arg(long)]
        purge: bool,
    },
    /// Say what runs.
    Status,
    /// Create a resource: `create ns NAME`.
    Create {
        /// `ns` or `namespace`.
        kind: String,
        name: String,
    },
    /// Add, change (`--overwrite`) or remove (`k-`) labels: `label ns NAME k=v`.
    Label {
        kind: String,
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
        #[arg(long)]
        overwrite: bool,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Apply every document of a file (`-` for stdin) in one all-or-nothing transaction.
    Apply {
        /// A path (process substitution works), or `-` (also a bare `-f`) for stdin.
        #[arg(short = 'f', long = "filename", num_args = 0..=1, default_missing_value = "-")]
        file: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Then block until every sidecar the change alters has acknowledged it (see `ironmesh wait`).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (30s, 2m, 500ms).
        #[arg(long, default_value = "30s", requires = "wait")]
        timeout: String,
    },
    /// Block until the sidecars hold the configuration that includes a change: `wait KIND NAME` for that
    /// resource's last change, `wait` alone for everything applied so far (istioctl's `x wait`).
    Wait {
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Give up after this long (30s, 2m, 500ms) and name the sidecars that are not there.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Check files as `apply` would, changing nothing (like `istioctl analyze`); no control plane needed.
    Analyze {
        /// A path or `-` for stdin; repeat for several files.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Delete `-f FILE` or `KIND NAME`.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Show resources.
    Get(GetArgs),
    /// Show one resource in a readable form (`KIND NAME` or `KIND/NAME`).
    Describe {
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Check client and server TLS settings per service.
    TlsCheck {
        /// A pod (`NAME[.NAMESPACE]`) whose view to check.
        pod: Option<String>,
        /// Only this service host.
        host: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Authorization: `authz check POD` explains which AuthorizationPolicy allows or denies a request.
    Authz {
        #[command(subcommand)]
        command: crate::explain::AuthzCommand,
    },
    /// Install the mesh into a Kubernetes cluster: Istio's CRDs, istio-system, RBAC, the validating
    /// and sidecar-injecting webhook configurations and the control plane's Deployment and Service
    /// (server-side apply).
    Install(InstallArgs),
    /// Print a manifest with the sidecar added.
    #[command(alias = "inject")]
    KubeInject {
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Write extensions/v1beta1 (and apps/v1beta1, apps/v1beta2) Deployments as apps/v1, their
        /// selector defaulted from the template's labels, with a warning on stderr: for a Kubernetes
        /// cluster without ironmesh's extensions/v1beta1 API (removed from Kubernetes in 1.16).
        #[arg(long)]
        apps_v1: bool,
    },
    /// Run a command in a container of a pod.
    Exec {
        pod: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(short = 'c', long)]
        container: Option<String>,
        #[arg(short = 'i', long)]
        stdin: bool,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a container's log.
    Logs {
        pod: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(short = 'c', long)]
        container: Option<String>,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Show a pod's proxy configuration (`secret`, or `cluster`: outbound clusters with TLS mode and SNI).
    ProxyConfig {
        what: String,
        pod: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
    /// The mesh's certificate authority: trust bundle and root rotation.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run the whole mutual TLS walkthrough on a local cluster of its own, with a results table.
    Demo {
        /// Leave the cluster up afterwards, to explore it.
        #[arg(long)]
        keep: bool,
    },
    /// Run the control plane in the foreground (what `up` starts).
    #[command(hide = true)]
    ControlPlane,
}

/// `ironmesh install`: passed on to `ironmesh-control-plane install`, which links the Kubernetes client.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The cluster's admin kubeconfig (default: $KUBECONFIG, as kubectl reads it).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// Print the manifests as YAML documents instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// The control plane's image.
    #[arg(long)]
    pub image: Option<String>,
    /// The control plane runs outside the cluster: the API server calls the webhook at this URL, and no
    /// Deployment or Service is installed.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// With --webhook-url: where the API server's aggregator reaches the control plane's
    /// extensions/v1beta1 API (not loopback), e.g. 198.18.127.1:15018.
    #[arg(long, requires = "webhook_url")]
    pub aggregated_api_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Print the trust bundle (`-o pem`) or a summary of it.
    Root {
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Add a new root: both are trusted, new certificates come from the new one.
    RotateRoot,
    /// Stop trusting every root but the current one (after every workload renewed).
    RetireRoot,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Clients send mTLS to sidecars without a DestinationRule (modern Istio).
    #[arg(long)]
    pub auto_mtls: bool,
    /// What sidecars may call without a `Sidecar` resource: ALLOW_ANY, or REGISTRY_ONLY (only known services).
    #[arg(long, value_parser = parse_outbound, default_value = "ALLOW_ANY")]
    pub outbound_traffic_policy: ironmesh_api::mesh::OutboundTrafficPolicy,
    /// Lifetime of workload certificates, e.g. `24h`, `90m`.
    #[arg(long, default_value = "24h")]
    pub workload_cert_ttl: String,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Plug-in CA: certificate (with --ca-key).
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Plug-in CA: the certificates above --ca-cert up to the root (Istio's cert-chain.pem).
    #[arg(long, requires = "ca_cert")]
    pub ca_chain: Option<PathBuf>,
    /// Plug-in CA: the roots every proxy trusts (Istio's root-cert.pem); list the old and the new root
    /// to migrate from one to the other. The chain must lead to one of them.
    #[arg(long, requires = "ca_cert")]
    pub ca_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// `pods`, `po`, `svc`, `meshpolicies.authentication.istio.io`, ...
    pub kind: String,
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// yaml, json, wide, name, jsonpath=TEMPLATE
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

fn parse_outbound(text: &str) -> Result<ironmesh_api::mesh::OutboundTrafficPolicy, String> {
    match text {
        "ALLOW_ANY" => Ok(ironmesh_api::mesh::OutboundTrafficPolicy::AllowAny),
        "REGISTRY_ONLY" => Ok(ironmesh_api::mesh::OutboundTrafficPolicy::RegistryOnly),
        other => Err(format!(
            "{other:?} is not an outbound traffic policy: use ALLOW_ANY or REGISTRY_ONLY"
        )),
    }
}

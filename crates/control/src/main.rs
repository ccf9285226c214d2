//! `ironmesh-control-plane`: the control plane's own process. `ironmesh up` starts it in the background
//! (`run`, the default) and `ironmesh down` runs its `teardown` after a crash; the CLI never links the
//! control plane, so it stays a client of the API whether it runs next to the cluster or far from it.
//! `run --kubeconfig F` (or `run` in a pod) runs it on a Kubernetes cluster instead, and `install` puts
//! the mesh into one (`ironmesh install` runs it, so the CLI links no Kubernetes client).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ironmesh_control::kubernetes::KubernetesOptions;
use ironmesh_home::Home;
use tokio_util::sync::CancellationToken;

/// `ironmesh-control-plane`: the control plane of the local runtime (`ironmesh up` runs it) or of a
/// Kubernetes cluster (`run --kubeconfig F`, or in a pod), and the installer of the latter.
#[derive(Parser)]
#[command(name = "ironmesh-control-plane", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run in the foreground (the default), with IRONMESH_HOME set; `ironmesh up` runs it for you.
    Run(RunArgs),
    /// Remove what a crashed local control plane left running (`ironmesh down` runs it).
    Teardown,
    /// Install the mesh into a Kubernetes cluster: Istio's CRDs, istio-system, RBAC, the webhooks'
    /// configurations (validation, sidecar injection) and the control plane's Deployment and Service
    /// (`ironmesh install` runs it).
    Install(InstallArgs),
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// Run against this Kubernetes cluster instead of the local runtime. In a pod, the service account
    /// is used without this flag.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The local runtime, even in a pod (`ironmesh up` passes it, so a local cluster started inside a
    /// Kubernetes pod stays local).
    #[arg(long, conflicts_with = "kubeconfig")]
    local: bool,
    /// On Kubernetes: where the validating webhook listens [default: 0.0.0.0:15017].
    #[arg(long)]
    webhook_address: Option<SocketAddr>,
    /// On Kubernetes: where proxies get certificates and configuration over TLS [default: 0.0.0.0:15012].
    #[arg(long)]
    xds_address: Option<SocketAddr>,
    /// On Kubernetes: a name (DNS or IP) the API server and proxies reach the control plane by (both
    /// serving certificates name it); repeatable. Default: istiod.istio-system.svc and its
    /// cluster.local form.
    #[arg(long = "webhook-name")]
    webhook_names: Vec<String>,
    /// On Kubernetes: where the extensions/v1beta1 aggregated API listens [default: 0.0.0.0:15018].
    #[arg(long)]
    extensions_address: Option<SocketAddr>,
    /// Local runtime: read the mesh options `ironmesh up` was given as JSON from standard input and
    /// keep them in mesh.json (the control plane is the only writer of that file).
    #[arg(long)]
    mesh_stdin: bool,
}

#[derive(clap::Args)]
struct InstallArgs {
    /// The cluster's admin kubeconfig (default: $KUBECONFIG, as kubectl reads it; in a pod: its service
    /// account).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Print the manifests as YAML documents instead of applying them.
    #[arg(long)]
    dry_run: bool,
    /// The control plane's image.
    #[arg(long, default_value = ironmesh_kube::install::DEFAULT_IMAGE)]
    image: String,
    /// The control plane runs outside the cluster: the API server calls the webhook at this URL
    /// (e.g. https://127.0.0.1:15017/validate), and no Deployment or Service is installed.
    #[arg(long)]
    webhook_url: Option<String>,
    /// With --webhook-url: the address (not loopback) where the API server's aggregator reaches the
    /// control plane's extensions/v1beta1 API (its --extensions-address), e.g. 198.18.127.1:15018.
    #[arg(long, requires = "webhook_url")]
    aggregated_api_endpoint: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let home = Home::from_env();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(&home, RunArgs::default()),
        Some(Command::Run(args)) => run(&home, args),
        Some(Command::Teardown) => teardown(&home),
        Some(Command::Install(args)) => install(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Prints or applies the install manifests.
fn install(args: InstallArgs) -> anyhow::Result<()> {
    let options = ironmesh_kube::install::InstallOptions {
        image: args.image,
        webhook_url: args.webhook_url,
        aggregated_api_endpoint: args.aggregated_api_endpoint,
    };
    let manifests = ironmesh_kube::install::manifests(&options);
    if args.dry_run {
        print!("{}", ironmesh_kube::install::to_yaml(&manifests)?);
        return Ok(());
    }
    ironmesh_identity::install_crypto_provider();
    async_runtime()?.block_on(async {
        let client = ironmesh_kube::client(args.kubeconfig.as_deref()).await?;
        for object in ironmesh_kube::install::apply(&client, &manifests).await? {
            println!("{object} serverside-applied");
        }
        Ok(())
    })
}

/// Runs the control plane in the foreground until SIGTERM, SIGINT or an API shutdown request. With
/// `--mesh-stdin` it first takes the mesh options `ironmesh up` was given and saves them: the control plane
/// is the only writer of mesh.json.
fn run(home: &Home, args: RunArgs) -> anyhow::Result<()> {
    home.create_dirs()?;
    if args.mesh_stdin {
        let options = ironmesh_control::options::read_given(std::io::stdin().lock())?;
        ironmesh_control::options::save(&options, home)?;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // `up` sends this to logs/control-plane.log: colour codes only for a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    // In a pod: Kubernetes' service environment and the mounted service-account token.
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists();
    let on_kubernetes = args.kubeconfig.is_some() || (in_pod && !args.local);
    async_runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        tracing::info!(home = %home.root().display(), on_kubernetes, "control plane starting");
        if on_kubernetes {
            let mut options = KubernetesOptions {
                kubeconfig: args.kubeconfig,
                ..KubernetesOptions::default()
            };
            if let Some(address) = args.webhook_address {
                options.webhook_address = address;
            }
            if let Some(address) = args.xds_address {
                options.xds_address = address;
            }
            if !args.webhook_names.is_empty() {
                options.webhook_names = args.webhook_names;
            }
            if let Some(address) = args.extensions_address {
                options.extensions_address = address;
            }
            let result = ironmesh_control::kubernetes::run(home.root(), &options, shutdown).await;
            tracing::info!("control plane stopped");
            return Ok(result?);
        }
        let result = ironmesh_control::run(home.root(), shutdown).await;
        tracing::info!("control plane stopped");
        Ok(result?)
    })
}

/// A control plane that died (kill -9, a crash) leaves its pods and their network namespaces behind, and
/// its pid file and sockets; `ironmesh down` runs this so it always leaves nothing of the cluster running.
/// The pods need root (a control plane run without root, `IRONMESH_NO_RUNTIME`, ran none); without a
/// `pods/` directory there are none.
fn teardown(home: &Home) -> anyhow::Result<()> {
    remove_stale_run_files(home);
    if !home.pods_dir().exists() || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    ironmesh_runtime::Cluster::open(home.root())
        .and_then(|cluster| cluster.teardown())
        .context("cannot remove what the cluster left running")
}

/// The pid file and sockets a control plane that did not stop by itself left in `run/`; nothing while a
/// control plane answers on the API socket (`down` runs this only once it stopped this home's).
fn remove_stale_run_files(home: &Home) {
    if std::os::unix::net::UnixStream::connect(home.api_socket()).is_ok() {
        return;
    }
    for file in [home.pid_file(), home.api_socket(), home.xds_socket()] {
        let _ = std::fs::remove_file(file);
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

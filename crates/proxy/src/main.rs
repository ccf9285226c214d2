//! ironmesh-proxy: the transparent mTLS sidecar (`run`) and its interception rules (`iptables`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ironmesh_identity::{CaClient, RotationOptions, SpiffeId, WorkloadCertificates};

use ironmesh_proto::{ConfigClientOptions, TokenSource};
use ironmesh_proxy::admin::{AdminState, LogLevelSetter, Surface};
use ironmesh_proxy::{
    ConnectionLimits, DataPlane, DataPlaneOptions, InterceptionRules, Metrics, SystemSockets,
    WorkloadInfo,
};
use tokio::sync::watch;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(
    name = "ironmesh-proxy",
    version,
    about = "The ironmesh transparent mTLS sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (reads the pod environment).
    Run(Box<RunArgs>),
    /// Print (or apply with --apply) the iptables-restore script that redirects the pod's traffic.
    Iptables(IptablesArgs),
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: String,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// `unix:///var/lib/ironmesh/run/xds.sock`, `http://host:port`, or on Kubernetes
    /// `https://istiod.istio-system.svc:15012`.
    #[arg(long, env = "IRONMESH_CONTROL_PLANE")]
    control_plane: String,
    /// With an `https` control plane: the root(s) its certificate must chain to (the namespace's
    /// ConfigMap istio-ca-root-cert, mounted as Istio mounts it).
    #[arg(long, env = "IRONMESH_CONTROL_PLANE_ROOT", default_value = ironmesh_identity::DEFAULT_ROOT_FILE)]
    control_plane_root: PathBuf,
    #[arg(long, env = "IRONMESH_TOKEN_FILE")]
    token_file: PathBuf,
    #[arg(long, env = "IRONMESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[arg(long, env = "IRONMESH_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Certificate lifetime asked of the CA, in seconds.
    #[arg(long, env = "IRONMESH_CERT_TTL_SECONDS", default_value_t = 24 * 3600)]
    cert_ttl_seconds: u64,
    /// Data-plane worker threads (1, the default, runs a current-thread runtime and keeps memory smallest).
    #[arg(long, env = "IRONMESH_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value = "0.0.0.0:15001")]
    outbound_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15006")]
    inbound_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_listen: SocketAddr,
    /// Mark put on the proxy's own sockets (0 disables it).
    #[arg(long, default_value_t = ironmesh_proxy::PROXY_MARK)]
    proxy_mark: u32,
    /// Access log and logs as JSON lines.
    #[arg(long, env = "IRONMESH_LOG_JSON")]
    log_json: bool,
    /// Seconds to let open connections finish after SIGTERM.
    #[arg(long, default_value_t = 5)]
    drain_seconds: u64,
    /// The pod's IP: the inbound forwards to it (not 127.0.0.1), so apps listening only on localhost are
    /// not exposed to the mesh. Unset: the connection's original destination.
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<std::net::IpAddr>,
    /// Seconds a client may take from its first byte to the end of a request's headers (all HTTP ports).
    #[arg(
        long,
        env = "IRONMESH_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    header_read_timeout_seconds: u64,
    /// Seconds an inbound or outbound connection may stay idle (no HTTP request in flight, or no TCP
    /// byte either way) before it is closed (Envoy's default: 1 hour).
    #[arg(long, env = "IRONMESH_IDLE_TIMEOUT_SECONDS", default_value_t = 3600)]
    idle_timeout_seconds: u64,
    /// Inbound and outbound connections open at once; more are closed at once.
    #[arg(long, env = "IRONMESH_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Connections open at once on each of the readiness, metrics and admin ports.
    #[arg(long, env = "IRONMESH_ADMIN_MAX_CONNECTIONS", default_value_t = 128)]
    admin_max_connections: usize,
}

#[derive(Args)]
struct IptablesArgs {
    #[arg(long)]
    apply: bool,
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    #[arg(long, default_value_t = 1337)]
    proxy_mark: u32,
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    #[arg(long, value_delimiter = ',', default_value = "15000,15020,15021")]
    exclude_inbound_ports: Vec<u16>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Iptables(args) => iptables(args),
        Command::Run(args) => run(*args),
    }
}

fn iptables(args: IptablesArgs) -> anyhow::Result<()> {
    let rules = InterceptionRules {
        proxy_uid: args.proxy_uid,
        proxy_mark: args.proxy_mark,
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        exclude_inbound_ports: args.exclude_inbound_ports,
    };
    if args.apply {
        ironmesh_proxy::apply_rules(&rules)?;
    } else {
        print!("{}", ironmesh_proxy::render_rules(&rules));
    }
    Ok(())
}

/// Logs to stdout through tracing-subscriber, and the access log through its own writer thread
/// ([`ironmesh_proxy::access_log`]), which counts the lines it drops in `metrics`.
fn init_logging(json: bool, metrics: &Metrics) -> anyhow::Result<LogLevelSetter> {
    ironmesh_proxy::access_log::install(
        Box::new(std::io::stdout()),
        json,
        metrics.access_log_dropped.clone(),
    )?;
    // `Targets` (`info`, `warn,ironmesh_proxy=debug`: a default level and per-target levels) rather than
    // `EnvFilter`, whose span and field filters pull regex into the binary; the proxy filters by target.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|value| value.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false),
            )
            .init();
    } else {
        // Colour codes only for a terminal: in a pod the log is a file, and formatting them cost ~3% of
        // the proxy's CPU per request in a profile (nu_ansi_term under the access log).
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init();
    }
    Ok(Arc::new(move |level: &str| {
        let filter = level.parse::<Targets>().map_err(|e| {
            format!("bad level {level:?}: {e} (a level such as info, or target=level pairs separated by commas)")
        })?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

/// What the control runtime hands to the data plane.
struct ControlHandles {
    certs: WorkloadCertificates,
    config: watch::Receiver<Option<Arc<ironmesh_proxy::ConfigIndex>>>,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before any thread starts: the connections' memory stays in the workers' arenas.
    ironmesh_proxy::limit_malloc_arenas(args.concurrency);
    ironmesh_identity::install_crypto_provider();
    let metrics = Arc::new(Metrics::default());
    let set_log_level = init_logging(args.log_json, &metrics)?;
    let identity = SpiffeId::new(
        &args.trust_domain,
        &args.pod_namespace,
        &args.service_account,
    )
    .context("the pod's identity is not a valid SPIFFE ID")?;
    let token_file = args.token_file.clone();
    let address = args
        .control_plane
        .parse::<ironmesh_identity::ControlPlaneAddress>()
        .context("IRONMESH_CONTROL_PLANE")?
        .with_root_file(&args.control_plane_root);
    let ca_address = address.clone();
    let proxy_id = ironmesh_identity::proxy_id(&args.pod_name, &args.pod_namespace);

    // Control plane client, certificates and admin live on their own small runtime and thread.
    let (handles_tx, handles_rx) = std::sync::mpsc::channel();
    let control_metrics = metrics.clone();
    let rotation = RotationOptions {
        ttl: Duration::from_secs(args.cert_ttl_seconds),
        ..Default::default()
    };
    let (admin_listen, metrics_listen, readiness_listen) = (
        args.admin_listen,
        args.metrics_listen,
        args.readiness_listen,
    );
    let state_dir = args.state_dir.clone();
    let token = TokenSource::File(args.token_file.clone());
    let header_read_timeout = Duration::from_secs(args.header_read_timeout_seconds.max(1));
    let admin_limits = ConnectionLimits {
        header_read_timeout,
        max_connections: args.admin_max_connections.max(1),
        ..ConnectionLimits::OPERATIONAL
    };
    let data_limits = ConnectionLimits {
        header_read_timeout,
        idle_timeout: Duration::from_secs(args.idle_timeout_seconds.max(1)),
        max_connections: args.max_connections.max(1),
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                // Built here: tonic's lazy channel needs a running runtime.
                let signer = CaClient::for_address(&ca_address, token_file)?;
                let certs = WorkloadCertificates::spawn(identity, Arc::new(signer), rotation);
                let client = ironmesh_proxy::config_client(ConfigClientOptions::new(
                    address, proxy_id, token,
                ));
                let state = AdminState {
                    certs: certs.clone(),
                    config: client.config(),
                    metrics: control_metrics,
                    set_log_level: Some(set_log_level),
                };
                for (address, surface) in [
                    (admin_listen, Surface::Admin),
                    (metrics_listen, Surface::Metrics),
                    (readiness_listen, Surface::Readiness),
                ] {
                    let listener = tokio::net::TcpListener::bind(address)
                        .await
                        .with_context(|| format!("cannot listen on {address}"))?;
                    tokio::spawn(ironmesh_proxy::admin::serve_with_limits(
                        listener,
                        state.clone(),
                        surface,
                        admin_limits,
                    ));
                }
                if let Some(dir) = state_dir {
                    tokio::spawn(keep_chain_copy(certs.clone(), dir));
                }
                tokio::spawn(ironmesh_proxy::follow_trust_bundle(
                    certs.clone(),
                    client.config(),
                ));
                let _ = handles_tx.send(ControlHandles {
                    certs,
                    config: client.config(),
                });
                // Keep the client alive for the life of the process.
                let _client = client;
                std::future::pending::<anyhow::Result<()>>().await
            })
        })?;
    let handles = handles_rx
        .recv()
        .context("the control thread failed to start (see the log above)")?;

    // One worker (the default): a current-thread runtime, as linkerd2-proxy runs on one core. The
    // multi-thread scheduler with a single worker still pays for work stealing it cannot do: its
    // run queue's atomics, the idle bookkeeping and the poll-time average it updates (a `powf`) each time
    // the worker goes to sleep, which a sidecar does about twice per request.
    let runtime = if args.concurrency <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .thread_name("dataplane")
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.concurrency)
            .thread_name("dataplane")
            .enable_all()
            .build()?
    };
    let serve = async move {
        let mut options = DataPlaneOptions::new(WorkloadInfo {
            name: args.pod_name.clone(),
            namespace: args.pod_namespace.clone(),
        });
        options.outbound_listen = args.outbound_listen;
        options.inbound_listen = args.inbound_listen;
        options.limits = data_limits;
        options.pod_ip = args.pod_ip;
        let mark = (args.proxy_mark != 0).then_some(args.proxy_mark);
        let data_plane = DataPlane::start(
            options,
            handles.certs,
            handles.config,
            Arc::new(SystemSockets { mark }),
            metrics,
        )
        .await?;
        tracing::info!(outbound = %data_plane.outbound_addr(), inbound = %data_plane.inbound_addr(), "proxy started");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(active = data_plane.active_connections(), "draining");
        data_plane
            .drain(Duration::from_secs(args.drain_seconds))
            .await;
        ironmesh_proxy::access_log::flush();
        Ok(())
    };
    // On a thread named for what it carries, so per-thread figures (wake-ups, CPU) read the same
    // whichever runtime runs it.
    std::thread::Builder::new()
        .name("dataplane".into())
        .spawn(move || runtime.block_on(serve))?
        .join()
        .map_err(|_| anyhow::anyhow!("the data plane thread panicked (see the log above)"))?
}

/// Writes the current chain to the state dir for debugging; the key never leaves memory.
async fn keep_chain_copy(certs: WorkloadCertificates, dir: PathBuf) {
    let mut updates = certs.subscribe();
    loop {
        let current = updates.borrow_and_update().clone();
        if let Some(info) = current {
            let _ = tokio::fs::create_dir_all(&dir).await;
            let _ = tokio::fs::write(dir.join("cert-chain.pem"), info.chain_pem.concat()).await;
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

//! `ironmesh-control-plane`: the control plane's own process. `ironmesh up` starts it in the background
//! (`run`, the default) and `ironmesh down` runs its `teardown` after a crash; the CLI never links the
//! control plane, so it stays a client of the API whether it runs next to the cluster or far from it.

use std::process::ExitCode;

use anyhow::Context as _;
use ironmesh_home::Home;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: ironmesh-control-plane [run [--mesh-stdin]|teardown] (with IRONMESH_HOME set; \
                     `ironmesh up` and `ironmesh down` run it for you; --mesh-stdin reads the mesh options \
                     as JSON from standard input and keeps them in mesh.json)";

fn main() -> ExitCode {
    let home = Home::from_env();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => run(&home, &[]),
        Some("run") => run(&home, &args[1..]),
        Some("teardown") => teardown(&home),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}; {USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the control plane in the foreground until SIGTERM, SIGINT or an API shutdown request. With
/// `--mesh-stdin` it first takes the mesh options `ironmesh up` was given and saves them: the control plane
/// is the only writer of mesh.json.
fn run(home: &Home, flags: &[String]) -> anyhow::Result<()> {
    let mesh_given = match flags {
        [] => false,
        [flag] if flag == "--mesh-stdin" => true,
        other => anyhow::bail!("unknown arguments {other:?}; {USAGE}"),
    };
    home.create_dirs()?;
    if mesh_given {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        tracing::info!(home = %home.root().display(), "control plane starting");
        let result = ironmesh_control::run(home.root(), shutdown).await;
        tracing::info!("control plane stopped");
        Ok(result?)
    })
}

/// A control plane that died (kill -9, a crash) leaves its pods and their network namespaces behind;
/// `ironmesh down` runs this so it always leaves nothing of the cluster running. Needs root; without a
/// `pods/` directory there is nothing to remove.
fn teardown(home: &Home) -> anyhow::Result<()> {
    if !home.pods_dir().exists() {
        return Ok(());
    }
    ironmesh_runtime::Cluster::open(home.root())
        .and_then(|cluster| cluster.teardown())
        .context("cannot remove what the cluster left running")
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

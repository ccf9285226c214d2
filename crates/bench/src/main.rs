//! `ironmesh-bench`: `run` is the whole benchmark (as root); `upstream`, `load` and `handshakes` are the
//! pieces it starts inside the namespaces.
#![allow(
    unsafe_code,
    reason = "rlimits and the Ctrl-C handler are set through libc"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ironmesh-bench",
    about = "Side-by-side benchmark: ironmesh vs direct, nginx, haproxy, stunnel"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs every configuration and writes bench/results (needs root).
    Run {
        /// Short steps (whole run < 3 minutes); what CI runs.
        #[arg(long)]
        quick: bool,
        /// Where latest.md/json/png and timestamped copies go.
        #[arg(long, default_value = "bench/results")]
        results_dir: PathBuf,
        /// A ztunnel binary you built (bench/README.md): adds the ztunnel row, run the same way.
        #[arg(long)]
        ztunnel: Option<PathBuf>,
        /// Leaves out the deployment-path rows (no local-runtime cluster is brought up).
        #[arg(long)]
        no_deployment: bool,
        /// Only the deployment-path rows (the headline figures): no pinned pairs, CA or push.
        #[arg(long, conflicts_with = "no_deployment")]
        deployment_only: bool,
    },
    /// Keeps one CPU busy for a bounded time (the contention rows pin it with taskset).
    Burn {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Memory of the ironmesh pair with N idle connections and after they close, per allocator (root).
    Memory {
        #[arg(long, default_value_t = 5000)]
        connections: u32,
        /// tcp (the opaque relay) or http.
        #[arg(long, default_value = "tcp")]
        mode: Vec<String>,
        /// system, glibc-one-arena (GLIBC_TUNABLES), jemalloc, mimalloc (preloaded into both proxies);
        /// default all four.
        #[arg(long)]
        allocator: Vec<String>,
        /// Seconds between the sample right after the close and the last one.
        #[arg(long, default_value_t = 5)]
        settle_s: u64,
        /// Seconds the connections sit idle before they are sampled.
        #[arg(long, default_value_t = 1)]
        held_s: u64,
    },
    /// Opens N connections through a sidecar, one request each, holds them idle, then closes them.
    Hold {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 5000)]
        connections: u32,
        #[arg(long, default_value_t = 3000)]
        hold_ms: u64,
    },
    /// Re-renders the Markdown report of a saved JSON result (e.g. bench/results/latest.json).
    Report { json: PathBuf },
    /// The upstream HTTP server (1 kB at /bytes/1024).
    Upstream {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// The load generator; rate 0 is closed loop.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 16)]
        connections: u32,
        #[arg(long, default_value_t = 1000)]
        warmup_ms: u64,
        #[arg(long, default_value_t = 10000)]
        duration_ms: u64,
        #[arg(long, default_value = "/bytes/1024")]
        path: String,
        #[arg(long)]
        json_out: Option<PathBuf>,
        /// Also write every measured request (`connection,begin_us,latency_us`, µs from the start of
        /// the measured window) to this CSV file: where in the run the slow requests fall.
        #[arg(long)]
        timeline: Option<PathBuf>,
    },
    /// Full mTLS handshakes per second against a server-side listener.
    Handshakes {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = ironmesh_bench::certs::SERVER_NAME)]
        server_name: String,
        #[arg(long, default_value_t = 4)]
        concurrency: u32,
        #[arg(long)]
        alpn: Vec<String>,
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// SO_MARK for the client sockets (1337 bypasses ironmesh's outbound capture).
        #[arg(long)]
        mark: Option<u32>,
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
}

extern "C" fn on_signal(_: libc::c_int) {
    ironmesh_bench::measure::INTERRUPTED.store(true, Ordering::SeqCst);
}

fn write_json(path: Option<PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    match path {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// The push benchmark holds 1,000 streams (two sockets each) in this process.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(65536).max(limit.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn single_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Run {
            quick,
            results_dir,
            ztunnel,
            no_deployment,
            deployment_only,
        } => {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            }
            raise_open_files_limit();
            let self_exe = std::env::current_exe().context("locating the ironmesh-bench binary")?;
            let options = ironmesh_bench::RunOptions {
                quick,
                ztunnel,
                no_deployment,
                deployment_only,
            };
            let report =
                ironmesh_bench::run(&options, self_exe, &mut |step| eprintln!("bench: {step}"))?;
            let written = ironmesh_bench::write_results(&report, &results_dir)?;
            print!("{}", report.markdown());
            for path in written {
                eprintln!("bench: wrote {}", path.display());
            }
        }
        Commands::Memory {
            connections,
            mode,
            allocator,
            settle_s,
            held_s,
        } => {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            }
            // Inherited by the proxies and `hold`: each needs a descriptor per connection or two.
            raise_open_files_limit();
            let modes = mode
                .iter()
                .map(|name| match name.as_str() {
                    "tcp" => Ok(ironmesh_bench::ironmesh::IronmeshMode::Tcp),
                    "http" => Ok(ironmesh_bench::ironmesh::IronmeshMode::Http),
                    other => anyhow::bail!("--mode {other}: use tcp or http"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            use ironmesh_bench::memory::Allocator;
            let allocators = if allocator.is_empty() {
                Allocator::ALL.to_vec()
            } else {
                allocator
                    .iter()
                    .map(|name| {
                        Allocator::parse(name).with_context(|| {
                            format!("--allocator {name}: use system, glibc-one-arena, jemalloc or mimalloc")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let plan = ironmesh_bench::memory::MemoryPlan {
                connections,
                modes,
                allocators,
                settle: Duration::from_secs(settle_s),
                held: Duration::from_secs(held_s),
            };
            let self_exe = std::env::current_exe().context("locating the ironmesh-bench binary")?;
            let table = ironmesh_bench::run_memory(&plan, self_exe, &mut |step| {
                eprintln!("bench memory: {step}")
            })?;
            print!("{table}");
        }
        Commands::Hold {
            target,
            connections,
            hold_ms,
        } => {
            raise_open_files_limit();
            single_thread()?.block_on(ironmesh_bench::memory::hold(
                target,
                connections,
                Duration::from_millis(hold_ms),
            ))?;
        }
        Commands::Burn { seconds } => {
            ironmesh_bench::deploy::burn(Duration::from_secs(seconds));
        }
        Commands::Report { json } => {
            let text = std::fs::read_to_string(&json)
                .with_context(|| format!("reading {}", json.display()))?;
            let report: ironmesh_bench::report::RunReport = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a bench result", json.display()))?;
            print!("{}", report.markdown());
        }
        Commands::Upstream { listen } => {
            single_thread()?.block_on(async {
                let servers: Vec<_> = listen
                    .into_iter()
                    .map(|addr| tokio::spawn(ironmesh_bench::upstream::serve(addr)))
                    .collect();
                for server in servers {
                    server.await??;
                }
                anyhow::Ok(())
            })?;
        }
        Commands::Load {
            target,
            rate,
            connections,
            warmup_ms,
            duration_ms,
            path,
            json_out,
            timeline,
        } => {
            let plan = ironmesh_bench::load::LoadPlan {
                target,
                path,
                rate: (rate > 0).then_some(rate),
                connections,
                warmup: Duration::from_millis(warmup_ms),
                duration: Duration::from_millis(duration_ms),
                timeline: timeline.is_some(),
            };
            let (summary, timed) =
                single_thread()?.block_on(ironmesh_bench::load::run_with_timeline(&plan))?;
            if let Some(path) = timeline {
                std::fs::write(&path, ironmesh_bench::load::timeline_csv(&timed))
                    .with_context(|| format!("writing the timeline to {}", path.display()))?;
            }
            write_json(json_out, &summary)?;
        }
        Commands::Handshakes {
            target,
            cert,
            key,
            server_name,
            concurrency,
            alpn,
            duration_ms,
            mark,
            json_out,
        } => {
            let config = ironmesh_bench::handshake::client_config(&cert, &key, &alpn)?;
            let summary = single_thread()?.block_on(ironmesh_bench::handshake::run(
                target,
                config,
                &server_name,
                concurrency,
                Duration::from_millis(duration_ms),
                mark,
            ))?;
            write_json(json_out, &summary)?;
        }
    }
    Ok(())
}

//! ironmesh-bench: the side-by-side benchmark harness (issue 6).
//!
//! `bench/run [--quick]` builds this crate and runs `ironmesh-bench run` as root. The run creates a
//! client and a server network namespace joined by veth (198.18.0.0/16, only inside them), starts one
//! upstream (1 kB responses) in the server namespace, and measures in turn: direct; nginx, haproxy and
//! stunnel pairs doing mutual TLS 1.3 with certificates from our root; the ironmesh pairs (HTTP and TCP
//! port). Results go to `bench/results/` as Markdown, JSON and a PNG plot.
//!
//! Modules: [`netns`] topology; [`process`] children and `/proc` accounting; [`upstream`] the HTTP
//! server; [`load`] the open/closed-loop generator; [`handshake`] the full-handshake client;
//! [`certs`] certificates; [`peers`] peer configs; [`measure`] one step each; [`runner`] the sequence;
//! [`report`] and [`plot`] the output; [`memory`] the idle-connection memory run (`ironmesh-bench memory`).

mod bars;
pub mod certs;
pub mod controlplane;
pub mod deploy;
pub mod error;
pub mod handshake;
pub mod ironmesh;
pub mod load;
pub mod measure;
pub mod memory;
pub mod netns;
pub mod peers;
pub mod plot;
pub mod process;
pub mod report;
pub mod runner;
pub mod upstream;
pub mod ztunnel;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use error::BenchError;
use error::Result;
use report::{Machine, RunReport};

/// Simulated proxy streams of the push benchmark.
pub const PUSH_STREAMS: u32 = 1000;

/// What `ironmesh-bench run` measures beyond the pinned pairs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Short steps (CI).
    pub quick: bool,
    /// A ztunnel binary the user built: adds the `ztunnel` row ([`ztunnel`]).
    pub ztunnel: Option<PathBuf>,
    /// Leaves out the deployment-path rows (no local-runtime cluster).
    pub no_deployment: bool,
    /// Only the deployment-path rows (no pinned pairs, CA or push).
    pub deployment_only: bool,
}

/// Runs every configuration and returns the report (does not write it).
pub fn run(
    options: &RunOptions,
    self_exe: PathBuf,
    log: &mut dyn FnMut(&str),
) -> Result<RunReport> {
    let quick = options.quick;
    let started = Instant::now();
    let started_utc = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let runner = runner::Runner::start(quick, self_exe.clone())?;
    let mut configs = if options.deployment_only {
        Vec::new()
    } else {
        runner.run_all(log)?
    };
    if let Some(binary) = options
        .ztunnel
        .as_ref()
        .filter(|_| !options.deployment_only)
    {
        log("ztunnel");
        configs.push(runner.run_ztunnel(binary)?);
    }
    let mut notes_extra = Vec::new();
    let deployment = if options.no_deployment {
        None
    } else {
        match deploy::run(
            &deploy::DeployPlan::new(quick),
            &runner.bench.work_dir,
            &self_exe,
            log,
        ) {
            Ok(figures) => Some(figures),
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(error) => {
                notes_extra.push(format!("deployment path: {error}"));
                None
            }
        }
    };
    let skip_control_plane = options.deployment_only;
    log("CA signings");
    let ca = (!skip_control_plane)
        .then(|| {
            runner
                .control
                .bench_signing(runner.durations.handshakes)
                .map_err(|error| notes_extra.push(format!("CA: {error}")))
                .ok()
        })
        .flatten();
    log("control-plane push to 1,000 streams");
    let push = (!skip_control_plane)
        .then(|| {
            runner
                .control
                .bench_push(PUSH_STREAMS, std::time::Duration::from_secs(60))
                .map_err(|error| notes_extra.push(format!("push: {error}")))
                .ok()
        })
        .flatten();
    let mut notes = vec![format!(
        "latency: {} run(s) of {} s per point (first after {} s warm-up), medians of per-run percentiles; proxies pinned to CPU {}, generator and upstream to CPU {}",
        runner.durations.latency_runs,
        runner.durations.latency.as_secs(),
        runner.durations.warmup.as_secs(),
        runner::PROXY_CPUS,
        measure::GENERATOR_CPUS
    )];
    notes.push("CA: in-process CertificateAuthority::sign_workload on one thread (CSR parse and check, sign, PEM); per core = signings / thread CPU seconds; p99 = single signings at a fixed 1,000/s".into());
    notes.push(format!("push: {PUSH_STREAMS} in-process ConfigClient streams over the Unix socket; change → the client's watch holds the new config (validated, ACKed); includes the hub's 100 ms debounce"));
    notes.extend(notes_extra);
    Ok(RunReport {
        started_utc,
        mode: if quick { "quick" } else { "full" }.into(),
        wall_seconds: started.elapsed().as_secs_f64(),
        machine: Machine::detect(),
        configs,
        ca,
        push,
        deployment,
        notes,
    })
}

/// The memory run (`ironmesh-bench memory`): its own topology and control plane, then every variant
/// of `plan`; returns the Markdown table.
pub fn run_memory(
    plan: &memory::MemoryPlan,
    self_exe: PathBuf,
    log: &mut dyn FnMut(&str),
) -> Result<String> {
    let runner = runner::Runner::start(true, self_exe)?;
    let (runs, skipped) = memory::run(plan, &runner, log)?;
    Ok(memory::markdown(&runs, &skipped))
}

/// Writes `<stamp>.md/.json/.png` and `latest.md/.json/.png` under `dir`; returns the written paths.
pub fn write_results(report: &RunReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|error| BenchError::io(dir, error))?;
    let stamp = report.started_utc.replace(':', "");
    let markdown = report.markdown();
    let json = serde_json::to_string_pretty(report).expect("the report is plain data");
    let mut written = Vec::new();
    for name in [stamp.as_str(), "latest"] {
        for (extension, text) in [("md", &markdown), ("json", &json)] {
            let path = dir.join(format!("{name}.{extension}"));
            std::fs::write(&path, text).map_err(|error| BenchError::io(&path, error))?;
            written.push(path);
        }
    }
    let plot_path = dir.join("latest.png");
    plot::latency_chart(&report.configs, &plot_path)?;
    let stamped_plot = dir.join(format!("{stamp}.png"));
    std::fs::copy(&plot_path, &stamped_plot)
        .map_err(|error| BenchError::io(&stamped_plot, error))?;
    written.extend([plot_path, stamped_plot]);
    Ok(written)
}

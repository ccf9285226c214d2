//! `ironmesh-bench memory`: what idle connections cost an ironmesh sidecar pair, and whether the memory
//! comes back once they close (issue 15, item 5).
//!
//! Per allocator variant (preloaded into both proxies with `LD_PRELOAD`): start the ironmesh pair in the
//! harness's namespaces, sample each proxy's RSS idle, open N connections through the client sidecar
//! (mutual TLS to the server sidecar, one small request each so the TLS session and the upstream
//! connection exist), sample again while they sit idle, close them all, and sample right after and once
//! more a few seconds later. The connections are opened by [`hold`], a child in the client namespace that
//! exits by itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{BenchError, Result};
use crate::ironmesh::{self, IronmeshMode};
use crate::measure::{GENERATOR_CPUS, INTERRUPTED};
use crate::process::{Launch, Running};
use crate::runner::Runner;

/// The line `hold` prints once every connection is open and has had its response.
pub const HOLDING: &str = "holding";

/// A malloc implementation the proxies run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Allocator {
    /// glibc's malloc, what the binary links.
    System,
    /// Debian's libjemalloc2 with a background thread purging dirty pages.
    Jemalloc,
    /// Debian's libmimalloc2.0.
    Mimalloc,
    /// glibc's malloc with one arena for every thread (`GLIBC_TUNABLES=glibc.malloc.arena_max=1`), to
    /// tell what the per-thread arenas cost.
    GlibcOneArena,
}

impl Allocator {
    pub const ALL: [Allocator; 4] = [
        Allocator::System,
        Allocator::GlibcOneArena,
        Allocator::Jemalloc,
        Allocator::Mimalloc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Allocator::System => "system (glibc)",
            Allocator::Jemalloc => "jemalloc, background purge",
            Allocator::Mimalloc => "mimalloc",
            Allocator::GlibcOneArena => "glibc, one arena",
        }
    }

    /// The name `--allocator` takes.
    pub fn parse(name: &str) -> Option<Allocator> {
        Some(match name {
            "system" => Allocator::System,
            "jemalloc" => Allocator::Jemalloc,
            "mimalloc" => Allocator::Mimalloc,
            "glibc-one-arena" => Allocator::GlibcOneArena,
            _ => return None,
        })
    }

    /// The environment that selects this allocator, or why it is not installed.
    fn env(self) -> std::result::Result<Vec<(String, String)>, String> {
        let (library, package, extra): (&str, &str, &[(&str, &str)]) = match self {
            Allocator::System => return Ok(Vec::new()),
            Allocator::GlibcOneArena => {
                return Ok(vec![(
                    "GLIBC_TUNABLES".to_string(),
                    "glibc.malloc.arena_max=1".to_string(),
                )]);
            }
            Allocator::Jemalloc => (
                "libjemalloc.so.2",
                "libjemalloc2",
                // Without the background thread jemalloc purges only when the proxy calls into it,
                // and an idle proxy does not.
                &[(
                    "MALLOC_CONF",
                    "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
                )],
            ),
            Allocator::Mimalloc => ("libmimalloc.so.2", "libmimalloc2.0", &[]),
        };
        let path = [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib",
        ]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(library))
        .find(|path| path.exists())
        .ok_or_else(|| format!("{library} not found; apt-get install {package}"))?;
        let mut env = vec![("LD_PRELOAD".to_string(), path.display().to_string())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Ok(env)
    }
}

/// RSS of one proxy at each point of a memory run, in KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemorySample {
    pub idle_kib: u64,
    pub held_kib: u64,
    pub closed_kib: u64,
    pub settled_kib: u64,
    /// Where the idle RSS is.
    #[serde(default)]
    pub idle: Breakdown,
}

/// Where a process tree's resident memory is (`/proc/<pid>/smaps_rollup` and `status`, summed over the
/// tree), in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Breakdown {
    pub rss_kib: u64,
    /// The process's own memory: heap, stacks, writable data.
    pub anonymous_kib: u64,
    /// Mapped files (the binary and its libraries), shared with every process that maps them.
    pub file_kib: u64,
    /// Proportional set size: shared pages divided among the processes that map them.
    pub pss_kib: u64,
    pub threads: u64,
}

impl Breakdown {
    /// The breakdown of `root` and its descendants now; fields it cannot read stay 0.
    pub fn of_tree(root: u32) -> Breakdown {
        let mut total = Breakdown::default();
        for pid in crate::process::tree_pids(root) {
            let rollup =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let one = Breakdown::parse(&rollup, &status);
            total.rss_kib += one.rss_kib;
            total.anonymous_kib += one.anonymous_kib;
            total.file_kib += one.file_kib;
            total.pss_kib += one.pss_kib;
            total.threads += one.threads;
        }
        total
    }

    pub(crate) fn parse(smaps_rollup: &str, status: &str) -> Breakdown {
        let field = |text: &str, name: &str| crate::process::proc_number(text, name).unwrap_or(0);
        Breakdown {
            rss_kib: field(smaps_rollup, "Rss"),
            anonymous_kib: field(status, "RssAnon"),
            file_kib: field(status, "RssFile"),
            pss_kib: field(smaps_rollup, "Pss"),
            threads: field(status, "Threads"),
        }
    }
}

impl MemorySample {
    /// Bytes per held connection above idle, in KB (1,000 bytes, as the issue counts them).
    pub fn kb_per_connection(&self, connections: u32) -> f64 {
        self.held_kib.saturating_sub(self.idle_kib) as f64 * 1024.0
            / 1000.0
            / f64::from(connections.max(1))
    }
}

/// One allocator's run: client side first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryRun {
    pub allocator: Allocator,
    pub mode: String,
    pub connections: u32,
    /// Connections `hold` opened and got a response on.
    pub held: u32,
    pub client: MemorySample,
    pub server: MemorySample,
}

/// What `ironmesh-bench memory` was asked to do.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    pub connections: u32,
    pub modes: Vec<IronmeshMode>,
    pub allocators: Vec<Allocator>,
    /// How long after the close the second sample is taken.
    pub settle: Duration,
    /// How long the connections sit idle before the sample with them open.
    pub held: Duration,
}

/// Runs every (mode, allocator) of `plan`; a variant that cannot run is reported in the second list.
pub fn run(
    plan: &MemoryPlan,
    runner: &Runner,
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<MemoryRun>, Vec<String>)> {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for &mode in &plan.modes {
        for &allocator in &plan.allocators {
            let label = format!("{} / {}", mode.row_name(), allocator.name());
            log(&label);
            let env = match allocator.env() {
                Ok(env) => env,
                Err(reason) => {
                    skipped.push(format!("{label}: {reason}"));
                    continue;
                }
            };
            let result = ironmesh::start_pair_with(runner, mode, &env)
                .and_then(|pair| one_run(plan, runner, mode, allocator, &pair));
            runner.topology.flush_iptables();
            match result {
                Ok(run) => runs.push(run),
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(error) => skipped.push(format!("{label}: {error}")),
            }
        }
    }
    Ok((runs, skipped))
}

fn one_run(
    plan: &MemoryPlan,
    runner: &Runner,
    mode: IronmeshMode,
    allocator: Allocator,
    pair: &crate::runner::Pair,
) -> Result<MemoryRun> {
    let (Some(client), Some(server)) = (pair.client.as_ref(), pair.server.as_ref()) else {
        return Err(BenchError::Command {
            command: "memory".into(),
            detail: "the ironmesh pair has no sidecars; this is a bug in the harness".into(),
        });
    };
    // After the readiness probe: let start-up allocations and the probe's connection finish.
    sleep(Duration::from_secs(2))?;
    let rss = |proxy: &Running| proxy.usage().rss_kib;
    let idle = (rss(client), rss(server));
    let idle_breakdown = (
        Breakdown::of_tree(client.pid),
        Breakdown::of_tree(server.pid),
    );
    let name = format!("hold-{}-{:?}", mode.row_name(), allocator);
    let mut holder = Launch {
        name: &name,
        namespace: &runner.topology.client,
        cpus: GENERATOR_CPUS,
        argv: vec![
            runner.bench.self_exe.display().to_string(),
            "hold".into(),
            "--target".into(),
            pair.http_target.to_string(),
            "--connections".into(),
            plan.connections.to_string(),
            "--hold-ms".into(),
            (plan.held + Duration::from_secs(2)).as_millis().to_string(),
        ],
        env: Vec::new(),
        log_dir: &runner.bench.work_dir,
    }
    .spawn()?;
    let held = wait_holding(&mut holder, Duration::from_secs(120))?;
    // The connections are idle now; give the proxies a moment to finish the last responses (and, with a
    // longer `held`, to do what an idle proxy does after a burst, such as trimming the heap).
    sleep(plan.held)?;
    let with_connections = (rss(client), rss(server));
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder.is_alive() {
        if Instant::now() > deadline {
            return Err(BenchError::Command {
                command: name,
                detail: format!("did not exit; log {}", holder.log.display()),
            });
        }
        sleep(Duration::from_millis(100))?;
    }
    // The proxies see the closes within milliseconds; a second is plenty for their tasks to end.
    sleep(Duration::from_secs(1))?;
    let closed = (rss(client), rss(server));
    sleep(plan.settle)?;
    let settled = (rss(client), rss(server));
    let sample = |pick: fn(&(u64, u64)) -> u64, breakdown: Breakdown| MemorySample {
        idle_kib: pick(&idle),
        held_kib: pick(&with_connections),
        closed_kib: pick(&closed),
        settled_kib: pick(&settled),
        idle: breakdown,
    };
    Ok(MemoryRun {
        allocator,
        mode: mode.row_name().into(),
        connections: plan.connections,
        held,
        client: sample(|pair| pair.0, idle_breakdown.0),
        server: sample(|pair| pair.1, idle_breakdown.1),
    })
}

fn sleep(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
    }
    Ok(())
}

/// Waits for `hold`'s "holding N" line; returns N.
fn wait_holding(holder: &mut Running, limit: Duration) -> Result<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(&holder.log).unwrap_or_default();
        if let Some(count) = parse_holding(&text) {
            return Ok(count);
        }
        if !holder.is_alive() || Instant::now() > deadline {
            return Err(BenchError::Command {
                command: holder.name.clone(),
                detail: format!(
                    "never held its connections; log {}: {}",
                    holder.log.display(),
                    text.trim()
                ),
            });
        }
        sleep(Duration::from_millis(100))?;
    }
}

pub(crate) fn parse_holding(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|line| line.strip_prefix(HOLDING))
        .and_then(|rest| rest.trim().parse().ok())
}

/// The report: one row per (run, side).
pub fn markdown(runs: &[MemoryRun], skipped: &[String]) -> String {
    let mb = |kib: u64| kib as f64 / 1024.0;
    let delta = |kib: u64, idle: u64| (kib as f64 - idle as f64) / 1024.0;
    let mut out = String::from(
        "| row | allocator | side | idle MB | with N idle MB | KB per connection | closed MB (Δ idle) | after settle MB (Δ idle) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        for (side, sample) in [("client", &run.client), ("server", &run.server)] {
            out.push_str(&format!(
                "| {} | {} | {side} | {:.1} | {:.1} (N = {}) | {:.1} | {:.1} ({:+.1}) | {:.1} ({:+.1}) |\n",
                run.mode,
                run.allocator.name(),
                mb(sample.idle_kib),
                mb(sample.held_kib),
                run.held,
                sample.kb_per_connection(run.held),
                mb(sample.closed_kib),
                delta(sample.closed_kib, sample.idle_kib),
                mb(sample.settled_kib),
                delta(sample.settled_kib, sample.idle_kib),
            ));
        }
    }
    out.push_str(
        "\nIdle, where the RSS is (smaps_rollup and status):\n\n| row | allocator | side | RSS MB | anonymous MB | file-backed MB | PSS MB | threads |\n|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        for (side, sample) in [("client", &run.client), ("server", &run.server)] {
            let idle = &sample.idle;
            out.push_str(&format!(
                "| {} | {} | {side} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
                run.mode,
                run.allocator.name(),
                mb(idle.rss_kib),
                mb(idle.anonymous_kib),
                mb(idle.file_kib),
                mb(idle.pss_kib),
                idle.threads,
            ));
        }
    }
    for reason in skipped {
        out.push_str(&format!("\nnot measured: {reason}\n"));
    }
    out
}

/// `ironmesh-bench hold`: opens `connections` connections to `target` (at most `CONCURRENT` opening at
/// once), sends one small request on each and reads its response, prints "holding N", keeps them idle
/// for `hold`, then closes them all and returns. Connections that fail are counted and left out.
pub async fn hold(target: SocketAddr, connections: u32, hold_for: Duration) -> Result<u32> {
    const CONCURRENT: usize = 64;
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let result = tokio::time::timeout(Duration::from_secs(20), open_one(target)).await;
            drop(permit);
            result.ok().and_then(|opened| opened.ok())
        });
    }
    let mut held = Vec::new();
    let mut failed = 0u32;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.ok().flatten() {
            Some(stream) => held.push(stream),
            None => {
                failed += 1;
                first_error.get_or_insert("connect, request or response failed or timed out");
            }
        }
    }
    println!("{HOLDING} {}", held.len());
    if failed > 0 {
        eprintln!(
            "{failed} connection(s) failed: {}",
            first_error.unwrap_or_default()
        );
    }
    tokio::time::sleep(hold_for).await;
    let count = held.len() as u32;
    drop(held);
    Ok(count)
}

/// One keep-alive connection that has carried one request and its whole response.
async fn open_one(target: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(target).await?;
    stream
        .write_all(b"GET /bytes/16 HTTP/1.1\r\nHost: bench-server\r\n\r\n")
        .await?;
    let mut response = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&chunk[..n]);
        if response_complete(&response) {
            return Ok(stream);
        }
    }
}

/// Whether `bytes` holds a whole response with a Content-Length body.
pub(crate) fn response_complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_only_with_its_whole_body() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n".to_vec();
        assert!(!response_complete(&head[..10]));
        assert!(!response_complete(&[head.clone(), vec![b'x'; 15]].concat()));
        assert!(response_complete(&[head, vec![b'x'; 16]].concat()));
    }

    #[test]
    fn the_holding_line_gives_the_count() {
        assert_eq!(parse_holding("noise\nholding 4998\n"), Some(4998));
        assert_eq!(parse_holding("starting\n"), None);
    }

    #[test]
    fn kilobytes_per_connection_count_above_idle() {
        let sample = MemorySample {
            idle_kib: 10_000,
            held_kib: 10_000 + 5_000 * 4,
            ..Default::default()
        };
        assert!((sample.kb_per_connection(5_000) - 4.096).abs() < 1e-9);
    }

    #[test]
    fn the_idle_breakdown_reads_rollup_and_status() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:                8600 kB\nPss:                3100 kB\nPss_Anon:            980 kB\nAnonymous:           990 kB\n";
        let status = "Name:\tironmesh-proxy\nRssAnon:\t     990 kB\nRssFile:\t    7610 kB\nRssShmem:\t       0 kB\nThreads:\t4\n";
        assert_eq!(
            Breakdown::parse(rollup, status),
            Breakdown {
                rss_kib: 8600,
                anonymous_kib: 990,
                file_kib: 7610,
                pss_kib: 3100,
                threads: 4,
            }
        );
    }

    #[test]
    fn every_allocator_name_parses_back() {
        for (name, allocator) in [
            ("system", Allocator::System),
            ("glibc-one-arena", Allocator::GlibcOneArena),
            ("jemalloc", Allocator::Jemalloc),
            ("mimalloc", Allocator::Mimalloc),
        ] {
            assert_eq!(Allocator::parse(name), Some(allocator));
        }
        assert_eq!(Allocator::parse("tcmalloc"), None);
    }

    #[test]
    fn every_allocator_but_the_system_one_is_preloaded() {
        assert_eq!(Allocator::System.env(), Ok(Vec::new()));
        assert_eq!(
            Allocator::GlibcOneArena.env(),
            Ok(vec![(
                "GLIBC_TUNABLES".to_string(),
                "glibc.malloc.arena_max=1".to_string()
            )])
        );
        for allocator in [Allocator::Jemalloc, Allocator::Mimalloc] {
            match allocator.env() {
                Ok(env) => assert!(env.iter().any(|(key, _)| key == "LD_PRELOAD")),
                Err(reason) => assert!(reason.contains("apt-get install"), "{reason}"),
            }
        }
    }
}

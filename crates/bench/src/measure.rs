//! One measurement step each: fixed-rate latency (with proxy CPU and RSS sampled from `/proc`),
//! closed-loop maximum rps (wrk), full handshakes per second, and bulk throughput (iperf3). Every tool
//! runs as a child inside the client namespace, pinned to CPU 0, bounded in time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::handshake::HandshakeSummary;
use crate::load::LoadSummary;
use crate::process::{Launch, Running, ThreadSwitches, Usage, tree_switches, tree_usage, which};

/// Set by SIGINT/SIGTERM; every wait loop checks it so the run unwinds and cleans up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// CPU the generators (and the upstream) are pinned to; proxies go on the other one.
pub const GENERATOR_CPUS: &str = "0";

/// Context shared by every step of one run.
#[derive(Debug, Clone)]
pub struct Bench {
    pub client_namespace: String,
    /// CPU list the generators run on (`taskset -c`): [`GENERATOR_CPUS`] for the pinned pair, every
    /// CPU for the deployment path, where nothing is pinned.
    pub cpus: String,
    pub work_dir: PathBuf,
    pub self_exe: PathBuf,
}

/// Per-proxy resource figures around one fixed-rate run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyUsage {
    /// Average vCPU used during the run.
    pub vcpu: f64,
    /// CPU seconds per 1,000 requests.
    pub cpu_seconds_per_1k: f64,
    pub rss_idle_kib: u64,
    pub rss_load_kib: u64,
    /// Voluntary context switches per request over all threads: how often the process blocked and
    /// had to be woken ([`crate::process::tree_switches`]).
    #[serde(default)]
    pub wakeups_per_request: f64,
    /// The same by thread name, with preemptions: (name, wake-ups per request, preemptions per request).
    #[serde(default)]
    pub wakeups_by_thread: Vec<(String, f64, f64)>,
}

/// How the handshake client reaches a server sidecar.
#[derive(Debug, Clone, Default)]
pub struct HandshakeClient {
    /// SO_MARK, to bypass an outbound capture in the client namespace.
    pub mark: Option<u32>,
    pub alpn: Vec<String>,
}

/// The shape of one open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct FixedRate {
    pub rate: u32,
    pub connections: u32,
    pub warmup: Duration,
    pub duration: Duration,
}

/// A fixed-rate run with the usage of each proxy (client side first).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyRun {
    pub connections: u32,
    pub rate: u32,
    pub summary: LoadSummary,
    pub proxies: Vec<ProxyUsage>,
    /// How many runs the figures are the median of.
    #[serde(default)]
    pub runs: u32,
}

impl Bench {
    fn launch<'a>(&'a self, name: &'a str, argv: Vec<String>) -> Launch<'a> {
        Launch {
            name,
            namespace: &self.client_namespace,
            cpus: &self.cpus,
            argv,
            env: Vec::new(),
            log_dir: &self.work_dir,
        }
    }

    /// Open-loop run at `rate` over `connections`, sampling the CPU and RSS of the proxies (process ids).
    pub fn latency(
        &self,
        label: &str,
        target: SocketAddr,
        shape: FixedRate,
        proxies: &[u32],
    ) -> Result<LatencyRun> {
        let FixedRate {
            rate,
            connections,
            warmup,
            duration,
        } = shape;
        let json = self
            .work_dir
            .join(format!("load-{label}-{connections}.json"));
        let argv = vec![
            self.self_exe.display().to_string(),
            "load".into(),
            "--target".into(),
            target.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--connections".into(),
            connections.to_string(),
            "--warmup-ms".into(),
            warmup.as_millis().to_string(),
            "--duration-ms".into(),
            duration.as_millis().to_string(),
            "--json-out".into(),
            json.display().to_string(),
        ];
        let name = format!("load-{label}-{connections}");
        let idle: Vec<Usage> = proxies.iter().map(|pid| tree_usage(*pid)).collect();
        let mut generator = self.launch(&name, argv).spawn()?;
        // Measure CPU over the same window as the latency histogram: from the end of warm-up.
        wait_for(
            &mut generator,
            warmup + Duration::from_millis(50),
            false,
            None,
        )?;
        let before: Vec<Usage> = proxies.iter().map(|pid| tree_usage(*pid)).collect();
        let switches_before: Vec<Vec<ThreadSwitches>> =
            proxies.iter().map(|pid| tree_switches(*pid)).collect();
        let started = Instant::now();
        let mut peak_rss: Vec<u64> = before.iter().map(|usage| usage.rss_kib).collect();
        // Context switches are sampled while the load still runs, not after the generator exits:
        // a proxy with a thread per connection (stunnel) loses those threads, and what they counted,
        // when the generator closes its connections. Only the last second of the window is sampled
        // (the last sample is the one used), so the harness reads the proxies' threads a few times,
        // not every tick of the run. Holds (time into the window, the sample).
        let mut switches_late: Option<(Duration, Vec<Vec<ThreadSwitches>>)> = None;
        wait_for(
            &mut generator,
            duration + Duration::from_secs(30),
            true,
            Some(&mut |_| {
                for (peak, proxy) in peak_rss.iter_mut().zip(proxies) {
                    *peak = (*peak).max(tree_usage(*proxy).rss_kib);
                }
                let now = started.elapsed();
                if now < duration && now + Duration::from_secs(1) >= duration {
                    let sample = proxies.iter().map(|pid| tree_switches(*pid)).collect();
                    switches_late = Some((now, sample));
                }
            }),
        )?;
        let elapsed = started
            .elapsed()
            .as_secs_f64()
            .min(duration.as_secs_f64())
            .max(1e-3);
        let summary: LoadSummary = read_json(&json, "load generator")?;
        let usages = proxies
            .iter()
            .enumerate()
            .map(|(index, proxy)| {
                // The final sample is taken right after the generator exits; no requests flow after that.
                let cpu = (tree_usage(*proxy).cpu_seconds - before[index].cpu_seconds).max(0.0);
                let wakeups_by_thread = match &switches_late {
                    // The requests of the sampled part of the window, at the rate the run achieved.
                    Some((window, sample)) => switches_per_request(
                        &switches_before[index],
                        &sample[index],
                        (summary.achieved_rps * window.as_secs_f64()).round() as u64,
                    ),
                    None => switches_per_request(
                        &switches_before[index],
                        &tree_switches(*proxy),
                        summary.requests,
                    ),
                };
                ProxyUsage {
                    vcpu: cpu / elapsed,
                    cpu_seconds_per_1k: cpu / (summary.requests.max(1) as f64 / 1000.0),
                    rss_idle_kib: idle[index].rss_kib,
                    rss_load_kib: peak_rss[index],
                    wakeups_per_request: wakeups_by_thread.iter().map(|thread| thread.1).sum(),
                    wakeups_by_thread,
                }
            })
            .collect();
        Ok(LatencyRun {
            connections,
            rate,
            summary,
            proxies: usages,
            runs: 1,
        })
    }

    /// Closed-loop maximum rps with wrk (1 thread, `connections` keep-alive connections).
    pub fn max_rps(
        &self,
        label: &str,
        target: SocketAddr,
        connections: u32,
        duration: Duration,
    ) -> Result<f64> {
        let url = format!("http://{target}/bytes/1024");
        let argv = vec![
            "wrk".into(),
            "-t1".into(),
            format!("-c{connections}"),
            format!("-d{}s", duration.as_secs().max(1)),
            url,
        ];
        let name = format!("wrk-{label}");
        let mut wrk = self.launch(&name, argv).spawn()?;
        wait_for(&mut wrk, duration + Duration::from_secs(30), true, None)?;
        let text =
            std::fs::read_to_string(&wrk.log).map_err(|error| BenchError::io(&wrk.log, error))?;
        parse_wrk_rps(&text)
    }

    /// Full mTLS handshakes per second against `target`, with the server proxy's CPU over the window.
    pub fn handshakes(
        &self,
        label: &str,
        target: SocketAddr,
        (cert, key): (&Path, &Path),
        duration: Duration,
        client: &HandshakeClient,
        server_proxy: &Running,
    ) -> Result<(HandshakeSummary, f64)> {
        let json = self.work_dir.join(format!("handshakes-{label}.json"));
        let argv = vec![
            self.self_exe.display().to_string(),
            "handshakes".into(),
            "--target".into(),
            target.to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--duration-ms".into(),
            duration.as_millis().to_string(),
            "--json-out".into(),
            json.display().to_string(),
        ];
        let mut argv = argv;
        if let Some(mark) = client.mark {
            argv.extend(["--mark".to_string(), mark.to_string()]);
        }
        for alpn in &client.alpn {
            argv.extend(["--alpn".to_string(), alpn.clone()]);
        }
        let before = server_proxy.usage().cpu_seconds;
        let name = format!("handshakes-{label}");
        let mut client = self.launch(&name, argv).spawn()?;
        wait_for(&mut client, duration + Duration::from_secs(30), true, None)?;
        let server_cpu = (server_proxy.usage().cpu_seconds - before).max(0.0);
        let summary: HandshakeSummary = read_json(&json, "handshake client")?;
        Ok((summary, server_cpu))
    }

    /// Bulk throughput in Gbit/s with one iperf3 stream to `target`.
    pub fn bulk(&self, label: &str, target: SocketAddr, duration: Duration) -> Result<f64> {
        let argv = vec![
            "iperf3".into(),
            "-c".into(),
            target.ip().to_string(),
            "-p".into(),
            target.port().to_string(),
            "-t".into(),
            duration.as_secs().max(1).to_string(),
            "-J".into(),
        ];
        let name = format!("iperf3-{label}");
        let mut iperf = self.launch(&name, argv).spawn()?;
        wait_for(&mut iperf, duration + Duration::from_secs(30), true, None)?;
        let text = std::fs::read_to_string(&iperf.log)
            .map_err(|error| BenchError::io(&iperf.log, error))?;
        parse_iperf_gbps(&text)
    }
}

/// Switches between two samples of one process tree, per request, by thread name (a thread that
/// exited in between counts nothing; one that started counts from zero).
pub(crate) fn switches_per_request(
    before: &[ThreadSwitches],
    after: &[ThreadSwitches],
    requests: u64,
) -> Vec<(String, f64, f64)> {
    let requests = requests.max(1) as f64;
    after
        .iter()
        .map(|thread| {
            let earlier = before.iter().find(|known| known.name == thread.name);
            let since = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(0)) as f64;
            (
                thread.name.clone(),
                since(thread.voluntary, earlier.map(|t| t.voluntary)) / requests,
                since(thread.involuntary, earlier.map(|t| t.involuntary)) / requests,
            )
        })
        .collect()
}

/// Combines repeated runs of one point: the median of each per-run percentile (so one noisy run
/// does not set the tail), summed requests and errors, median CPU figures, and the largest RSS.
pub fn median_of_runs(runs: &[LatencyRun]) -> Option<LatencyRun> {
    let first = runs.first()?;
    let median = |pick: &dyn Fn(&LatencyRun) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let summary = LoadSummary {
        requests: runs.iter().map(|run| run.summary.requests).sum(),
        errors: runs.iter().map(|run| run.summary.errors).sum(),
        seconds: runs.iter().map(|run| run.summary.seconds).sum(),
        achieved_rps: median(&|run| run.summary.achieved_rps),
        p50_ms: median(&|run| run.summary.p50_ms),
        p90_ms: median(&|run| run.summary.p90_ms),
        p99_ms: median(&|run| run.summary.p99_ms),
        p999_ms: median(&|run| run.summary.p999_ms),
        max_ms: runs
            .iter()
            .map(|run| run.summary.max_ms)
            .fold(0.0, f64::max),
    };
    let proxies = (0..first.proxies.len())
        .map(|index| ProxyUsage {
            vcpu: median(&|run| run.proxies[index].vcpu),
            cpu_seconds_per_1k: median(&|run| run.proxies[index].cpu_seconds_per_1k),
            rss_idle_kib: first.proxies[index].rss_idle_kib,
            rss_load_kib: runs
                .iter()
                .map(|run| run.proxies[index].rss_load_kib)
                .max()
                .unwrap_or(0),
            wakeups_per_request: median(&|run| run.proxies[index].wakeups_per_request),
            wakeups_by_thread: first.proxies[index]
                .wakeups_by_thread
                .iter()
                .map(|(name, _, _)| {
                    let of = |run: &LatencyRun, pick: fn(&(String, f64, f64)) -> f64| {
                        run.proxies[index]
                            .wakeups_by_thread
                            .iter()
                            .find(|thread| &thread.0 == name)
                            .map_or(0.0, pick)
                    };
                    (
                        name.clone(),
                        median(&|run| of(run, |thread| thread.1)),
                        median(&|run| of(run, |thread| thread.2)),
                    )
                })
                .collect(),
        })
        .collect();
    Some(LatencyRun {
        connections: first.connections,
        rate: first.rate,
        summary,
        proxies,
        runs: runs.len() as u32,
    })
}

/// Waits for `child` to exit or `limit` to pass, calling `tick` every 200 ms; honours Ctrl-C.
/// With `must_exit`, still running at `limit` is an error; without, it is the normal end of a pause.
pub(crate) fn wait_for(
    child: &mut Running,
    limit: Duration,
    must_exit: bool,
    mut tick: Option<&mut dyn FnMut(&Running)>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
        if !child.is_alive() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return if !must_exit {
                Ok(())
            } else {
                Err(BenchError::Command {
                    command: child.name.clone(),
                    detail: format!(
                        "still running after {} s; log {}",
                        limit.as_secs(),
                        child.log.display()
                    ),
                })
            };
        }
        if let Some(tick) = tick.as_mut() {
            tick(child);
        }
        std::thread::sleep(
            Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, tool: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|error| BenchError::io(path, error))?;
    serde_json::from_str(&text).map_err(|error| BenchError::Parse {
        tool: tool.into(),
        detail: error.to_string(),
    })
}

/// Whether wrk and iperf3 are installed (the closed-loop and bulk steps are skipped without them).
pub fn have(tool: &str) -> bool {
    which(tool).is_some()
}

pub(crate) fn parse_wrk_rps(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| BenchError::Parse {
            tool: "wrk".into(),
            detail: format!("no Requests/sec line in: {text}"),
        })
}

pub(crate) fn parse_iperf_gbps(text: &str) -> Result<f64> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| BenchError::Parse {
            tool: "iperf3".into(),
            detail: error.to_string(),
        })?;
    value
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|bits| bits.as_f64())
        .map(|bits| bits / 1e9)
        .ok_or_else(|| BenchError::Parse {
            tool: "iperf3".into(),
            detail: value
                .pointer("/error")
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no end.sum_received".into()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_runs_report_the_median_percentile_and_the_peak_rss() {
        let run = |p99: f64, rss: u64| LatencyRun {
            connections: 16,
            rate: 1000,
            summary: LoadSummary {
                requests: 100,
                p99_ms: p99,
                ..Default::default()
            },
            proxies: vec![ProxyUsage {
                rss_load_kib: rss,
                ..Default::default()
            }],
            runs: 1,
        };
        let combined = median_of_runs(&[run(0.3, 10), run(25.0, 30), run(0.4, 20)]).unwrap();
        assert_eq!(
            combined.summary.p99_ms, 0.4,
            "one noisy run must not set the tail"
        );
        assert_eq!(combined.summary.requests, 300);
        assert_eq!(combined.proxies[0].rss_load_kib, 30);
        assert_eq!(combined.runs, 3);
    }

    #[test]
    fn wakeups_are_counted_per_request_by_thread() {
        let thread = |name: &str, voluntary: u64, involuntary: u64| ThreadSwitches {
            name: name.into(),
            voluntary,
            involuntary,
        };
        let before = [thread("dataplane", 100, 10), thread("gone", 50, 0)];
        let after = [thread("dataplane", 2_100, 30), thread("access-log", 40, 0)];
        let per_request = switches_per_request(&before, &after, 1_000);
        assert_eq!(
            per_request,
            vec![
                ("dataplane".to_string(), 2.0, 0.02),
                // Started during the run: counted from zero. "gone" exited: nothing.
                ("access-log".to_string(), 0.04, 0.0),
            ]
        );
        // No request (a failed run) does not divide by zero.
        assert_eq!(switches_per_request(&[], &after[..1], 0)[0].1, 2_100.0);
    }

    #[test]
    fn repeated_runs_report_the_median_wakeups_by_thread() {
        let run = |dataplane: f64| LatencyRun {
            connections: 16,
            rate: 1000,
            summary: LoadSummary::default(),
            proxies: vec![ProxyUsage {
                wakeups_per_request: dataplane + 0.1,
                wakeups_by_thread: vec![
                    ("access-log".into(), 0.1, 0.0),
                    ("dataplane".into(), dataplane, 0.5),
                ],
                ..Default::default()
            }],
            runs: 1,
        };
        let combined = median_of_runs(&[run(2.0), run(9.0), run(3.0)]).unwrap();
        assert_eq!(combined.proxies[0].wakeups_per_request, 3.1);
        assert_eq!(
            combined.proxies[0].wakeups_by_thread,
            vec![
                ("access-log".to_string(), 0.1, 0.0),
                ("dataplane".to_string(), 3.0, 0.5)
            ]
        );
    }

    #[test]
    fn wrk_requests_per_second_is_parsed() {
        let text = "Running 2s test @ http://x\n  1 threads and 64 connections\nRequests/sec:  23456.78\nTransfer/sec: 1MB\n";
        assert!((parse_wrk_rps(text).unwrap() - 23456.78).abs() < 1e-6);
        assert!(parse_wrk_rps("nothing").is_err());
    }

    #[test]
    fn iperf_json_gives_gigabits() {
        let text = r#"{"end":{"sum_received":{"bits_per_second":12500000000.0}}}"#;
        assert!((parse_iperf_gbps(text).unwrap() - 12.5).abs() < 1e-9);
        assert!(parse_iperf_gbps(r#"{"error":"unable to connect"}"#).is_err());
    }
}

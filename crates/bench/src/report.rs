//! The run's report: JSON (everything measured) and Markdown (latency table with added latency over
//! direct, resource table, CA and push figures, the bars of BENCHMARKS.md#bars side by side).

use std::fmt::Write as _;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::runner::ConfigResult;

/// Machine and tool versions recorded with every result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    /// How an idle CPU waits (cpuidle driver, and the guest's halt-polling window on a KVM guest):
    /// on a virtual machine every wake-up of a halted vCPU is an exit to the hypervisor, which sets
    /// the tails of a chain of wake-ups such as a request through two sidecars.
    #[serde(default)]
    pub idle: String,
    pub versions: Vec<(String, String)>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")
                    .and_then(|rest| rest.split(':').nth(1))
            })
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let probes: [(&str, &[&str]); 6] = [
            ("nginx", &["-v"]),
            ("haproxy", &["-v"]),
            ("stunnel4", &["-version"]),
            ("iperf3", &["--version"]),
            ("openssl", &["version"]),
            ("wrk", &["--version"]),
        ];
        let versions = probes
            .iter()
            .filter_map(|(tool, args)| {
                let binary = crate::process::which(tool)?;
                let output = Command::new(binary).args(*args).output().ok()?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                // stunnel prints configuration chatter before its version line.
                let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
                let line = lines
                    .clone()
                    .find(|line| {
                        line.to_lowercase()
                            .starts_with(tool.get(..4).unwrap_or(tool))
                    })
                    .or_else(|| lines.next())?
                    .to_string();
                Some((tool.to_string(), line))
            })
            .collect();
        Machine {
            cpu_model,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel,
            idle: idle_description(
                read_trimmed("/sys/devices/system/cpu/cpuidle/current_driver").as_deref(),
                read_trimmed("/sys/module/haltpoll/parameters/guest_halt_poll_ns").as_deref(),
            ),
            versions,
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// "cpuidle haltpoll, guest_halt_poll_ns 0" from what sysfs says (either may be missing).
fn idle_description(driver: Option<&str>, halt_poll_ns: Option<&str>) -> String {
    let mut parts = vec![format!("cpuidle {}", driver.unwrap_or("none"))];
    if let Some(ns) = halt_poll_ns {
        parts.push(format!("guest_halt_poll_ns {ns}"));
    }
    parts.join(", ")
}

/// CA signing figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CaFigures {
    pub signings: u64,
    pub seconds: f64,
    pub per_second_per_core: f64,
    pub p99_ms_at_fixed_rate: Option<f64>,
}

/// Control-plane push figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PushFigures {
    pub streams: u32,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything one run produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub started_utc: String,
    pub mode: String,
    pub wall_seconds: f64,
    pub machine: Machine,
    pub configs: Vec<ConfigResult>,
    pub ca: Option<CaFigures>,
    pub push: Option<PushFigures>,
    /// The deployment-path rows (local runtime); absent in results of older runs.
    #[serde(default)]
    pub deployment: Option<crate::deploy::DeploymentFigures>,
    pub notes: Vec<String>,
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl RunReport {
    fn direct(&self) -> Option<&ConfigResult> {
        self.configs.iter().find(|config| config.name == "direct")
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# ironmesh side-by-side benchmark ({} mode)\n",
            self.mode
        );
        let _ = writeln!(
            out,
            "Run {} UTC, {:.0} s wall. Machine: {} × {}, kernel {}, idle: {}.\n",
            self.started_utc,
            self.wall_seconds,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.kernel,
            if self.machine.idle.is_empty() {
                "not recorded"
            } else {
                &self.machine.idle
            }
        );
        let _ = writeln!(out, "## Bars (BENCHMARKS.md#bars), same run\n");
        out.push_str(&self.bars_markdown());
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "## Latency at a fixed 1,000 rps (open loop, corrected), HTTP/1.1 keep-alive, 1 kB; median of per-run percentiles\n"
        );
        let _ = writeln!(
            out,
            "| configuration | conns | p50 ms | p90 ms | p99 ms | p99.9 ms | +p50 | +p90 | +p99 | +p99.9 | rps | errors |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for config in &self.configs {
            for run in &config.latency {
                let s = &run.summary;
                let base = self
                    .direct()
                    .and_then(|direct| {
                        direct
                            .latency
                            .iter()
                            .find(|d| d.connections == run.connections)
                    })
                    .map(|d| &d.summary);
                let added = |value: f64, pick: fn(&crate::load::LoadSummary) -> f64| {
                    base.map(|b| format!("{:+.3}", value - pick(b)))
                        .unwrap_or_else(|| "–".into())
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {:.0} | {} |",
                    config.name,
                    run.connections,
                    s.p50_ms,
                    s.p90_ms,
                    s.p99_ms,
                    s.p999_ms,
                    added(s.p50_ms, |b| b.p50_ms),
                    added(s.p90_ms, |b| b.p90_ms),
                    added(s.p99_ms, |b| b.p99_ms),
                    added(s.p999_ms, |b| b.p999_ms),
                    s.achieved_rps,
                    s.errors
                );
            }
        }
        if let Some(deployment) = &self.deployment {
            out.push_str(&deployment_markdown(deployment));
        }
        let _ = writeln!(out, "\n## Resources, throughput, handshakes\n");
        let _ = writeln!(
            out,
            "CPU and RSS per proxy (client / server) during the 1,000 rps, 16-connection run.\n"
        );
        let _ = writeln!(
            out,
            "| configuration | vCPU | CPU s per 1k req | wake-ups per req | RSS idle MB | RSS load MB | max rps (wrk, 64 conns) | full mTLS hs/s | hs/s per server core | bulk Gbit/s |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let direct_bulk = self.direct().and_then(|d| d.bulk_gbps);
        for config in &self.configs {
            let usage = config
                .latency
                .iter()
                .find(|run| run.connections == 16)
                .map(|run| &run.proxies);
            let pair = |f: &dyn Fn(&crate::measure::ProxyUsage) -> String| match usage {
                Some(proxies) if !proxies.is_empty() => {
                    proxies.iter().map(f).collect::<Vec<_>>().join(" / ")
                }
                _ => "–".into(),
            };
            let bulk = match (config.bulk_gbps, direct_bulk) {
                (Some(gbps), Some(direct)) if config.name != "direct" => {
                    format!("{gbps:.2} ({:.0}%)", 100.0 * gbps / direct)
                }
                (Some(gbps), _) => format!("{gbps:.2}"),
                _ => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                config.name,
                pair(&|p| format!("{:.3}", p.vcpu)),
                pair(&|p| format!("{:.3}", p.cpu_seconds_per_1k)),
                pair(&|p| format!("{:.2}", p.wakeups_per_request)),
                pair(&|p| format!("{:.1}", mb(p.rss_idle_kib))),
                pair(&|p| format!("{:.1}", mb(p.rss_load_kib))),
                config
                    .max_rps
                    .map(|r| format!("{r:.0}"))
                    .unwrap_or_else(|| "–".into()),
                config
                    .handshakes
                    .as_ref()
                    .map(|h| format!("{:.0}", h.run.per_second))
                    .unwrap_or_else(|| "–".into()),
                config
                    .handshakes
                    .as_ref()
                    .map(|h| format!("{:.0}", h.per_server_core))
                    .unwrap_or_else(|| "–".into()),
                bulk,
            );
        }
        let _ = writeln!(out, "\n## Control plane\n");
        match &self.ca {
            Some(ca) => {
                let _ = writeln!(
                    out,
                    "- CA: {:.0} signed CSRs/s per core ({} in {:.1} s){}",
                    ca.per_second_per_core,
                    ca.signings,
                    ca.seconds,
                    ca.p99_ms_at_fixed_rate
                        .map(|p| format!("; p99 {p:.2} ms at 1,000/s"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "- CA: not measured (see notes)");
            }
        }
        match &self.push {
            Some(push) => {
                let _ = writeln!(
                    out,
                    "- Push to {} streams: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (change → applied)",
                    push.streams, push.p50_ms, push.p99_ms, push.max_ms
                );
            }
            None => {
                let _ = writeln!(out, "- Push: not measured (see notes)");
            }
        }
        let skipped: Vec<String> = self
            .configs
            .iter()
            .flat_map(|config| {
                config
                    .skipped
                    .iter()
                    .map(move |reason| format!("{}: {reason}", config.name))
            })
            .chain(self.notes.iter().cloned())
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(out, "\n## Notes and skipped steps\n");
            for line in skipped {
                let _ = writeln!(out, "- {line}");
            }
        }
        let _ = writeln!(out, "\n## Versions\n");
        for (tool, version) in &self.machine.versions {
            let _ = writeln!(out, "- {tool}: {version}");
        }
        out
    }
}

/// The deployment-path section: every row with the added latency over direct (same generator,
/// condition and connections), then the contention comparison.
fn deployment_markdown(deployment: &crate::deploy::DeploymentFigures) -> String {
    use crate::deploy::Route;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Deployment path: the local runtime (pods, sidecars, bridge, service NAT, access logs), 1,000 rps, HTTP/1.1 keep-alive, 1 kB\n"
    );
    let _ = writeln!(
        out,
        "Generators in the sleep pods' network namespaces; median of {} interleaved round(s); load average {} before, {} after. +pN = mesh − direct of the same generator, condition and connections.\n",
        deployment
            .rows
            .iter()
            .map(|row| row.runs)
            .max()
            .unwrap_or(0),
        deployment.load_before,
        deployment.load_after
    );
    let _ = writeln!(
        out,
        "| generator | other core | route | conns | p50 ms | p90 ms | p99 ms | p99.9 ms | +p50 | +p90 | +p99 | rps | errors | sidecar vCPU (client / server) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &deployment.rows {
        let s = &row.summary;
        let added = |pick: fn(&crate::load::LoadSummary) -> f64| match row.route {
            Route::Direct => "–".to_string(),
            Route::Mesh => deployment
                .added(row.generator, row.condition, row.connections, pick)
                .map(|v| format!("{v:+.3}"))
                .unwrap_or_else(|| "–".into()),
        };
        let sidecars = if row.sidecars.is_empty() {
            "–".to_string()
        } else {
            row.sidecars
                .iter()
                .map(|usage| format!("{:.3}", usage.vcpu))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {:.0} | {} | {} |",
            row.generator.label(),
            row.condition.label(),
            row.route.label(),
            row.connections,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.p999_ms,
            added(|s| s.p50_ms),
            added(|s| s.p90_ms),
            added(|s| s.p99_ms),
            s.achieved_rps,
            s.errors,
            sidecars
        );
    }
    let mut connections: Vec<u32> = deployment.rows.iter().map(|row| row.connections).collect();
    connections.sort_unstable();
    connections.dedup();
    let mut contention = String::new();
    for connections in connections {
        let (Some(direct), Some(mesh)) = (
            deployment.busy_increase(Route::Direct, connections),
            deployment.busy_increase(Route::Mesh, connections),
        ) else {
            continue;
        };
        let ratio = if direct > 0.0 {
            format!("{:.1}×", mesh / direct)
        } else {
            "– (direct did not grow)".into()
        };
        let _ = writeln!(
            contention,
            "| {connections} | {direct:+.3} ms | {mesh:+.3} ms | {ratio} |"
        );
    }
    if !contention.is_empty() {
        let _ = writeln!(
            out,
            "\nOther core busy (a CPU burner pinned to CPU {}, bounded in time): p90 increase over the idle rows, ironmesh-bench load.\n",
            crate::deploy::BURNER_CPU
        );
        let _ = writeln!(
            out,
            "| conns | direct p90 increase | mesh p90 increase | mesh ÷ direct (goal ≤ 2×) |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|");
        out.push_str(&contention);
    }
    out.push_str(&wakeups_markdown(deployment));
    for note in &deployment.notes {
        let _ = writeln!(out, "\n- {note}");
    }
    out
}

/// Wake-ups per request of every process on the route (ironmesh-bench load rows): how many times
/// each blocked and had to be woken, by thread, with preemptions in parentheses.
fn wakeups_markdown(deployment: &crate::deploy::DeploymentFigures) -> String {
    use crate::deploy::Generator;
    let mut table = String::new();
    for row in &deployment.rows {
        if row.generator != Generator::Ours {
            continue;
        }
        let Some(app) = &row.app else { continue };
        let process = |usage: &crate::measure::ProxyUsage| {
            let threads = usage
                .wakeups_by_thread
                .iter()
                .filter(|(_, woken, preempted)| *woken >= 0.005 || *preempted >= 0.005)
                .map(|(name, woken, preempted)| format!("{name} {woken:.2} ({preempted:.2})"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("**{:.2}**: {threads}", usage.wakeups_per_request)
        };
        let sidecar = |index: usize| row.sidecars.get(index).map_or("–".into(), process);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            row.condition.label(),
            row.route.label(),
            row.connections,
            sidecar(0),
            sidecar(1),
            process(app)
        );
    }
    if table.is_empty() {
        return table;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nWake-ups per request (voluntary context switches of every thread, ÷ requests; by thread, preemptions in parentheses), ironmesh-bench load.\n"
    );
    let _ = writeln!(
        out,
        "| other core | route | conns | client sidecar | server sidecar | httpbin |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---|---|");
    out.push_str(&table);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadSummary;
    use crate::measure::LatencyRun;

    fn row(name: &str, p90: f64) -> ConfigResult {
        ConfigResult {
            name: name.into(),
            latency: vec![LatencyRun {
                connections: 16,
                rate: 1000,
                summary: LoadSummary {
                    p90_ms: p90,
                    ..Default::default()
                },
                proxies: Vec::new(),
                runs: 1,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn added_latency_is_relative_to_direct_at_the_same_connection_count() {
        let report = RunReport {
            mode: "quick".into(),
            configs: vec![row("direct", 0.200), row("nginx", 0.450)],
            ..Default::default()
        };
        let markdown = report.markdown();
        let nginx_line = markdown
            .lines()
            .find(|line| line.starts_with("| nginx | 16"))
            .unwrap();
        assert!(nginx_line.contains("+0.250"), "{nginx_line}");
        let json = serde_json::to_string(&report).unwrap();
        let back: RunReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn the_idle_state_names_the_driver_and_the_halt_polling_window() {
        assert_eq!(
            idle_description(Some("haltpoll"), Some("0")),
            "cpuidle haltpoll, guest_halt_poll_ns 0"
        );
        assert_eq!(
            idle_description(Some("intel_idle"), None),
            "cpuidle intel_idle"
        );
        assert_eq!(idle_description(None, None), "cpuidle none");
    }

    #[test]
    fn wakeups_are_reported_per_process_and_thread_for_our_generator_only() {
        use crate::deploy::{Condition, DeployRow, DeploymentFigures, Generator, Route};
        use crate::measure::ProxyUsage;
        let usage = |total: f64, threads: Vec<(&str, f64, f64)>| ProxyUsage {
            wakeups_per_request: total,
            wakeups_by_thread: threads
                .into_iter()
                .map(|(name, woken, preempted)| (name.to_string(), woken, preempted))
                .collect(),
            ..Default::default()
        };
        let row = |generator, route, sidecars: Vec<ProxyUsage>| DeployRow {
            generator,
            condition: Condition::Quiet,
            route,
            connections: 16,
            summary: LoadSummary::default(),
            sidecars,
            app: Some(usage(1.5, vec![("httpbin", 1.5, 0.0)])),
            runs: 3,
        };
        let figures = DeploymentFigures {
            rows: vec![
                row(Generator::Ours, Route::Direct, Vec::new()),
                row(
                    Generator::Ours,
                    Route::Mesh,
                    vec![
                        usage(
                            2.04,
                            vec![
                                ("dataplane", 2.0, 0.1),
                                ("control", 0.0, 0.0),
                                ("access-log", 0.04, 0.0),
                            ],
                        ),
                        usage(3.0, vec![("dataplane", 3.0, 0.0)]),
                    ],
                ),
                row(Generator::Oha, Route::Mesh, Vec::new()),
            ],
            ..Default::default()
        };
        let markdown = wakeups_markdown(&figures);
        let lines: Vec<&str> = markdown
            .lines()
            .filter(|line| line.starts_with("| idle"))
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "one line per row of our generator: {markdown}"
        );
        assert_eq!(
            lines[0],
            "| idle | legacy→legacy (direct) | 16 | – | – | **1.50**: httpbin 1.50 (0.00) |"
        );
        // A thread that neither woke nor was preempted is left out.
        assert_eq!(
            lines[1],
            "| idle | bar→foo (mesh, mTLS) | 16 | **2.04**: dataplane 2.00 (0.10), access-log 0.04 (0.00) | **3.00**: dataplane 3.00 (0.00) | **1.50**: httpbin 1.50 (0.00) |"
        );
    }
}

//! The bars of BENCHMARKS.md#bars side by side: for each bar, ironmesh's figure, the best peer's and direct's,
//! all from the same run, and whether ironmesh meets the goal.

use std::fmt::Write as _;

use crate::load::LoadSummary;
use crate::measure::ProxyUsage;
use crate::report::RunReport;
use crate::runner::ConfigResult;

/// The peers a bar compares with (ztunnel only when `bench/run --ztunnel BIN` measured it).
const PEERS: [&str; 4] = ["nginx", "haproxy", "stunnel", crate::ztunnel::ROW];

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    }
}

fn fmt(value: Option<f64>, unit: &str, digits: usize) -> String {
    value
        .map(|v| format!("{v:.digits$}{unit}"))
        .unwrap_or_else(|| "–".into())
}

impl RunReport {
    fn config(&self, name: &str) -> Option<&ConfigResult> {
        self.configs.iter().find(|config| config.name == name)
    }

    fn summary(&self, name: &str, connections: u32) -> Option<&LoadSummary> {
        let config = self.config(name)?;
        config
            .latency
            .iter()
            .find(|run| run.connections == connections)
            .map(|run| &run.summary)
    }

    /// Added latency of `name` over direct at `connections`, picked by `pick`.
    fn added(&self, name: &str, connections: u32, pick: fn(&LoadSummary) -> f64) -> Option<f64> {
        Some(pick(self.summary(name, connections)?) - pick(self.summary("direct", connections)?))
    }

    /// The worse of the pair's two proxies at 16 connections, picked by `pick`.
    fn per_proxy(&self, name: &str, pick: fn(&ProxyUsage) -> f64) -> Option<f64> {
        let run = self
            .config(name)?
            .latency
            .iter()
            .find(|run| run.connections == 16)?;
        run.proxies.iter().map(pick).reduce(f64::max)
    }

    fn best_peer(
        &self,
        value: impl Fn(&str) -> Option<f64>,
        lower_is_better: bool,
    ) -> Option<(f64, &'static str)> {
        PEERS
            .iter()
            .filter_map(|peer| value(peer).map(|v| (v, *peer)))
            .reduce(|a, b| if (a.0 < b.0) == lower_is_better { a } else { b })
    }

    fn bulk_percent(&self, name: &str) -> Option<f64> {
        Some(100.0 * self.config(name)?.bulk_gbps? / self.config("direct")?.bulk_gbps?)
    }

    /// The headline bars: the deployment path (local runtime, our generator), quiet and busy.
    fn deployment_bars(&self, out: &mut String) {
        use crate::deploy::{Condition, Generator, Route};
        let Some(deployment) = &self.deployment else {
            return;
        };
        let mut connections: Vec<u32> = deployment.rows.iter().map(|row| row.connections).collect();
        connections.sort_unstable();
        connections.dedup();
        for &connections in &connections {
            for (label, goal, pick) in [
                (
                    "p90",
                    0.15,
                    (|s: &LoadSummary| s.p90_ms) as fn(&LoadSummary) -> f64,
                ),
                ("p99", 0.25, |s: &LoadSummary| s.p99_ms),
            ] {
                let ours = deployment.added(Generator::Ours, Condition::Quiet, connections, pick);
                let direct = deployment
                    .row(
                        Generator::Ours,
                        Condition::Quiet,
                        Route::Direct,
                        connections,
                    )
                    .map(|row| pick(&row.summary));
                let _ = writeln!(
                    out,
                    "| deployment path: added {label}, {connections} conns, 1,000 rps | ≤ +{goal} ms | {} | – | {} | {} |",
                    ours.map(|v| format!("{v:+.3} ms"))
                        .unwrap_or_else(|| "–".into()),
                    fmt(direct, " ms", 3),
                    verdict(ours.map(|v| v <= goal))
                );
            }
            let mesh = deployment.busy_increase(Route::Mesh, connections);
            let direct = deployment.busy_increase(Route::Direct, connections);
            // A direct increase at or below zero leaves no room: the mesh must not grow either.
            let met = mesh
                .zip(direct)
                .map(|(mesh, direct)| mesh <= 2.0 * direct.max(0.0) || mesh <= 0.0);
            let _ = writeln!(
                out,
                "| deployment path, other core busy: p90 increase, {connections} conns | mesh ≤ 2× direct's | {} | – | {} | {} |",
                mesh.map(|v| format!("{v:+.3} ms"))
                    .unwrap_or_else(|| "–".into()),
                direct
                    .map(|v| format!("{v:+.3} ms"))
                    .unwrap_or_else(|| "–".into()),
                verdict(met)
            );
        }
    }

    /// The bars table in Markdown.
    pub fn bars_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| bar (BENCHMARKS.md#bars) | goal | ironmesh | best peer | direct | verdict |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        self.deployment_bars(&mut out);
        let peer = |best: Option<(f64, &str)>, unit: &str, digits: usize| {
            best.map(|(v, name)| format!("{v:.digits$}{unit} ({name})"))
                .unwrap_or_else(|| "–".into())
        };
        for connections in [16, 64] {
            for (label, goal, pick) in [
                (
                    "p90",
                    0.15,
                    (|s: &LoadSummary| s.p90_ms) as fn(&LoadSummary) -> f64,
                ),
                ("p99", 0.25, |s: &LoadSummary| s.p99_ms),
            ] {
                let ours = self.added("ironmesh-http", connections, pick);
                let best = self.best_peer(|p| self.added(p, connections, pick), true);
                let direct = self.summary("direct", connections).map(pick);
                let met = ours.map(|v| v <= goal && best.is_none_or(|(b, _)| v < b));
                let _ = writeln!(
                    out,
                    "| added {label}, {connections} conns, 1,000 rps | ≤ +{goal} ms and below peers | {} | {} | {} | {} |",
                    ours.map(|v| format!("{v:+.3} ms"))
                        .unwrap_or_else(|| "–".into()),
                    best.map(|(v, name)| format!("{v:+.3} ms ({name})"))
                        .unwrap_or_else(|| "–".into()),
                    fmt(direct, " ms", 3),
                    verdict(met)
                );
            }
        }
        let ours = self.per_proxy("ironmesh-http", |u| u.vcpu);
        let best = self.best_peer(|p| self.per_proxy(p, |u| u.vcpu), true);
        let _ = writeln!(
            out,
            "| proxy CPU at 1,000 rps (worse of the pair) | ≤ 0.05 vCPU | {} | {} | – | {} |",
            fmt(ours, " vCPU", 3),
            peer(best, " vCPU", 3),
            verdict(ours.map(|v| v <= 0.05))
        );
        for (label, goal, pick) in [
            (
                "idle",
                5.0,
                (|u: &ProxyUsage| u.rss_idle_kib as f64 / 1024.0) as fn(&ProxyUsage) -> f64,
            ),
            ("at 1,000 rps", 10.0, |u: &ProxyUsage| {
                u.rss_load_kib as f64 / 1024.0
            }),
        ] {
            let ours = self.per_proxy("ironmesh-http", pick);
            let best = self.best_peer(|p| self.per_proxy(p, pick), true);
            let _ = writeln!(
                out,
                "| proxy RSS {label} | ≤ {goal} MB | {} | {} | – | {} |",
                fmt(ours, " MB", 1),
                peer(best, " MB", 1),
                verdict(ours.map(|v| v <= goal))
            );
        }
        let handshakes = |name: &str| {
            self.config(name)?
                .handshakes
                .as_ref()
                .map(|h| h.per_server_core)
        };
        let ours = handshakes("ironmesh-http");
        let _ = writeln!(
            out,
            "| full mTLS handshakes at the server | ≥ 4,000/s per core | {} | {} | – | {} |",
            fmt(ours, "/s", 0),
            peer(self.best_peer(handshakes, false), "/s", 0),
            verdict(ours.map(|v| v >= 4000.0))
        );
        let ours = self.bulk_percent("ironmesh-tcp");
        let _ = writeln!(
            out,
            "| bulk TCP through the pair | ≥ 70% of direct | {} | {} | {} | {} |",
            fmt(ours, "%", 0),
            peer(self.best_peer(|p| self.bulk_percent(p), false), "%", 0),
            fmt(
                self.config("direct").and_then(|d| d.bulk_gbps),
                " Gbit/s",
                2
            ),
            verdict(ours.map(|v| v >= 70.0))
        );
        let ca = self.ca.as_ref();
        let _ = writeln!(
            out,
            "| CA signings | ≥ 5,000/s per core, p99 < 10 ms at 1,000/s | {} (p99 {}) | – | – | {} |",
            fmt(ca.map(|c| c.per_second_per_core), "/s", 0),
            fmt(ca.and_then(|c| c.p99_ms_at_fixed_rate), " ms", 2),
            verdict(ca.map(|c| c.per_second_per_core >= 5000.0
                && c.p99_ms_at_fixed_rate.is_some_and(|p| p < 10.0)))
        );
        let push = self.push.as_ref();
        let _ = writeln!(
            out,
            "| control-plane push to {} proxies | p99 < 1 s | {} | – | – | {} |",
            push.map(|p| p.streams).unwrap_or(1000),
            fmt(push.map(|p| p.p99_ms), " ms", 1),
            verdict(push.map(|p| p.p99_ms < 1000.0))
        );
        let _ = writeln!(
            out,
            "| `ironmesh demo` end to end | < 15 s | not part of this harness | – | – | not measured |"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::LatencyRun;

    fn row(name: &str, p90: f64) -> ConfigResult {
        ConfigResult {
            name: name.into(),
            latency: [16, 64]
                .map(|connections| LatencyRun {
                    connections,
                    rate: 1000,
                    runs: 1,
                    summary: LoadSummary {
                        p90_ms: p90,
                        p99_ms: p90 * 2.0,
                        ..Default::default()
                    },
                    proxies: vec![ProxyUsage {
                        vcpu: p90 / 10.0,
                        ..Default::default()
                    }],
                })
                .to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn bars_compare_ironmesh_with_the_best_peer_and_judge_the_goal() {
        let report = RunReport {
            configs: vec![
                row("direct", 0.10),
                row("nginx", 0.50),
                row("stunnel", 0.30),
                row("ironmesh-http", 0.20),
            ],
            ..Default::default()
        };
        let table = report.bars_markdown();
        let p90 = table
            .lines()
            .find(|line| line.contains("added p90, 16 conns"))
            .unwrap();
        assert!(
            p90.contains("0.100 ms |")
                && p90.contains("0.200 ms (stunnel)")
                && p90.ends_with("met |"),
            "{p90}"
        );
        let p99 = table
            .lines()
            .find(|line| line.contains("added p99, 16 conns"))
            .unwrap();
        // +0.20 ms p99 is within +0.25 ms and below stunnel's +0.40 ms.
        assert!(p99.ends_with("met |"), "{p99}");
        let cpu = table
            .lines()
            .find(|line| line.contains("proxy CPU"))
            .unwrap();
        assert!(
            cpu.contains("0.020 vCPU") && cpu.ends_with("met |"),
            "{cpu}"
        );
        assert!(table.contains("| CA signings") && table.contains("not measured"));
    }
}

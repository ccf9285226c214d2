//! `ironmesh wait [KIND NAME] [--timeout 30s]` and `apply --wait`: block until the sidecars hold the
//! configuration that includes a change, as `istioctl x wait` does for Istio's proxies (istio/istio
//! `istioctl/pkg/wait/wait.go`: poll the distribution status of a resource's generation, then report the
//! proxies that have not caught up when `--timeout` expires).
//!
//! A change committed at resourceVersion N has reached the sidecars when the control plane has computed the
//! sidecars' configurations from a store snapshot at or past the store's current resourceVersion, and every
//! sidecar whose configuration changed at or after N has ACKed that configuration. Sidecars the change did
//! not alter are not waited for. A NACK of the awaited configuration fails at once, with the proxy's reason.

use std::time::{Duration, Instant};

use ironmesh_store::ObjectKey;
use ironmesh_store::client::ApiClient;
use ironmesh_store::wire::{ProxySync, ProxySyncReport};

use crate::error::CliError;

/// How often the control plane is asked; a configuration usually arrives within tens of milliseconds.
const POLL: Duration = Duration::from_millis(50);

/// Where a change stands, from one report (pure; see [`progress`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Every sidecar the change altered acknowledged it; `acked` of them (of `total` sidecars).
    Done { acked: usize, total: usize },
    /// Still waiting: whether the control plane has caught up with the store, and each sidecar not there
    /// yet with the reason in words.
    Waiting {
        caught_up: bool,
        pending: Vec<String>,
    },
    /// A sidecar refused the configuration: (proxy, reason).
    Rejected(Vec<(String, String)>),
}

fn short(version: &str) -> &str {
    version.get(..8).unwrap_or(version)
}

fn why_pending(proxy: &ProxySync) -> Option<String> {
    if proxy.acked_version.as_deref() == Some(proxy.version.as_str()) {
        return None;
    }
    let (pod, namespace) = proxy.id.rsplit_once('.').unwrap_or((&proxy.id, "default"));
    Some(if !proxy.connected {
        format!(
            "{} (not connected: is the pod running? `ironmesh get pod {pod} -n {namespace}`)",
            proxy.id
        )
    } else {
        match &proxy.acked_version {
            Some(acked) => format!(
                "{} (holds {}, not yet {})",
                proxy.id,
                short(acked),
                short(&proxy.version)
            ),
            None => format!(
                "{} (connected, no configuration acknowledged yet)",
                proxy.id
            ),
        }
    })
}

/// Where the change committed at resourceVersion `since` stands, given the store's resourceVersion read
/// just before `report`.
pub(crate) fn progress(report: &ProxySyncReport, store_version: u64, since: u64) -> Progress {
    let affected: Vec<&ProxySync> = report
        .proxies
        .iter()
        .filter(|proxy| proxy.changed_at >= since)
        .collect();
    let rejected: Vec<(String, String)> = affected
        .iter()
        .filter_map(|proxy| Some((proxy.id.clone(), proxy.rejected.clone()?)))
        .collect();
    if !rejected.is_empty() {
        return Progress::Rejected(rejected);
    }
    let caught_up = report.configured_resource_version >= store_version;
    let pending: Vec<String> = affected.iter().filter_map(|p| why_pending(p)).collect();
    if caught_up && pending.is_empty() {
        Progress::Done {
            acked: affected.len(),
            total: report.proxies.len(),
        }
    } else {
        Progress::Waiting { caught_up, pending }
    }
}

/// Parses `30s`, `2m`, `500ms`, `1h` (kubectl's `--timeout` spellings); a bare number is seconds.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 30s, 2m, 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!(
            "{text:?} is not a duration: use e.g. 30s, 2m, 500ms"
        )),
    }
}

/// Blocks until the change committed at `since` (0: everything so far) is in every sidecar it altered,
/// and prints one line saying so; fails after `timeout` naming the sidecars that are not there.
pub(crate) async fn until_synced(
    client: &ApiClient,
    since: u64,
    timeout: Duration,
) -> Result<(), CliError> {
    let started = Instant::now();
    loop {
        // The store's version first: the report that follows must be at least as recent.
        let store_version = client.info().await?.resource_version;
        let report = client.proxy_status().await?;
        let waiting = match progress(&report, store_version, since) {
            Progress::Done { acked, total } => {
                println!(
                    "sidecars in sync: {acked} changed and acknowledged ({total} sidecars, resourceVersion {store_version})"
                );
                return Ok(());
            }
            Progress::Rejected(refusals) => {
                let list: Vec<String> = refusals
                    .iter()
                    .map(|(id, reason)| format!("{id}: {reason}"))
                    .collect();
                return Err(CliError::Usage(format!(
                    "{} sidecar(s) rejected the new configuration (NACK), so they keep the previous one: {}; \
                     fix the resource and apply again",
                    refusals.len(),
                    list.join("; ")
                )));
            }
            Progress::Waiting { caught_up, pending } => (caught_up, pending, report),
        };
        if started.elapsed() >= timeout {
            let (caught_up, pending, report) = waiting;
            let mut reasons = Vec::new();
            if !caught_up {
                reasons.push(format!(
                    "the control plane has configured the sidecars up to resourceVersion {} of {store_version} \
                     (see $IRONMESH_HOME/logs for its log)",
                    report.configured_resource_version
                ));
            }
            if !pending.is_empty() {
                reasons.push(format!(
                    "{} sidecar(s) have not acknowledged it: {}",
                    pending.len(),
                    pending.join(", ")
                ));
            }
            return Err(CliError::Usage(format!(
                "timed out after {} waiting for the configuration to reach the sidecars: {}",
                humanize(timeout),
                reasons.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() != 0 || duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs())
    }
}

/// `ironmesh wait [KIND NAME]`: with a resource, waits for the sidecars its last change altered; without,
/// for every sidecar to hold its current configuration.
pub(crate) async fn wait(
    client: &ApiClient,
    kind: Option<&str>,
    name: Option<&str>,
    namespace: Option<&str>,
    timeout: &str,
) -> Result<(), CliError> {
    let timeout = parse_timeout(timeout).map_err(CliError::Usage)?;
    let since = match (kind, name) {
        (None, _) => 0,
        (Some(kind), name) => {
            let (kind, name) = match (kind.split_once('/'), name) {
                (Some((kind, name)), None) => (kind, name),
                (None, Some(name)) => (kind, name),
                _ => {
                    return Err(CliError::Usage(
                        "ironmesh wait takes KIND NAME or KIND/NAME (or nothing: every sidecar)"
                            .into(),
                    ));
                }
            };
            let info = crate::get::resolve_kind(kind)?;
            let namespace = crate::get::scope(info, namespace);
            let object = client
                .get(&ObjectKey::new(info.plural, namespace.as_deref(), name))
                .await?;
            ironmesh_store::resource_version_of(&object)
        }
    };
    until_synced(client, since, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(id: &str, changed_at: u64, acked: Option<&str>, connected: bool) -> ProxySync {
        ProxySync {
            id: id.into(),
            version: "aaaaaaaaaaaaaaaa".into(),
            changed_at,
            acked_version: acked.map(str::to_string),
            connected,
            rejected: None,
        }
    }

    #[test]
    fn progress_waits_for_the_sidecars_a_change_altered() {
        let current = Some("aaaaaaaaaaaaaaaa");
        let older = Some("bbbbbbbbbbbbbbbb");
        let report = |configured, proxies| ProxySyncReport {
            configured_resource_version: configured,
            proxies,
        };
        // (report, store resourceVersion, since, expected)
        let cases = [
            (
                report(10, vec![proxy("a.foo", 9, current, true)]),
                10,
                9,
                Progress::Done { acked: 1, total: 1 },
            ),
            (
                report(8, vec![proxy("a.foo", 5, current, true)]),
                10,
                9,
                Progress::Waiting {
                    caught_up: false,
                    pending: vec![],
                },
            ),
            (
                // b.foo did not change at or after 9: not waited for, even though it lags.
                report(
                    10,
                    vec![
                        proxy("a.foo", 9, current, true),
                        proxy("b.foo", 3, older, true),
                    ],
                ),
                10,
                9,
                Progress::Done { acked: 1, total: 2 },
            ),
            (
                report(10, vec![proxy("a.foo", 9, older, true)]),
                10,
                9,
                Progress::Waiting {
                    caught_up: true,
                    pending: vec!["a.foo (holds bbbbbbbb, not yet aaaaaaaa)".into()],
                },
            ),
            (
                report(10, vec![proxy("httpbin-1.foo", 2, None, false)]),
                10,
                0,
                Progress::Waiting {
                    caught_up: true,
                    pending: vec![
                        "httpbin-1.foo (not connected: is the pod running? `ironmesh get pod httpbin-1 -n foo`)"
                            .into(),
                    ],
                },
            ),
            (
                report(10, vec![proxy("a.foo", 2, None, true)]),
                10,
                0,
                Progress::Waiting {
                    caught_up: true,
                    pending: vec!["a.foo (connected, no configuration acknowledged yet)".into()],
                },
            ),
            (report(4, vec![]), 4, 0, Progress::Done { acked: 0, total: 0 }),
        ];
        for (report, store_version, since, expected) in cases {
            assert_eq!(
                progress(&report, store_version, since),
                expected,
                "{report:?} at {store_version} since {since}"
            );
        }
    }

    #[test]
    fn a_nack_of_the_awaited_configuration_is_reported_at_once() {
        let mut refused = proxy("a.foo", 9, None, true);
        refused.rejected = Some("workload: bad port".into());
        let report = ProxySyncReport {
            configured_resource_version: 10,
            proxies: vec![refused],
        };
        assert_eq!(
            progress(&report, 10, 9),
            Progress::Rejected(vec![("a.foo".into(), "workload: bad port".into())])
        );
    }

    #[test]
    fn timeouts_in_kubectl_spellings() {
        let cases = [
            ("30s", Ok(Duration::from_secs(30))),
            ("2m", Ok(Duration::from_secs(120))),
            ("500ms", Ok(Duration::from_millis(500))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("45", Ok(Duration::from_secs(45))),
            (
                "soon",
                Err("\"soon\" is not a duration: use e.g. 30s, 2m, 500ms".to_string()),
            ),
            (
                "3d",
                Err("\"3d\" is not a duration: use e.g. 30s, 2m, 500ms".to_string()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timeout(text), expected, "{text}");
        }
    }
}

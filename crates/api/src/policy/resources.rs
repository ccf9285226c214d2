//! The engine's internal view of each relevant kind, parsed leniently from stored objects (they were
//! validated on the way in; anything malformed is skipped rather than guessed at).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use super::{CLUSTER_DOMAIN, ClientTlsMode, PolicyRef, ServerMode};
use crate::object::Object;

/// Label the injector puts on workloads that run a sidecar.
pub(crate) const SIDECAR_LABEL: (&str, &str) = ("security.istio.io/tlsMode", "istio");
/// Annotation the injector puts on workloads that run a sidecar.
pub(crate) const SIDECAR_ANNOTATION: &str = "sidecar.istio.io/status";

/// Identity and age of a resource; "oldest wins" sorts by creation time, then name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) created: Option<String>,
}

impl Meta {
    pub(crate) fn of(obj: &Object, kind: &'static str) -> Meta {
        let namespace = if kind == "MeshPolicy" {
            String::new()
        } else {
            obj.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into())
        };
        Meta {
            kind,
            namespace,
            name: obj.metadata.name.clone(),
            created: obj.metadata.creation_timestamp.clone(),
        }
    }

    /// Oldest first; objects without a timestamp count as newest; then by name.
    pub(crate) fn age_order(&self, other: &Meta) -> Ordering {
        (
            self.created.is_none(),
            &self.created,
            &self.name,
            &self.namespace,
        )
            .cmp(&(
                other.created.is_none(),
                &other.created,
                &other.name,
                &other.namespace,
            ))
    }

    pub(crate) fn to_ref(&self) -> PolicyRef {
        PolicyRef {
            kind: self.kind.to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// PeerAuthentication mode, where UNSET inherits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerMode {
    Unset,
    Set(ServerMode),
}

fn peer_mode(value: Option<&Value>) -> PeerMode {
    match value.and_then(|m| m.get("mode")).and_then(Value::as_str) {
        Some("DISABLE") => PeerMode::Set(ServerMode::Disable),
        Some("PERMISSIVE") => PeerMode::Set(ServerMode::Permissive),
        Some("STRICT") => PeerMode::Set(ServerMode::Strict),
        _ => PeerMode::Unset,
    }
}

#[derive(Debug)]
pub(crate) struct PeerAuthn {
    pub(crate) meta: Meta,
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) mode: PeerMode,
    pub(crate) port_modes: BTreeMap<u16, PeerMode>,
}

/// A port selector of a legacy Policy target: the SERVICE port, by number or name.
#[derive(Debug)]
pub(crate) enum PortSelector {
    Number(u16),
    Name(String),
}

#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) service: String,
    pub(crate) ports: Vec<PortSelector>,
}

#[derive(Debug)]
pub(crate) struct LegacyPolicy {
    pub(crate) meta: Meta,
    pub(crate) targets: Vec<Target>,
    pub(crate) mode: ServerMode,
}

/// What `peers` means (docs/SEMANTICS.md#legacy-peers): the first `mtls` entry counts; `{}`, bare and null are
/// STRICT; `mode: PERMISSIVE` or `allowTls: true` are PERMISSIVE; no `mtls` at all is DISABLE.
fn legacy_mode(spec: &Value) -> ServerMode {
    let first_mtls = spec
        .get("peers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|peer| peer.as_object().and_then(|p| p.get("mtls")));
    match first_mtls {
        None => ServerMode::Disable,
        Some(mtls) => {
            let permissive = mtls.get("mode").and_then(Value::as_str) == Some("PERMISSIVE")
                || mtls.get("allowTls").and_then(Value::as_bool) == Some(true);
            if permissive {
                ServerMode::Permissive
            } else {
                ServerMode::Strict
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Tls {
    pub(crate) mode: ClientTlsMode,
    pub(crate) sni: Option<String>,
    pub(crate) subject_alt_names: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) tls: Option<Tls>,
    /// (service port, port-level `tls`) — a port-level setting replaces the top-level `tls`.
    pub(crate) port_level: Vec<(u16, Option<Tls>)>,
}

#[derive(Debug)]
pub(crate) struct Subset {
    pub(crate) name: String,
    pub(crate) traffic: Option<Traffic>,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) meta: Meta,
    /// Host with short names resolved against the rule's namespace.
    pub(crate) host: String,
    pub(crate) export_to: Vec<String>,
    pub(crate) has_workload_selector: bool,
    pub(crate) traffic: Option<Traffic>,
    pub(crate) subsets: Vec<Subset>,
}

impl Rule {
    /// `exportTo` semantics: empty or `*` = everyone, `.` = own namespace, else listed namespaces.
    pub(crate) fn visible_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self.export_to.iter().any(|e| {
                e == "*" || e == namespace || (e == "." && self.meta.namespace == namespace)
            })
    }
}

fn parse_tls(value: Option<&Value>) -> Option<Tls> {
    let tls = value.filter(|v| v.is_object())?;
    let mode = match tls.get("mode").and_then(Value::as_str) {
        Some("SIMPLE") => ClientTlsMode::Simple,
        Some("MUTUAL") => ClientTlsMode::Mutual,
        Some("ISTIO_MUTUAL") => ClientTlsMode::IstioMutual,
        // A `tls` block without a mode is DISABLE, the enum's zero value (docs/SEMANTICS.md#destinationrule-tls).
        _ => ClientTlsMode::Disable,
    };
    Some(Tls {
        mode,
        sni: tls.get("sni").and_then(Value::as_str).map(str::to_string),
        subject_alt_names: strings(tls.get("subjectAltNames")),
    })
}

fn parse_traffic(value: Option<&Value>) -> Option<Traffic> {
    let traffic = value.filter(|v| v.is_object())?;
    let port_level = traffic
        .get("portLevelSettings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|setting| {
            let port = setting.get("port")?.get("number")?.as_u64()?;
            Some((u16::try_from(port).ok()?, parse_tls(setting.get("tls"))))
        })
        .collect();
    Some(Traffic {
        tls: parse_tls(traffic.get("tls")),
        port_level,
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Resolves a DestinationRule host: dot-less names (except `*`) become `<host>.<ns>.svc.cluster.local`.
pub(crate) fn resolve_short_host(host: &str, namespace: &str) -> String {
    if host.contains('.') || host == "*" || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// Where a Service port sends traffic on its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug)]
pub(crate) struct ServicePort {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) target: TargetPort,
}

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) meta: Meta,
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) ports: Vec<ServicePort>,
}

impl Service {
    pub(crate) fn fqdn(&self) -> String {
        format!(
            "{}.{}.svc.{CLUSTER_DOMAIN}",
            self.meta.name, self.meta.namespace
        )
    }

    /// A service without a selector selects nothing (its endpoints are managed by hand).
    pub(crate) fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && subset_of(&self.selector, labels)
    }
}

/// A pod template (from a Deployment) or a Pod: the server side of a service.
#[derive(Debug)]
pub(crate) struct WorkloadTemplate {
    pub(crate) meta: Meta,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) service_account: String,
    /// (port name, container port).
    pub(crate) container_ports: Vec<(String, u16)>,
    pub(crate) has_sidecar: bool,
}

pub(crate) fn subset_of(
    wanted: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl PeerAuthn {
    pub(crate) fn parse(obj: &Object) -> PeerAuthn {
        let spec = obj.spec();
        let port_modes = spec
            .get("portLevelMtls")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(port, m)| Some((port.parse().ok()?, peer_mode(Some(m)))))
            .collect();
        PeerAuthn {
            meta: Meta::of(obj, "PeerAuthentication"),
            selector: string_map(spec.get("selector").and_then(|s| s.get("matchLabels"))),
            mode: peer_mode(spec.get("mtls")),
            port_modes,
        }
    }
}

impl LegacyPolicy {
    /// A MeshPolicy or Policy.
    pub(crate) fn parse(obj: &Object) -> LegacyPolicy {
        let kind = if obj.kind == "MeshPolicy" {
            "MeshPolicy"
        } else {
            "Policy"
        };
        let spec = obj.spec();
        let targets = spec
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(Target {
                    service: t.get("name")?.as_str()?.to_string(),
                    ports: t
                        .get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(port_selector)
                        .collect(),
                })
            })
            .collect();
        LegacyPolicy {
            meta: Meta::of(obj, kind),
            mode: legacy_mode(spec),
            targets,
        }
    }
}

fn port_selector(port: &Value) -> Option<PortSelector> {
    if let Some(number) = port.get("number").and_then(Value::as_u64) {
        return u16::try_from(number).ok().map(PortSelector::Number);
    }
    let name = port.get("name")?.as_str()?;
    Some(PortSelector::Name(name.to_string()))
}

impl Rule {
    /// `None` for a rule without a host (validation refuses those).
    pub(crate) fn parse(obj: &Object) -> Option<Rule> {
        let spec = obj.spec();
        let meta = Meta::of(obj, "DestinationRule");
        let host = spec
            .get("host")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())?;
        Some(Rule {
            host: resolve_short_host(host, &meta.namespace),
            export_to: strings(spec.get("exportTo")),
            has_workload_selector: spec.get("workloadSelector").is_some_and(|w| !w.is_null()),
            traffic: parse_traffic(spec.get("trafficPolicy")),
            subsets: spec
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    Some(Subset {
                        name: s.get("name")?.as_str()?.to_string(),
                        traffic: parse_traffic(s.get("trafficPolicy")),
                    })
                })
                .collect(),
            meta,
        })
    }
}

impl Service {
    pub(crate) fn parse(obj: &Object) -> Service {
        let spec = obj.spec();
        let ports = spec
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.get("port")?.as_u64()?).ok()?;
                // targetPort defaults to port; a string is a container port name (or a number in quotes).
                let target = match p.get("targetPort") {
                    Some(Value::String(name)) => match name.parse::<u16>() {
                        Ok(n) => TargetPort::Number(n),
                        Err(_) => TargetPort::Name(name.clone()),
                    },
                    Some(v) => TargetPort::Number(
                        v.as_u64()
                            .and_then(|n| u16::try_from(n).ok())
                            .unwrap_or(port),
                    ),
                    None => TargetPort::Number(port),
                };
                Some(ServicePort {
                    name: str_field(p, "name"),
                    port,
                    target,
                })
            })
            .collect();
        Service {
            meta: Meta::of(obj, "Service"),
            selector: string_map(spec.get("selector")),
            ports,
        }
    }
}

impl WorkloadTemplate {
    /// A Pod, or the pod template of a Deployment.
    pub(crate) fn parse(obj: &Object) -> WorkloadTemplate {
        let spec = obj.spec();
        let (kind, labels, annotations, pod_spec) = if obj.kind == "Pod" {
            (
                "Pod",
                obj.metadata.labels.clone(),
                obj.metadata.annotations.contains_key(SIDECAR_ANNOTATION),
                spec,
            )
        } else {
            let template = spec.get("template").unwrap_or(&Value::Null);
            let metadata = template.get("metadata").unwrap_or(&Value::Null);
            (
                "Deployment",
                string_map(metadata.get("labels")),
                metadata
                    .get("annotations")
                    .and_then(|a| a.get(SIDECAR_ANNOTATION))
                    .is_some(),
                template.get("spec").unwrap_or(&Value::Null),
            )
        };
        let containers: Vec<&Value> = pod_spec
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let has_sidecar = annotations
            || labels.get(SIDECAR_LABEL.0).map(String::as_str) == Some(SIDECAR_LABEL.1)
            || containers.iter().any(|c| {
                matches!(
                    c.get("name").and_then(Value::as_str),
                    Some("istio-proxy" | "ironmesh-proxy")
                )
            });
        let service_account = ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|f| pod_spec.get(*f).and_then(Value::as_str))
            .unwrap_or("default")
            .to_string();
        let container_ports = containers
            .iter()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|p| {
                let port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
                Some((str_field(p, "name"), port))
            })
            .collect();
        WorkloadTemplate {
            meta: Meta::of(obj, kind),
            labels,
            service_account,
            container_ports,
            has_sidecar,
        }
    }
}

fn str_field(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

//! `tls-check` rows (docs/SEMANTICS.md#tls-check, Istio 1.4 shape): one row per service port plus one per
//! DestinationRule subset, with the server mode, the client TLS, OK/CONFLICT/AUTO and who decided each.

use std::fmt;

use super::resources::{Service, TargetPort, subset_of};
use super::{ClientTlsMode, PolicyIndex, PolicyRef, ServerMode, Workload};

/// Whether client and server agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsCheckStatus {
    Ok,
    Conflict,
    /// No DestinationRule `tls` and auto mTLS is on: the client adapts to the server.
    Auto,
}

impl fmt::Display for TlsCheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsCheckStatus::Ok => "OK",
            TlsCheckStatus::Conflict => "CONFLICT",
            TlsCheckStatus::Auto => "AUTO",
        })
    }
}

/// One `tls-check` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCheckRow {
    /// `fqdn:port`, or `fqdn|subset:port` for subset rows.
    pub host_port: String,
    pub status: TlsCheckStatus,
    pub server: ServerMode,
    pub client: ClientTlsMode,
    pub authn_policy: Option<PolicyRef>,
    pub destination_rule: Option<PolicyRef>,
    /// Whether the service's workloads run a sidecar (`true` when it has no known workloads).
    pub server_has_sidecar: bool,
}

/// Istio 1.4 `EvaluateTLSState`, plus: an unset client without auto mTLS sends plaintext (so it
/// conflicts with STRICT, as the walkthrough's 503 shows), and a server without a sidecar accepts only
/// plaintext whatever its policy says (docs/SEMANTICS.md#outcomes rows 7 and 13).
pub(crate) fn evaluate(
    server: ServerMode,
    client: ClientTlsMode,
    auto_mtls: bool,
    server_has_sidecar: bool,
) -> TlsCheckStatus {
    let client = match client {
        ClientTlsMode::Unset if auto_mtls => return TlsCheckStatus::Auto,
        ClientTlsMode::Unset => ClientTlsMode::Disable,
        other => other,
    };
    let server = if server_has_sidecar {
        server
    } else {
        ServerMode::Disable
    };
    let ok = matches!(
        (server, client),
        (ServerMode::Disable, ClientTlsMode::Disable)
            | (
                ServerMode::Permissive,
                ClientTlsMode::Disable | ClientTlsMode::IstioMutual
            )
            | (ServerMode::Strict, ClientTlsMode::IstioMutual)
    );
    if ok {
        TlsCheckStatus::Ok
    } else {
        TlsCheckStatus::Conflict
    }
}

impl PolicyIndex {
    /// Rows for every service port (sorted by host, then port), optionally only hosts matching
    /// `host_filter` (`httpbin`, `httpbin.foo` or the FQDN). `client_namespace` is the calling pod's
    /// namespace; without one each service is checked from its own namespace.
    pub fn tls_check(
        &self,
        client_namespace: Option<&str>,
        host_filter: Option<&str>,
    ) -> Vec<TlsCheckRow> {
        let mut services: Vec<&Service> = self.index.services.values().flatten().collect();
        services.sort_by_key(|s| s.fqdn());
        let mut rows = Vec::new();
        for service in services {
            let fqdn = service.fqdn();
            if let Some(filter) = host_filter
                && !(fqdn == filter || fqdn.starts_with(&format!("{filter}.")))
            {
                continue;
            }
            let client_ns = client_namespace.unwrap_or(&service.meta.namespace);
            let (workload, has_sidecar) = self.representative_workload(service);
            let mut ports: Vec<_> = service.ports.iter().collect();
            ports.sort_by_key(|p| p.port);
            for port in ports {
                let container_port = match &port.target {
                    TargetPort::Number(n) => *n,
                    TargetPort::Name(name) => self
                        .container_port_named(service, name)
                        .unwrap_or(port.port),
                };
                let server = self.server_mode(&workload, container_port);
                let mut subsets = vec![None];
                subsets.extend(self.subsets_for(client_ns, &fqdn).into_iter().map(Some));
                for subset in subsets {
                    let client =
                        self.client_tls_for_subset(client_ns, &fqdn, port.port, subset.as_deref());
                    let host = match &subset {
                        Some(name) => format!("{fqdn}|{name}"),
                        None => fqdn.clone(),
                    };
                    rows.push(TlsCheckRow {
                        host_port: format!("{host}:{}", port.port),
                        status: evaluate(
                            server.mode,
                            client.mode,
                            self.mesh.auto_mtls,
                            has_sidecar,
                        ),
                        server: server.mode,
                        client: client.mode,
                        authn_policy: server.decided_by.clone(),
                        destination_rule: client.decided_by,
                        server_has_sidecar: has_sidecar,
                    });
                }
            }
        }
        rows
    }

    /// The oldest workload behind a service (or one made of its selector), and whether the service's
    /// workloads run sidecars.
    fn representative_workload(&self, service: &Service) -> (Workload, bool) {
        let backing: Vec<_> = self
            .index
            .workloads
            .get(&service.meta.namespace)
            .into_iter()
            .flatten()
            .filter(|w| service.selects(&w.labels))
            .collect();
        let has_sidecar = backing.is_empty() || backing.iter().any(|w| w.has_sidecar);
        let workload = match backing.first() {
            Some(w) => Workload {
                namespace: service.meta.namespace.clone(),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
            },
            None => Workload {
                namespace: service.meta.namespace.clone(),
                labels: service.selector.clone(),
                service_account: "default".into(),
            },
        };
        (workload, has_sidecar)
    }

    fn container_port_named(&self, service: &Service, name: &str) -> Option<u16> {
        self.index
            .workloads
            .get(&service.meta.namespace)?
            .iter()
            .filter(|w| subset_of(&service.selector, &w.labels))
            .flat_map(|w| &w.container_ports)
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    }
}

/// Prints rows as `istioctl authn tls-check` does: a header, columns padded to the widest cell plus 5.
pub fn format_tls_check(rows: &[TlsCheckRow]) -> String {
    let dash = |r: &Option<PolicyRef>| r.as_ref().map_or("-".to_string(), PolicyRef::to_string);
    let mut table: Vec<[String; 6]> = vec![[
        "HOST:PORT".into(),
        "STATUS".into(),
        "SERVER".into(),
        "CLIENT".into(),
        "AUTHN POLICY".into(),
        "DESTINATION RULE".into(),
    ]];
    table.extend(rows.iter().map(|r| {
        [
            r.host_port.clone(),
            r.status.to_string(),
            r.server.to_string(),
            r.client.to_string(),
            dash(&r.authn_policy),
            dash(&r.destination_rule),
        ]
    }));
    let mut widths = [0usize; 6];
    for line in &table {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for line in &table {
        let mut text = String::new();
        for (column, cell) in line.iter().enumerate() {
            if column + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}", width = widths[column] + 5));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

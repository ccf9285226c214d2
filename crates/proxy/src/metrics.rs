//! Istio's standard metrics (names and labels) with prometheus-client, and the access log line.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `reporter` label: which side of the call reported it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reporter {
    source,
    destination,
}

/// `connection_security_policy` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SecurityPolicy {
    mutual_tls,
    none,
}

/// A label value of a connection. Shared: a connection keeps its labels for its life (its close is
/// counted and logged with them), and most of the values (the pod's workload, namespace and principal,
/// `unknown`) are the same for all of a sidecar's connections.
pub type LabelValue = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: LabelValue,
    pub source_workload_namespace: LabelValue,
    pub source_principal: LabelValue,
    pub destination_workload: LabelValue,
    pub destination_workload_namespace: LabelValue,
    pub destination_principal: LabelValue,
    pub destination_service: LabelValue,
    pub connection_security_policy: SecurityPolicy,
}

/// The label values every connection of a pod repeats, built once.
pub(crate) struct PodLabels {
    pub workload: LabelValue,
    pub namespace: LabelValue,
    /// The `spiffe://` principal of the pod's identity.
    pub principal: LabelValue,
    pub unknown: LabelValue,
}

impl PodLabels {
    pub(crate) fn new(
        workload: &str,
        namespace: &str,
        identity: &ironmesh_identity::SpiffeId,
    ) -> Self {
        Self {
            workload: workload.into(),
            namespace: namespace.into(),
            principal: principal(Some(identity)).into(),
            unknown: "unknown".into(),
        }
    }

    /// `spiffe://` principal of `id`, `unknown` without one.
    pub(crate) fn principal_of(&self, id: Option<&ironmesh_identity::SpiffeId>) -> LabelValue {
        id.map_or_else(|| self.unknown.clone(), |id| principal(Some(id)).into())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub connection: ConnectionLabels,
    pub request_protocol: String,
    pub response_code: u16,
}

/// Labels of `ironmesh_authz_denied_total`: which policy denied, and how.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// `namespace/name` of the DENY policy that matched, or the ALLOW policies (comma-separated) none of
    /// which matched.
    pub policy: String,
    /// `DENY` (a DENY rule matched) or `ALLOW` (default deny: no ALLOW rule matched).
    pub action: String,
    /// `http` (answered 403) or `tcp` (connection closed).
    pub protocol: String,
}

/// Labels of `ironmesh_authz_dry_run_total`: one dry-run (shadow) evaluation, as Envoy's RBAC shadow
/// stats `istio_dry_run_{allow,deny}_shadow_{allowed,denied}` count them (pilot/pkg/security/authz/model
/// `RBACShadowRules*StatPrefix`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DryRunLabels {
    /// `ALLOW` or `DENY`: the shadow engine (dry-run policies of that action).
    pub action: String,
    /// `allowed` or `denied`: what the dry-run policies would have decided.
    pub result: String,
    /// `namespace/name` of the dry-run policy whose rule matched (Envoy's `shadow_effective_policy_id`),
    /// empty when none matched.
    pub policy: String,
    /// `http` or `tcp`.
    pub protocol: String,
}

/// Envoy's default millisecond buckets.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub tcp_opened: Family<ConnectionLabels, Counter>,
    pub tcp_closed: Family<ConnectionLabels, Counter>,
    pub tcp_sent: Family<ConnectionLabels, Counter>,
    pub tcp_received: Family<ConnectionLabels, Counter>,
    pub authz_denied: Family<DenialLabels, Counter>,
    pub authz_dry_run: Family<DryRunLabels, Counter>,
    /// Access-log lines dropped because the writer fell behind (the worker never waits for it).
    pub access_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let tcp_opened = Family::<ConnectionLabels, Counter>::default();
        let tcp_closed = Family::<ConnectionLabels, Counter>::default();
        let tcp_sent = Family::<ConnectionLabels, Counter>::default();
        let tcp_received = Family::<ConnectionLabels, Counter>::default();
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "istio_requests",
            "Requests handled by the proxy",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            request_duration.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the destination",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the destination",
            tcp_received.clone(),
        );
        let authz_denied = Family::<DenialLabels, Counter>::default();
        registry.register(
            "ironmesh_authz_denied",
            "Inbound requests and connections denied by AuthorizationPolicy",
            authz_denied.clone(),
        );
        let authz_dry_run = Family::<DryRunLabels, Counter>::default();
        registry.register(
            "ironmesh_authz_dry_run",
            "Inbound requests and connections evaluated by dry-run (istio.io/dry-run) AuthorizationPolicies, by what they would have decided; never enforced",
            authz_dry_run.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "ironmesh_access_log_dropped_lines",
            "Access-log lines dropped because the log writer was too far behind (stdout stalled); the data plane never waits for the log",
            access_log_dropped.clone(),
        );
        Self {
            access_log_dropped,
            authz_denied,
            authz_dry_run,
            registry,
            requests,
            request_duration,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The request series one HTTP connection reports into. Building the labels (nine strings, two of them
/// formatted) and hashing them into both families cost about as much per request as the rest of the
/// proxy's own code; here that happens once per distinct (connection labels, protocol, code) of the
/// connection, and later requests count into the kept handles, which share the families' values (the
/// families never drop a series).
pub(crate) struct RequestSeries<K> {
    /// What the connection labels were built from (the route on the outbound), and the labels.
    connection: Option<(K, ConnectionLabels)>,
    series: Vec<(&'static str, u16, Counter, Histogram)>,
}

impl<K> Default for RequestSeries<K> {
    fn default() -> Self {
        Self {
            connection: None,
            series: Vec::new(),
        }
    }
}

impl<K> RequestSeries<K> {
    /// Counts one request. `same` says whether labels built from a key are still this request's;
    /// `labels` builds them (and their key) when not.
    pub fn record(
        &mut self,
        metrics: &Metrics,
        same: impl FnOnce(&K) -> bool,
        labels: impl FnOnce() -> (K, ConnectionLabels),
        (protocol, code): (&'static str, u16),
        duration: std::time::Duration,
    ) {
        let connection = match self.connection.take() {
            Some((key, labels)) if same(&key) => (key, labels),
            _ => {
                self.series.clear();
                labels()
            }
        };
        let (_, connection) = self.connection.insert(connection);
        let found = self
            .series
            .iter()
            .position(|(p, c, _, _)| *p == protocol && *c == code);
        let index = found.unwrap_or_else(|| {
            let labels = RequestLabels {
                connection: connection.clone(),
                request_protocol: protocol.to_owned(),
                response_code: code,
            };
            let counter = metrics.requests.get_or_create(&labels).clone();
            let histogram = metrics.request_duration.get_or_create(&labels).clone();
            self.series.push((protocol, code, counter, histogram));
            self.series.len() - 1
        });
        let (_, _, counter, histogram) = &self.series[index];
        counter.inc();
        histogram.observe(duration.as_secs_f64() * 1000.0);
    }
}

/// `name` of a `spiffe://td/ns/<ns>/sa/<sa>` principal without the scheme, "unknown" when absent.
pub(crate) fn principal(id: Option<&ironmesh_identity::SpiffeId>) -> String {
    id.map_or_else(
        || "unknown".to_string(),
        |id| format!("spiffe://{}", id.principal()),
    )
}

/// Istio's `request_protocol`: `grpc` for gRPC content, `http` otherwise.
pub(crate) fn request_protocol<B>(request: &http::Request<B>) -> &'static str {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc { "grpc" } else { "http" }
}

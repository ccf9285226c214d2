//! The proxy's operational HTTP surfaces: readiness (`:15021/healthz/ready`), metrics
//! (`:15020/stats/prometheus`) and the localhost admin (`:15000` `/config_dump`, `/certs`, `/logging`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ironmesh_identity::WorkloadCertificates;
use ironmesh_proto::pb::{Protocol, ProxyConfig, ServerMode};

use crate::index::ConfigIndex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::limits::{Acceptor, ConnectionClock, ConnectionCount, ConnectionLimits, Watched};
use crate::metrics::Metrics;

/// Changes the log filter at run time (e.g. `debug`, `ironmesh_proxy=trace`).
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin surfaces read.
#[derive(Clone)]
pub struct AdminState {
    pub certs: WorkloadCertificates,
    pub config: watch::Receiver<Option<Arc<ConfigIndex>>>,
    pub metrics: Arc<Metrics>,
    pub set_log_level: Option<LogLevelSetter>,
}

/// Which endpoints a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Readiness,
    Metrics,
    Admin,
}

impl AdminState {
    /// Ready only after the first certificate and the first configuration.
    pub fn is_ready(&self) -> bool {
        self.certs.snapshot().is_some() && self.config.borrow().is_some()
    }
}

/// Serves `surface` on `listener` until the task is dropped, with the operational ports' default limits.
pub async fn serve(listener: TcpListener, state: AdminState, surface: Surface) {
    serve_with_limits(listener, state, surface, ConnectionLimits::OPERATIONAL).await
}

/// Serves `surface` on `listener` until the task is dropped. These ports are plaintext and reachable by
/// anyone who can reach the pod, so they get the data plane's protections: accept back-off when out of
/// descriptors, their own connection cap, and header-read and idle timeouts.
pub async fn serve_with_limits(
    listener: TcpListener,
    state: AdminState,
    surface: Surface,
    limits: ConnectionLimits,
) {
    let name = match surface {
        Surface::Readiness => "readiness",
        Surface::Metrics => "metrics",
        Surface::Admin => "admin",
    };
    let count = Arc::new(ConnectionCount::default());
    let mut acceptor = Acceptor::new(listener, name, limits.max_connections, count);
    loop {
        let (stream, _, slot) = acceptor.accept().await;
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let clock = ConnectionClock::for_http();
            let requests = clock.clone();
            let service = service_fn(move |request| {
                // The answer is computed at once; the connection is idle again when it has been sent.
                let _busy = requests.request_started();
                let response = route(&state, surface, request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let io = TokioIo::new(Watched::new(stream, clock.clone()));
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::select! {
                _ = connection => {}
                reason = clock.http_expired(&limits) => {
                    tracing::debug!(listener = name, reason, "connection closed");
                }
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn route(
    state: &AdminState,
    surface: Surface,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (surface, path) {
        (Surface::Readiness, "/healthz/ready") | (Surface::Admin, "/ready") => {
            if state.is_ready() {
                text(StatusCode::OK, "text/plain", "LIVE\n".into())
            } else {
                let missing = match (
                    state.certs.snapshot().is_some(),
                    state.config.borrow().is_some(),
                ) {
                    (false, false) => "certificate and configuration",
                    (false, true) => "certificate",
                    _ => "configuration",
                };
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: waiting for the first {missing}\n"),
                )
            }
        }
        (Surface::Metrics | Surface::Admin, "/stats/prometheus") => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        (Surface::Admin, "/config_dump") => {
            let dump = state
                .config
                .borrow()
                .as_ref()
                .and_then(|index| index.config())
                .map_or(Value::Null, config_json);
            text(StatusCode::OK, "application/json", pretty(&dump))
        }
        (Surface::Admin, "/certs") => text(
            StatusCode::OK,
            "application/json",
            pretty(&certs_json(&state.certs)),
        ),
        (Surface::Admin, "/logging") => {
            let level = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")));
            match (level, &state.set_log_level) {
                (Some(level), Some(set)) => match set(level) {
                    Ok(()) => text(
                        StatusCode::OK,
                        "text/plain",
                        format!("log level set to {level}\n"),
                    ),
                    Err(error) => text(StatusCode::BAD_REQUEST, "text/plain", format!("{error}\n")),
                },
                (None, _) => text(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "use /logging?level=debug\n".into(),
                ),
                (Some(_), None) => text(
                    StatusCode::NOT_IMPLEMENTED,
                    "text/plain",
                    "log level is fixed in this process\n".into(),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no such endpoint {path}\n"),
        ),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn certs_json(certs: &WorkloadCertificates) -> Value {
    match certs.snapshot() {
        None => {
            json!({ "identity": certs.identity().to_string(), "status": "waiting for the first certificate" })
        }
        Some(info) => json!({
            "identity": info.spiffe_id.to_string(),
            "not_before": unix_seconds(info.not_before),
            "not_after": unix_seconds(info.not_after),
            "expires_in_seconds": info.not_after.duration_since(SystemTime::now()).map_or(0, |d| d.as_secs()),
            "next_rotation": unix_seconds(info.next_rotation),
            "chain_pem": info.chain_pem,
            "trust_bundle_pem": info.trust_bundle_pem,
        }),
    }
}

fn protocol_name(value: i32) -> String {
    Protocol::try_from(value).map_or_else(|_| value.to_string(), |p| p.as_str_name().to_string())
}

fn mode_name(value: i32) -> String {
    ServerMode::try_from(value).map_or_else(|_| value.to_string(), |m| m.as_str_name().to_string())
}

/// The configuration as JSON (the proto types have no serde).
pub fn config_json(config: &ProxyConfig) -> Value {
    let workload = config.workload.as_ref().map(|w| {
        json!({
            "name": w.name, "namespace": w.namespace, "service_account": w.service_account,
            "spiffe_id": w.spiffe_id, "labels": w.labels, "default_mode": mode_name(w.default_mode),
            "ports": w.ports.iter().map(|p| json!({
                "port": p.port, "protocol": protocol_name(p.protocol), "mode": mode_name(p.mode),
            })).collect::<Vec<_>>(),
        })
    });
    let services: Vec<Value> = config
        .services
        .iter()
        .map(|s| {
            json!({
                "hostname": s.hostname, "namespace": s.namespace, "vip": s.vip,
                "ports": s.ports.iter().map(|p| {
                    let tls = p.tls.clone().unwrap_or_default();
                    json!({
                        "port": p.port, "target_port": p.target_port, "protocol": protocol_name(p.protocol),
                        "tls": { "mode": tls.mode().as_str_name(), "sni": tls.sni, "subject_alt_names": tls.subject_alt_names },
                    })
                }).collect::<Vec<_>>(),
                "endpoints": s.endpoints.iter().map(|e| json!({
                    "ip": e.ip, "mtls_ready": e.mtls_ready, "spiffe_id": e.spiffe_id,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "version": config.version, "auto_mtls": config.auto_mtls,
        "workload": workload, "services": services,
    })
}

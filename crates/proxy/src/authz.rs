//! Inbound authorization: the request attributes the engine reads (from the connection and, on HTTP
//! ports, each request), the decision against the workload's current policies, and what a denial looks
//! like (Envoy's 403 `RBAC: access denied`, a closed TCP connection, a metric and an access log line).

use std::net::SocketAddr;

use http::StatusCode;
use ironmesh_authz::{Action, Decision, Http, Peer, Request};
use ironmesh_identity::SpiffeId;

use crate::context::Context;
use crate::metrics::{DenialLabels, DryRunLabels};
use crate::upstream::{ProxyBody, error_response};

/// Envoy's body for a request its RBAC filter denied.
pub(crate) const RBAC_DENIED_BODY: &str = "RBAC: access denied";

/// The attributes of one inbound connection, without HTTP (how a TCP port is evaluated). `sni` is the
/// server name of the client's TLS ClientHello (`connection.sni`), for mTLS and passed-through TLS alike.
pub(crate) fn connection_request(
    peer: Option<&SpiffeId>,
    sni: Option<&str>,
    source: SocketAddr,
    original: SocketAddr,
) -> Request {
    Request {
        peer: peer.map(|id| Peer::from_principal(&id.principal())),
        source_ip: source.ip(),
        destination_ip: original.ip(),
        destination_port: original.port(),
        sni: sni.map(str::to_owned),
        http: None,
    }
}

/// The HTTP attributes of a request: method, path with query, `:authority`/`Host`, and headers.
pub(crate) fn http_attributes<B>(request: &http::Request<B>) -> Http {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Http {
        method: request.method().as_str().to_owned(),
        path: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        host,
        headers: request
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
    }
}

/// `namespace/name` of what decided a denial, and the action behind it (for the metric and the log).
pub(crate) fn denied_by(decision: &Decision) -> (String, &'static str) {
    match &decision.by {
        Some(by) => (
            format!("{}/{}", by.namespace, by.name),
            match by.action {
                Action::Deny => "DENY",
                Action::Allow => "ALLOW",
                Action::Audit => "AUDIT",
                Action::Custom => "CUSTOM",
            },
        ),
        None => (
            decision
                .allow_policies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "ALLOW",
        ),
    }
}

/// Evaluates `request` against the workload's current policies; a denial is counted and logged, and so
/// is every dry-run (shadow) result, which never changes the decision.
pub(crate) fn authorize(context: &Context, request: &Request) -> Decision {
    let decision = context.index.load().authz.evaluate(request);
    let protocol = if request.http.is_some() {
        "http"
    } else {
        "tcp"
    };
    for dry_run in &decision.dry_run {
        let policy = dry_run
            .by
            .as_ref()
            .map(|by| format!("{}/{}", by.namespace, by.name))
            .unwrap_or_default();
        let result = if dry_run.allowed { "allowed" } else { "denied" };
        context
            .metrics
            .authz_dry_run
            .get_or_create(&DryRunLabels {
                action: dry_run.action.to_string(),
                result: result.to_owned(),
                policy: policy.clone(),
                protocol: protocol.to_owned(),
            })
            .inc();
        tracing::info!(
            target: "access",
            reporter = "destination",
            source = %request.source_ip,
            port = request.destination_port,
            source_principal = request.peer.as_ref().map_or("unknown", |p| p.principal.as_str()),
            shadow_engine_result = result,
            shadow_effective_policy_id = %policy,
            protocol,
            "dry-run authorization (not enforced): {dry_run}"
        );
    }
    if !decision.allowed {
        let (policy, action) = denied_by(&decision);
        context
            .metrics
            .authz_denied
            .get_or_create(&DenialLabels {
                policy: policy.clone(),
                action: action.to_owned(),
                protocol: protocol.to_owned(),
            })
            .inc();
        tracing::info!(
            target: "access",
            reporter = "destination",
            source = %request.source_ip,
            port = request.destination_port,
            source_principal = request.peer.as_ref().map_or("unknown", |p| p.principal.as_str()),
            policy = %policy,
            protocol,
            "denied by authorization policy: {decision}"
        );
    }
    decision
}

/// Envoy's RBAC denial: 403, `content-type: text/plain`, body `RBAC: access denied`.
pub(crate) fn rbac_denied() -> http::Response<ProxyBody> {
    error_response(StatusCode::FORBIDDEN, RBAC_DENIED_BODY.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_attributes_keep_the_query_and_read_the_host_header() {
        let request = http::Request::builder()
            .uri("/headers?x=1")
            .header("host", "httpbin.foo:8000")
            .header("x-token", "abc")
            .body(())
            .unwrap();
        let http = http_attributes(&request);
        assert_eq!(http.path, "/headers?x=1");
        assert_eq!(http.host, "httpbin.foo:8000");
        assert_eq!(http.method, "GET");
        assert!(
            http.headers
                .contains(&("x-token".to_owned(), "abc".to_owned()))
        );
    }
}

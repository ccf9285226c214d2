//! The outbound listener (15001): find the service by original destination, pick an endpoint, apply the
//! client TLS decision, proxy HTTP with pooled upstreams or copy TCP; unknown destinations pass through
//! (ALLOW_ANY) or are blocked (REGISTRY_ONLY: Envoy's `block_all` 502 on HTTP, closed TCP).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::StatusCode;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access_log;
use crate::context::{
    ActiveGuard, Context, HttpVersion, PARK_IDLE_HTTP1_AFTER, serve_http_until_drained,
    serve_http1_parking,
};
use crate::host::normalize_host;
use crate::index::{Route, UpstreamTls};
use crate::limits::{Acceptor, ConnectionClock};
use crate::metrics::{ConnectionLabels, Reporter, RequestSeries, SecurityPolicy, request_protocol};
use crate::sockets::reset;
use crate::staged::{Connection, boxed, staged};
use crate::tcp::relay;
use crate::upstream::{self, Alpn, Pools, ProxyBody, error_response};

/// How long a blocked connection on a port not known as HTTP may take to show an HTTP request line.
const BLOCKED_SNIFF_TIMEOUT: Duration = Duration::from_millis(200);

pub(crate) async fn serve(
    context: Arc<Context>,
    pools: Arc<Pools>,
    mut listener: Acceptor,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            (stream, _, slot) = listener.accept() => {
                let on_parked = slot.on_freed();
                let held = (ActiveGuard::new(&context), slot);
                let setup = admit(context.clone(), pools.clone(), stream, on_parked);
                tokio::spawn(staged(held, Box::pin(setup)));
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn labels(context: &Context, destination_service: &str, tls: &UpstreamTls) -> ConnectionLabels {
    let pod = &context.labels;
    let (destination_principal, security) = match tls {
        UpstreamTls::Mutual { expected, .. } => (
            pod.principal_of(expected.first()),
            SecurityPolicy::mutual_tls,
        ),
        UpstreamTls::Plaintext => (pod.unknown.clone(), SecurityPolicy::none),
    };
    ConnectionLabels {
        reporter: Reporter::source,
        source_workload: pod.workload.clone(),
        source_workload_namespace: pod.namespace.clone(),
        source_principal: pod.principal.clone(),
        destination_workload: pod.unknown.clone(),
        destination_workload_namespace: pod.unknown.clone(),
        destination_principal,
        destination_service: destination_service.into(),
        connection_security_policy: security,
    }
}

/// A connection's set-up (see [`staged`]): where it was going and what that destination calls for, up
/// to the future that carries it. `on_parked` counts an idle HTTP/1 connection's state as freed.
async fn admit(
    context: Arc<Context>,
    pools: Arc<Pools>,
    stream: TcpStream,
    on_parked: impl Fn() + Send + Sync + 'static,
) -> Option<Connection> {
    let original = match context.sockets.original_destination(&stream) {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%error, "no original destination on an outbound connection; closing it");
            reset(stream);
            return None;
        }
    };
    if stream.local_addr().ok() == Some(original) {
        // Someone dialed the capture port itself: passing it through would loop forever.
        reset(stream);
        return None;
    }
    let _ = stream.set_nodelay(true);
    let (route, blocked, http_port) = {
        let index = context.index.load();
        (
            index.route(original),
            index.registry_only && !index.knows(original),
            index.is_http_port(original.port()),
        )
    };
    // Each kind of connection boxed on its own, so an opaque TCP connection does not hold an HTTP
    // server connection's worth of state for its life.
    match route {
        None if blocked => Some(boxed(block(stream, original, http_port))),
        None => passthrough(context, stream, original).await,
        Some(route) if route.http => serve_http(context, pools, stream, original, on_parked).await,
        Some(route) => tcp(context, stream, route).await,
    }
}

/// REGISTRY_ONLY and a destination the configuration does not know: HTTP (a port some service speaks
/// HTTP on, or a request line seen within a short sniff) gets Envoy's `block_all` 502 on every request;
/// anything else is closed, as Envoy's BlackHoleCluster does.
async fn block(stream: TcpStream, original: SocketAddr, http_port: bool) {
    let http = http_port || looks_like_http(&stream).await;
    tracing::info!(target: "access", reporter = "source", destination = %original, http, "blocked by REGISTRY_ONLY: destination not in the registry");
    if !http {
        return drop(stream);
    }
    let service = service_fn(|_request: http::Request<Incoming>| async {
        Ok::<_, std::convert::Infallible>(error_response(StatusCode::BAD_GATEWAY, String::new()))
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Whether the client's first bytes are an HTTP/1 request line (`METHOD ` then a path).
async fn looks_like_http(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 16];
    let Ok(Ok(read)) = tokio::time::timeout(BLOCKED_SNIFF_TIMEOUT, stream.peek(&mut buffer)).await
    else {
        return false;
    };
    let first = &buffer[..read];
    [
        "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "PATCH ", "OPTIONS ", "CONNECT ", "TRACE ",
        "PRI * ",
    ]
    .iter()
    .any(|method| first.starts_with(method.as_bytes()))
}

async fn passthrough(
    context: Arc<Context>,
    stream: TcpStream,
    original: SocketAddr,
) -> Option<Connection> {
    match upstream::connect(&context, original, &UpstreamTls::Plaintext, Alpn::Tcp).await {
        Ok(upstream) => {
            let labels = labels(
                &context,
                &original.ip().to_string(),
                &UpstreamTls::Plaintext,
            );
            Some(boxed(relay(context, labels, stream, upstream)))
        }
        Err(error) => {
            tracing::debug!(%error, "passthrough connect failed");
            reset(stream);
            None
        }
    }
}

async fn tcp(context: Arc<Context>, stream: TcpStream, route: Arc<Route>) -> Option<Connection> {
    match upstream::connect(&context, route.upstream, &route.tls, Alpn::Tcp).await {
        Ok(upstream) => {
            let labels = labels(&context, &route.hostname, &route.tls);
            Some(boxed(relay(context, labels, stream, upstream)))
        }
        Err(error) => {
            tracing::info!(target: "access", %error, destination_service = %route.hostname, "tcp upstream failed");
            reset(stream);
            None
        }
    }
}

/// Set-up of an HTTP connection: waits for its first bytes, which tell HTTP/1 from h2, and returns the
/// server that carries it.
async fn serve_http(
    context: Arc<Context>,
    pools: Arc<Pools>,
    stream: TcpStream,
    original: SocketAddr,
    on_parked: impl Fn() + Send + Sync + 'static,
) -> Option<Connection> {
    // The first bytes tell HTTP/1 from h2 with prior knowledge. The connection's clock starts now, so
    // waiting for them counts against the header-read timeout of the first request, as hyper's own
    // wait would; the drain ends the wait too.
    let clock = ConnectionClock::for_http();
    let version = tokio::select! {
        version = http_version(&stream) => version,
        () = context.drain_started() => return None,
        reason = clock.http_expired(&context.limits) => {
            tracing::debug!(side = "outbound", reason, "HTTP connection closed");
            return None;
        }
    };
    let draining = context.clone();
    let series = Arc::new(Mutex::default());
    let handler = move |request: http::Request<Incoming>| {
        let (context, pools, series) = (context.clone(), pools.clone(), series.clone());
        async move { forward(&context, &pools, request, original, &series).await }
    };
    // Each boxed on its own: a parked connection would otherwise keep room for the inline state of a
    // detecting connection it never has.
    Some(match version {
        HttpVersion::Http1 => boxed(async move {
            serve_http1_parking(
                &draining.limits,
                &draining.draining,
                stream,
                clock,
                PARK_IDLE_HTTP1_AFTER,
                handler,
                on_parked,
                "outbound",
            )
            .await
        }),
        HttpVersion::Detect => boxed(async move {
            serve_http_until_drained(&draining, stream, clock, handler, "outbound").await
        }),
    })
}

/// HTTP/1 unless the client's first bytes can start the h2 preface (`PRI * HTTP/2.0`): then, and when
/// nothing can be read, hyper-util detects the version itself. Two bytes tell POST, PUT and PATCH from
/// the preface (only the HTTP/1 connections told apart here are parked when idle); a peek returns what
/// has arrived, so one lone `P` is left to the detection.
async fn http_version(stream: &TcpStream) -> HttpVersion {
    let mut first = [0u8; 2];
    match stream.peek(&mut first).await {
        Ok(1..) if first[0] != H2_PREFACE[0] => HttpVersion::Http1,
        Ok(2..) if first[1] != H2_PREFACE[1] => HttpVersion::Http1,
        _ => HttpVersion::Detect,
    }
}

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn forward(
    context: &Context,
    pools: &Pools,
    mut request: http::Request<Incoming>,
    original: SocketAddr,
    series: &Mutex<RequestSeries<(String, UpstreamTls)>>,
) -> http::Response<ProxyBody> {
    if let Err(error) = normalize_host(&mut request) {
        tracing::info!(target: "access", reporter = "source", %error, "bad request");
        return error_response(StatusCode::BAD_REQUEST, format!("bad request: {error}"));
    }
    let started = Instant::now();
    let protocol = request_protocol(&request);
    let method = request.method().clone();
    // For the access log: a reference to the parsed path, not a copy (and nothing when the log is off).
    let uri = access_log::enabled().then(|| request.uri().clone());
    // Route per request so requests on one connection are balanced over endpoints.
    let (route, blocked) = {
        let index = context.index.load();
        (
            index.route(original),
            index.registry_only && !index.knows(original),
        )
    };
    let Some(route) = route else {
        // The service left this proxy's registry while the connection was open.
        return if blocked {
            error_response(StatusCode::BAD_GATEWAY, String::new())
        } else {
            upstream::upstream_503("no healthy upstream")
        };
    };
    let response = pools
        .send(request, (route.upstream, &route.authority), &route.tls)
        .await;
    // Requests of one connection are routed to the same service (its original destination) unless the
    // configuration changed in between: the labels are rebuilt only then.
    series
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(
            &context.metrics,
            |(hostname, tls)| *hostname == route.hostname && *tls == route.tls,
            || {
                let labels = labels(context, &route.hostname, &route.tls);
                ((route.hostname.clone(), route.tls.clone()), labels)
            },
            (protocol, response.status().as_u16()),
            started.elapsed(),
        );
    access_log::record("http request", |line| {
        line.str("reporter", "source")
            .bytes("method", method.as_str().as_bytes())
            .bytes("path", uri.as_ref().map_or("", |uri| uri.path()).as_bytes())
            .number("code", response.status().as_u16().into())
            .socket_address("upstream", route.upstream)
            .bytes("destination_service", route.hostname.as_bytes())
            .bool("mtls", matches!(route.tls, UpstreamTls::Mutual { .. }))
            .number("duration_ms", started.elapsed().as_millis() as u64);
    });
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn the_first_bytes_tell_http1_from_a_possible_h2_preface() {
        let cases: [(&[u8], HttpVersion); 9] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", HttpVersion::Http1),
            (b"DELETE /x HTTP/1.1\r\n", HttpVersion::Http1),
            (H2_PREFACE, HttpVersion::Detect),
            // The second byte tells these from the preface.
            (b"POST / HTTP/1.1\r\n", HttpVersion::Http1),
            (b"PUT / HTTP/1.1\r\n", HttpVersion::Http1),
            (b"PATCH / HTTP/1.1\r\n", HttpVersion::Http1),
            // Starts like the preface: left to hyper-util's detection, which tells them apart.
            (b"PROPFIND / HTTP/1.1\r\n", HttpVersion::Detect),
            // One byte that may start the preface, and no more before the client stopped.
            (b"P", HttpVersion::Detect),
            // Closed before a byte: nothing to tell.
            (b"", HttpVersion::Detect),
        ];
        for (sent, expected) in cases {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(sent).await.unwrap();
            client.shutdown().await.unwrap();
            let version = http_version(&server).await;
            assert_eq!(
                version,
                expected,
                "first bytes {:?}",
                String::from_utf8_lossy(sent)
            );
            // Peeked, not read: hyper still gets every byte.
            let mut received = Vec::new();
            server.read_to_end(&mut received).await.unwrap();
            assert_eq!(received, sent);
        }
    }
}

//! The inbound listener (15006): read the first bytes (replayed afterwards), apply the port's server mode (reset, forward
//! raw, pass application TLS through, or terminate mTLS), authorize (per HTTP request, or once per TCP
//! connection and again on every policy change) and forward to the app on the pod's IP, adding
//! `X-Forwarded-Client-Cert` to HTTP requests that arrived over mTLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderName, HeaderValue, StatusCode};
use hyper::body::Incoming;
use ironmesh_authz::Request;
use ironmesh_identity::{SpiffeId, peer_identity};
use ironmesh_proto::pb::ServerMode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access_log;
use crate::authz::{authorize, connection_request, http_attributes, rbac_denied};
use crate::context::{ActiveGuard, Context, serve_http_until_drained};
use crate::detect::{InboundAction, TlsAction, after_client_hello, inbound_action};
use crate::host::normalize_host;
use crate::index::UpstreamTls;
use crate::lean_tls;
use crate::limits::{Acceptor, ConnectionClock};
use crate::metrics::{
    ConnectionLabels, Reporter, RequestSeries, SecurityPolicy, principal, request_protocol,
};
use crate::replay::{Replay, Sniffer};
use crate::sockets::reset;
use crate::staged::{Connection, boxed, staged, staged_boxed};
use crate::tcp::relay;
use crate::upstream::{self, Alpn, Pools, ProxyBody, error_response};

/// A client that starts a TLS handshake must finish it within this time (no slowloris on the inbound port).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(
    context: Arc<Context>,
    pools: Arc<Pools>,
    mut listener: Acceptor,
    peek_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            (stream, peer, slot) = listener.accept() => {
                let held = (ActiveGuard::new(&context), slot);
                let setup = admit(context.clone(), pools.clone(), stream, peer, peek_timeout);
                tokio::spawn(staged(held, Box::pin(setup)));
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn labels(context: &Context, peer: Option<&SpiffeId>, original: SocketAddr) -> ConnectionLabels {
    let pod = &context.labels;
    let (source_workload_namespace, security) = match peer {
        Some(id) => (id.namespace().into(), SecurityPolicy::mutual_tls),
        None => (pod.unknown.clone(), SecurityPolicy::none),
    };
    let destination_service = context
        .index
        .load()
        .service_at(original)
        .unwrap_or_else(|| {
            format!(
                "{}.{}:{}",
                context.workload.name,
                context.workload.namespace,
                original.port()
            )
        });
    ConnectionLabels {
        reporter: Reporter::destination,
        source_workload: pod.unknown.clone(),
        source_workload_namespace,
        source_principal: pod.principal_of(peer),
        destination_workload: pod.workload.clone(),
        destination_workload_namespace: pod.namespace.clone(),
        destination_principal: pod.principal.clone(),
        destination_service: destination_service.into(),
        connection_security_policy: security,
    }
}

/// A connection's set-up (see [`staged`]): what its first bytes and the port's mode call for, up to
/// the future that carries it, which the next configuration may revoke.
async fn admit(
    context: Arc<Context>,
    pools: Arc<Pools>,
    stream: TcpStream,
    peer: SocketAddr,
    peek_timeout: Duration,
) -> Option<Connection> {
    // Subscribed before the mode is read, so no change can slip between the two.
    let changes = context.index_changes.subscribe();
    let Ok(original) = context.sockets.original_destination(&stream) else {
        reset(stream);
        return None;
    };
    let port = original.port();
    let _ = stream.set_nodelay(true);
    // The pod's own IP, not 127.0.0.1: a listener bound to localhost stays private to the pod, as in
    // Istio since 1.10 (https://istio.io/latest/blog/2021/upcoming-networking-changes/). The proxy's
    // socket carries the mark, so iptables does not capture it again.
    let app = SocketAddr::new(context.pod_ip.unwrap_or(original.ip()), port);
    let (mode, http) = context.index.load().inbound(port);
    let mut sniffer = Sniffer::new(stream, peek_timeout);
    let first = sniffer.first_bytes().await?;
    let recheck = Arc::new(OnceLock::new());
    match inbound_action(mode, first) {
        InboundAction::Reset => {
            tracing::info!(target: "access", %peer, port, "plaintext refused by STRICT mTLS: filter_chain_not_found");
            reset(sniffer.into_replay().into_inner());
            None
        }
        InboundAction::ForwardRaw if http && !context.index.load().authz.is_empty() => {
            // Plaintext HTTP under policies: parse it, so that paths, methods and hosts are enforced.
            let _ = recheck.set(Recheck::PerRequest);
            let serve = boxed(serve_http(
                context.clone(),
                pools,
                sniffer.into_replay(),
                (app, original, peer),
                Arc::new(Downstream {
                    peer: None,
                    sni: None,
                    xfcc: None,
                    source_principal: principal(None),
                    series: Mutex::default(),
                    app_authority: upstream::authority(app),
                }),
            ));
            let revocable = (changes, port, Admitted::Plaintext, recheck);
            Some(boxed(until_revoked(context, revocable, serve)))
        }
        InboundAction::ForwardRaw => {
            let request = connection_request(None, None, peer, original);
            if !http && !authorize(&context, &request).allowed {
                return None;
            }
            let _ = recheck.set(if http {
                Recheck::RawHttp
            } else {
                Recheck::Connection(Box::new(request))
            });
            let relay = staged_boxed(forward_raw(
                context.clone(),
                sniffer.into_replay(),
                app,
                original,
            ));
            let revocable = (changes, port, Admitted::Plaintext, recheck);
            Some(boxed(until_revoked(context, revocable, relay)))
        }
        InboundAction::ReadClientHello => {
            let mut sni = None;
            let action = if mode == ServerMode::Strict {
                TlsAction::TerminateMtls
            } else {
                match sniffer.client_hello().await {
                    Some(hello) => {
                        sni = hello.sni;
                        after_client_hello(mode, hello.alpn.iter().map(Vec::as_slice))
                    }
                    None => TlsAction::PassThrough,
                }
            };
            match action {
                TlsAction::PassThrough => {
                    // The application's own TLS: no identity and no HTTP attributes to read, but its
                    // SNI (Envoy's tls_inspector reads it for `connection.sni`).
                    let request = connection_request(None, sni.as_deref(), peer, original);
                    if !authorize(&context, &request).allowed {
                        return None;
                    }
                    let _ = recheck.set(Recheck::Connection(Box::new(request)));
                    let relay = staged_boxed(forward_raw(
                        context.clone(),
                        sniffer.into_replay(),
                        app,
                        original,
                    ));
                    let revocable = (changes, port, Admitted::AppTls, recheck);
                    Some(boxed(until_revoked(context, revocable, relay)))
                }
                TlsAction::TerminateMtls => {
                    // In two stages of its own: the handshake's and the dial's state are freed once
                    // they are done, under the same watch for revocation as the connection after them.
                    let setup = terminate(
                        context.clone(),
                        pools,
                        sniffer.into_replay(),
                        (app, original, peer),
                        http,
                        recheck.clone(),
                    );
                    let serve = staged_boxed(setup);
                    let revocable = (changes, port, Admitted::Mtls, recheck);
                    Some(boxed(until_revoked(context, revocable, serve)))
                }
            }
        }
    }
}

/// What [`until_revoked`] watches: the configuration's changes, the port and what the connection was
/// admitted as there, and how it is authorized again.
type Revocable = (watch::Receiver<u64>, u16, Admitted, Arc<OnceLock<Recheck>>);

/// How a live connection is authorized again when the policies change.
enum Recheck {
    /// HTTP parsed by the proxy: every request is evaluated, the connection needs no re-check.
    PerRequest,
    /// Plaintext HTTP relayed as bytes (no policy applied when it arrived): closed once any policy
    /// applies, so the client reconnects and its requests are evaluated one by one.
    RawHttp,
    /// A TCP connection evaluated once: closed when the new policies deny it.
    Connection(Box<Request>),
}

/// What a connection was let in as, under the mode its port had when it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admitted {
    Plaintext,
    /// The application's own TLS, passed through unterminated.
    AppTls,
    Mtls,
}

/// Whether a port in `mode` still lets in a connection admitted as `admitted`: STRICT takes only mTLS,
/// DISABLE never terminates mTLS, PERMISSIVE takes everything.
fn admits(mode: ServerMode, admitted: Admitted) -> bool {
    match admitted {
        Admitted::Plaintext | Admitted::AppTls => mode != ServerMode::Strict,
        Admitted::Mtls => mode != ServerMode::Disable,
    }
}

/// Runs `connection` until it ends, or until a new configuration no longer admits it on `port`: then it
/// is closed, as Envoy drains the connections of a filter chain that changed. Without this a keep-alive
/// connection accepted in plaintext would outlive a switch to STRICT.
/// It is also closed when the policies change and `recheck` (set once the connection's identity is known)
/// says it is no longer authorized.
///
/// `connection` comes boxed: an async fn keeps a future passed by value both in its argument's slot and
/// in the `select!` that polls it (rustc lays the two out side by side), which doubled the state every
/// inbound connection holds for its life (the task of an idle mTLS connection was 18.2 KB).
async fn until_revoked(
    context: Arc<Context>,
    (mut changes, port, admitted, recheck): Revocable,
    connection: Connection,
) {
    let revoked = async {
        loop {
            if changes.changed().await.is_err() {
                // The data plane is gone; the connection ends with it.
                std::future::pending::<()>().await;
            }
            let index = context.index.load();
            let (mode, _) = index.inbound(port);
            if !admits(mode, admitted) {
                return format!("the port's mTLS mode {mode:?} no longer admits it");
            }
            match recheck.get() {
                Some(Recheck::RawHttp) if !index.authz.is_empty() => {
                    return "authorization policies now apply to its unparsed HTTP".to_owned();
                }
                Some(Recheck::Connection(request)) => {
                    drop(index);
                    let decision = authorize(&context, request);
                    if !decision.allowed {
                        return format!("no longer authorized ({decision})");
                    }
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        () = connection => {}
        reason = revoked => {
            tracing::info!(target: "access", port, ?admitted, "connection closed: {reason}");
        }
    }
}

/// A plaintext or pass-through connection's set-up (see [`staged`]): the dial to the application;
/// returns the relay.
async fn forward_raw(
    context: Arc<Context>,
    stream: Replay<TcpStream>,
    app: SocketAddr,
    original: SocketAddr,
) -> Option<Connection> {
    match upstream::connect(&context, app, &UpstreamTls::Plaintext, Alpn::Tcp).await {
        Ok(upstream) => {
            let labels = labels(&context, None, original);
            Some(boxed(relay(context, labels, stream, upstream)))
        }
        Err(error) => {
            tracing::info!(target: "access", %error, "application not reachable");
            reset(stream.into_inner());
            None
        }
    }
}

/// An mTLS connection's set-up (see [`staged`]): the handshake, then for TCP the authorization and the
/// dial to the application; returns what relays or serves it.
async fn terminate(
    context: Arc<Context>,
    pools: Arc<Pools>,
    stream: Replay<TcpStream>,
    addresses: (SocketAddr, SocketAddr, SocketAddr),
    http: bool,
    recheck: Arc<OnceLock<Recheck>>,
) -> Option<Connection> {
    let (app, original, source) = addresses;
    let port = original.port();
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        lean_tls::accept(context.certs.server_config(), stream),
    );
    // Boxed: the relay and the HTTP server take the stream by value into state that moves it again, and
    // every move of a future's argument is a copy of its slot (the rustls connection, ~1.2 KB each).
    let (tls, sni) = match handshake.await {
        Ok(Ok((tls, sni))) => (Box::new(tls), sni),
        Ok(Err(error)) => {
            tracing::info!(target: "access", %error, port, "inbound mTLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!(target: "access", port, "inbound mTLS handshake timed out");
            return None;
        }
    };
    let connection = tls.state();
    let peer = peer_identity(connection);
    // `sni`: the client sidecar's SNI (`outbound_.<port>_._.<service FQDN>`), matched by `connection.sni`.
    let leaf_hash = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| {
            let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
            digest
                .as_ref()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        });
    if !http {
        let request = connection_request(peer.as_ref(), sni.as_deref(), source, original);
        if !authorize(&context, &request).allowed {
            // Dropping the TLS stream closes the connection, as Envoy's network RBAC filter does.
            return None;
        }
        let _ = recheck.set(Recheck::Connection(Box::new(request)));
        return match upstream::connect(&context, app, &UpstreamTls::Plaintext, Alpn::Tcp).await {
            Ok(upstream) => {
                let labels = labels(&context, peer.as_ref(), original);
                Some(boxed(relay(context, labels, tls, upstream)))
            }
            Err(error) => {
                tracing::info!(target: "access", %error, "application not reachable");
                None
            }
        };
    }
    let _ = recheck.set(Recheck::PerRequest);
    let source_principal = principal(peer.as_ref());
    let xfcc = format!(
        "By=spiffe://{};Hash={};Subject=\"\";URI={source_principal}",
        context.certs.identity().principal(),
        leaf_hash.unwrap_or_default(),
    );
    let xfcc = HeaderValue::from_str(&xfcc).unwrap_or_else(|_| HeaderValue::from_static(""));
    Some(boxed(serve_http(
        context,
        pools,
        tls,
        (app, original, source),
        Arc::new(Downstream {
            source_principal,
            peer,
            sni,
            xfcc: Some(xfcc),
            series: Mutex::default(),
            app_authority: upstream::authority(app),
        }),
    )))
}

/// What an HTTP connection's requests share: the mTLS peer, the SNI it was opened with, and the
/// `X-Forwarded-Client-Cert` to send upstream (all `None` for plaintext), and the request series its
/// requests are counted in.
struct Downstream {
    peer: Option<SpiffeId>,
    sni: Option<String>,
    xfcc: Option<HeaderValue>,
    /// `spiffe://` principal of `peer` for the access log ("unknown" for plaintext), formatted once.
    source_principal: String,
    series: Mutex<RequestSeries<()>>,
    /// The application's address as a request URI's authority, formatted once per connection.
    app_authority: Authority,
}

/// `X-Forwarded-Client-Cert`, set (mTLS) or removed (plaintext) on every inbound request.
const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Serves HTTP from a downstream connection (mTLS-terminated, or plaintext under policies), authorizing
/// each request. `xfcc` is set only over mTLS; otherwise a client-sent one is removed.
async fn serve_http<T>(
    context: Arc<Context>,
    pools: Arc<Pools>,
    io: T,
    addresses: (SocketAddr, SocketAddr, SocketAddr),
    shared: Arc<Downstream>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let draining = context.clone();
    let handler = move |request: http::Request<Incoming>| {
        let (context, pools, shared) = (context.clone(), pools.clone(), shared.clone());
        async move { forward(&context, &pools, request, addresses, &shared).await }
    };
    // Detected: the negotiated ALPN does not say (sidecars settle on "istio"), nor does the sniffer.
    let clock = ConnectionClock::for_http();
    serve_http_until_drained(&draining, io, clock, handler, "inbound").await;
}

async fn forward(
    context: &Context,
    pools: &Pools,
    mut request: http::Request<Incoming>,
    (app, original, source): (SocketAddr, SocketAddr, SocketAddr),
    downstream: &Downstream,
) -> http::Response<ProxyBody> {
    let (peer, xfcc) = (downstream.peer.as_ref(), downstream.xfcc.as_ref());
    if let Err(error) = normalize_host(&mut request) {
        tracing::info!(target: "access", reporter = "destination", %error, "bad request");
        return error_response(StatusCode::BAD_REQUEST, format!("bad request: {error}"));
    }
    let started = Instant::now();
    let method = request.method().clone();
    let uri = access_log::enabled().then(|| request.uri().clone());
    let protocol = request_protocol(&request);
    // Replace whatever the client claimed: only the proxy vouches for the peer.
    match xfcc {
        Some(xfcc) => request.headers_mut().insert(XFCC, xfcc.clone()),
        None => request.headers_mut().remove(XFCC),
    };
    // Skip building the attributes when no policy applies (the common case stays allocation-free).
    let denied = !context.index.load().authz.is_empty() && {
        let mut attributes = connection_request(peer, downstream.sni.as_deref(), source, original);
        attributes.http = Some(http_attributes(&request));
        !authorize(context, &attributes).allowed
    };
    let response = if denied {
        rbac_denied()
    } else {
        pools
            .send(
                request,
                (app, &downstream.app_authority),
                &UpstreamTls::Plaintext,
            )
            .await
    };
    // The connection's labels: its peer and original destination are the same for all its requests.
    downstream
        .series
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(
            &context.metrics,
            |()| true,
            || ((), labels(context, peer, original)),
            (protocol, response.status().as_u16()),
            started.elapsed(),
        );
    access_log::record("http request", |line| {
        line.str("reporter", "destination")
            .bytes("method", method.as_str().as_bytes())
            .bytes("path", uri.as_ref().map_or("", |uri| uri.path()).as_bytes())
            .number("code", response.status().as_u16().into())
            .bytes("source_principal", downstream.source_principal.as_bytes())
            .number("duration_ms", started.elapsed().as_millis() as u64);
    });
    response
}

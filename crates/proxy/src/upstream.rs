//! Connections from the proxy to an upstream (plaintext or mTLS with secure naming), the pools that reuse
//! them (our own for HTTP/1.1, hyper-util's client for HTTP/2), and the Envoy-style 503 for failures
//! before response headers.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ironmesh_identity::SpiffeId;
use rustls::ClientConfig;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::context::Context;
use crate::index::UpstreamTls;
use crate::lean_tls::{self, LeanTls};

/// Envoy's default cluster connect timeout; applies to the TCP connect and to the mTLS handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// ALPN a client sidecar offers, by what it carries (Istio's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Alpn {
    Http1,
    Http2,
    Tcp,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        let list: &[&[u8]] = match self {
            Alpn::Http1 => &[b"istio-http/1.1", b"istio", b"http/1.1"],
            Alpn::Http2 => &[b"istio-peer-exchange", b"istio", b"h2"],
            Alpn::Tcp => &[b"istio-peer-exchange", b"istio"],
        };
        list.iter().map(|p| p.to_vec()).collect()
    }
}

/// Why an upstream connection could not be made; `reason` is Envoy's reset reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    #[error("mTLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, io::Error),
}

pub(crate) enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<LeanTls<TcpStream, UnbufferedClientConnection>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

type ClientConfigKey = (Vec<SpiffeId>, Alpn);

/// Builds mTLS client configs once per (expected identities, ALPN); they follow certificate rotation.
#[derive(Default)]
pub(crate) struct ClientConfigs {
    cache: Mutex<HashMap<ClientConfigKey, Arc<ClientConfig>>>,
}

impl ClientConfigs {
    fn get(&self, context: &Context, expected: &[SpiffeId], alpn: Alpn) -> Arc<ClientConfig> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .entry((expected.to_vec(), alpn))
            .or_insert_with(|| context.certs.client_config(expected, alpn.protocols()))
            .clone()
    }
}

/// Dials `address` through the socket layer and wraps it in mTLS when asked.
pub(crate) async fn connect(
    context: &Context,
    address: SocketAddr,
    tls: &UpstreamTls,
    alpn: Alpn,
) -> Result<UpstreamIo, UpstreamError> {
    let connecting = context.sockets.connect(address);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        .map_err(|error| UpstreamError::Connect(address, error))?;
    let _ = stream.set_nodelay(true);
    match tls {
        UpstreamTls::Plaintext => Ok(UpstreamIo::Plain(stream)),
        UpstreamTls::Mutual { expected, sni } => {
            let config = context.client_configs.get(context, expected, alpn);
            // The name is only sent as SNI (secure naming checks the SPIFFE ID, not the name); an SNI
            // that is not a DNS name is not sent (an IP address sends none), as a TLS client cannot.
            let name = sni
                .as_deref()
                .and_then(|sni| ServerName::try_from(sni.to_owned()).ok())
                .filter(|name| matches!(name, ServerName::DnsName(_)))
                .unwrap_or_else(|| ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()));
            // Boxed, so the handshake's state (a rustls connection and its buffers) is freed once it is
            // done; inline, every caller's future would keep room for it for the connection's whole life.
            let handshake = Box::pin(tokio::time::timeout(
                CONNECT_TIMEOUT,
                lean_tls::connect(config, name, stream),
            ));
            let tls = handshake
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                .map_err(|error| UpstreamError::Tls(address, error))?;
            Ok(UpstreamIo::Tls(Box::new(tls)))
        }
    }
}

/// The hyper connector: `http://ip:port` dials plaintext, `https://ip:port` dials mTLS expecting the
/// identities registered for that address just before the request (see [`Pools::send`]).
#[derive(Clone)]
pub(crate) struct Connector {
    context: Arc<Context>,
    alpn: Alpn,
    expected: Arc<Mutex<HashMap<SocketAddr, UpstreamTls>>>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let address: SocketAddr = uri
                .authority()
                .and_then(|authority| authority.as_str().parse().ok())
                .ok_or_else(|| {
                    UpstreamError::Connect(
                        SocketAddr::from(([0, 0, 0, 0], 0)),
                        io::Error::other("bad upstream uri"),
                    )
                })?;
            let tls = if uri.scheme_str() == Some("https") {
                let registered = connector
                    .expected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&address)
                    .cloned();
                registered.unwrap_or(UpstreamTls::Mutual {
                    expected: Vec::new(),
                    sni: None,
                })
            } else {
                UpstreamTls::Plaintext
            };
            connect(&connector.context, address, &tls, connector.alpn)
                .await
                .map(TokioIo::new)
        })
    }
}

/// How long an HTTP/1.1 upstream connection may sit unused in the pool before it is closed (as the
/// hyper-util pool it replaced was set up).
const HTTP1_IDLE: Duration = Duration::from_secs(60);

/// Keep-alive connections to upstreams: HTTP/1.1 in our own pool ([`Http1Pool`]), HTTP/2 through
/// hyper-util's client (chosen by the downstream request's version).
pub(crate) struct Pools {
    context: Arc<Context>,
    http1: Arc<Http1Pool>,
    http2: Client<Connector, ProxyBody>,
    expected: Arc<Mutex<HashMap<SocketAddr, UpstreamTls>>>,
}

/// Why an HTTP/1.1 exchange with an upstream failed before response headers.
enum Http1Error {
    Connect(UpstreamError),
    /// The connection failed under the request (hyper's error); `written` unless hyper says the
    /// request never left.
    Exchange(hyper::Error),
}

/// Idle HTTP/1.1 connections by upstream address and whether they are mTLS.
///
/// hyper-util's pool did the same per request with more machinery: the key (scheme and authority)
/// hashed byte by byte with SipHash three times per request, a race between the checkout and a lazy
/// connect future, a task spawned per request to return the connection once its response was read,
/// and an absolute URI built for it and stripped again. Here a connection goes back to its list as
/// soon as the response headers are in; a checkout takes the newest one whose previous exchange is
/// finished ([`SendRequest::is_ready`]) and leaves the busy ones for later.
pub(crate) struct Http1Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Pooled>>>,
}

/// A connection in the pool, and when it last went back in.
type Pooled = (SendRequest<ProxyBody>, Instant);

/// An upstream address, and whether its connections are mTLS.
type PoolKey = (SocketAddr, bool);

impl Http1Pool {
    fn checkout(&self, key: PoolKey) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&key)?;
        list.retain(|(sender, _)| !sender.is_closed());
        let ready = list.iter().rposition(|(sender, _)| sender.is_ready())?;
        Some(list.swap_remove(ready).0)
    }

    fn checkin(&self, key: PoolKey, sender: SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.entry(key).or_default().push((sender, Instant::now()));
    }

    /// Closes the connections unused for [`HTTP1_IDLE`] (dropping an idle sender ends its connection);
    /// one whose response is still being read is kept.
    fn close_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|(sender, since)| {
                let unused = sender.is_ready() && since.elapsed() >= HTTP1_IDLE;
                !(sender.is_closed() || unused)
            });
            !list.is_empty()
        });
    }

    /// Closes idle connections every half [`HTTP1_IDLE`], until the pool is dropped.
    fn spawn_reaper(pool: &Arc<Self>) {
        let pool = Arc::downgrade(pool);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HTTP1_IDLE / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.close_idle(),
                    None => return,
                }
            }
        });
    }
}

impl Pools {
    pub fn new(context: Arc<Context>) -> Self {
        let expected = Arc::new(Mutex::default());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(Connector {
                context: context.clone(),
                alpn: Alpn::Http2,
                expected: expected.clone(),
            });
        let http1 = Arc::new(Http1Pool {
            idle: Mutex::default(),
        });
        Http1Pool::spawn_reaper(&http1);
        Self {
            context,
            http1,
            http2,
            expected,
        }
    }

    /// Sends an HTTP/1.1 request on a pooled connection to `upstream`, or a new one. A request that a
    /// reused connection closed under before writing it (hyper gives it back) is sent once more on a
    /// new connection, as hyper-util's client did.
    async fn send_http1(
        &self,
        mut request: Request<ProxyBody>,
        upstream: SocketAddr,
        tls: &UpstreamTls,
    ) -> Result<Response<Incoming>, Http1Error> {
        let key = (upstream, matches!(tls, UpstreamTls::Mutual { .. }));
        let mut reused = self.http1.checkout(key);
        loop {
            let was_reused = reused.is_some();
            let mut sender = match reused.take() {
                Some(sender) => sender,
                None => {
                    let io = connect(&self.context, upstream, tls, Alpn::Http1)
                        .await
                        .map_err(Http1Error::Connect)?;
                    let (sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(io))
                            .await
                            .map_err(Http1Error::Exchange)?;
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%upstream, %error, "upstream HTTP/1.1 connection ended");
                        }
                    });
                    sender
                }
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.http1.checkin(key, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if was_reused => request = unsent,
                    _ => return Err(Http1Error::Exchange(error.into_error())),
                },
            }
        }
    }

    /// Sends `request` to `upstream`; any failure before response headers becomes Envoy's 503, or 400
    /// when it was the client's body that was broken (an invalid chunk, as Envoy's codec answers).
    /// `authority` is `upstream` formatted as a URI authority (see [`authority`]), kept by the caller.
    pub async fn send(
        &self,
        request: http::Request<Incoming>,
        (upstream, authority): (SocketAddr, &Authority),
        tls: &UpstreamTls,
    ) -> Response<ProxyBody> {
        if request.version() != http::Version::HTTP_2 {
            return self
                .send_http1_or_503(request, (upstream, authority), tls)
                .await;
        }
        let scheme = match tls {
            UpstreamTls::Plaintext => Scheme::HTTP,
            UpstreamTls::Mutual { .. } => {
                let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
                // Cloned (the SPIFFE IDs) only when the address's expectation changes, not per request.
                if expected.get(&upstream) != Some(tls) {
                    expected.insert(upstream, tls.clone());
                }
                Scheme::HTTPS
            }
        };
        let (mut parts, body) = request.into_parts();
        // The upstream URI from the request's own parts: no formatting and parsing per request.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(scheme);
        uri.authority = Some(authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        match Uri::from_parts(uri) {
            Ok(uri) => parts.uri = uri,
            Err(_) => return error_response(StatusCode::BAD_REQUEST, "bad request path".into()),
        }
        let client = &self.http2;
        let empty = hyper::body::Body::is_end_stream(&body);
        // A request without a body and with an idempotent method can be sent again as it was.
        let replay = (empty && is_idempotent(&parts.method)).then(|| replayable(&parts));
        let (body, body_failed) = watched_body(body, empty);
        let error = match client.request(Request::from_parts(parts, body)).await {
            Ok(response) => return response.map(|body| body.boxed()),
            Err(error) => error,
        };
        if body_failed.is_some_and(|failed| failed.load(Ordering::Relaxed)) {
            tracing::debug!(%upstream, error = ?error, "the client's request body is malformed");
            return error_response(StatusCode::BAD_REQUEST, "malformed request body".into());
        }
        let error = match replay {
            // The upstream closed or reset a connection before answering (a pooled connection whose
            // peer pod was replaced at the same IP: the new one resets it). hyper-util already resends
            // a request it never wrote; one it wrote is resent once on a new connection only when that
            // is safe (RFC 9110 section 9.2.2: idempotent method, and no body to replay).
            Some(again) if !error.is_connect() => {
                tracing::debug!(%upstream, error = ?error, "upstream closed before answering; retrying once");
                match client.request(again).await {
                    Ok(response) => return response.map(|body| body.boxed()),
                    Err(error) => error,
                }
            }
            _ => error,
        };
        let reason = if error.is_connect() {
            "connection failure"
        } else {
            "connection termination"
        };
        tracing::debug!(%upstream, error = ?error, reason, "upstream failed before headers");
        upstream_503(reason)
    }
}

impl Pools {
    /// [`Pools::send`] for HTTP/1.x: the request goes as the client sent it (origin-form target, its
    /// own Host header), on a pooled connection.
    async fn send_http1_or_503(
        &self,
        request: http::Request<Incoming>,
        (upstream, authority): (SocketAddr, &Authority),
        tls: &UpstreamTls,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        // An absolute-form target (its host is in the Host header already, see `normalize_host`) goes
        // upstream in origin form, as to any origin server; CONNECT keeps its authority form.
        if parts.uri.authority().is_some() && parts.method != http::Method::CONNECT {
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        // An HTTP/1.0 request may come without a Host: the upstream then sees its own address.
        if !parts.headers.contains_key(http::header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(http::header::HOST, host);
        }
        let empty = hyper::body::Body::is_end_stream(&body);
        // A request without a body and with an idempotent method can be sent again as it was.
        let replay = (empty && is_idempotent(&parts.method)).then(|| replayable(&parts));
        let (body, body_failed) = watched_body(body, empty);
        let error = match self
            .send_http1(Request::from_parts(parts, body), upstream, tls)
            .await
        {
            Ok(response) => return response.map(|body| body.boxed()),
            Err(error) => error,
        };
        if body_failed.is_some_and(|failed| failed.load(Ordering::Relaxed)) {
            tracing::debug!(%upstream, "the client's request body is malformed");
            return error_response(StatusCode::BAD_REQUEST, "malformed request body".into());
        }
        let error = match (error, replay) {
            // Written, and the upstream closed or reset the connection before answering (a pooled
            // connection whose peer pod was replaced at the same IP): resent once on a new connection
            // when that is safe (RFC 9110 section 9.2.2: idempotent method, no body to replay).
            (Http1Error::Exchange(error), Some(again)) => {
                tracing::debug!(%upstream, error = ?error, "upstream closed before answering; retrying once");
                match self.send_http1(again, upstream, tls).await {
                    Ok(response) => return response.map(|body| body.boxed()),
                    Err(error) => error,
                }
            }
            (error, _) => error,
        };
        let reason = match error {
            Http1Error::Connect(error) => {
                tracing::debug!(%upstream, %error, "upstream connect failed");
                "connection failure"
            }
            Http1Error::Exchange(error) => {
                tracing::debug!(%upstream, error = ?error, "upstream failed before headers");
                "connection termination"
            }
        };
        upstream_503(reason)
    }
}

/// A request body for the upstream: one known to be empty is sent as one (no allocation, nothing can
/// fail in it); another is watched for the client's own errors (the flag).
fn watched_body(body: Incoming, empty: bool) -> (ProxyBody, Option<Arc<AtomicBool>>) {
    if empty {
        return (empty_body(), None);
    }
    let failed = Arc::new(AtomicBool::new(false));
    let watch = failed.clone();
    let body = body
        .map_err(move |error| {
            watch.store(true, Ordering::Relaxed);
            error
        })
        .boxed();
    (body, Some(failed))
}

/// `address` as a request URI's authority (`10.0.0.2:80`, `[fd00::2]:80`).
pub(crate) fn authority(address: SocketAddr) -> Authority {
    // A socket address always formats as a valid authority.
    Authority::from_maybe_shared(address.to_string())
        .unwrap_or_else(|_| Authority::from_static("invalid.invalid"))
}

/// RFC 9110 section 9.2.2.
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// An empty body (a zero-sized box: no allocation).
fn empty_body() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A copy of a body-less request (extensions are not carried: the proxy sets none).
fn replayable(parts: &http::request::Parts) -> Request<ProxyBody> {
    let mut request = Request::new(empty_body());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Envoy's local reply for a failure before response headers.
pub(crate) fn upstream_503(reason: &str) -> Response<ProxyBody> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {reason}"
        ),
    )
}

pub(crate) fn error_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}

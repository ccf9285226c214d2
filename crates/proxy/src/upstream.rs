//! Connections from the proxy to an upstream (plaintext or mTLS with secure naming), the pooled hyper
//! clients that reuse them, and the Envoy-style 503 for failures before response headers.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ironmesh_identity::SpiffeId;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::context::Context;
use crate::index::UpstreamTls;

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
    Tls(Box<TlsStream<TcpStream>>),
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
            let handshake = TlsConnector::from(config).connect(name, stream);
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
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

/// Pooled keep-alive clients: HTTP/1.1 and HTTP/2 (chosen by the downstream request's version).
pub(crate) struct Pools {
    http1: Client<Connector, ProxyBody>,
    http2: Client<Connector, ProxyBody>,
    expected: Arc<Mutex<HashMap<SocketAddr, UpstreamTls>>>,
}

impl Pools {
    pub fn new(context: Arc<Context>) -> Self {
        let expected = Arc::new(Mutex::default());
        let connector = |alpn| Connector {
            context: context.clone(),
            alpn,
            expected: expected.clone(),
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector(Alpn::Http1));
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector(Alpn::Http2));
        Self {
            http1,
            http2,
            expected,
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
        let client = if parts.version == http::Version::HTTP_2 {
            &self.http2
        } else {
            &self.http1
        };
        // A request without a body and with an idempotent method can be sent again as it was.
        let replay = (hyper::body::Body::is_end_stream(&body) && is_idempotent(&parts.method))
            .then(|| replayable(&parts));
        let body_failed = Arc::new(AtomicBool::new(false));
        let failed = body_failed.clone();
        let body = body
            .map_err(move |error| {
                failed.store(true, Ordering::Relaxed);
                error
            })
            .boxed();
        let error = match client.request(Request::from_parts(parts, body)).await {
            Ok(response) => return response.map(|body| body.boxed()),
            Err(error) => error,
        };
        if body_failed.load(Ordering::Relaxed) {
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

/// A copy of a body-less request (extensions are not carried: the proxy sets none).
fn replayable(parts: &http::request::Parts) -> Request<ProxyBody> {
    let mut request = Request::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
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

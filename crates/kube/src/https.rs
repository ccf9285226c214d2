//! The HTTPS accept loop of the control plane's servers that the API server calls (the admission
//! webhooks, the aggregated `extensions/v1beta1` API), with the limits a port any pod may reach needs:
//! a connection permit taken before accept, a back-off when accept fails (out of file descriptors), a
//! handshake timeout, and a header read timeout; each server reads its bodies within [`ServeLimits`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Bounds on what clients may cost a server: it listens on a port any pod may reach, and with
/// `failurePolicy: Fail` a starved webhook blocks every write of an Istio resource.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Connections served at once; the next accept waits for one to end.
    pub max_connections: usize,
    /// For the TLS handshake, from accept.
    pub handshake_timeout: Duration,
    /// For a request's head; it also closes a keep-alive connection idle this long.
    pub header_read_timeout: Duration,
    /// For reading a request's body. The API server gives up after its webhook timeout (at most
    /// 30 s) anyway.
    pub request_timeout: Duration,
    /// The largest request body; a larger one is answered 413.
    pub max_body_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: crate::webhook::MAX_REVIEW_BYTES,
        }
    }
}

/// The client of one connection, after its TLS handshake.
pub struct Peer<'a> {
    pub address: SocketAddr,
    /// The client certificate (the verifier of the server's TLS configuration checked its chain), if
    /// the client sent one.
    pub certificate: Option<&'a CertificateDer<'static>>,
}

/// Serves HTTP/1.1 over TLS on `listener` until `shutdown`, within `limits`. `connect` is called once
/// per connection after its handshake and returns the function that answers that connection's requests.
/// `server` names the server in the logs ("webhook", "aggregated API").
pub async fn serve_https<C, H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: &ServeLimits,
    server: &'static str,
    shutdown: CancellationToken,
    connect: C,
) where
    C: Fn(&Peer<'_>) -> H + Send + Sync + 'static,
    H: Fn(Request<hyper::body::Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connect = Arc::new(connect);
    loop {
        // Taken before accept: at the limit, new connections wait in the listen backlog rather than
        // costing a task and a file descriptor each.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
        };
        let (stream, address) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "{server} accept failed");
                    // Out of file descriptors (EMFILE, ENFILE), usually: accept fails at once again
                    // until some close, so give the process a moment rather than spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let connect = connect.clone();
        let handshake_timeout = limits.handshake_timeout;
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %address, %error, "{server} TLS handshake failed");
                        return;
                    }
                    Err(_elapsed) => {
                        tracing::debug!(peer = %address, "{server} TLS handshake timed out");
                        return;
                    }
                };
            let handler = connect(&Peer {
                address,
                certificate: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first()),
            });
            let connection = hyper::server::conn::http1::Builder::new()
                // Without a timer hyper has no clock, and the header timeout would not apply.
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(handler),
                );
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection => if let Err(error) = result {
                    tracing::debug!(peer = %address, %error, "{server} connection ended");
                },
            }
        });
    }
}

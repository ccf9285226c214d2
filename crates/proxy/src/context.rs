//! What every data-plane task shares: sockets, certificates, the current config index, metrics, and the
//! counters that let a drain wait for connections to finish.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use ironmesh_identity::WorkloadCertificates;

use crate::index::ConfigIndex;
use crate::limits::{BusyBody, ConnectionClock, ConnectionLimits, Watched};
use crate::metrics::Metrics;
use crate::sockets::SocketLayer;
use crate::upstream::ClientConfigs;

/// Who this proxy runs for (from the pod environment).
#[derive(Debug, Clone)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
}

pub(crate) struct Context {
    pub sockets: Arc<dyn SocketLayer>,
    pub certs: WorkloadCertificates,
    pub index: ArcSwap<ConfigIndex>,
    pub metrics: Arc<Metrics>,
    pub workload: WorkloadInfo,
    pub client_configs: ClientConfigs,
    pub active_connections: AtomicUsize,
    /// Becomes true when the data plane drains (SIGTERM).
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Bumped after every new configuration is in `index`, so live connections can re-check it.
    pub index_changes: tokio::sync::watch::Sender<u64>,
    pub limits: ConnectionLimits,
    /// Where the inbound forwards: the pod's own IP, so an app listening only on 127.0.0.1 is not
    /// reachable from the mesh (Istio >= 1.10); `None` forwards to the connection's original destination.
    pub pod_ip: Option<IpAddr>,
}

impl Context {
    /// Completes once draining has begun (never, if the data plane is gone without draining).
    pub async fn drain_started(&self) {
        let mut draining = self.draining.clone();
        if draining.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Counts a connection as active for as long as it lives.
pub(crate) struct ActiveGuard(pub Arc<Context>);

impl ActiveGuard {
    pub fn new(context: &Arc<Context>) -> Self {
        context.active_connections.fetch_add(1, Ordering::Relaxed);
        Self(context.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which HTTP version a downstream connection speaks, when the caller already knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpVersion {
    /// Not HTTP/2 (its first byte cannot start the h2 preface): served as HTTP/1 from the first read.
    Http1,
    /// Unknown: hyper-util reads the first bytes and picks HTTP/1.1 or h2 (prior knowledge).
    Detect,
}

/// Serves HTTP/1.1 or h2 on `io` with `handler` until the peer closes, or, once the data plane drains,
/// until in-flight requests finish (h1 answers with `Connection: close`, h2 sends GOAWAY). `clock` holds
/// the connection's header-read and idle deadlines; a caller that waited on the connection before (the
/// outbound side's first-byte peek) passes the clock it waited with, so that wait counts against them.
pub(crate) async fn serve_http_until_drained<I, F, Fut>(
    context: &Context,
    io: I,
    version: HttpVersion,
    clock: Arc<ConnectionClock>,
    handler: F,
    side: &str,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<crate::upstream::ProxyBody>> + Send + 'static,
{
    let requests = clock.clone();
    let service = hyper::service::service_fn(move |request| {
        // Busy from the end of the headers until the response body is sent (or dropped).
        let guard = requests.request_started();
        // Boxed per request: hyper keeps a slot for the service's future for the connection's whole life
        // (`Box::pin(None)` sized for it), and the forwarding future inline (upstream connect, TLS
        // handshake, pool checkout) made every idle keep-alive connection hold ~10 KB for nothing.
        let response = Box::pin(handler(request));
        async move {
            // Not boxed again: the body is already a box, hyper takes the wrapper as it is.
            let response = response.await.map(|body| BusyBody::new(body, guard));
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if version == HttpVersion::Http1 {
        // Detection reads the first bytes and hands them back to hyper, whose read buffer then grows
        // from 8 to 16 KiB on its next read and stays so for the connection's life.
        builder = builder.http1_only();
    }
    let io = Watched::new(io, clock.clone());
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = context.drain_started() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        reason = clock.http_expired(&context.limits) => {
            tracing::debug!(side, reason, "HTTP connection closed");
            return;
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, side, "HTTP connection ended with an error");
    }
}

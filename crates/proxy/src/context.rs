//! What every data-plane task shares: sockets, certificates, the current config index, metrics, and the
//! counters that let a drain wait for connections to finish; and how a downstream HTTP connection is
//! served with them (timeouts, the drain, and parking an idle HTTP/1 connection without its buffers).

use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ironmesh_identity::WorkloadCertificates;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::index::ConfigIndex;
use crate::limits::{BusyBody, ConnectionClock, ConnectionLimits, Overdue, RequestGuard, Watched};
use crate::metrics::{Metrics, PodLabels};
use crate::replay::{Prefix, Replay};
use crate::sockets::SocketLayer;
use crate::upstream::{ClientConfigs, ProxyBody};

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
    /// The metric label values all of the pod's connections share.
    pub labels: PodLabels,
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
        drain_started(&self.draining).await
    }
}

/// Completes once `draining` turns true (never, if its sender is gone without draining).
async fn drain_started(draining: &tokio::sync::watch::Receiver<bool>) {
    let mut draining = draining.clone();
    if draining.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
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
    /// Not HTTP/2 (its first bytes cannot start the h2 preface): served as HTTP/1 from the first read.
    Http1,
    /// Unknown: hyper-util reads the first bytes and picks HTTP/1.1 or h2 (prior knowledge).
    Detect,
}

/// The future of one request, counted in flight from the end of its headers until its response body is
/// sent (or dropped). The forwarding future is boxed where it is built: hyper keeps a slot for the
/// service's future for the connection's whole life, and with our forwarding future inline (upstream
/// connect, TLS handshake, pool checkout: ~10 KB) every idle keep-alive connection held that for nothing.
/// Boxed once, not moved again (a wrapper `async` block around it would copy its ~10 KB twice per
/// request), and `Unpin`, which taking a connection back from hyper needs.
struct Counted<Fut> {
    response: Pin<Box<Fut>>,
    guard: Option<RequestGuard>,
}

impl<Fut> Future for Counted<Fut>
where
    Fut: Future<Output = http::Response<ProxyBody>>,
{
    type Output = Result<http::Response<BusyBody<ProxyBody>>, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.response.as_mut().poll(cx));
        let guard = self
            .guard
            .take()
            .expect("a request's future is not polled after it completed");
        Poll::Ready(Ok(response.map(|body| BusyBody::new(body, guard))))
    }
}

/// The hyper service of one connection: `handler` per request, each counted in flight on `clock`.
fn counted_service<F, Fut>(
    clock: Arc<ConnectionClock>,
    handler: F,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<BusyBody<ProxyBody>>,
    Error = std::convert::Infallible,
    Future = Counted<Fut>,
> + Unpin
+ Send
+ 'static
where
    F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + Unpin + 'static,
    Fut: Future<Output = http::Response<ProxyBody>> + Send + 'static,
{
    hyper::service::service_fn(move |request| Counted {
        guard: Some(clock.request_started()),
        response: Box::pin(handler(request)),
    })
}

/// Serves HTTP/1.1 or h2 (hyper-util reads the first bytes and picks) on `io` with `handler` until the
/// peer closes, or, once the data plane drains, until in-flight requests finish (h1 answers with
/// `Connection: close`, h2 sends GOAWAY). `clock` holds the connection's header-read and idle deadlines.
pub(crate) async fn serve_http_until_drained<I, F, Fut>(
    context: &Context,
    io: I,
    clock: Arc<ConnectionClock>,
    handler: F,
    side: &str,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + Unpin + 'static,
    Fut: Future<Output = http::Response<ProxyBody>> + Send + 'static,
{
    let service = counted_service(clock.clone(), handler);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let io = Watched::new(io, clock.clone());
    let connection = builder.serve_connection(TokioIo::new(io), service);
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

/// `boxed`'s value, its box freed now (a box moved out of with `*` is freed only where its binding ends).
#[allow(
    clippy::boxed_local,
    reason = "taking the box by value is the point: it is freed when this returns"
)]
fn unboxed<T>(boxed: Box<T>) -> T {
    *boxed
}

/// How long an HTTP/1 connection from the application sits idle (no request in flight, no request head
/// begun) before it is parked: hyper's state for it (an 8 KiB read and an 8 KiB write buffer, its parser
/// and dispatcher) is let go, and only the socket is watched until its next byte. Applications keep
/// pools of keep-alive connections to their sidecar, most of them idle most of the time; nginx frees a
/// keep-alive connection's buffers as soon as it goes idle (`ngx_http_set_keepalive`). A second keeps a
/// connection that carries steady traffic from paying for a new hyper connection per request.
pub(crate) const PARK_IDLE_HTTP1_AFTER: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 on an application's connection (its first bytes ruled out h2) as
/// `serve_http_until_drained` does, and parks it whenever it has been idle for `park_after`: hyper hands
/// the connection back (with any bytes it had read ahead), and a new hyper connection serves it once it
/// is readable again; `on_park` runs after each park. `limits`' header-read and idle timeouts and the
/// drain (`draining` turning true) apply throughout.
#[allow(
    clippy::too_many_arguments,
    reason = "each is one thing the connection is served with; a struct would only name them again"
)]
pub(crate) async fn serve_http1_parking<F, Fut>(
    limits: &ConnectionLimits,
    draining: &tokio::sync::watch::Receiver<bool>,
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    park_after: Duration,
    handler: F,
    on_park: impl Fn(),
    side: &str,
) where
    F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + Unpin + 'static,
    Fut: Future<Output = http::Response<ProxyBody>> + Send + 'static,
{
    let mut service = counted_service(clock.clone(), handler);
    let mut io = Replay::new(stream, Prefix::new(Vec::new()));
    loop {
        if *draining.borrow() {
            // Drained while parked or between hyper connections: closed, as an idle one would be.
            return;
        }
        let watched = Watched::new(io, clock.clone());
        // Boxed, so a parked connection's task does not keep room for hyper's connection state.
        let mut connection = Box::new(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(watched), service),
        );
        let mut drain_begun = false;
        // hyper let go of the connection because it was asked to park.
        let mut parked = false;
        // Asked to park while hyper was not idle after all: it closes once its exchange ends.
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
                () = drain_started(draining), if !drain_begun => {
                    drain_begun = true;
                    Pin::new(&mut *connection).graceful_shutdown();
                }
                overdue = clock.http_watch(limits, (!closing).then_some(park_after)),
                    if !drain_begun =>
                {
                    match overdue {
                        Overdue::Expired(reason) => {
                            tracing::debug!(side, reason, "HTTP connection closed");
                            return;
                        }
                        Overdue::Park => {
                            // Our clock says idle, but hyper may have ended on its own (a `Connection:
                            // close` exchange) or still be busy: look before asking it to let go.
                            let look =
                                poll_fn(|cx| Poll::Ready(connection.poll_without_shutdown(cx)));
                            if let Poll::Ready(result) = look.await {
                                break result;
                            }
                            if !clock.parkable() {
                                // The look started a request: not idle any more.
                                continue;
                            }
                            // hyper ends an idle connection at once, with no response and, polled
                            // without shutdown, no shutdown of the socket.
                            Pin::new(&mut *connection).graceful_shutdown();
                            let look =
                                poll_fn(|cx| Poll::Ready(connection.poll_without_shutdown(cx)));
                            match look.await {
                                Poll::Ready(result) => {
                                    parked = true;
                                    break result;
                                }
                                // Busy in a way the clock cannot see (a request body still being
                                // read after its response): keep-alive is off now, so hyper closes
                                // after this exchange; the timeouts still apply until then.
                                Poll::Pending => closing = true,
                            }
                        }
                    }
                }
            }
        };
        let hyper::server::conn::http1::Parts {
            io: watched,
            read_buf,
            service: returned,
            ..
        } = unboxed(connection).into_parts();
        service = returned;
        let (mut stream, prefix) = watched.into_inner().into_inner().into_parts();
        match result {
            Err(error) => {
                tracing::debug!(%error, side, "HTTP connection ended with an error");
                return;
            }
            Ok(()) if parked => {
                on_park();
                tracing::trace!(side, "HTTP/1 connection parked");
            }
            // The peer closed, or asked to (`Connection: close`), or the data plane drained: as hyper
            // would have, shut our side down.
            Ok(()) => {
                let _ = stream.shutdown().await;
                return;
            }
        }
        // Bytes hyper had read ahead go in front of the connection's own; its read buffer goes now,
        // not when the connection wakes up again.
        let prefix = if read_buf.is_empty() {
            prefix
        } else {
            prefix.behind(&read_buf)
        };
        drop(read_buf);
        let waiting = !prefix.is_empty();
        io = Replay::new(stream, prefix);
        if waiting {
            // Part of a request head is in: its header timer runs, and no park comes before it ends.
            clock.head_begun();
            continue;
        }
        let mut first = [0u8; 1];
        tokio::select! {
            // A peek, not a read: the bytes stay in the socket for hyper's buffer.
            peeked = io.get_ref().peek(&mut first) => match peeked {
                // A request head begins: the park delay no longer applies, the header timeout does.
                Ok(1..) => clock.head_begun(),
                // The peer closed while parked, or the socket failed.
                Ok(0) | Err(_) => return,
            },
            () = drain_started(draining) => return,
            reason = clock.http_expired(limits) => {
                tracing::debug!(side, reason, "HTTP connection closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use http_body_util::{BodyExt, Full};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use super::*;

    const PARK_AFTER: Duration = Duration::from_millis(50);
    /// Long enough for anything this test waits on to happen on a loaded machine; never a measure.
    const PATIENCE: Duration = Duration::from_secs(10);
    const GET: &[u8] = b"GET /n HTTP/1.1\r\nHost: app\r\n\r\n";
    /// A response larger than loopback's socket buffers can hold, so its sender waits on the reader.
    const BIG: usize = 32 << 20;

    /// One connection served by `serve_http1_parking` on loopback: `/big` answers `BIG` bytes, any
    /// other path the request's number on the connection.
    struct Served {
        client: TcpStream,
        /// Times `on_park` ran.
        parks: Arc<AtomicU64>,
        drain: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    async fn served(limits: ConnectionLimits, park_after: Duration) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let clock = ConnectionClock::for_http();
        let (drain, draining) = watch::channel(false);
        let count = Arc::new(AtomicU64::new(0));
        let handler = move |request: http::Request<Incoming>| {
            let number = count.fetch_add(1, Ordering::SeqCst) + 1;
            let body = if request.uri().path() == "/big" {
                bytes::Bytes::from(vec![b'x'; BIG])
            } else {
                bytes::Bytes::from(number.to_string())
            };
            async move { http::Response::new(Full::new(body).map_err(|never| match never {}).boxed()) }
        };
        let parks = Arc::new(AtomicU64::new(0));
        let on_park = {
            let parks = parks.clone();
            move || {
                parks.fetch_add(1, Ordering::SeqCst);
            }
        };
        let task = tokio::spawn(async move {
            serve_http1_parking(
                &limits, &draining, stream, clock, park_after, handler, on_park, "test",
            )
            .await
        });
        Served {
            client,
            parks,
            drain,
            task,
        }
    }

    /// Reads one response with a `content-length` body: its head (lower case) and its body.
    async fn response(client: &mut TcpStream) -> (String, Vec<u8>) {
        let mut bytes = Vec::new();
        let mut head: Option<(usize, usize)> = None;
        let read = async {
            loop {
                let mut chunk = vec![0u8; 64 * 1024];
                let n = client.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "connection closed mid-response after {} bytes",
                    bytes.len()
                );
                bytes.extend_from_slice(&chunk[..n]);
                if head.is_none()
                    && let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    let text = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                    let length = text
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length: "))
                        .map_or(0, |value| value.trim().parse().unwrap());
                    head = Some((end, length));
                }
                if let Some((end, length)) = head
                    && bytes.len() >= end + 4 + length
                {
                    let text = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                    return (text, bytes[end + 4..].to_vec());
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a response")
    }

    /// Sends `bytes` and expects a 200 whose body is `expected`, with no `Connection: close`.
    async fn answered(client: &mut TcpStream, bytes: &[u8], expected: &[u8]) {
        client.write_all(bytes).await.unwrap();
        let (head, body) = response(client).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, expected);
    }

    async fn parked(parks: &AtomicU64, times: u64) {
        let wait = async {
            while parks.load(Ordering::SeqCst) < times {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("the idle connection was parked");
    }

    async fn ends(task: JoinHandle<()>) {
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the connection's task ended")
            .unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_is_parked_and_serves_its_next_requests_on_the_same_socket() {
        let mut served = served(ConnectionLimits::DATA_PLANE, PARK_AFTER).await;
        for number in 1..=3u64 {
            // Parking is invisible to the client: no `Connection: close`, no close.
            answered(&mut served.client, GET, number.to_string().as_bytes()).await;
            parked(&served.parks, number).await;
        }
        drop(served.client);
        ends(served.task).await;
    }

    #[tokio::test]
    async fn a_head_begun_before_the_park_delay_is_not_parked_away() {
        // Long enough that the half head below surely goes out before the delay ends.
        let park_after = Duration::from_millis(500);
        let mut served = served(ConnectionLimits::DATA_PLANE, park_after).await;
        served.client.write_all(GET).await.unwrap();
        response(&mut served.client).await;
        let (first, rest) = GET.split_at(10);
        served.client.write_all(first).await.unwrap();
        tokio::time::sleep(park_after * 3).await;
        assert_eq!(
            served.parks.load(Ordering::SeqCst),
            0,
            "parked with a request head begun"
        );
        answered(&mut served.client, rest, b"2").await;
    }

    #[tokio::test]
    async fn bytes_read_ahead_of_a_park_are_served_after_it() {
        let mut served = served(ConnectionLimits::DATA_PLANE, PARK_AFTER).await;
        // The first request and half of the second in one write: hyper reads both at once, answers
        // the first and holds the half while the connection is idle.
        let (half, rest) = GET.split_at(12);
        served
            .client
            .write_all(&[GET, half].concat())
            .await
            .unwrap();
        let (_, body) = response(&mut served.client).await;
        assert_eq!(body, b"1");
        parked(&served.parks, 1).await;
        answered(&mut served.client, rest, b"2").await;
    }

    #[tokio::test]
    async fn a_slow_reader_is_not_parked_before_its_response_is_out() {
        let mut served = served(ConnectionLimits::DATA_PLANE, PARK_AFTER).await;
        served
            .client
            .write_all(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .unwrap();
        // The response's head is written and its body is stuck behind the unread socket buffers long
        // after the park delay: hyper is not idle, so nothing may park or close the connection.
        tokio::time::sleep(PARK_AFTER * 6).await;
        assert_eq!(
            served.parks.load(Ordering::SeqCst),
            0,
            "parked while the response was being sent"
        );
        let (head, body) = response(&mut served.client).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body.len(), BIG);
        // Still a keep-alive connection: the next request is answered on it.
        answered(&mut served.client, GET, b"2").await;
        parked(&served.parks, 1).await;
    }

    #[tokio::test]
    async fn a_parked_connection_still_times_out_and_drains() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_millis(300),
            ..ConnectionLimits::DATA_PLANE
        };
        let mut served = served(limits, PARK_AFTER).await;
        served.client.write_all(GET).await.unwrap();
        response(&mut served.client).await;
        parked(&served.parks, 1).await;
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, served.client.read_to_end(&mut rest))
            .await
            .expect("the idle timeout closed the parked connection")
            .unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        ends(served.task).await;

        let mut draining = self::served(ConnectionLimits::DATA_PLANE, PARK_AFTER).await;
        draining.client.write_all(GET).await.unwrap();
        response(&mut draining.client).await;
        parked(&draining.parks, 1).await;
        draining.drain.send_replace(true);
        ends(draining.task).await;
    }
}

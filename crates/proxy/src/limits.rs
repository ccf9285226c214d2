//! What keeps one sidecar alive under abuse: accept loops that back off when the process runs out of file
//! descriptors (and say so once in a while, not once per failed accept), a cap on open connections, a
//! header-read timeout and an idle timeout.
//!
//! Defaults and where they come from:
//! - header read: 10 s, Envoy's edge best practice for `request_headers_timeout`
//!   (<https://www.envoyproxy.io/docs/envoy/latest/configuration/best_practices/edge>; Envoy's own default
//!   leaves it off, which is what let idle connections pile up);
//! - idle: 1 h, Envoy's default for both the HTTP connection manager's `idle_timeout` (no active stream)
//!   and `tcp_proxy`'s `idle_timeout` (no byte either way), which Istio keeps;
//! - connections: 10,000 per data plane (inbound and outbound together). Envoy's only cap is the overload
//!   manager's `global_downstream_max_connections`, which Istio's bootstrap sets to 2^31-1 (no cap), so
//!   this one is ours: a sidecar's file-descriptor budget, not Envoy's. The plaintext operational ports
//!   (15020, 15021, 15000) get 128 each: a kubelet probe or a Prometheus scrape needs one or two, and a
//!   flood on them must not take the descriptors the data plane needs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Timeouts and the connection cap of one set of listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a connection's first byte (or its accept) to the end of a request's headers.
    pub header_read_timeout: Duration,
    /// An HTTP connection with no request in flight, or a TCP relay with no byte either way, is closed
    /// after this long.
    pub idle_timeout: Duration,
    /// Connections open at once; more are accepted and closed at once (as Envoy's overload manager does).
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The data plane's defaults (see the module documentation for their sources).
    pub const DATA_PLANE: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3600),
        max_connections: 10_000,
    };
    /// The defaults of each plaintext operational port (readiness, metrics, admin).
    pub const OPERATIONAL: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 128,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DATA_PLANE
    }
}

/// The first and the longest pause after a failed accept.
const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most one log line per listener per this period; the line counts the ones left out.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line that is written at most once per [`LOG_EVERY`], with how many were suppressed.
pub(crate) struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub(crate) const fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Calls `write` with the number of suppressed lines when a line is due; counts it otherwise.
    pub(crate) fn log(&mut self, write: impl FnOnce(u64)) {
        self.log_at(Instant::now(), write)
    }

    fn log_at(&mut self, now: Instant, write: impl FnOnce(u64)) {
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        write(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Whether an accept error means the process (EMFILE) or the system (ENFILE) has no descriptor left, or
/// the kernel no memory for one: retrying at once only spins.
pub(crate) fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Counts the open connections of one listener group (a [`Slot`] holds one), and those that closed or
/// were parked (their HTTP state let go while idle).
#[derive(Debug, Default)]
pub(crate) struct ConnectionCount(AtomicUsize, AtomicU64);

impl ConnectionCount {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Connections closed or parked since start: what tells `trim` that memory was freed.
    pub(crate) fn closed(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

/// One open connection, counted until dropped.
pub(crate) struct Slot(Arc<ConnectionCount>);

impl Slot {
    pub(crate) fn new(count: &Arc<ConnectionCount>) -> Self {
        count.0.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }

    /// What a connection calls when it lets go of its per-connection state without closing (it was
    /// parked): counted with the closed ones, so that `trim` returns what it freed. A function rather
    /// than a method, as the slot stays with the connection's task and the connection runs apart.
    pub(crate) fn on_freed(&self) -> impl Fn() + Send + Sync + 'static {
        let count = self.0.clone();
        move || {
            count.1.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.1.fetch_add(1, Ordering::Relaxed);
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accept loop's state: its name for the log, its cap and its counter.
pub(crate) struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    max_connections: usize,
    count: Arc<ConnectionCount>,
    backoff: Duration,
    failures: RateLimitedLog,
    refusals: RateLimitedLog,
}

impl Acceptor {
    pub(crate) fn new(
        listener: TcpListener,
        name: &'static str,
        max_connections: usize,
        count: Arc<ConnectionCount>,
    ) -> Self {
        Self {
            listener,
            name,
            max_connections,
            count,
            backoff: BACKOFF_START,
            failures: RateLimitedLog::new(),
            refusals: RateLimitedLog::new(),
        }
    }

    /// The next connection under the cap. Out of descriptors, it waits 10 ms, then longer up to 100 ms,
    /// instead of retrying at once (the listener stays readable, so a plain loop spins a core); over the
    /// cap it closes the new connection at once. Both are logged at most once per 10 s.
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = BACKOFF_START;
                    if self.count.get() >= self.max_connections {
                        let (name, max) = (self.name, self.max_connections);
                        self.refusals.log(|suppressed| {
                            tracing::warn!(
                                listener = name,
                                max_connections = max,
                                suppressed,
                                "connection limit reached: closing new connections until some end"
                            );
                        });
                        crate::sockets::reset(stream);
                        continue;
                    }
                    return (stream, peer, Slot::new(&self.count));
                }
                Err(error) => {
                    let (name, pause) = (self.name, self.backoff);
                    let exhausted = is_resource_exhaustion(&error);
                    self.failures.log(|suppressed| {
                        if exhausted {
                            tracing::warn!(listener = name, %error, suppressed, pause_ms = pause.as_millis() as u64,
                                "accept failed: out of file descriptors; pausing accepts (raise the open-files limit or lower --max-connections)");
                        } else {
                            tracing::warn!(listener = name, %error, suppressed, "accept failed");
                        }
                    });
                    tokio::time::sleep(pause).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

const NEVER: u64 = u64::MAX;

/// Why the watchdog of an HTTP connection ([`ConnectionClock::http_watch`]) woke its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overdue {
    /// The connection overstayed a timeout and is closed; the reason is for the debug log.
    Expired(&'static str),
    /// The connection has been parkable (see [`ConnectionClock::parkable`]) for the park delay.
    Park,
}

/// When the timeouts of one HTTP connection or TCP relay are due. Shared by the connection's I/O (which
/// marks the start of a request head and activity), its requests (in flight or not) and a watchdog.
pub(crate) struct ConnectionClock {
    origin: Instant,
    /// Milliseconds since `origin` when the current request head began (its first byte, or the accept);
    /// `NEVER` while none is being read.
    head_since: AtomicU64,
    /// When the last request finished (or the accept); read while none is in flight.
    idle_since: AtomicU64,
    /// The last byte read or written (TCP relays; see `io_times`).
    last_io: AtomicU64,
    /// Whether reads and writes stamp `last_io`: a TCP relay's idle timeout reads it, an HTTP
    /// connection's timeouts do not, and reading the clock on every read and write of an HTTP
    /// connection cost about a hundred instructions each, several times per request.
    io_times: bool,
    in_flight: AtomicUsize,
    wake: Notify,
    /// A request head that starts before this (milliseconds since `origin`) is due before the deadline
    /// the watchdog sleeps towards, so it wakes the watchdog; one that starts later does not.
    head_wakes_before: AtomicU64,
    /// The same for a request that ends: its idle deadline is earlier than the watchdog's only before this.
    end_wakes_before: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// The last write or flush could not complete: output is still queued on our side (a slow reader).
    write_pending: AtomicBool,
}

impl ConnectionClock {
    /// The clock of a TCP relay (its idle timeout follows the last byte either way).
    pub(crate) fn new() -> Arc<Self> {
        Self::with_io_times(true)
    }

    /// The clock of an HTTP connection: timeouts follow request heads and requests, not bytes.
    pub(crate) fn for_http() -> Arc<Self> {
        Self::with_io_times(false)
    }

    fn with_io_times(io_times: bool) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            // A connection that sends nothing at all is held to the header timeout too.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            last_io: AtomicU64::new(0),
            io_times,
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
            // Until the watchdog first sleeps, every change wakes it.
            head_wakes_before: AtomicU64::new(NEVER),
            end_wakes_before: AtomicU64::new(NEVER),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            write_pending: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn at(&self, millis: u64) -> Instant {
        self.origin + Duration::from_millis(millis)
    }

    /// Bytes read from and written to the watched I/O so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_read.load(Ordering::Relaxed),
            self.bytes_written.load(Ordering::Relaxed),
        )
    }

    fn on_read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        // The clock is read only when the time is needed: for a relay's idleness, or when these bytes
        // may start a request head (none in flight, none being read).
        let head_may_start = self.in_flight.load(Ordering::SeqCst) == 0
            && self.head_since.load(Ordering::SeqCst) == NEVER;
        if self.io_times || head_may_start {
            self.stamp_read(self.now());
        }
    }

    #[cfg(test)]
    fn on_read_at(&self, bytes: usize, now: u64) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        self.stamp_read(now);
    }

    fn stamp_read(&self, now: u64) {
        if self.io_times {
            self.last_io.store(now, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(NEVER, now, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            && now < self.head_wakes_before.load(Ordering::SeqCst)
        {
            // The watchdog sleeps towards a later deadline than this head's.
            self.wake.notify_one();
        }
    }

    fn on_write(&self, bytes: usize) {
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if self.io_times {
            self.last_io.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Bytes of a request head are waiting, read or not yet: the header timer starts if none runs.
    pub(crate) fn head_begun(&self) {
        self.stamp_read(self.now());
    }

    /// Whether the connection could be parked now: no request in flight, no request head begun, and no
    /// output still queued for a peer that reads slowly.
    pub(crate) fn parkable(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && self.head_since.load(Ordering::SeqCst) == NEVER
            && !self.write_pending.load(Ordering::Relaxed)
    }

    fn set_write_pending(&self, pending: bool) {
        self.write_pending.store(pending, Ordering::Relaxed);
    }

    /// A request's headers are in: the head timer stops and the connection is busy until the guard drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(NEVER, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// `due` without a park delay, with the reason alone.
    #[cfg(test)]
    fn http_due(&self, limits: &ConnectionLimits, now: Instant) -> Result<Instant, &'static str> {
        self.due(limits, None, now)
            .map_err(|overdue| match overdue {
                Overdue::Expired(reason) => reason,
                Overdue::Park => unreachable!("no park delay was given"),
            })
    }

    /// What is due at `now`: `Err(Overdue::Expired(reason))` when the connection overstayed (a request
    /// head not complete within `header_read_timeout`, or no request in flight for `idle_timeout`); with
    /// `park_after`, `Err(Overdue::Park)` once it is parkable and has had no request in flight for that
    /// long; else when to look again.
    fn due(
        &self,
        limits: &ConnectionLimits,
        park_after: Option<Duration>,
        now: Instant,
    ) -> Result<Instant, Overdue> {
        let head = self.head_since.load(Ordering::SeqCst);
        let head_deadline = (head != NEVER).then(|| self.at(head) + limits.header_read_timeout);
        let idle = self.in_flight.load(Ordering::SeqCst) == 0;
        let idle_since = self.at(self.idle_since.load(Ordering::SeqCst));
        let idle_deadline = idle.then(|| idle_since + limits.idle_timeout);
        let park_deadline = park_after
            .filter(|_| self.parkable())
            .map(|after| idle_since + after);
        if head_deadline.is_some_and(|deadline| deadline <= now) {
            return Err(Overdue::Expired(
                "request headers not received within the header-read timeout",
            ));
        }
        if idle_deadline.is_some_and(|deadline| deadline <= now) {
            return Err(Overdue::Expired("idle timeout"));
        }
        if park_deadline.is_some_and(|deadline| deadline <= now) {
            return Err(Overdue::Park);
        }
        Ok([head_deadline, idle_deadline, park_deadline]
            .into_iter()
            .flatten()
            .min()
            // Busy: the end of the request or a new head wakes the watchdog.
            .unwrap_or(now + limits.idle_timeout.max(limits.header_read_timeout)))
    }

    /// When the watchdog looks again, given what is due `next` (see `due`): while the connection is
    /// busy or was busy within a header-read timeout, no later than a header-read timeout from `now`. A
    /// keep-alive connection's next request head then starts after that look and ends before its
    /// deadline, so neither it nor the end of a request needs to wake the watchdog (which runs in the
    /// connection's own task: each wake-up was one more poll of the connection and a new timer per
    /// request). Only a connection idle for longer sleeps until its idle deadline, and its next head
    /// wakes the watchdog once.
    fn look_again(&self, limits: &ConnectionLimits, now: Instant, next: Instant) -> Instant {
        let recently_busy = self.in_flight.load(Ordering::SeqCst) > 0
            || now < self.at(self.idle_since.load(Ordering::SeqCst)) + limits.header_read_timeout;
        if recently_busy {
            next.min(now + limits.header_read_timeout)
        } else {
            next
        }
    }

    /// Completes when an HTTP connection overstays (see `due`), answering why.
    pub(crate) async fn http_expired(&self, limits: &ConnectionLimits) -> &'static str {
        loop {
            // Without a park delay the watch only ever ends expired.
            if let Overdue::Expired(reason) = self.http_watch(limits, None).await {
                return reason;
            }
        }
    }

    /// Completes when an HTTP connection overstays, or, with `park_after`, once it is parkable and has
    /// been idle that long (its HTTP state can then be let go until its next byte).
    pub(crate) async fn http_watch(
        &self,
        limits: &ConnectionLimits,
        park_after: Option<Duration>,
    ) -> Overdue {
        let millis = |duration: Duration| duration.as_millis() as u64;
        // A request's end moves the earliest deadline it can set to this far ahead.
        let idle_limit =
            park_after.map_or(limits.idle_timeout, |after| after.min(limits.idle_timeout));
        loop {
            let now = Instant::now();
            let mut wake_at = match self.due(limits, park_after, now) {
                Ok(next) => self.look_again(limits, now, next),
                Err(overdue) => return overdue,
            };
            // Publish what would need an earlier look, then read the state again: a head or an end
            // that raced with the first reading either shows here or sees the new thresholds and wakes.
            loop {
                let armed = millis(wake_at.saturating_duration_since(self.origin));
                let head = armed.saturating_sub(millis(limits.header_read_timeout));
                let end = armed.saturating_sub(millis(idle_limit));
                self.head_wakes_before.store(head, Ordering::SeqCst);
                self.end_wakes_before.store(end, Ordering::SeqCst);
                let again = match self.due(limits, park_after, now) {
                    Ok(next) => self.look_again(limits, now, next),
                    Err(overdue) => return overdue,
                };
                if again >= wake_at {
                    break;
                }
                wake_at = again;
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Completes once no byte has moved either way for `idle`.
    pub(crate) async fn io_idle(&self, idle: Duration) {
        loop {
            let deadline = self.at(self.last_io.load(Ordering::Relaxed)) + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request in flight on a watched connection (kept by its response body until it is sent).
pub(crate) struct RequestGuard(Arc<ConnectionClock>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let clock = &self.0;
        let now = clock.now();
        clock.idle_since.store(now, Ordering::SeqCst);
        if clock.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && now < clock.end_wakes_before.load(Ordering::SeqCst)
        {
            // The watchdog sleeps towards a later deadline than this connection's idle one.
            clock.wake.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped, and keeps
/// the body's length (a plain `map_frame` would turn every response into a chunked one).
pub(crate) struct BusyBody<B> {
    inner: B,
    _request: RequestGuard,
}

impl<B> BusyBody<B> {
    pub(crate) fn new(inner: B, request: RequestGuard) -> Self {
        Self {
            inner,
            _request: request,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// I/O that tells its [`ConnectionClock`] about reads and writes.
pub(crate) struct Watched<I> {
    inner: I,
    clock: Arc<ConnectionClock>,
}

impl<I> Watched<I> {
    pub(crate) fn new(inner: I, clock: Arc<ConnectionClock>) -> Self {
        Self { inner, clock }
    }

    pub(crate) fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(result, Poll::Ready(Ok(()))) && read > 0 {
            this.clock.on_read(read);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result
            && written > 0
        {
            this.clock.on_write(written);
        }
        this.clock.set_write_pending(result.is_pending());
        result
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.clock.set_write_pending(result.is_pending());
        result
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_errors_are_recognised() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(code)));
        }
        for code in [libc::ECONNABORTED, libc::EINTR, libc::EPERM] {
            assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(code)));
        }
    }

    #[test]
    fn the_log_is_written_once_per_period_with_a_count() {
        let mut log = RateLimitedLog::new();
        let start = Instant::now();
        let mut written = Vec::new();
        for i in 0..1000 {
            log.log_at(start + Duration::from_millis(i), |suppressed| {
                written.push(suppressed)
            });
        }
        log.log_at(start + LOG_EVERY, |suppressed| written.push(suppressed));
        log.log_at(start + LOG_EVERY, |suppressed| written.push(suppressed));
        assert_eq!(written, vec![0, 999]);
    }

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3600),
        max_connections: 1,
    };
    const HEAD: &str = "request headers not received within the header-read timeout";

    fn after(clock: &ConnectionClock, seconds: u64) -> Instant {
        clock.origin + Duration::from_secs(seconds)
    }

    #[test]
    fn a_connection_that_sends_nothing_expires_on_the_header_timeout() {
        let clock = ConnectionClock::new();
        assert_eq!(
            clock.http_due(&LIMITS, after(&clock, 9)),
            Ok(after(&clock, 10))
        );
        assert_eq!(clock.http_due(&LIMITS, after(&clock, 10)), Err(HEAD));
    }

    #[test]
    fn a_request_in_flight_never_expires_and_idleness_counts_from_its_end() {
        let clock = ConnectionClock::new();
        let request = clock.request_started();
        assert!(clock.http_due(&LIMITS, after(&clock, 100_000)).is_ok());
        drop(request);
        let idle_since = clock.idle_since.load(Ordering::Relaxed);
        let ended = clock.at(idle_since);
        assert_eq!(
            clock.http_due(&LIMITS, ended),
            Ok(ended + LIMITS.idle_timeout)
        );
        assert_eq!(
            clock.http_due(&LIMITS, ended + LIMITS.idle_timeout),
            Err("idle timeout")
        );
    }

    /// A waker that counts how often it is woken.
    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls the watchdog of `clock` once (it arms its sleep), then runs `requests` and returns how
    /// often the watchdog was woken by them.
    fn watchdog_wakes(clock: &Arc<ConnectionClock>, requests: impl FnOnce()) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = TaskContext::from_waker(&waker);
        let mut watchdog = std::pin::pin!(clock.http_expired(&LIMITS));
        assert!(watchdog.as_mut().poll(&mut cx).is_pending());
        requests();
        counter.0.load(Ordering::SeqCst)
    }

    #[test]
    fn keep_alive_requests_do_not_wake_the_watchdog() {
        let clock = ConnectionClock::new();
        drop(clock.request_started());
        let wakes = watchdog_wakes(&clock, || {
            for _ in 0..3 {
                clock.on_read(100);
                let request = clock.request_started();
                clock.on_write(1000);
                drop(request);
            }
        });
        assert_eq!(
            wakes, 0,
            "a busy keep-alive connection's requests woke its watchdog"
        );
    }

    #[test]
    fn the_first_head_after_a_long_idle_wakes_the_watchdog() {
        let mut clock = ConnectionClock::new();
        // Idle for 100 s already: the watchdog sleeps until the idle deadline, an hour away.
        Arc::get_mut(&mut clock).unwrap().origin -= Duration::from_secs(100);
        // Its last request ended when it opened (no head being read since).
        clock.head_since.store(NEVER, Ordering::SeqCst);
        let wakes = watchdog_wakes(&clock, || clock.on_read(100));
        assert_eq!(
            wakes, 1,
            "a request head after a long idle must wake the watchdog, or its header timeout would wait an hour"
        );
    }

    #[test]
    fn a_byte_while_idle_starts_the_header_timer_and_a_request_stops_it() {
        let clock = ConnectionClock::new();
        drop(clock.request_started());
        // Idle (keep-alive) for 100 s: only the idle timeout applies.
        assert!(clock.http_due(&LIMITS, after(&clock, 100)).is_ok());
        clock.on_read_at(1, 100_000);
        assert_eq!(
            clock.http_due(&LIMITS, after(&clock, 105)),
            Ok(after(&clock, 110))
        );
        assert_eq!(clock.http_due(&LIMITS, after(&clock, 110)), Err(HEAD));
        let _request = clock.request_started();
        assert!(clock.http_due(&LIMITS, after(&clock, 110)).is_ok());
        // Body bytes of a request in flight do not start the header timer.
        clock.on_read_at(1, 111_000);
        assert!(clock.http_due(&LIMITS, after(&clock, 200)).is_ok());
        assert_eq!(clock.bytes(), (2, 0));
    }
}

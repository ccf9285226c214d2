//! Copying an opaque TCP connection both ways, with Istio's TCP metrics and one access-log line.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::context::Context;
use crate::limits::{ConnectionClock, Watched};
use crate::metrics::ConnectionLabels;

/// Per-direction buffer: one full TLS record (16 KiB), so encrypted copies write whole records.
const RELAY_BUFFER: usize = 16 * 1024;

/// Copies until both sides are done; records opened/closed/bytes. `downstream` is the side that connected.
pub(crate) async fn relay<D, U>(
    context: &Context,
    labels: ConnectionLabels,
    downstream: D,
    mut upstream: U,
) where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    context.metrics.tcp_opened.get_or_create(&labels).inc();
    // Counted on the downstream side, so an idle timeout still reports what moved before it.
    let clock = ConnectionClock::new();
    let mut downstream = Watched::new(downstream, clock.clone());
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut downstream,
        &mut upstream,
        RELAY_BUFFER,
        RELAY_BUFFER,
    );
    let error = tokio::select! {
        result = copy => result.err().map(|e| e.to_string()),
        () = clock.io_idle(context.limits.idle_timeout) => Some("idle timeout".to_owned()),
    };
    let (sent, received) = clock.bytes();
    context.metrics.tcp_sent.get_or_create(&labels).inc_by(sent);
    context
        .metrics
        .tcp_received
        .get_or_create(&labels)
        .inc_by(received);
    context.metrics.tcp_closed.get_or_create(&labels).inc();
    tracing::info!(
        target: "access",
        reporter = ?labels.reporter,
        destination_service = %labels.destination_service,
        source_principal = %labels.source_principal,
        destination_principal = %labels.destination_principal,
        security = ?labels.connection_security_policy,
        bytes_sent = sent,
        bytes_received = received,
        duration_ms = started.elapsed().as_millis() as u64,
        error,
        "tcp connection"
    );
}

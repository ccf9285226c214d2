//! An accepted connection in two stages, so that what it keeps for its life is only what its life needs.
//!
//! An async fn's state is as large as its largest suspension point, whatever it holds at the others, and
//! a task keeps the room for its future from spawn to end. Sniffing the first bytes, the TLS handshake,
//! dialing the application and authorizing are each short, but inline they reserved their room for as
//! long as the connection lived: 2.5 KB per connection in the inbound task, 1.8 KB more in the mTLS
//! termination (measured with `size_of_val`, release build, BENCHMARKS.md "Connections in two stages").
//! So a connection's set-up runs boxed and returns the future that carries the connection from then on;
//! the set-up's box is freed before that future first runs.
//!
//! Passing futures boxed is deliberate here: an async fn keeps an argument moved into a future it awaits
//! twice (in the argument's slot and in the awaited future), so large futures and values go in boxes.

use std::future::Future;
use std::pin::Pin;

/// The future that carries a connection for the rest of its life once its set-up is done.
pub(crate) type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection's set-up: `None` when it ended there (refused, reset, the application not reachable).
pub(crate) type Setup = Pin<Box<dyn Future<Output = Option<Connection>> + Send>>;

/// Runs `setup`, frees it, then runs the connection it returned; `held` (the connection's counters) is
/// kept until the end. Not an async fn, which would keep its arguments twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store each argument twice for the connection's life"
)]
pub(crate) fn staged<H: Send>(held: H, setup: Setup) -> impl Future<Output = ()> + Send {
    async move {
        let _held = &held;
        let connection = setup.await;
        if let Some(connection) = connection {
            connection.await;
        }
    }
}

/// `setup` and the connection it returns as one [`Connection`], for a set-up that runs where the
/// connection does (under the same revocation watch, inbound).
pub(crate) fn staged_boxed(
    setup: impl Future<Output = Option<Connection>> + Send + 'static,
) -> Connection {
    boxed(staged((), Box::pin(setup)))
}

/// Boxes `connection` as a [`Connection`].
pub(crate) fn boxed(connection: impl Future<Output = ()> + Send + 'static) -> Connection {
    Box::pin(connection)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its live instances, so a test can see when a stage's state is dropped.
    struct Live(Arc<AtomicUsize>);

    impl Live {
        fn new(count: &Arc<AtomicUsize>) -> Self {
            count.fetch_add(1, Ordering::SeqCst);
            Self(count.clone())
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A set-up whose state outlives its completion, as a boxed future's memory does: `live` is dropped
    /// only with the set-up itself (an async block would drop it on completion already).
    struct SetupState {
        _live: Live,
        connection: Option<Connection>,
    }

    impl Future for SetupState {
        type Output = Option<Connection>;

        fn poll(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(self.connection.take())
        }
    }

    #[tokio::test]
    async fn the_setup_is_dropped_before_the_connection_runs_and_held_lasts_to_the_end() {
        let setup_state = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (seen_setup, seen_held) = (setup_state.clone(), held.clone());
        let ran = Arc::new(AtomicUsize::new(0));
        let ran_in_connection = ran.clone();
        let connection = boxed(async move {
            tokio::task::yield_now().await;
            // Inside the connection's stage: its set-up is gone, what it holds is not.
            assert_eq!(
                seen_setup.load(Ordering::SeqCst),
                0,
                "set-up state still alive"
            );
            assert_eq!(seen_held.load(Ordering::SeqCst), 1, "held dropped early");
            ran_in_connection.fetch_add(1, Ordering::SeqCst);
        });
        let setup = Box::pin(SetupState {
            _live: Live::new(&setup_state),
            connection: Some(connection),
        });
        staged(Live::new(&held), setup).await;
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "the connection did not run to its end"
        );
        assert_eq!(held.load(Ordering::SeqCst), 0);
        assert_eq!(setup_state.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_setup_that_ends_the_connection_runs_nothing_more() {
        let held = Arc::new(AtomicUsize::new(0));
        staged(Live::new(&held), Box::pin(async { None })).await;
        assert_eq!(held.load(Ordering::SeqCst), 0);
    }
}

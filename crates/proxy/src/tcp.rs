//! Copying an opaque TCP connection both ways, with Istio's TCP metrics and one access-log line.
//!
//! The copy is our own rather than `tokio::io::copy_bidirectional`: that one allocates both buffers when
//! the connection opens and keeps them until it closes, so thousands of idle connections held 32 KiB
//! each. Here a direction reads into a buffer on the poll's stack while it is quiet, writes straight from
//! it, and takes a heap buffer only while its peer cannot keep up or the data comes in bulk; the heap
//! buffer is dropped as soon as the direction is drained and has nothing more to read.
//!
//! The heap buffer adapts to bulk: it starts at 16 KiB and doubles while reads fill it, up to 256 KiB
//! (as ztunnel's relay does), so a bulk transfer makes a few large reads and writes instead of many small
//! ones. A direction remembers the size it reached across short pauses in a transfer (a `usize`, not the
//! buffer), and forgets it as soon as a read is small enough to pass straight through the stack buffer.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::access_log;
use crate::context::Context;
use crate::limits::{ConnectionClock, Watched};
use crate::metrics::ConnectionLabels;

/// A read of a quiet direction: one full TLS record (16 KiB), so encrypted copies write whole records.
/// It lives on the stack of one poll, so an idle connection holds none of it.
const STACK_READ: usize = 16 * 1024;
/// The first heap buffer of a busy direction.
const MIN_BUFFER: usize = 16 * 1024;
/// Bulk transfers double their buffer up to this, which cuts the number of reads and writes per byte.
const MAX_BUFFER: usize = 256 * 1024;

/// Copies until both sides are done; records opened/closed/bytes. `downstream` is the side that connected.
///
/// Not an async fn: an async fn moves each argument into a local of its own, so an idle connection
/// would keep its labels and streams twice; an async block uses what it captured where it is. The
/// downstream is wrapped before the block for the same reason: wrapped inside, it would be kept twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store each argument twice for the connection's life"
)]
pub(crate) fn relay<D, U>(
    context: Arc<Context>,
    labels: ConnectionLabels,
    downstream: D,
    mut upstream: U,
) -> impl Future<Output = ()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    // Counted on the downstream side, so an idle timeout still reports what moved before it.
    let clock = ConnectionClock::new();
    let mut downstream = Watched::new(downstream, clock.clone());
    async move {
        context.metrics.tcp_opened.get_or_create(&labels).inc();
        let error = tokio::select! {
            result = copy_both_ways(&mut downstream, &mut upstream) => result.err().map(|e| e.to_string()),
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
        access_log::record("tcp connection", |line| {
            line.display("reporter", format_args!("{:?}", labels.reporter))
                .bytes("destination_service", labels.destination_service.as_bytes())
                .bytes("source_principal", labels.source_principal.as_bytes())
                .bytes(
                    "destination_principal",
                    labels.destination_principal.as_bytes(),
                )
                .display(
                    "security",
                    format_args!("{:?}", labels.connection_security_policy),
                )
                .number("bytes_sent", sent)
                .number("bytes_received", received)
                .number("duration_ms", started.elapsed().as_millis() as u64);
            if let Some(error) = &error {
                line.str("error", error);
            }
        });
    }
}

/// Copies `a → b` and `b → a` until both directions reached end of file (each then shuts down its
/// writer, so a half-close passes through); returns the bytes copied each way. The first error ends both.
pub(crate) async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll(cx, &mut *a, &mut *b)?;
        let backward = b_to_a.poll(cx, &mut *b, &mut *a)?;
        match (forward, backward) {
            (Poll::Ready(()), Poll::Ready(())) => {
                Poll::Ready(Ok((a_to_b.written.copied, b_to_a.written.copied)))
            }
            _ => Poll::Pending,
        }
    })
    .await
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Copying,
    /// The reader reached end of file; the writer is shut down once everything read is written.
    ShuttingDown,
    Done,
}

/// One direction of the copy. `buffer[start..end]` has been read but not yet written.
#[derive(Debug, Default)]
struct Direction {
    /// Present only while the direction is busy: its writer lagged or its reader delivered in bulk.
    buffer: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// A read filled the whole buffer: the next one gets a buffer twice the size (up to `MAX_BUFFER`).
    grow: bool,
    /// The size the next heap buffer starts at: the size the last one reached while data kept coming in
    /// bulk, `MIN_BUFFER` again once the direction carries small reads. Zero means `MIN_BUFFER`.
    size: usize,
    stage: Stage,
    written: Written,
}

/// What a direction has written.
#[derive(Debug, Default)]
struct Written {
    copied: u64,
    /// Bytes were written since the last flush; flushed before waiting for more input.
    need_flush: bool,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut TaskContext<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.stage == Stage::Done {
                return Poll::Ready(Ok(()));
            }
            while self.start < self.end {
                let buffer = self
                    .buffer
                    .as_deref()
                    .expect("pending bytes live in the buffer");
                let n = ready!(
                    self.written
                        .poll_write(cx, writer, &buffer[self.start..self.end])
                )?;
                self.start += n;
            }
            self.start = 0;
            self.end = 0;
            if self.stage == Stage::ShuttingDown {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.stage = Stage::Done;
                return Poll::Ready(Ok(()));
            }
            let read = match self.buffer.as_mut() {
                Some(buffer) => {
                    if self.grow && buffer.len() < MAX_BUFFER {
                        self.size = (buffer.len() * 2).min(MAX_BUFFER);
                        *buffer = vec![0; self.size].into_boxed_slice();
                    }
                    self.grow = false;
                    let mut read_buf = ReadBuf::new(buffer);
                    match Pin::new(&mut *reader).poll_read(cx, &mut read_buf) {
                        Poll::Ready(Ok(())) => {
                            let n = read_buf.filled().len();
                            self.grow = n == buffer.len();
                            self.end = n;
                            Poll::Ready(Ok(n))
                        }
                        Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                        Poll::Pending => {
                            // Drained and nothing to read: idle, so the buffer goes.
                            self.buffer = None;
                            Poll::Pending
                        }
                    }
                }
                None => self.poll_read_quiet(cx, reader, writer),
            };
            match read {
                Poll::Ready(Ok(0)) => self.stage = Stage::ShuttingDown,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    if self.written.need_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.written.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads into a stack buffer and writes straight from it; only what the writer does not take at
    /// once (or a read that filled the whole stack buffer, the sign of bulk) brings in a heap buffer.
    /// Returns the bytes read.
    fn poll_read_quiet<R, W>(
        &mut self,
        cx: &mut TaskContext<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<usize>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut read_buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut read_buf))?;
        let data = read_buf.filled();
        let mut written = 0;
        while written < data.len() {
            match self.written.poll_write(cx, writer, &data[written..]) {
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => break,
            }
        }
        let left = data.len() - written;
        if left > 0 || data.len() == STACK_READ {
            let mut buffer = vec![0; self.size.max(MIN_BUFFER).max(left)].into_boxed_slice();
            buffer[..left].copy_from_slice(&data[written..]);
            self.buffer = Some(buffer);
            self.end = left;
        } else {
            // A small read passed straight through: not bulk (any more), so the next buffer starts small.
            self.size = MIN_BUFFER;
        }
        Poll::Ready(Ok(data.len()))
    }
}

impl Written {
    fn poll_write<W>(
        &mut self,
        cx: &mut TaskContext<'_>,
        writer: &mut W,
        data: &[u8],
    ) -> Poll<io::Result<usize>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let n = ready!(Pin::new(&mut *writer).poll_write(cx, data))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the receiving side accepted no bytes",
            )));
        }
        self.copied += n as u64;
        self.need_flush = true;
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Runs the relay between two in-memory pipes: `(client end, server end, relay task)`.
    fn relayed(
        pipe_size: usize,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<io::Result<(u64, u64)>>,
    ) {
        let (client, mut near) = duplex(pipe_size);
        let (mut far, server) = duplex(pipe_size);
        let task = tokio::spawn(async move { copy_both_ways(&mut near, &mut far).await });
        (client, server, task)
    }

    #[tokio::test]
    async fn bytes_arrive_intact_both_ways_and_half_close_passes_through() {
        let (mut client, mut server, task) = relayed(1024);
        let request = pattern(3000, 1);
        let response = pattern(5000, 7);
        let (req, resp) = (request.clone(), response.clone());
        let server_side = tokio::spawn(async move {
            let mut got = Vec::new();
            // Reads to end of file: only the client's shutdown, relayed, ends this.
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&resp).await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        client.write_all(&req).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(server_side.await.unwrap(), request);
        assert_eq!(got, response);
        let (forward, backward) = task.await.unwrap().unwrap();
        assert_eq!((forward, backward), (3000, 5000));
    }

    #[tokio::test]
    async fn a_large_transfer_through_a_slow_reader_is_complete_and_in_order() {
        // Small pipes make the writer lag, so the heap buffer is taken, grown and dropped many times.
        let (mut client, mut server, task) = relayed(4096);
        let data = pattern(3 * 1024 * 1024 + 17, 3);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(70_000) {
                client.write_all(chunk).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        let mut chunk = vec![0; 1000];
        loop {
            let n = server.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the relayed bytes differ from the sent ones");
        server.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        assert_eq!(task.await.unwrap().unwrap().0, data.len() as u64);
    }

    /// A connected pair of loopback TCP sockets.
    async fn socket_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn megabytes_both_ways_over_tcp_arrive_intact_and_half_close_passes_through() {
        // client <-> near | relay | far <-> server, all real loopback sockets.
        let (mut client, mut near) = socket_pair().await;
        let (mut far, mut server) = socket_pair().await;
        let relay = tokio::spawn(async move { copy_both_ways(&mut near, &mut far).await });
        let upload = pattern(6 * 1024 * 1024 + 101, 11);
        let download = pattern(5 * 1024 * 1024 + 7, 29);

        let (expected_up, to_send) = (upload.clone(), download.clone());
        let server_side = tokio::spawn(async move {
            let (mut reader, mut writer) = server.split();
            // The server writes its whole answer while it reads, so both directions carry bulk at once.
            let write = async {
                for chunk in to_send.chunks(100_000) {
                    writer.write_all(chunk).await.unwrap();
                }
                writer.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            // Only the client's shutdown, relayed as a half-close, ends this read.
            let read = reader.read_to_end(&mut got);
            let ((), read) = tokio::join!(write, read);
            read.unwrap();
            assert_eq!(got.len(), expected_up.len(), "upload length");
            assert!(got == expected_up, "the uploaded bytes differ");
        });

        let (mut reader, mut writer) = client.split();
        let write = async {
            for chunk in upload.chunks(300_000) {
                writer.write_all(chunk).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let read = reader.read_to_end(&mut got);
        let ((), read) = tokio::join!(write, read);
        read.unwrap();
        assert_eq!(got.len(), download.len(), "download length");
        assert!(got == download, "the downloaded bytes differ");
        server_side.await.unwrap();
        let (forward, backward) = relay.await.unwrap().unwrap();
        assert_eq!(
            (forward, backward),
            (upload.len() as u64, download.len() as u64)
        );
    }

    #[tokio::test]
    async fn bulk_grows_the_buffer_to_the_maximum_and_small_reads_reset_it() {
        let (mut a_user, mut a) = duplex(2 * 1024 * 1024);
        let (mut b, mut b_user) = duplex(4 * 1024 * 1024);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        let mut forward = Direction::default();
        let bulk = pattern(1024 * 1024, 9);
        a_user.write_all(&bulk).await.unwrap();
        // Every read fills its buffer: 16 KiB on the stack, then 16, 32, ..., 256 KiB on the heap.
        assert!(forward.poll(&mut cx, &mut a, &mut b).is_pending());
        assert_eq!(
            forward.size, MAX_BUFFER,
            "bulk grew the buffer to the maximum"
        );
        assert!(
            forward.buffer.is_none(),
            "drained with nothing to read: the buffer is dropped, only its size is remembered"
        );
        let mut got = vec![0; bulk.len()];
        b_user.read_exact(&mut got).await.unwrap();
        assert!(got == bulk, "the relayed bytes differ");

        a_user.write_all(b"small").await.unwrap();
        assert!(forward.poll(&mut cx, &mut a, &mut b).is_pending());
        assert_eq!(
            forward.size, MIN_BUFFER,
            "a small read starts the next buffer small"
        );
        let mut small = [0; 5];
        b_user.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"small");
    }

    #[tokio::test]
    async fn a_heap_buffer_is_held_only_while_the_writer_lags() {
        let (mut a_user, mut a) = duplex(64);
        let (mut b, mut b_user) = duplex(64);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        let mut forward = Direction::default();
        let message = pattern(60, 5);
        a_user.write_all(&message).await.unwrap();
        // The pipe to the writer has room for 24 of the 60 bytes.
        b.write_all(&[0; 40]).await.unwrap();
        assert!(forward.poll(&mut cx, &mut a, &mut b).is_pending());
        assert_eq!(
            forward.buffer.as_ref().map(|_| forward.end - forward.start),
            Some(36),
            "what the writer did not take waits in a heap buffer"
        );
        let mut got = vec![0; 64];
        b_user.read_exact(&mut got).await.unwrap();
        assert!(forward.poll(&mut cx, &mut a, &mut b).is_pending());
        assert!(
            forward.buffer.is_none(),
            "drained with nothing to read: the buffer is dropped"
        );
        let mut rest = vec![0; 36];
        b_user.read_exact(&mut rest).await.unwrap();
        assert_eq!([&got[40..], &rest[..]].concat(), message);
        assert_eq!(forward.written.copied, 60);
    }
}

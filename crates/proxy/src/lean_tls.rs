//! The data plane's TLS stream: rustls's unbuffered connection over a socket, with buffers that exist only
//! while they hold bytes.
//!
//! rustls's buffered connection (what tokio-rustls wraps) keeps a 4 KiB receive buffer for the connection's
//! whole life, zero-filled and so resident, even when the connection has been idle for hours; a sidecar
//! holds one per open mTLS connection. Here the ciphertext is read into a per-thread scratch buffer and
//! processed there; a connection allocates only for what is left over between two reads (a record that
//! arrived in part, plaintext its reader had no room for, ciphertext the socket would not take yet) and
//! frees it as soon as it is consumed. An idle connection holds rustls's connection state and nothing else.
//!
//! Semantics follow tokio-rustls, which this replaces for the proxy's mTLS: `poll_shutdown` sends
//! close_notify and then shuts the socket's write side down; the peer's close_notify reads as end of
//! stream; a socket that ends without one is an `UnexpectedEof` error, as rustls reports it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::replay::{ClientHelloReader, HelloRead};

/// The most plaintext one `poll_write` takes: four full records, one `write` to the socket.
const MAX_WRITE: usize = 4 * MAX_PLAINTEXT_RECORD;
/// TLS's largest record payload.
const MAX_PLAINTEXT_RECORD: usize = 16 * 1024;
/// A record's header, content type, padding allowance and AEAD tag: room to spare for any suite.
const RECORD_OVERHEAD: usize = 5 + 256 + 64;
/// The per-thread scratch buffer: one write's ciphertext, or one read.
const SCRATCH: usize = MAX_WRITE + 4 * RECORD_OVERHEAD;
/// The least one read asks the socket for: a whole record of the largest size.
const MIN_READ: usize = MAX_PLAINTEXT_RECORD + RECORD_OVERHEAD;
/// What one handshake read asks for (more when a record's header says it is larger).
const HANDSHAKE_READ: usize = 4096;

thread_local! {
    /// Shared by every connection polled on this thread; borrowed only inside one synchronous poll.
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Runs `f` with the thread's scratch buffer, or a buffer of its own if the scratch is in use (a TLS
/// stream whose socket is itself one of these, polled from inside this one).
fn with_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut vec![0; SCRATCH]),
    })
}

/// A rustls unbuffered connection, client or server side.
pub(crate) trait Side:
    std::ops::Deref<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// An established TLS connection over `IO` (see the module docs).
pub(crate) struct LeanTls<IO, C> {
    io: IO,
    conn: C,
    /// Ciphertext read but not yet processed: part of a record, or of a handshake message split over
    /// records. Empty (and unallocated) between records.
    incoming: BytesMut,
    /// Plaintext decrypted but not yet read.
    plaintext: BytesMut,
    /// Ciphertext (records, alerts, handshake messages) not yet written to the socket.
    outgoing: BytesMut,
    /// The peer's close_notify arrived: reads end here.
    peer_closed: bool,
    /// Our close_notify is queued: writes are refused.
    close_sent: bool,
    /// rustls or the socket failed: every later read and write fails the same way, and nothing received
    /// is processed again (rustls's unbuffered connection does not refuse it by itself, and its
    /// handshake deframer may still point into bytes dropped here).
    failed: Option<Box<(io::ErrorKind, String)>>,
    /// A socket read error met after plaintext was delivered in the same call: the next read's answer.
    read_error: Option<io::Error>,
}

/// Where the plaintext of records processed goes.
enum Plaintext<'a, 'b> {
    /// Into the reader's buffer while it has room, the rest into the connection's `plaintext`.
    Read(&'a mut ReadBuf<'b>),
    /// All into the connection's `plaintext` (handshake, write path).
    Keep,
}

/// Where rustls stopped processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// No complete record is left; application data may be sent.
    Writable,
    /// No complete record is left and the handshake cannot go on without one.
    NeedsData,
    /// Both close_notify alerts have been exchanged.
    Closed,
}

/// Application data to encrypt once rustls allows it, and where its ciphertext went.
struct Encrypt<'a> {
    data: &'a [u8],
    /// Queue close_notify instead of encrypting `data`.
    close_notify: bool,
    /// Ciphertext goes here when nothing is queued in `outgoing` before it.
    scratch: &'a mut [u8],
    /// Bytes of `scratch` filled; `None` when the ciphertext went to `outgoing` (or nothing was encrypted).
    in_scratch: Option<usize>,
    done: bool,
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn append<E>(
    out: &mut BytesMut,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(error) => {
                out.truncate(start);
                match required(&error) {
                    Some(size) if size > room => room = size,
                    _ => return Err(error),
                }
            }
        }
    }
}

/// Runs rustls over `buffer` until no complete record is left. Returns how many bytes at the front of
/// `buffer` are consumed (the rest must be presented again, with more behind it) and where rustls stopped.
fn process<C: Side>(
    conn: &mut C,
    buffer: &mut [u8],
    mut plaintext_to: Plaintext<'_, '_>,
    plaintext: &mut BytesMut,
    outgoing: &mut BytesMut,
    peer_closed: &mut bool,
    mut encrypt: Option<&mut Encrypt<'_>>,
) -> (usize, Result<Stopped, rustls::Error>) {
    let mut consumed = 0;
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut buffer[consumed..]);
        let state = match state {
            Ok(state) => state,
            Err(error) => return (consumed + discard, Err(error)),
        };
        let mut extra_discard = 0;
        let stopped = match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = match record {
                        Ok(record) => record,
                        Err(error) => return (consumed + discard, Err(error)),
                    };
                    extra_discard += record.discard;
                    let mut payload = record.payload;
                    if let Plaintext::Read(read) = &mut plaintext_to {
                        let now = payload.len().min(read.remaining());
                        read.put_slice(&payload[..now]);
                        payload = &payload[now..];
                    }
                    plaintext.extend_from_slice(payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let encoded = append(outgoing, |out| encode.encode(out), encode_size);
                if let Err(error) = encoded {
                    let error = rustls::Error::General(format!("encoding a TLS message: {error}"));
                    return (consumed + discard, Err(error));
                }
                None
            }
            ConnectionState::TransmitTlsData(transmit) => {
                // What was encoded is in `outgoing`, which is written in order before anything after it.
                transmit.done();
                None
            }
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                None
            }
            ConnectionState::Closed => Some(Stopped::Closed),
            ConnectionState::BlockedHandshake => Some(Stopped::NeedsData),
            ConnectionState::WriteTraffic(mut traffic) => {
                if let Some(job) = encrypt.as_deref_mut().filter(|job| !job.done) {
                    job.done = true;
                    let sealed = if job.close_notify {
                        append(
                            outgoing,
                            |out| traffic.queue_close_notify(out),
                            required_size,
                        )
                    } else if outgoing.is_empty() {
                        match traffic.encrypt(job.data, &mut *job.scratch) {
                            Ok(written) => {
                                job.in_scratch = Some(written);
                                Ok(())
                            }
                            Err(rustls::unbuffered::EncryptError::InsufficientSize(_)) => append(
                                outgoing,
                                |out| traffic.encrypt(job.data, out),
                                required_size,
                            ),
                            Err(error) => Err(error),
                        }
                    } else {
                        append(
                            outgoing,
                            |out| traffic.encrypt(job.data, out),
                            required_size,
                        )
                    };
                    if let Err(error) = sealed {
                        let error = rustls::Error::General(format!("encrypting: {error}"));
                        return (consumed + discard, Err(error));
                    }
                }
                Some(Stopped::Writable)
            }
            _ => {
                let error = rustls::Error::General("unexpected TLS state (early data)".into());
                return (consumed + discard, Err(error));
            }
        };
        consumed += discard + extra_discard;
        if let Some(stopped) = stopped {
            return (consumed, Ok(stopped));
        }
    }
}

fn encode_size(error: &rustls::unbuffered::EncodeError) -> Option<usize> {
    match error {
        rustls::unbuffered::EncodeError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

fn required_size(error: &rustls::unbuffered::EncryptError) -> Option<usize> {
    match error {
        rustls::unbuffered::EncryptError::InsufficientSize(size) => Some(size.required_size),
        _ => None,
    }
}

/// How much ciphertext to ask the socket for when the reader has `room` bytes free: about that much, so
/// little plaintext is left over to keep, but never less than one whole record.
fn read_size(room: usize) -> usize {
    (room + 2 * RECORD_OVERHEAD).clamp(MIN_READ, SCRATCH)
}

/// A TLS record's total length from its header, once the header is there.
fn record_end(bytes: &[u8]) -> Option<usize> {
    (bytes.len() >= 5).then(|| 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]])))
}

/// Writes `bytes` to `io` until all are sent or it would block; returns how many went. An error (or a
/// socket that takes nothing) may come after part of a record went out, so the stream cannot go on.
fn send<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match Pin::new(&mut *io).poll_write(cx, &bytes[sent..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(written)) => sent += written,
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Pending => break,
        }
    }
    Ok(sent)
}

/// Drops a buffer's allocation once it holds nothing, so an idle connection keeps none.
fn release_if_empty(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

impl<IO, C> LeanTls<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Side + Unpin,
{
    fn new(io: IO, conn: C) -> Self {
        LeanTls {
            io,
            conn,
            incoming: BytesMut::new(),
            plaintext: BytesMut::new(),
            outgoing: BytesMut::new(),
            peer_closed: false,
            close_sent: false,
            failed: None,
            read_error: None,
        }
    }

    /// Processes what `incoming` holds; its consumed front is removed.
    fn process_incoming(
        &mut self,
        plaintext_to: Plaintext<'_, '_>,
        encrypt: Option<&mut Encrypt<'_>>,
    ) -> Result<Stopped, rustls::Error> {
        let (consumed, result) = process(
            &mut self.conn,
            &mut self.incoming,
            plaintext_to,
            &mut self.plaintext,
            &mut self.outgoing,
            &mut self.peer_closed,
            encrypt,
        );
        self.incoming.advance(consumed);
        if self.peer_closed {
            // Nothing after the peer's close_notify is read.
            self.incoming.clear();
        }
        release_if_empty(&mut self.incoming);
        result
    }

    /// After rustls failed, sends the alert it queued for the peer (best effort: the error is what the
    /// caller gets either way). Only queued messages are taken out: processing the received bytes again
    /// would fail on them again.
    fn fail(&mut self, cx: &mut Context<'_>, error: rustls::Error) -> io::Error {
        // Only queued messages: with them waiting, rustls hands them out before it looks at the buffer.
        while self.conn.wants_write() {
            let UnbufferedStatus { state, .. } = self.conn.process(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else {
                break;
            };
            if append(&mut self.outgoing, |out| encode.encode(out), encode_size).is_err() {
                break;
            }
        }
        let _ = self.poll_write_outgoing(cx);
        // Plaintext already decrypted (records before the one that failed) is still read first.
        self.incoming = BytesMut::new();
        self.failed_with(tls_error(error))
    }

    /// Remembers `error` as the connection's last word and returns it.
    fn failed_with(&mut self, error: io::Error) -> io::Error {
        self.failed = Some(Box::new((error.kind(), error.to_string())));
        error
    }

    /// The error an earlier failure left, again.
    fn earlier_failure(&self) -> Option<io::Error> {
        self.failed.as_deref().map(|(kind, message)| {
            io::Error::new(*kind, format!("TLS connection failed earlier: {message}"))
        })
    }

    /// Writes `outgoing` to the socket until it is empty or the socket is full.
    fn poll_write_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sent =
            send(&mut self.io, cx, &self.outgoing).map_err(|error| self.failed_with(error))?;
        self.outgoing.advance(sent);
        if !self.outgoing.is_empty() {
            return Poll::Pending;
        }
        release_if_empty(&mut self.outgoing);
        Poll::Ready(Ok(()))
    }

    /// Reads more ciphertext behind what `incoming` holds: room for `size` bytes, and at least for the rest
    /// of the record it holds part of; `Ok(0)` at the end of the socket's stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<usize>> {
        let want = record_end(&self.incoming).map_or(size, |end| {
            end.saturating_sub(self.incoming.len()).max(size)
        });
        self.incoming.reserve(want);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.incoming)
    }

    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        mut hello: Option<&mut HelloReader>,
    ) -> Poll<io::Result<()>> {
        loop {
            let stopped = match self.process_incoming(Plaintext::Keep, None) {
                Ok(stopped) => stopped,
                Err(error) => return Poll::Ready(Err(self.fail(cx, error))),
            };
            ready!(self.poll_write_outgoing(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if stopped == Stopped::Closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake ended by the peer",
                )));
            }
            let before = self.incoming.len();
            // Handshake flights are a few KB: a burst of handshakes should not hold a record's worth each.
            if ready!(self.poll_read_more(cx, HANDSHAKE_READ))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake eof",
                )));
            }
            if let Some(reader) = hello.as_deref_mut() {
                reader.feed(&self.incoming[before..]);
            }
        }
    }

    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        read: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if read.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Authenticated plaintext already decrypted is delivered even after a failure.
        if !self.plaintext.is_empty() {
            let now = self.plaintext.len().min(read.remaining());
            read.put_slice(&self.plaintext[..now]);
            self.plaintext.advance(now);
            release_if_empty(&mut self.plaintext);
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = self.read_error.take() {
            return Poll::Ready(Err(error));
        }
        if let Some(error) = self.earlier_failure() {
            return Poll::Ready(Err(error));
        }
        let filled_before = read.filled().len();
        loop {
            if self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let step = if self.incoming.is_empty() {
                self.poll_read_into_scratch(cx, read)
            } else {
                match self.poll_read_more(cx, read_size(read.remaining())) {
                    Poll::Ready(Ok(got)) if got > 0 => {
                        match self.process_incoming(Plaintext::Read(read), None) {
                            Ok(_) => Poll::Ready(Ok(got)),
                            Err(error) => Poll::Ready(Err(self.fail(cx, error))),
                        }
                    }
                    other => other,
                }
            };
            // Nothing but a fatal alert (`fail`) is written from here: what rustls queues while reading
            // (a KeyUpdate reply) goes out with the next write, as with tokio-rustls, and a read does not
            // take over the waker of a task waiting to write on the same socket.
            let delivered = read.filled().len() > filled_before;
            let got = match step {
                // Plaintext delivered comes first; the error is the next call's answer (a rustls failure
                // is sticky, a socket's error is kept for it; a socket's end shows again by itself).
                Poll::Pending if delivered => return Poll::Ready(Ok(())),
                Poll::Ready(Err(error)) if delivered => {
                    if self.failed.is_none() {
                        self.read_error = Some(error);
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(got)) => got,
            };
            if got == 0 {
                if delivered {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            // While the socket has more and the reader room for a whole record, read on, as
            // tokio-rustls does: a relay sizes its buffer up only when a read fills it.
            if self.peer_closed || (delivered && read.remaining() < MAX_PLAINTEXT_RECORD) {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads into the thread's scratch buffer and processes the records there; only a partial record
    /// left at the end is copied into the connection's own `incoming`.
    fn poll_read_into_scratch(
        &mut self,
        cx: &mut Context<'_>,
        read: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        with_scratch(|scratch| {
            let want = read_size(read.remaining()).min(scratch.len());
            let mut socket_buf = ReadBuf::new(&mut scratch[..want]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut socket_buf))?;
            let got = socket_buf.filled().len();
            if got == 0 {
                return Poll::Ready(Ok(0));
            }
            let (consumed, result) = process(
                &mut self.conn,
                &mut scratch[..got],
                Plaintext::Read(read),
                &mut self.plaintext,
                &mut self.outgoing,
                &mut self.peer_closed,
                None,
            );
            if let Err(error) = result {
                return Poll::Ready(Err(self.fail(cx, error)));
            }
            if consumed < got && !self.peer_closed {
                self.incoming.extend_from_slice(&scratch[consumed..got]);
            }
            Poll::Ready(Ok(got))
        })
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(error) = self.earlier_failure() {
            return Poll::Ready(Err(error));
        }
        if self.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS connection already shut down for writing",
            )));
        }
        ready!(self.poll_write_outgoing(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        with_scratch(|scratch| {
            let mut job = Encrypt {
                data,
                close_notify: false,
                scratch,
                in_scratch: None,
                done: false,
            };
            match self.process_incoming(Plaintext::Keep, Some(&mut job)) {
                Ok(Stopped::Writable) if job.done => {}
                Ok(_) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "TLS connection cannot send application data",
                    )));
                }
                Err(error) => return Poll::Ready(Err(self.fail(cx, error))),
            }
            if let Some(sealed) = job.in_scratch {
                // Straight from the scratch buffer to the socket; only what it would not take is kept.
                let sent = send(&mut self.io, cx, &job.scratch[..sealed])
                    .map_err(|error| self.failed_with(error))?;
                self.outgoing.extend_from_slice(&job.scratch[sent..sealed]);
            } else {
                // Behind queued TLS messages; errors show on the next write or flush.
                let _ = self.poll_write_outgoing(cx);
            }
            Poll::Ready(Ok(data.len()))
        })
    }

    fn poll_shutdown_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_sent && self.failed.is_none() {
            ready!(self.poll_write_outgoing(cx))?;
            self.close_sent = true;
            let mut job = Encrypt {
                data: &[],
                close_notify: true,
                scratch: &mut [],
                in_scratch: None,
                done: false,
            };
            match self.process_incoming(Plaintext::Keep, Some(&mut job)) {
                // Closed both ways already, or never established: nothing to announce.
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(self.fail(cx, error))),
            }
        }
        if self.failed.is_none() {
            ready!(self.poll_write_outgoing(cx))?;
        }
        // A peer that is already gone has nothing left to be told (tokio-rustls answers the same).
        match ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            result => Poll::Ready(result),
        }
    }
}

impl<IO, C> AsyncRead for LeanTls<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Side + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_inner(cx, buf)
    }
}

impl<IO, C> AsyncWrite for LeanTls<IO, C>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Side + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Even after a failure: what is queued may be the alert that tells the peer why.
        ready!(this.poll_write_outgoing(cx))?;
        if let Some(error) = this.earlier_failure() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_inner(cx)
    }
}

/// The SNI of a ClientHello, read from the bytes the server handshake receives (the unbuffered server
/// connection does not expose it). The reader is dropped once the hello is read or found unreadable
/// (rustls's handshake then reports why).
struct HelloReader {
    reader: Option<ClientHelloReader>,
    sni: Option<String>,
}

impl HelloReader {
    fn new() -> Self {
        HelloReader {
            reader: Some(ClientHelloReader::new()),
            sni: None,
        }
    }

    /// Feeds newly received bytes, until the hello is read or cannot be; after that, does nothing.
    fn feed(&mut self, bytes: &[u8]) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        match reader.feed(bytes) {
            HelloRead::NeedMore => {}
            HelloRead::Read(hello) => {
                self.sni = hello.sni;
                self.reader = None;
            }
            HelloRead::Unreadable => self.reader = None,
        }
    }
}

/// The server side of a mutual-TLS handshake over `io`, and the SNI the client sent.
pub(crate) async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> io::Result<(LeanTls<IO, UnbufferedServerConnection>, Option<String>)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut tls = LeanTls::new(io, conn);
    let mut hello = HelloReader::new();
    poll_fn(|cx| tls.poll_handshake(cx, Some(&mut hello))).await?;
    Ok((tls, hello.sni))
}

/// The client side of a mutual-TLS handshake over `io`, sending `name` as SNI.
pub(crate) async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: IO,
) -> io::Result<LeanTls<IO, UnbufferedClientConnection>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    let mut tls = LeanTls::new(io, conn);
    poll_fn(|cx| tls.poll_handshake(cx, None)).await?;
    Ok(tls)
}

/// What the proxy reads of an established connection's state (peer certificates, ALPN).
impl<IO, C: Side> LeanTls<IO, C> {
    pub(crate) fn state(&self) -> &CommonState {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ironmesh_identity::{
        CaOptions, CertificateAuthority, LocalSigner, RotationOptions, SpiffeId,
        WorkloadCertificates,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    struct Pair {
        client: WorkloadCertificates,
        server: WorkloadCertificates,
        _dir: tempfile::TempDir,
    }

    fn id(name: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", "ns", name).unwrap()
    }

    async fn identities() -> Pair {
        ironmesh_identity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(
            CertificateAuthority::load_or_create(
                &dir.path().join("ca"),
                CaOptions::new("cluster.local"),
            )
            .unwrap(),
        );
        let spawn = |name: &str| {
            WorkloadCertificates::spawn(
                id(name),
                Arc::new(LocalSigner::new(ca.clone(), id(name))),
                RotationOptions::default(),
            )
        };
        let (client, server) = (spawn("client"), spawn("server"));
        client.ready().await;
        server.ready().await;
        Pair {
            client,
            server,
            _dir: dir,
        }
    }

    fn client_config(pair: &Pair, expected: &str) -> Arc<ClientConfig> {
        pair.client
            .client_config(&[id(expected)], vec![b"istio".to_vec()])
    }

    fn sni() -> ServerName<'static> {
        ServerName::try_from("outbound_.8080_._.server.ns.svc.cluster.local").unwrap()
    }

    /// Bytes that differ at every offset, so a lost, repeated or reordered chunk shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    /// Sends `out` (then shuts down) while reading to end of stream, in chunks of `read_chunk`.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        out: Vec<u8>,
        read_chunk: usize,
    ) -> Vec<u8> {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let send = async move {
            writer.write_all(&out).await.unwrap();
            writer.shutdown().await.unwrap();
            writer
        };
        let receive = async move {
            let mut got = Vec::new();
            let mut chunk = vec![0; read_chunk];
            loop {
                let n = reader.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return (got, reader);
                }
                got.extend_from_slice(&chunk[..n]);
            }
        };
        let (_writer, (got, _reader)) = tokio::join!(send, receive);
        got
    }

    async fn lean_pair(
        pair: &Pair,
        pipe: usize,
    ) -> (
        LeanTls<DuplexStream, UnbufferedClientConnection>,
        LeanTls<DuplexStream, UnbufferedServerConnection>,
        Option<String>,
    ) {
        let (near, far) = duplex(pipe);
        let (client, server) = tokio::join!(
            connect(client_config(pair, "server"), sni(), near),
            accept(pair.server.server_config(), far)
        );
        let (server, sni) = server.unwrap();
        (client.unwrap(), server, sni)
    }

    /// Our client against tokio-rustls's server, over a 4 KiB pipe.
    async fn lean_client_buffered_server(
        pair: &Pair,
    ) -> (
        io::Result<LeanTls<DuplexStream, UnbufferedClientConnection>>,
        io::Result<tokio_rustls::server::TlsStream<DuplexStream>>,
    ) {
        let (near, far) = duplex(4096);
        let acceptor = tokio_rustls::TlsAcceptor::from(pair.server.server_config());
        tokio::join!(
            connect(client_config(pair, "server"), sni(), near),
            acceptor.accept(far)
        )
    }

    /// tokio-rustls's client against our server, over a 4 KiB pipe.
    async fn buffered_client_lean_server(
        pair: &Pair,
    ) -> (
        io::Result<tokio_rustls::client::TlsStream<DuplexStream>>,
        io::Result<(
            LeanTls<DuplexStream, UnbufferedServerConnection>,
            Option<String>,
        )>,
    ) {
        let (near, far) = duplex(4096);
        let connector = tokio_rustls::TlsConnector::from(client_config(pair, "server"));
        tokio::join!(
            connector.connect(sni(), near),
            accept(pair.server.server_config(), far)
        )
    }

    #[tokio::test]
    async fn both_sides_carry_bytes_intact_both_ways_and_end_with_close_notify() {
        let pair = identities().await;
        // A 64-byte pipe splits every record over many reads; 1 MiB pipes let several arrive at once.
        for pipe in [64, 1 << 20] {
            let (client, server, sni) = lean_pair(&pair, pipe).await;
            assert_eq!(
                sni.as_deref(),
                Some("outbound_.8080_._.server.ns.svc.cluster.local")
            );
            assert_eq!(
                ironmesh_identity::peer_identity(server.state()),
                Some(id("client")),
                "the server sees the client's SPIFFE ID"
            );
            let (up, down) = (pattern(300_000, 1), pattern(700_000, 2));
            let (got_up, got_down) = tokio::join!(
                exchange(server, down.clone(), 16 * 1024),
                exchange(client, up.clone(), 8 * 1024)
            );
            assert!(
                got_up == up,
                "client to server, pipe {pipe}: {} of {} bytes",
                got_up.len(),
                up.len()
            );
            assert!(
                got_down == down,
                "server to client, pipe {pipe}: {} of {} bytes",
                got_down.len(),
                down.len()
            );
        }
    }

    #[tokio::test]
    async fn interoperates_with_rustls_buffered_streams_on_the_other_side() {
        let pair = identities().await;
        // Our client against tokio-rustls's server.
        let (client, server) = lean_client_buffered_server(&pair).await;
        let (client, server) = (client.unwrap(), server.unwrap());
        assert_eq!(
            server.get_ref().1.server_name(),
            Some("outbound_.8080_._.server.ns.svc.cluster.local")
        );
        let (up, down) = (pattern(100_000, 3), pattern(200_000, 4));
        let (got_up, got_down) = tokio::join!(
            exchange(server, down.clone(), 4096),
            exchange(client, up.clone(), 1000)
        );
        assert!(
            got_up == up && got_down == down,
            "lean client with a buffered server"
        );

        // tokio-rustls's client against our server.
        let (client, server) = buffered_client_lean_server(&pair).await;
        let (client, (server, sni)) = (client.unwrap(), server.unwrap());
        assert_eq!(
            sni.as_deref(),
            Some("outbound_.8080_._.server.ns.svc.cluster.local")
        );
        let (got_up, got_down) = tokio::join!(
            exchange(server, down.clone(), 333),
            exchange(client, up.clone(), 8192)
        );
        assert!(
            got_up == up && got_down == down,
            "buffered client with a lean server"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers() {
        let pair = identities().await;
        let (mut client, mut server, _) = lean_pair(&pair, 256).await;
        let request = pattern(40_000, 5);
        let mut got = vec![0; request.len()];
        // The server reads with a small buffer, so plaintext is left over between reads, and the 256-byte
        // pipe leaves records in part between reads and ciphertext the socket would not take.
        let (written, read) = tokio::join!(
            async {
                client.write_all(&request).await.unwrap();
                client.flush().await.unwrap();
            },
            async {
                let mut at = 0;
                while at < got.len() {
                    let end = (at + 100).min(got.len());
                    at += server.read(&mut got[at..end]).await.unwrap();
                }
            }
        );
        let ((), ()) = (written, read);
        assert!(got == request);
        for (side, buffers) in [
            (
                "client",
                [&client.incoming, &client.plaintext, &client.outgoing],
            ),
            (
                "server",
                [&server.incoming, &server.plaintext, &server.outgoing],
            ),
        ] {
            for (name, buffer) in ["incoming", "plaintext", "outgoing"].iter().zip(buffers) {
                assert_eq!(
                    buffer.capacity(),
                    0,
                    "{side}'s {name} buffer is still allocated while idle"
                );
            }
        }
    }

    #[tokio::test]
    async fn small_reads_get_every_byte_of_large_records() {
        let pair = identities().await;
        let (mut client, mut server, _) = lean_pair(&pair, 1 << 20).await;
        let message = pattern(50_000, 6);
        client.write_all(&message).await.unwrap();
        client.flush().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0; 7];
        while got.len() < message.len() {
            let n = server.read(&mut chunk).await.unwrap();
            assert!(n > 0, "end of stream after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == message);
    }

    #[tokio::test]
    async fn a_socket_that_ends_without_close_notify_is_an_error_not_an_end_of_stream() {
        let pair = identities().await;
        let (client, server) = buffered_client_lean_server(&pair).await;
        let (mut client, (mut server, _)) = (client.unwrap(), server.unwrap());
        client.write_all(b"partial").await.unwrap();
        client.flush().await.unwrap();
        // The client's socket goes away without a close_notify: a truncation, not a clean end.
        drop(client);
        let mut got = Vec::new();
        let error = server.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
        assert_eq!(got, b"partial");
    }

    #[tokio::test]
    async fn a_key_update_from_the_peer_is_answered_and_traffic_goes_on_both_ways() {
        let pair = identities().await;
        let (client, server) = lean_client_buffered_server(&pair).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        for round in 0..3u8 {
            // The buffered side asks for new keys both ways (update_requested), then sends.
            server.get_mut().1.refresh_traffic_keys().unwrap();
            let down = pattern(20_000, round);
            let got = send_and_receive(&mut server, &mut client, &down).await;
            assert!(
                got == down,
                "round {round}: server to client after its key update"
            );
            // Our reply is sealed with our new keys, which the peer must have been told about.
            let up = pattern(20_000, round + 10);
            let got = send_and_receive(&mut client, &mut server, &up).await;
            assert!(
                got == up,
                "round {round}: client to server after our key update"
            );
        }
    }

    /// Writes `data` on one stream while reading as many bytes from the other.
    async fn send_and_receive<W, R>(writer: &mut W, reader: &mut R, data: &[u8]) -> Vec<u8>
    where
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
    {
        let mut got = vec![0; data.len()];
        let (sent, read) = tokio::join!(
            async {
                writer.write_all(data).await?;
                writer.flush().await
            },
            reader.read_exact(&mut got)
        );
        sent.unwrap();
        read.unwrap();
        got
    }

    #[tokio::test]
    async fn after_a_record_fails_to_decrypt_every_read_and_write_fails_and_shutdown_does_not_panic()
     {
        let pair = identities().await;
        let (client, server) = lean_client_buffered_server(&pair).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        // An application-data record that no key opens, straight onto the server's socket.
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        forged.extend_from_slice(&pattern(0x40, 9));
        forged.extend_from_slice(&forged.clone());
        server.get_mut().0.write_all(&forged).await.unwrap();
        let mut buf = [0; 64];
        let first = client.read(&mut buf).await.unwrap_err();
        assert_eq!(first.kind(), io::ErrorKind::InvalidData, "{first}");
        // The second forged record behind the first is never looked at: the failure sticks.
        // (Bounded: without the sticky failure this read would wait for bytes that never come.)
        let again = tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the read after a failure returns at once")
            .unwrap_err();
        assert!(again.to_string().contains("failed earlier"), "{again}");
        let write = client.write_all(b"after").await.unwrap_err();
        assert!(write.to_string().contains("failed earlier"), "{write}");
        let _ = client.shutdown().await;
    }

    #[tokio::test]
    async fn a_server_that_is_not_the_expected_identity_is_refused_and_told_why() {
        let pair = identities().await;
        let (near, far) = duplex(4096);
        let (client, server) = tokio::join!(
            connect(client_config(&pair, "someone-else"), sni(), near),
            accept(pair.server.server_config(), far)
        );
        let client_error = client.err().expect("the client refuses the server");
        assert_eq!(
            client_error.kind(),
            io::ErrorKind::InvalidData,
            "{client_error}"
        );
        // The client's alert reaches the server, which fails its handshake with it.
        let server_error = server.err().expect("the server's handshake fails");
        assert!(
            server_error.to_string().contains("received fatal alert"),
            "the server hears the client's alert: {server_error}"
        );
    }

    #[tokio::test]
    async fn writes_after_shutdown_are_refused_and_reads_go_on_until_the_peer_closes() {
        let pair = identities().await;
        let (mut client, mut server, _) = lean_pair(&pair, 4096).await;
        client.shutdown().await.unwrap();
        let error = client.write_all(b"late").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        // Half-closed: the server still answers, and the client reads it to the server's close_notify.
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
    }
}

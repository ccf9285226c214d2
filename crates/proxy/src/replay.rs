//! Reading an inbound connection's first bytes to decide what it is, then handing the connection on with
//! those bytes replayed in front of the rest. Each step waits for the socket to have data (no `peek` polled
//! with sleeps), and the ClientHello is fed to one rustls `Acceptor` as it arrives instead of re-parsing
//! everything seen so far on every pass.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ironmesh_identity::rewritten::{ReadSide, Rewritten};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Instant;

use crate::detect::{FirstBytes, classify_first_bytes};

/// The most bytes of a ClientHello read for its SNI and ALPN before giving up on them: the largest a
/// handshake message can be, and Envoy's TLS inspector's bound (`TLS_MAX_CLIENT_HELLO`, 64 KiB).
const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// How much one read asks for; a ClientHello usually fits.
const READ_CHUNK: usize = 4096;

/// What the proxy reads from a ClientHello before deciding to terminate or pass TLS through.
#[derive(Debug)]
pub(crate) struct ClientHello {
    pub(crate) alpn: Vec<Vec<u8>>,
    /// The server name (SNI) the client asked for (Envoy's `requested_server_name`, `connection.sni`).
    pub(crate) sni: Option<String>,
}

/// Reads a ClientHello's SNI and ALPN from a connection's bytes as they arrive, with a rustls `Acceptor`
/// (which reassembles the hello across records and reads, and holds a buffered connection's state:
/// boxed, so that its owner can drop it once the hello is read).
pub(crate) struct ClientHelloReader {
    acceptor: Box<Acceptor>,
    fed: usize,
}

/// How far a [`ClientHelloReader`] got.
#[derive(Debug)]
pub(crate) enum HelloRead {
    /// The hello is not complete yet: feed the bytes that come next.
    NeedMore,
    Read(ClientHello),
    /// Not a ClientHello rustls can read, or larger than [`MAX_CLIENT_HELLO`].
    Unreadable,
}

impl ClientHelloReader {
    pub(crate) fn new() -> Self {
        ClientHelloReader {
            acceptor: Box::default(),
            fed: 0,
        }
    }

    /// Feeds the next bytes of the connection (each byte once, in order).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> HelloRead {
        loop {
            let before = bytes.len();
            while !bytes.is_empty() {
                match self.acceptor.read_tls(&mut bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            self.fed += before - bytes.len();
            match self.acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    let alpn = hello.alpn().map(|list| list.map(<[u8]>::to_vec).collect());
                    return HelloRead::Read(ClientHello {
                        alpn: alpn.unwrap_or_default(),
                        sni: hello.server_name().map(str::to_owned),
                    });
                }
                Err(_) => return HelloRead::Unreadable,
                Ok(None) if self.fed >= MAX_CLIENT_HELLO => return HelloRead::Unreadable,
                Ok(None) if bytes.is_empty() => return HelloRead::NeedMore,
                // rustls refused bytes it had no room for: what `accept` processed made room, unless
                // nothing was taken at all, which no later byte can change.
                Ok(None) if bytes.len() == before => return HelloRead::Unreadable,
                Ok(None) => {}
            }
        }
    }
}

/// A connection whose first bytes are being read; [`Sniffer::into_replay`] gives them back.
pub(crate) struct Sniffer<S> {
    stream: S,
    buffer: Vec<u8>,
    /// How long each step waits for the client.
    timeout: Duration,
}

enum Fill {
    Read,
    /// End of stream or a read error.
    Closed,
    TimedOut,
}

impl<S: AsyncRead + Unpin> Sniffer<S> {
    pub(crate) fn new(stream: S, timeout: Duration) -> Self {
        Sniffer {
            stream,
            buffer: Vec::new(),
            timeout,
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Fill {
        self.buffer.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Fill::Closed,
            Ok(Ok(_)) => Fill::Read,
            Err(_) => Fill::TimedOut,
        }
    }

    /// Reads until the first bytes can be classified; a silent client (server-first protocol) or one that
    /// stops early counts as plaintext. `None` when the client closed (or failed) before sending anything.
    pub(crate) async fn first_bytes(&mut self) -> Option<FirstBytes> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match classify_first_bytes(&self.buffer) {
                FirstBytes::NeedMore => {}
                decided => return Some(decided),
            }
            match self.fill(deadline).await {
                Fill::Read => {}
                Fill::Closed if self.buffer.is_empty() => return None,
                Fill::Closed | Fill::TimedOut => return Some(FirstBytes::Plaintext),
            }
        }
    }

    /// Reads the ClientHello's ALPN list and SNI; `None` if it is not parseable in time or too large.
    pub(crate) async fn client_hello(&mut self) -> Option<ClientHello> {
        let deadline = Instant::now() + self.timeout;
        let mut reader = ClientHelloReader::new();
        let mut fed = 0;
        loop {
            match reader.feed(&self.buffer[fed..]) {
                HelloRead::Read(hello) => return Some(hello),
                HelloRead::Unreadable => return None,
                HelloRead::NeedMore => fed = self.buffer.len(),
            }
            if !matches!(self.fill(deadline).await, Fill::Read) {
                return None;
            }
        }
    }

    /// The connection with every byte read so far in front of the rest.
    pub(crate) fn into_replay(self) -> Replay<S> {
        Rewritten::new(self.stream, Prefix::new(self.buffer))
    }
}

/// A stream that yields a buffered prefix, then reads from the inner stream; writes go straight through.
pub(crate) type Replay<S> = Rewritten<S, Prefix>;

/// The reads of a [`Replay`]: the bytes read to classify the connection, then the connection's own.
pub(crate) struct Prefix {
    bytes: Vec<u8>,
    replayed: usize,
}

impl Prefix {
    /// `bytes` in front of a connection's own.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, replayed: 0 }
    }

    /// `front` followed by what this prefix has not replayed yet.
    pub(crate) fn behind(self, front: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(front.len() + self.bytes.len() - self.replayed);
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(&self.bytes[self.replayed..]);
        Self::new(bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.replayed == self.bytes.len()
    }
}

impl<S: AsyncRead + Unpin> ReadSide<S> for Prefix {
    fn poll_read(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = &self.bytes[self.replayed..];
        if rest.is_empty() {
            return Pin::new(inner).poll_read(cx, buf);
        }
        let count = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..count]);
        self.replayed += count;
        if self.replayed == self.bytes.len() {
            // Long-lived connections should not keep the first bytes' buffer.
            self.bytes = Vec::new();
            self.replayed = 0;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A real ClientHello offering Istio's ALPN, for `istio.example`.
    fn client_hello_bytes() -> Vec<u8> {
        client_hello_offering(vec![b"istio-http/1.1".to_vec(), b"http/1.1".to_vec()])
    }

    /// A real ClientHello for `istio.example` offering `alpn`.
    fn client_hello_offering(alpn: Vec<Vec<u8>>) -> Vec<u8> {
        ironmesh_identity::install_crypto_provider();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), "istio.example".try_into().unwrap())
                .unwrap();
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    /// Writes `bytes` in pieces of `piece` bytes, yielding between them so the reader sees each alone.
    async fn trickle(mut writer: DuplexStream, bytes: Vec<u8>, piece: usize) -> DuplexStream {
        for chunk in bytes.chunks(piece) {
            writer.write_all(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
        writer
    }

    async fn read_all<S: AsyncRead + Unpin>(mut stream: S) -> Vec<u8> {
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_client_hello_split_in_pieces_is_read_and_replayed_whole() {
        let hello = client_hello_bytes();
        for piece in [1, 2, 7, 100, hello.len()] {
            let (reader, writer) = duplex(64 * 1024);
            let writing = tokio::spawn(trickle(writer, hello.clone(), piece));
            let mut sniffer = Sniffer::new(reader, TIMEOUT);
            assert_eq!(sniffer.first_bytes().await, Some(FirstBytes::Tls));
            let parsed = sniffer.client_hello().await.expect("a full ClientHello");
            assert_eq!(parsed.sni.as_deref(), Some("istio.example"));
            assert_eq!(
                parsed.alpn,
                [b"istio-http/1.1".to_vec(), b"http/1.1".to_vec()]
            );
            let mut writer = writing.await.unwrap();
            writer.write_all(b"after").await.unwrap();
            drop(writer);
            let mut expected = hello.clone();
            expected.extend_from_slice(b"after");
            assert_eq!(
                read_all(sniffer.into_replay()).await,
                expected,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn the_reader_needs_more_until_the_last_piece_then_reads_the_hello() {
        let hello = client_hello_bytes();
        for piece in [1, 7, 100, hello.len()] {
            let mut reader = ClientHelloReader::new();
            let mut pieces = hello.chunks(piece).peekable();
            while let Some(bytes) = pieces.next() {
                match (reader.feed(bytes), pieces.peek().is_none()) {
                    (HelloRead::NeedMore, false) => {}
                    (HelloRead::Read(parsed), true) => {
                        assert_eq!(parsed.sni.as_deref(), Some("istio.example"));
                        assert_eq!(parsed.alpn.len(), 2);
                    }
                    (other, last) => panic!("piece {piece}, last {last}: {other:?}"),
                }
            }
        }
    }

    /// More than rustls takes in one go (a record and its slack): the bytes it refuses at first are fed
    /// again once it has processed the ones before them.
    #[test]
    fn a_hello_larger_than_rustls_reads_at_once_is_read_from_one_feed() {
        let alpn: Vec<Vec<u8>> = (0..100u8).map(|i| vec![b'a' + i % 26; 255]).collect();
        let hello = client_hello_offering(alpn.clone());
        assert!(hello.len() > 20_000, "{} bytes", hello.len());
        match ClientHelloReader::new().feed(&hello) {
            HelloRead::Read(parsed) => {
                assert_eq!(parsed.alpn, alpn);
                assert_eq!(parsed.sni.as_deref(), Some("istio.example"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_record_that_is_no_client_hello_is_unreadable() {
        let mut reader = ClientHelloReader::new();
        assert!(matches!(
            reader.feed(b"\x16\x03\x01\x00\x05hello-not-a-handshake"),
            HelloRead::Unreadable
        ));
    }

    #[tokio::test]
    async fn plaintext_is_classified_and_replayed() {
        let (reader, writer) = duplex(1024);
        let writing = tokio::spawn(trickle(writer, b"GET / HTTP/1.1\r\n\r\n".to_vec(), 1));
        let mut sniffer = Sniffer::new(reader, TIMEOUT);
        assert_eq!(sniffer.first_bytes().await, Some(FirstBytes::Plaintext));
        drop(writing.await.unwrap());
        assert_eq!(
            read_all(sniffer.into_replay()).await,
            b"GET / HTTP/1.1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_plaintext_and_a_closed_one_is_nothing() {
        let (reader, _writer) = duplex(1024);
        let mut sniffer = Sniffer::new(reader, Duration::from_millis(20));
        assert_eq!(sniffer.first_bytes().await, Some(FirstBytes::Plaintext));

        let (reader, writer) = duplex(1024);
        drop(writer);
        assert_eq!(Sniffer::new(reader, TIMEOUT).first_bytes().await, None);
    }

    #[tokio::test]
    async fn a_truncated_record_start_is_plaintext_and_garbage_is_no_client_hello() {
        let (reader, mut writer) = duplex(1024);
        writer.write_all(&[0x16]).await.unwrap();
        drop(writer);
        let mut sniffer = Sniffer::new(reader, TIMEOUT);
        assert_eq!(sniffer.first_bytes().await, Some(FirstBytes::Plaintext));

        let (reader, mut writer) = duplex(1024);
        writer
            .write_all(b"\x16\x03\x01\x00\x05hello-not-a-handshake")
            .await
            .unwrap();
        drop(writer);
        let mut sniffer = Sniffer::new(reader, TIMEOUT);
        assert_eq!(sniffer.first_bytes().await, Some(FirstBytes::Tls));
        assert!(sniffer.client_hello().await.is_none());
    }

    #[tokio::test]
    async fn writes_go_straight_to_the_inner_stream() {
        let (reader, mut peer) = duplex(1024);
        let mut replay = Sniffer::new(reader, TIMEOUT).into_replay();
        replay.write_all(b"pong").await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}

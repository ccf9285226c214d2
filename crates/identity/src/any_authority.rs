//! gRPC on a Unix socket for any stock client, whatever `:authority` it sends.
//!
//! A Unix socket has no host name, and gRPC clients disagree on what to put in `:authority`: grpc-go sends
//! `localhost` (grpc/grpc-go#3730), gRPC C-core (Python, C++, Ruby) since 1.57 the percent-encoded socket
//! path (`%2Frun%2Fxds.sock`, grpc/grpc#33571), grpc-java the raw path. The h2 crate under tonic parses
//! `:authority` as a URI authority and resets every stream whose value does not parse (hyperium/h2#442,
//! still open in h2 0.4), before any tower layer could look at the request. So the connection is read
//! through [`AnyAuthority`]: it decodes every header block the client sends (HPACK, RFC 7541) and, from
//! the first block with an `:authority` that is not a valid URI authority, re-encodes the blocks with
//! `:authority: localhost` (grpc-go's choice for Unix sockets). Blocks are re-encoded as literals without
//! indexing, so h2's decoder never indexes anything from then on and stays in step; connections whose
//! clients send valid authorities pass through byte for byte. Nothing in ironmesh routes on `:authority`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};
use tonic::codegen::http::uri::Authority;

use crate::rewritten::{ReadSide, Rewritten};

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// h2's SETTINGS_MAX_FRAME_SIZE as the tonic server leaves it (the protocol's initial value): no client
/// frame may be larger, and re-encoded blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// h2's SETTINGS_HEADER_TABLE_SIZE as the tonic server leaves it: the most the client's encoder may use.
const HEADER_TABLE: usize = 4_096;
/// A header block larger than this (encoded) ends the connection; h2 would refuse its decoded size anyway.
const MAX_BLOCK: usize = 256 * 1024;
/// What replaces an `:authority` that is not a URI authority.
const LOCALHOST: &[u8] = b"localhost";

/// A header block in the making: a HEADERS frame and the CONTINUATION frames after it.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, sent on unchanged while nothing needs rewriting.
    raw: Vec<u8>,
}

enum State {
    /// Before the client preface.
    Preface,
    /// Frame by frame; `passing` bytes of a frame that is not a header block are still to be copied.
    Frames { passing: usize },
    /// Not HTTP/2 with prior knowledge: everything is copied.
    Transparent,
}

/// A server connection whose client header blocks carry an `:authority` h2 accepts. Writes go straight
/// through.
pub type AnyAuthority<S> = Rewritten<S, Authorities>;

/// The reads of an [`AnyAuthority`] connection: header blocks rewritten when a client's `:authority` is
/// not a URI authority, everything else as the client sent it.
pub struct Authorities {
    state: State,
    /// Bytes read from the client, not yet looked at.
    input: Vec<u8>,
    /// Bytes ready for the HTTP/2 server.
    output: Vec<u8>,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// Set by the first block that needed a new authority: every later block is re-encoded too.
    rewriting: bool,
    eof: bool,
}

impl Default for Authorities {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE);
        Authorities {
            state: State::Preface,
            input: Vec::new(),
            output: Vec::new(),
            block: None,
            decoder,
            rewriting: false,
            eof: false,
        }
    }
}

impl Authorities {
    /// Moves what can be decided from `input` to `output`; false when more input is needed.
    fn process(&mut self) -> io::Result<bool> {
        match self.state {
            State::Transparent => {
                let moved = !self.input.is_empty();
                self.output.append(&mut self.input);
                Ok(moved)
            }
            State::Preface => {
                let seen = self.input.len().min(PREFACE.len());
                if self.input[..seen] != PREFACE[..seen] {
                    self.state = State::Transparent;
                    return Ok(true);
                }
                if seen < PREFACE.len() {
                    return Ok(false);
                }
                self.output.extend(self.input.drain(..PREFACE.len()));
                self.state = State::Frames { passing: 0 };
                Ok(true)
            }
            State::Frames { passing } if passing > 0 => {
                let n = passing.min(self.input.len());
                self.output.extend(self.input.drain(..n));
                self.state = State::Frames {
                    passing: passing - n,
                };
                Ok(n > 0)
            }
            State::Frames { .. } => self.frame(),
        }
    }

    /// Handles the frame at the start of `input`.
    fn frame(&mut self) -> io::Result<bool> {
        if self.input.len() < FRAME_HEADER {
            return Ok(false);
        }
        let header = &self.input[..FRAME_HEADER];
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if kind != HEADERS && kind != CONTINUATION {
            if self.block.is_some() {
                return Err(protocol("a header block was interrupted by another frame"));
            }
            self.output.extend(self.input.drain(..FRAME_HEADER));
            self.state = State::Frames { passing: length };
            return Ok(true);
        }
        if length > MAX_FRAME {
            return Err(protocol(
                "a header frame is larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        if self.input.len() < FRAME_HEADER + length {
            return Ok(false);
        }
        let raw: Vec<u8> = self.input.drain(..FRAME_HEADER + length).collect();
        let payload = &raw[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let (priority, fragment) = headers_payload(flags, payload)?;
                self.block = Some(Block {
                    stream,
                    flags,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: raw.clone(),
                });
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(&raw);
                block.flags |= flags & END_HEADERS;
                if block.fragment.len() > MAX_BLOCK {
                    return Err(protocol("a header block is larger than 256 KiB"));
                }
            }
            _ => return Err(protocol("a CONTINUATION frame without its HEADERS frame")),
        }
        if flags & END_HEADERS != 0 {
            let block = self
                .block
                .take()
                .expect("a block was just started or continued");
            self.finish(block)?;
        }
        Ok(true)
    }

    /// Decodes a complete block and sends it on, re-encoded when its authority needs replacing.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut fields = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| protocol(&format!("the client's header block does not decode: {e}")))?;
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority" && Authority::try_from(value.as_slice()).is_err() {
                *value = LOCALHOST.to_vec();
                self.rewriting = true;
            }
        }
        if !self.rewriting {
            self.output.extend_from_slice(&block.raw);
            return Ok(());
        }
        let encoded = encode_literals(&fields);
        let mut first = true;
        let mut rest = encoded.as_slice();
        loop {
            let room = if first && block.priority.is_some() {
                MAX_FRAME - 5
            } else {
                MAX_FRAME
            };
            let (chunk, tail) = rest.split_at(rest.len().min(room));
            rest = tail;
            let mut flags = if rest.is_empty() { END_HEADERS } else { 0 };
            let mut payload = Vec::with_capacity(chunk.len() + 5);
            if first {
                flags |= block.flags & END_STREAM;
                if let Some(priority) = block.priority {
                    flags |= PRIORITY;
                    payload.extend_from_slice(&priority);
                }
            }
            payload.extend_from_slice(chunk);
            let kind = if first { HEADERS } else { CONTINUATION };
            write_frame(&mut self.output, kind, flags, block.stream, &payload);
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

fn protocol(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 protocol error from the client: {reason}"),
    )
}

/// The priority fields and the block fragment of a HEADERS payload, without padding.
fn headers_payload(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut padding = 0;
    if flags & PADDED != 0 {
        let (&pad, rest) = body
            .split_first()
            .ok_or_else(|| protocol("a padded HEADERS frame without its pad length"))?;
        padding = usize::from(pad);
        body = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        if body.len() < 5 {
            return Err(protocol("a HEADERS frame too short for its priority"));
        }
        let (fields, rest) = body.split_at(5);
        priority = Some(fields.try_into().expect("five bytes"));
        body = rest;
    }
    if padding > body.len() {
        return Err(protocol("HEADERS padding longer than the frame"));
    }
    Ok((priority, &body[..body.len() - padding]))
}

/// HPACK integer with an `prefix`-bit prefix (RFC 7541 section 5.1); `first` holds the bits above it.
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Every field as a literal without indexing with a literal name (RFC 7541 section 6.2.2), strings
/// without Huffman coding: nothing enters h2's dynamic table, so it never disagrees with the client's.
fn encode_literals(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        encode_integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = payload.len();
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl<S: AsyncRead + Unpin> ReadSide<S> for Authorities {
    fn poll_read(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.output.is_empty() {
                let n = self.output.len().min(buf.remaining());
                buf.put_slice(&self.output[..n]);
                self.output.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                // Whatever is left is an incomplete frame; h2 sees it and the end of the stream.
                if self.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                self.output.append(&mut self.input);
                continue;
            }
            if self.process()? {
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut *inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                self.eof = true;
            } else {
                self.input.extend_from_slice(read.filled());
            }
        }
    }
}

/// The connections of `listener`, each read through [`AnyAuthority`], for
/// `tonic::transport::Server::serve_with_incoming*`.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = io::Result<AnyAuthority<tokio::net::UnixStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener)
        .map(|stream| stream.map(|stream| Rewritten::new(stream, Authorities::default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, kind, flags, stream, payload);
        out
    }

    /// Runs `bytes` through the reader, fed in pieces of `step` bytes, and returns what h2 would read.
    async fn through(bytes: &[u8], step: usize) -> io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let input = bytes.to_vec();
        let writer = tokio::spawn(async move {
            for piece in input.chunks(step) {
                if client.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let mut reader = Rewritten::new(server, Authorities::default());
        let mut out = Vec::new();
        let result = reader.read_to_end(&mut out).await;
        writer.await.unwrap();
        result.map(|_| out)
    }

    /// The header blocks in an HTTP/2 byte stream after the preface, decoded as h2 would.
    fn blocks(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        let mut block = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + length];
            if kind == HEADERS || kind == CONTINUATION {
                let fragment = if kind == HEADERS {
                    headers_payload(flags, payload).unwrap().1
                } else {
                    payload
                };
                block.extend_from_slice(fragment);
                if flags & END_HEADERS != 0 {
                    let fields = decoder.decode(&block).unwrap();
                    out.push(
                        fields
                            .into_iter()
                            .map(|(n, v)| {
                                (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                            })
                            .collect(),
                    );
                    block.clear();
                }
            }
            rest = &rest[FRAME_HEADER + length..];
        }
        out
    }

    fn request(authority: &str) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method".as_slice(), b"POST".to_vec()),
            (b":scheme".as_slice(), b"http".to_vec()),
            (
                b":path".as_slice(),
                b"/istio.v1.auth.IstioCertificateService/CreateCertificate".to_vec(),
            ),
            (b":authority".as_slice(), authority.as_bytes().to_vec()),
            (b"content-type".as_slice(), b"application/grpc".to_vec()),
        ]
    }

    /// A client connection: preface, SETTINGS, and one request per authority on streams 1, 3, …, encoded
    /// with indexing (as gRPC clients do), a DATA frame after each.
    fn connection(
        authorities: &[&str],
        huffman_free_encoder: &mut loona_hpack::Encoder<'_>,
    ) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        for (i, authority) in authorities.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let fields = request(authority);
            let block = huffman_free_encoder.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())));
            bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
            bytes.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        bytes
    }

    fn authorities(bytes: &[u8]) -> Vec<String> {
        blocks(bytes)
            .into_iter()
            .map(|fields| {
                fields
                    .into_iter()
                    .find(|(n, _)| n == ":authority")
                    .unwrap()
                    .1
            })
            .collect()
    }

    #[tokio::test]
    async fn valid_authorities_pass_byte_for_byte() {
        let bytes = connection(
            &["localhost", "ironmesh-ca.invalid:15012"],
            &mut loona_hpack::Encoder::new(),
        );
        for step in [1, 7, 4096] {
            assert_eq!(through(&bytes, step).await.unwrap(), bytes, "step {step}");
        }
    }

    #[tokio::test]
    async fn socket_paths_become_localhost_in_every_form() {
        // C-core's percent-encoded path, grpc-java's raw path, an empty one, a valid one.
        let sent = ["%2Frun%2Fxds.sock", "/run/xds.sock", "", "localhost:1"];
        let bytes = connection(&sent, &mut loona_hpack::Encoder::new());
        for step in [1, 13, 4096] {
            let out = through(&bytes, step).await.unwrap();
            assert_eq!(
                authorities(&out),
                ["localhost", "localhost", "localhost", "localhost:1"],
                "step {step}"
            );
            // Everything else arrives as sent.
            let (before, after) = (blocks(&bytes), blocks(&out));
            for (a, b) in before.iter().zip(&after) {
                let strip = |f: &Vec<(String, String)>| {
                    f.iter()
                        .filter(|(n, _)| n != ":authority")
                        .cloned()
                        .collect::<Vec<_>>()
                };
                assert_eq!(strip(a), strip(b));
            }
        }
    }

    #[tokio::test]
    async fn authorities_taken_from_the_dynamic_table_are_replaced_too() {
        // As C-core encodes: the first request indexes `:path` and `:authority` (incremental indexing,
        // RFC 7541 6.2.1), later ones refer to them (62 is the newest entry).
        fn literal(first: u8, value: &str) -> Vec<u8> {
            let mut out = vec![first, value.len() as u8];
            out.extend_from_slice(value.as_bytes());
            out
        }
        let path = "/istio.v1.auth.IstioCertificateService/CreateCertificate";
        let mut first = vec![0x83, 0x86];
        first.extend(literal(0x44, path));
        first.extend(literal(0x41, "%2Frun%2Fxds.sock"));
        // path = 63, authority = 62
        let second = vec![0x83, 0x86, 0xbf, 0xbe];
        let mut third = vec![0x83, 0x86, 0xbf];
        third.extend(literal(0x41, "localhost:1"));
        // now path = 64, the socket path = 63, localhost:1 = 62
        let fourth = vec![0x83, 0x86, 0xc0, 0xbf];
        let mut bytes = PREFACE.to_vec();
        for (i, block) in [first, second, third, fourth].iter().enumerate() {
            bytes.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1 + 2 * i as u32,
                block,
            ));
        }
        let out = through(&bytes, 3).await.unwrap();
        assert_eq!(
            authorities(&bytes),
            [
                "%2Frun%2Fxds.sock",
                "%2Frun%2Fxds.sock",
                "localhost:1",
                "%2Frun%2Fxds.sock"
            ]
        );
        assert_eq!(
            authorities(&out),
            ["localhost", "localhost", "localhost:1", "localhost"]
        );
        assert!(
            blocks(&out)
                .iter()
                .all(|b| b.iter().any(|(n, v)| n == ":path" && v == path))
        );
    }

    #[tokio::test]
    async fn padded_prioritised_and_continued_blocks_are_understood() {
        let mut encoder = loona_hpack::Encoder::new();
        let fields = request("%2Fa.sock");
        let block = encoder.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())));
        let (head, tail) = block.split_at(block.len() / 2);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, tail));
        let out = through(&bytes, 5).await.unwrap();
        assert_eq!(authorities(&out), ["localhost"]);
        let flags = out[PREFACE.len() + 4];
        assert_eq!(flags, PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(
            &out[PREFACE.len() + FRAME_HEADER..][..5],
            &[0x80, 0, 0, 0, 15]
        );
    }

    #[tokio::test]
    async fn a_large_block_is_cut_into_frames_h2_accepts() {
        let mut fields = request("%2Fa.sock");
        let big = vec![b'x'; 40_000];
        fields.push((b"x-big".as_slice(), big.clone()));
        let block = encode_literals(
            &fields
                .iter()
                .map(|(n, v)| (n.to_vec(), v.clone()))
                .collect::<Vec<_>>(),
        );
        let mut bytes = PREFACE.to_vec();
        for (i, chunk) in block.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= block.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            bytes.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        let out = through(&bytes, 4096).await.unwrap();
        assert_eq!(authorities(&out), ["localhost"]);
        let mut rest = &out[PREFACE.len()..];
        while !rest.is_empty() {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(length <= MAX_FRAME);
            rest = &rest[FRAME_HEADER + length..];
        }
        assert_eq!(blocks(&out)[0].last().unwrap().1.len(), big.len());
    }

    #[tokio::test]
    async fn other_protocols_and_broken_blocks() {
        // Not HTTP/2 prior knowledge: copied as is.
        let http1 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(through(http1, 3).await.unwrap(), http1);
        // A header block that does not decode ends the connection (h2 would answer COMPRESSION_ERROR).
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert_eq!(
            through(&bytes, 64).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A CONTINUATION out of nowhere too.
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        assert!(through(&bytes, 64).await.is_err());
    }

    #[test]
    fn integers_follow_rfc_7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_integer(&mut out, 0, 5, 10);
        assert_eq!(out, [0b01010]);
        out.clear();
        encode_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [0b11111, 0b1001_1010, 0b0000_1010]);
    }
}

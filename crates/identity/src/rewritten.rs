//! A connection whose reads go through a rewriter and whose writes go straight to the connection: the
//! one adapter under [`AnyAuthority`](crate::any_authority::AnyAuthority) (client header blocks with an
//! `:authority` h2 accepts) and the proxy's replay of the first bytes it read to classify a connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a [`Rewritten`] connection's reads do: fill `buf` from `inner`, as `AsyncRead::poll_read` does.
pub trait ReadSide<S> {
    fn poll_read(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>>;
}

/// `inner` read through `reads`; writes, flushes and shutdowns go to `inner` unchanged.
#[derive(Debug)]
pub struct Rewritten<S, R> {
    inner: S,
    reads: R,
}

impl<S, R> Rewritten<S, R> {
    pub fn new(inner: S, reads: R) -> Self {
        Rewritten { inner, reads }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection and its rewriter, with whatever the rewriter holds.
    pub fn into_parts(self) -> (S, R) {
        (self.inner, self.reads)
    }

    /// The connection; what the rewriter holds and has not handed out yet is dropped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Unpin, R: ReadSide<S> + Unpin> AsyncRead for Rewritten<S, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reads.poll_read(&mut this.inner, cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, R: Unpin> AsyncWrite for Rewritten<S, R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected, R> tonic::transport::server::Connected
    for Rewritten<S, R>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

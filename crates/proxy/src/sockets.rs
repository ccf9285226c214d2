//! The proxy's view of the network: dialing upstreams and reading a redirected connection's original
//! destination. Production uses marked sockets and `SO_ORIGINAL_DST`; tests plug in a loopback fake.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::{TcpSocket, TcpStream};

/// The mark the proxy's own sockets carry so the iptables rules let them through (0x539).
pub const PROXY_MARK: u32 = 1337;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sockets behind a trait so the whole proxy runs in-process in tests without root.
pub trait SocketLayer: Send + Sync + 'static {
    /// Opens a connection from the proxy to `destination` (a pod IP, a VIP passthrough, or the app on
    /// 127.0.0.1). Must not be captured again by the proxy's own rules.
    fn connect(&self, destination: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>>;
    /// Where an intercepted connection was going before the REDIRECT.
    fn original_destination(&self, accepted: &TcpStream) -> io::Result<SocketAddr>;
}

/// The real network: `SO_MARK` on outgoing sockets, `SO_ORIGINAL_DST` on accepted ones.
#[derive(Debug, Clone)]
pub struct SystemSockets {
    pub mark: Option<u32>,
}

impl Default for SystemSockets {
    fn default() -> Self {
        Self {
            mark: Some(PROXY_MARK),
        }
    }
}

impl SocketLayer for SystemSockets {
    fn connect(&self, destination: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            let socket = if destination.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(mark) = self.mark
                && let Err(error) = socket2::SockRef::from(&socket).set_mark(mark)
                // SO_MARK needs CAP_NET_ADMIN, which the proxy container does not have: there the
                // interception rules let uid 1337's traffic through instead (Istio's REDIRECT mode).
                && error.kind() != std::io::ErrorKind::PermissionDenied
            {
                // Without the mark our own upstream connection would be redirected back into the proxy.
                return Err(error);
            }
            socket.set_nodelay(true)?;
            socket.connect(destination).await
        })
    }

    fn original_destination(&self, accepted: &TcpStream) -> io::Result<SocketAddr> {
        let socket = socket2::SockRef::from(accepted);
        let original = match accepted.local_addr()? {
            SocketAddr::V4(_) => socket.original_dst_v4()?,
            SocketAddr::V6(_) => socket.original_dst_v6()?,
        };
        original
            .as_socket()
            .ok_or_else(|| io::Error::other("SO_ORIGINAL_DST returned a non-IP address"))
    }
}

/// Closes a connection with a TCP RST (SO_LINGER 0), which the peer sees as ECONNRESET (curl exit 56).
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}

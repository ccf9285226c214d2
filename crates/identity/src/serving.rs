//! The control plane's own TLS listener for proxies over TCP (istiod's 15012): a serving certificate
//! issued by the mesh CA for the names proxies dial (`istiod.istio-system.svc`), renewed at half life and
//! whenever the CA's root changes, behind a resolver so the listener's config never needs rebuilding;
//! TLS 1.3 only, ALPN `h2`; a bound on connections and on the handshake's duration.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ca::{CaError, CertificateAuthority};
use crate::pem::certs_from_pem;

/// How long the serving certificate lives; it is renewed at half of it.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The listener's limits.
#[derive(Clone, Debug)]
pub struct ServingLimits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client that has not finished the TLS handshake by then is dropped.
    pub handshake_timeout: Duration,
}

impl Default for ServingLimits {
    fn default() -> Self {
        ServingLimits {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The control plane's serving certificate, issued by its CA and swapped in place on renewal.
#[derive(Debug)]
pub struct ServingCertificate {
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    current: ArcSwap<CertifiedKey>,
}

impl ServingCertificate {
    /// Issues the first certificate for `names` (DNS names or IP addresses).
    pub fn issue(ca: Arc<CertificateAuthority>, names: Vec<String>) -> Result<Arc<Self>, CaError> {
        let current = ArcSwap::from(certified(&ca, &names)?);
        Ok(Arc::new(ServingCertificate { ca, names, current }))
    }

    /// Issues a new certificate and serves it from the next handshake on.
    pub fn renew(&self) -> Result<(), CaError> {
        self.current.store(certified(&self.ca, &self.names)?);
        Ok(())
    }

    /// The leaf of the certificate served now (DER).
    pub fn leaf_der(&self) -> Vec<u8> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// Renews at half life and at every change of the CA's trust bundle, until `shutdown`.
    pub async fn keep_renewed(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut bundle = self.ca.watch_trust_bundle();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(SERVING_CERT_TTL / 2) => {}
                changed = bundle.changed() => if changed.is_err() { return },
            }
            if let Err(error) = self.renew() {
                tracing::warn!(%error, "cannot renew the control plane's serving certificate; the current one stays");
            }
        }
    }

    /// A server config presenting this certificate: TLS 1.3 only, ALPN `h2`, no client certificate (the
    /// proxy authenticates with its token).
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::mesh_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    }
}

fn certified(ca: &CertificateAuthority, names: &[String]) -> Result<Arc<CertifiedKey>, CaError> {
    let (chain, key_pem) = ca.issue_server_certificate(names, SERVING_CERT_TTL)?;
    let bad = |reason: String| {
        CaError::BadPlugIn(format!("the serving certificate is unusable: {reason}"))
    };
    let mut certs = Vec::new();
    for pem in &chain {
        certs.extend(certs_from_pem(pem).map_err(bad)?);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let key = rustls::crypto::ring::sign::any_ecdsa_type(&key).map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

#[derive(Debug)]
struct Resolver(Arc<ServingCertificate>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

/// One accepted TLS connection; holds its place among [`ServingLimits::max_connections`] until dropped.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = Option<std::net::SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.get_ref().0.peer_addr().ok()
    }
}

/// The TLS connections of `listener` for `tonic::transport::Server::serve_with_incoming*`: each
/// handshake runs in its own task under [`ServingLimits::handshake_timeout`]; failed handshakes are
/// logged and dropped, never ending the stream.
pub fn tls_incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    limits: ServingLimits,
) -> impl tokio_stream::Stream<Item = io::Result<TlsConnection>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%error, "cannot accept a proxy connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender, timeout) =
                (acceptor.clone(), sender.clone(), limits.handshake_timeout);
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender
                            .send(Ok(TlsConnection {
                                stream,
                                _permit: permit,
                            }))
                            .await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake with a proxy failed")
                    }
                    Err(_) => {
                        tracing::debug!(%peer, ?timeout, "TLS handshake with a proxy timed out")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

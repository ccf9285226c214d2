//! Full mTLS handshakes per second at a server-side listener: a Rust client loop (TLS 1.3, client
//! certificate from our CA, session resumption disabled so every connection is a full handshake).
//! After each handshake it sends one `Connection: close` request and reads to EOF, so the server has
//! finished verifying the client certificate before the handshake is counted.
#![allow(
    unsafe_code,
    reason = "SO_MARK on the client socket is set with libc::setsockopt"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::error::{BenchError, Result};

/// Result of a handshake run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HandshakeSummary {
    pub handshakes: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|error| BenchError::Certificates(format!("{}: {error}", path.display())))
}

#[cfg(test)]
pub(crate) fn root_store(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_chain(ca)? {
        roots
            .add(cert)
            .map_err(|error| BenchError::Certificates(error.to_string()))?;
    }
    Ok(roots)
}

/// Accepts any server certificate but checks the handshake signature: the run measures the server's
/// cost, and ironmesh's server certificates carry only a SPIFFE URI SAN, which webpki name checks reject.
#[derive(Debug)]
struct ServerCostOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for ServerCostOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client config presenting `cert`/`key`, with resumption disabled. It offers the suites in a
/// client sidecar's order (the mesh's provider: AES-128-GCM-SHA256 first), so every server, ours and the
/// peers (which follow the client's order by default), negotiates what sidecars negotiate; rustls's
/// default order made them all pay a SHA-384 key schedule that mesh handshakes do not.
pub fn client_config(cert: &Path, key: &Path, alpn: &[String]) -> Result<ClientConfig> {
    let provider = ironmesh_identity::mesh_provider();
    let chain = read_chain(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| BenchError::Certificates(format!("{}: {error}", key.display())))?;
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| BenchError::Certificates(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerCostOnly(provider)))
        .with_client_auth_cert(chain, key)
        .map_err(|error| BenchError::Certificates(error.to_string()))?;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn
        .iter()
        .map(|protocol| protocol.as_bytes().to_vec())
        .collect();
    Ok(config)
}

/// Runs `concurrency` loops of connect + full handshake + one request for `duration`.
pub async fn run(
    target: SocketAddr,
    config: ClientConfig,
    server_name: &str,
    concurrency: u32,
    duration: Duration,
    mark: Option<u32>,
) -> Result<HandshakeSummary> {
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|error| BenchError::Certificates(format!("server name {server_name}: {error}")))?;
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let connector = connector.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, 0u64);
            while Instant::now() < end {
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    one_handshake(&connector, target, name.clone(), mark),
                )
                .await
                {
                    Ok(Ok(())) => done += 1,
                    _ => failed += 1,
                }
            }
            (done, failed)
        }));
    }
    let mut summary = HandshakeSummary {
        seconds: duration.as_secs_f64(),
        ..Default::default()
    };
    for task in tasks {
        let (done, failed) = task.await.unwrap_or((0, 1));
        summary.handshakes += done;
        summary.errors += failed;
    }
    summary.per_second = summary.handshakes as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

async fn one_handshake(
    connector: &TlsConnector,
    target: SocketAddr,
    name: ServerName<'static>,
    mark: Option<u32>,
) -> std::io::Result<()> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let mut tls = connector.connect(name, stream).await?;
    tls.write_all(b"GET /bytes/16 HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n")
        .await?;
    let mut sink = Vec::with_capacity(512);
    tls.read_to_end(&mut sink).await.or_else(|error| {
        // Peers that close without close_notify still delivered the response.
        if error.kind() == std::io::ErrorKind::UnexpectedEof && !sink.is_empty() {
            Ok(0)
        } else {
            Err(error)
        }
    })?;
    if sink.starts_with(b"HTTP/1.1 200") || sink.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("no 200 response after the handshake"))
    }
}

/// Puts SO_MARK on the socket so interception rules that exempt the proxy's mark let it through.
fn set_mark(socket: &TcpSocket, mark: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live u32 and its exact size.
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

//! The webhook server on loopback for the webhook and injector tests, and a TLS client that trusts only
//! its generated CA (as the API server, given `caBundle`). `mod webhook_server;` in each test file.
#![allow(dead_code, reason = "each test file uses part of it")]

use std::net::SocketAddr;
use std::sync::Arc;

use ironmesh_kube::webhook::{ServeLimits, ServingCert, serve_with};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// The name the test certificate is for, and that the client verifies.
pub const HOST: &str = "istiod.istio-system.svc";

/// A running webhook server (validation and injection); it stops when dropped, or with [`Self::stop`].
pub struct TestWebhook {
    pub address: SocketAddr,
    pub cert: ServingCert,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl TestWebhook {
    /// Serves on a free loopback port with `limits` and a certificate of a fresh CA.
    pub async fn start(limits: ServeLimits) -> TestWebhook {
        ironmesh_kube::webhook::install_crypto_provider();
        let cert = ServingCert::generate(&["127.0.0.1".to_owned(), HOST.to_owned()]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with(
            listener,
            cert.server_config().unwrap(),
            limits,
            shutdown.clone(),
        ));
        TestWebhook {
            address,
            cert,
            shutdown,
            server,
        }
    }

    /// A TLS connection that trusts only the server's CA, with `version` only when given.
    pub async fn connect(
        &self,
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls_pki_types::CertificateDer::from_pem_slice(self.cert.ca_pem.as_bytes())
                    .unwrap(),
            )
            .unwrap();
        let config = match version {
            Some(version) => rustls::ClientConfig::builder_with_protocol_versions(&[version]),
            None => rustls::ClientConfig::builder(),
        }
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// POSTs `body` as JSON to `path` on a connection of its own and returns the whole HTTP answer.
    pub async fn post(
        &self,
        path: &str,
        body: &[u8],
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> String {
        let mut tls = self.connect(version).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {HOST}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    /// Stops the server and waits for its accept loop to end.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        (&mut self.server).await.unwrap();
    }
}

impl Drop for TestWebhook {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

//! Where the control plane listens (`unix:///path`, `http://host:port`, or `https://host:port` as on
//! Kubernetes: istiod's `istiod.istio-system.svc:15012`) and how to open a gRPC channel to it: the one
//! place that knows how to dial a Unix socket or TLS for tonic, used by the CA client and the
//! configuration stream alike.
//!
//! Over `https` the control plane's certificate is verified against the root in a file (Istio mounts
//! the namespace's ConfigMap `istio-ca-root-cert` at `/var/run/secrets/istio/root-cert.pem`), read at
//! every connection so a rotated root is picked up; TLS 1.3 only, ALPN `h2`, the URL's host as the
//! server name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A parsed `IRONMESH_CONTROL_PLANE` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlaneAddress {
    Unix(PathBuf),
    Http(String),
    /// TLS over TCP: the URL, and the file holding the root(s) the control plane's certificate must
    /// chain to ([`DEFAULT_ROOT_FILE`] unless [`ControlPlaneAddress::with_root_file`] says otherwise).
    Https {
        url: String,
        root_file: PathBuf,
    },
}

/// Where Istio's proxies find the mesh root: the namespace's ConfigMap `istio-ca-root-cert` (key
/// `root-cert.pem`) mounted at `/var/run/secrets/istio`.
pub const DEFAULT_ROOT_FILE: &str = "/var/run/secrets/istio/root-cert.pem";

impl ControlPlaneAddress {
    /// The same address with the control plane's root read from `root_file` (https only).
    pub fn with_root_file(self, root_file: impl Into<PathBuf>) -> Self {
        match self {
            Self::Https { url, .. } => Self::Https {
                url,
                root_file: root_file.into(),
            },
            other => other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "control plane address {0:?} must be unix:///path/to/xds.sock, http://host:port or https://host:port"
    )]
    BadAddress(String),
    #[error(
        "cannot connect to the control plane at {address}: {source}; is `ironmesh control-plane` running?"
    )]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
}

impl std::str::FromStr for ControlPlaneAddress {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(EndpointError::BadAddress(text.to_string()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.starts_with("http://") && text.parse::<Uri>().is_ok() {
            return Ok(Self::Http(text.to_string()));
        }
        if text.starts_with("https://")
            && let Ok(uri) = text.parse::<Uri>()
            && uri.host().is_some_and(|h| !h.is_empty())
        {
            return Ok(Self::Https {
                url: text.to_string(),
                root_file: PathBuf::from(DEFAULT_ROOT_FILE),
            });
        }
        Err(EndpointError::BadAddress(text.to_string()))
    }
}

impl std::fmt::Display for ControlPlaneAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Http(url) | Self::Https { url, .. } => f.write_str(url),
        }
    }
}

/// Dials `path` for every connection tonic opens.
fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        }
    })
}

/// Why a TLS connection to the control plane failed; each says what to check.
fn tls_error(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

/// The client configuration for the control plane: the roots in `root_file`, TLS 1.3, ALPN h2.
fn tls_client_config(root_file: &Path) -> std::io::Result<rustls::ClientConfig> {
    let pem = std::fs::read_to_string(root_file).map_err(|e| {
        tls_error(format!(
            "cannot read the control plane's root {}: {e}; mount the namespace's ConfigMap istio-ca-root-cert \
             there (ironmesh kube-inject does) or set IRONMESH_CONTROL_PLANE_ROOT",
            root_file.display()
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = crate::pem::certs_from_pem(&pem).map_err(|e| {
        tls_error(format!(
            "the control plane's root {} is not PEM: {e}",
            root_file.display()
        ))
    })?;
    for cert in certs {
        roots.add(cert).map_err(|e| {
            tls_error(format!(
                "the control plane's root {} is unusable: {e}",
                root_file.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(tls_error(format!(
            "{} holds no certificate; it should be the mesh root (ConfigMap istio-ca-root-cert)",
            root_file.display()
        )));
    }
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials the URI's host and port over TLS for every connection tonic opens.
fn tls_connector(
    root_file: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Future<
        Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    > + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| {
        let root_file = root_file.clone();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| tls_error(format!("{uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let config = tls_client_config(&root_file)?;
            let server_name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| tls_error(format!("{host} is not a valid server name: {e}")))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .map_err(|e| {
                    tls_error(format!(
                        "TLS with the control plane at {host}:{port} failed: {e}; check that its \
                         certificate chains to the root in {} and names {host}",
                        root_file.display()
                    ))
                })?;
            Ok(TokioIo::new(tls))
        }
    })
}

/// The tonic endpoint for `address`; a Unix socket gets a placeholder URI (required by tonic, unused: the
/// connector always dials the socket path).
fn endpoint(address: &ControlPlaneAddress) -> Result<Endpoint, EndpointError> {
    match address {
        ControlPlaneAddress::Http(url) => {
            Endpoint::from_shared(url.clone()).map_err(|source| EndpointError::Connect {
                address: address.to_string(),
                source,
            })
        }
        ControlPlaneAddress::Unix(_) => Ok(Endpoint::from_static("http://control-plane.invalid")),
        // The connector speaks TLS itself; tonic sees plain HTTP/2 over it (same authority).
        ControlPlaneAddress::Https { url, .. } => {
            let plain = format!("http://{}", &url["https://".len()..]);
            Endpoint::from_shared(plain).map_err(|source| EndpointError::Connect {
                address: address.to_string(),
                source,
            })
        }
    }
}

/// Opens (eagerly) a gRPC channel to the control plane.
pub async fn connect_channel(address: &ControlPlaneAddress) -> Result<Channel, EndpointError> {
    let endpoint = endpoint(address)?;
    let connected = match address {
        ControlPlaneAddress::Http(_) => endpoint.connect().await,
        ControlPlaneAddress::Unix(path) => {
            endpoint
                .connect_with_connector(unix_connector(path.clone()))
                .await
        }
        ControlPlaneAddress::Https { root_file, .. } => {
            endpoint
                .connect_with_connector(tls_connector(root_file.clone()))
                .await
        }
    };
    connected.map_err(|source| EndpointError::Connect {
        address: address.to_string(),
        source,
    })
}

/// A channel to the control plane that connects on first use (and again after a failure), each attempt
/// bounded by `connect_timeout`.
pub fn lazy_channel(
    address: &ControlPlaneAddress,
    connect_timeout: Duration,
) -> Result<Channel, EndpointError> {
    let endpoint = endpoint(address)?.connect_timeout(connect_timeout);
    Ok(match address {
        ControlPlaneAddress::Http(_) => endpoint.connect_lazy(),
        ControlPlaneAddress::Unix(path) => {
            endpoint.connect_with_connector_lazy(unix_connector(path.clone()))
        }
        ControlPlaneAddress::Https { root_file, .. } => {
            endpoint.connect_with_connector_lazy(tls_connector(root_file.clone()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_into_their_transport() {
        assert_eq!(
            "unix:///run/ironmesh/xds.sock"
                .parse::<ControlPlaneAddress>()
                .unwrap(),
            ControlPlaneAddress::Unix("/run/ironmesh/xds.sock".into())
        );
        assert_eq!(
            "http://127.0.0.1:15012"
                .parse::<ControlPlaneAddress>()
                .unwrap(),
            ControlPlaneAddress::Http("http://127.0.0.1:15012".into())
        );
        let https: ControlPlaneAddress = "https://istiod.istio-system.svc:15012".parse().unwrap();
        assert_eq!(
            https,
            ControlPlaneAddress::Https {
                url: "https://istiod.istio-system.svc:15012".into(),
                root_file: DEFAULT_ROOT_FILE.into(),
            }
        );
        assert_eq!(
            https.clone().with_root_file("/tmp/root.pem"),
            ControlPlaneAddress::Https {
                url: "https://istiod.istio-system.svc:15012".into(),
                root_file: "/tmp/root.pem".into(),
            }
        );
        assert_eq!(https.to_string(), "https://istiod.istio-system.svc:15012");
        for bad in ["unix://", "https://", "ftp://x", "istiod:15012"] {
            let error = bad.parse::<ControlPlaneAddress>().unwrap_err();
            assert!(
                error.to_string().contains("https://host:port"),
                "{bad}: {error}"
            );
        }
    }
}

//! Where the control plane listens (`unix:///path` or `http://host:port`) and how to open a gRPC channel to
//! it: the one place that knows how to dial a Unix socket for tonic, used by the CA client and the
//! configuration stream alike.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A parsed `IRONMESH_CONTROL_PLANE` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlaneAddress {
    Unix(PathBuf),
    Http(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("control plane address {0:?} must be unix:///path/to/xds.sock or http://host:port")]
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
        Err(EndpointError::BadAddress(text.to_string()))
    }
}

impl std::fmt::Display for ControlPlaneAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Http(url) => f.write_str(url),
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
    })
}

//! Where the control plane listens (`unix:///path` or `http://host:port`) and how to open a gRPC channel to it.

use std::path::PathBuf;

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

/// Opens (eagerly) a gRPC channel to the control plane.
pub async fn connect_channel(address: &ControlPlaneAddress) -> Result<Channel, EndpointError> {
    let to_error = |source| EndpointError::Connect {
        address: address.to_string(),
        source,
    };
    match address {
        ControlPlaneAddress::Http(url) => {
            let endpoint = Endpoint::from_shared(url.clone()).map_err(to_error)?;
            endpoint.connect().await.map_err(to_error)
        }
        ControlPlaneAddress::Unix(path) => {
            let path = path.clone();
            // The URI is required by tonic but unused: the connector below always dials the socket path.
            let endpoint = Endpoint::from_static("http://control-plane.invalid");
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        tokio::net::UnixStream::connect(path)
                            .await
                            .map(TokioIo::new)
                    }
                }))
                .await
                .map_err(to_error)
        }
    }
}

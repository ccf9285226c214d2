//! The typed client of the CLI API, used by the `ironmesh` CLI (one connection per request).

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::error::Reason;
use crate::object::ObjectKey;
use crate::store::{ApplyItem, ApplyOptions, ApplyResult, ObjectList, WatchEvent};
use crate::wire::{
    ApplyRequest, AuthzQuery, CaRoots, ClusterTable, ErrorBody, Explanation, ListRequest,
    LogsQuery, PodQuery, ProxySecret, ProxySyncReport, ServerInfo, StatusRequest, TlsCheckQuery,
    WatchRequest,
};

/// Why a CLI API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the control plane is not running (no answer on {socket}: {source}); start it with `ironmesh up`"
    )]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The server refused the request; print it as `Error from server (<reason>): <message>`.
    #[error("Error from server ({}): {message}", reason.as_str())]
    Server { reason: Reason, message: String },
    #[error(
        "the control plane answered something unexpected ({0}); are the CLI and the control plane the same version?"
    )]
    Protocol(String),
}

impl ClientError {
    /// The kubectl-style reason when the server refused the request.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ClientError::Server { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// A client of the control plane's CLI API at `$IRONMESH_HOME/run/api.sock`.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: &Path) -> Self {
        ApiClient {
            socket: socket.to_path_buf(),
        }
    }

    async fn send(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::post(path)
            .header("host", "ironmesh")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = self.send(path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Whether a control plane answers, and what it holds.
    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        self.call("/v1/info", &Value::Null).await
    }

    /// How far every sidecar's configuration has gone (served by the control plane).
    pub async fn proxy_status(&self) -> Result<ProxySyncReport, ClientError> {
        self.call("/v1/proxy-status", &Value::Null).await
    }

    /// The mesh options the control plane runs with (`/v1/mesh`).
    pub async fn mesh(&self) -> Result<ironmesh_api::mesh::MeshOptions, ClientError> {
        self.call("/v1/mesh", &Value::Null).await
    }

    /// The CA's roots (`/v1/ca/root`).
    pub async fn ca_roots(&self) -> Result<CaRoots, ClientError> {
        self.call("/v1/ca/root", &Value::Null).await
    }

    /// Adds a new root to the control plane's CA; both are trusted until [`Self::ca_retire_root`].
    pub async fn ca_rotate_root(&self) -> Result<CaRoots, ClientError> {
        self.call("/v1/ca/rotate-root", &Value::Null).await
    }

    /// Drops every root but the current one from the control plane's CA.
    pub async fn ca_retire_root(&self) -> Result<CaRoots, ClientError> {
        self.call("/v1/ca/retire-root", &Value::Null).await
    }

    /// Which AuthorizationPolicy allows or denies a request, explained by the control plane.
    pub async fn explain_authz(&self, query: &AuthzQuery) -> Result<Explanation, ClientError> {
        self.call("/v1/explain/authz", query).await
    }

    /// The policy engine's TLS verdict per service port (`tls-check`), from the control plane.
    pub async fn explain_tls_check(
        &self,
        query: &TlsCheckQuery,
    ) -> Result<Explanation, ClientError> {
        self.call("/v1/explain/tls-check", query).await
    }

    /// A sidecar's outbound clusters, as the control plane computes its configuration.
    pub async fn proxy_clusters(&self, query: &PodQuery) -> Result<ClusterTable, ClientError> {
        self.call("/v1/proxy-config/cluster", query).await
    }

    /// The certificates a sidecar holds, asked of it by the control plane.
    pub async fn proxy_secret(&self, query: &PodQuery) -> Result<ProxySecret, ClientError> {
        self.call("/v1/proxy-config/secret", query).await
    }

    /// Copies a container's log to `out` as the control plane sends it (with `follow`, until the log's
    /// pod is gone or `out` fails, e.g. a closed pipe: then it stops quietly, as `tail -f` does).
    pub async fn logs(
        &self,
        query: &LogsQuery,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(query).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = self.send("/v1/logs", body).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .to_bytes();
            return Err(server_error(status, &bytes));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Ok(data) = frame.into_data()
                && (out.write_all(&data).is_err() || out.flush().is_err())
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies all items in one transaction (all or nothing).
    pub async fn apply(
        &self,
        items: Vec<ApplyItem>,
        options: ApplyOptions,
    ) -> Result<Vec<ApplyResult>, ClientError> {
        self.call("/v1/apply", &ApplyRequest { items, options })
            .await
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<Value, ClientError> {
        self.call("/v1/get", key).await
    }

    pub async fn list(
        &self,
        plural: Option<&str>,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<ObjectList, ClientError> {
        let request = ListRequest {
            plural: plural.map(str::to_string),
            namespace: namespace.map(str::to_string),
            label_selector: label_selector.map(str::to_string),
        };
        self.call("/v1/list", &request).await
    }

    /// Deletes one object and answers it.
    pub async fn delete(&self, key: &ObjectKey) -> Result<Value, ClientError> {
        self.call("/v1/delete", key).await
    }

    /// Replaces `status` of one object (generation unchanged).
    pub async fn update_status(
        &self,
        key: &ObjectKey,
        status: Value,
    ) -> Result<Value, ClientError> {
        self.call(
            "/v1/status",
            &StatusRequest {
                key: key.clone(),
                status,
            },
        )
        .await
    }

    /// Asks the control plane to stop.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let _: Value = self.call("/v1/shutdown", &Value::Null).await?;
        Ok(())
    }

    /// Opens a watch: see [`WatchRequest`] for the resourceVersion semantics.
    pub async fn watch(&self, request: &WatchRequest) -> Result<WatchStream, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = self.send("/v1/watch", body).await?;
        if !response.status().is_success() {
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .to_bytes();
            let error: ErrorBody =
                serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
            return Err(ClientError::Server {
                reason: error.reason,
                message: error.message,
            });
        }
        Ok(WatchStream {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }
}

/// The error a refused request answers (an [`ErrorBody`]).
fn server_error(status: http::StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(error) => ClientError::Server {
            reason: error.reason,
            message: error.message,
        },
        Err(_) => ClientError::Protocol(format!(
            "status {status}: {}",
            String::from_utf8_lossy(bytes)
        )),
    }
}

/// A stream of watch events, one JSON document per line.
pub struct WatchStream {
    body: Incoming,
    buffer: BytesMut,
}

impl WatchStream {
    /// The next event; `None` when the server ended the stream (list and watch again).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                return Some(
                    serde_json::from_slice(&line[..end])
                        .map_err(|e| ClientError::Protocol(e.to_string())),
                );
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(e) => return Some(Err(ClientError::Protocol(e.to_string()))),
            }
        }
    }
}

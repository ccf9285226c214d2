//! The CLI API server: HTTP/1.1 + JSON over a Unix socket, backed by the [`Store`].

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::error::{Reason, StoreError};
use crate::object::ObjectKey;
use crate::selector::LabelSelector;
use crate::store::{EventType, Store, WatchEvent};
use crate::wire::{ApplyRequest, ErrorBody, ListRequest, ServerInfo, StatusRequest, WatchRequest};

/// Largest request body accepted (a big manifest is a few MB).
const MAX_BODY: usize = 64 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// Routes another component serves on the same socket: the control plane answers what it owns (the CA,
/// the explanations, the sidecars' configuration and secrets) next to the store's own routes, so the CLI
/// talks to one API whatever answers.
pub trait Routes: Send + Sync + 'static {
    /// The answer to `path` with the request's JSON `body`, or `None` when `path` is not one of these.
    fn route(
        &self,
        path: &str,
        body: Bytes,
    ) -> Option<BoxFuture<'static, Result<Reply, RouteError>>>;
}

/// What a [`Routes`] answers.
pub enum Reply {
    /// A JSON document.
    Json(serde_json::Value),
    /// Raw bytes as they come (`application/octet-stream`, chunked), e.g. a followed log.
    Stream(ByteStream),
}

/// The chunks of a [`Reply::Stream`] (`Sync`, as the server's response bodies are).
pub type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = Bytes> + Send + Sync>>;

/// A refused request of a [`Routes`]: the client prints it as `Error from server (<reason>): <message>`.
#[derive(Debug, Clone)]
pub struct RouteError {
    pub reason: Reason,
    pub message: String,
}

impl RouteError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        RouteError {
            reason,
            message: message.into(),
        }
    }
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "another control plane already answers on {0}; stop it with `ironmesh down` or use another IRONMESH_HOME"
    )]
    AlreadyServing(PathBuf),
    #[error(transparent)]
    Bind(ironmesh_home::HomeError),
}

/// Serves the CLI API on `socket` until `shutdown` is cancelled (also by a `/v1/shutdown` request), then
/// removes the socket file.
pub async fn serve_api(
    store: Arc<Store>,
    socket: &Path,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_api_with(store, socket, shutdown, None).await
}

/// [`serve_api`], with `routes` answering the paths the store does not serve (the control plane's).
pub async fn serve_api_with(
    store: Arc<Store>,
    socket: &Path,
    shutdown: CancellationToken,
    routes: Option<Arc<dyn Routes>>,
) -> Result<(), ServeError> {
    let listener = match ironmesh_home::bind_unix(socket) {
        Ok(listener) => listener,
        Err(ironmesh_home::HomeError::SocketInUse { path }) => {
            return Err(ServeError::AlreadyServing(path));
        }
        Err(other) => return Err(ServeError::Bind(other)),
    };
    let listener = UnixListener::from_std(listener).map_err(|source| {
        ServeError::Bind(ironmesh_home::HomeError::Io {
            action: "listen on",
            path: socket.to_path_buf(),
            source,
        })
    })?;
    tracing::info!(socket = %socket.display(), "CLI API listening");
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the CLI API socket failed");
                    continue;
                }
            },
        };
        let store = store.clone();
        let shutdown = shutdown.clone();
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let store = store.clone();
                let shutdown = shutdown.clone();
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(route(store, shutdown, routes, request).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "CLI API connection ended with an error");
            }
        });
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}

async fn route(
    store: Arc<Store>,
    shutdown: CancellationToken,
    routes: Option<Arc<dyn Routes>>,
    request: Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::POST {
        return error_response(
            Reason::BadRequest,
            "the CLI API takes POST requests with a JSON body".into(),
        );
    }
    let path = request.uri().path().to_string();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error_response(Reason::BadRequest, format!("cannot read the body: {e}")),
    };
    match path.as_str() {
        "/v1/info" => {
            blocking(store, move |store| {
                let list = store.list(None, None, &LabelSelector::default())?;
                Ok(ServerInfo {
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    store_path: store.path().display().to_string(),
                    resource_version: list.resource_version,
                    objects: list.items.len(),
                })
            })
            .await
        }
        "/v1/apply" => {
            with_request(store, &body, |store, r: ApplyRequest| {
                store.apply(&r.items, &r.options)
            })
            .await
        }
        "/v1/get" => with_request(store, &body, |store, key: ObjectKey| store.get(&key)).await,
        "/v1/list" => {
            with_request(store, &body, |store, r: ListRequest| {
                let selector =
                    LabelSelector::parse(r.label_selector.as_deref().unwrap_or_default())?;
                store.list(r.plural.as_deref(), r.namespace.as_deref(), &selector)
            })
            .await
        }
        "/v1/delete" => {
            with_request(store, &body, |store, key: ObjectKey| store.delete(&key)).await
        }
        "/v1/status" => {
            with_request(store, &body, |store, r: StatusRequest| {
                store.update_status(&r.key, r.status)
            })
            .await
        }
        "/v1/watch" => match serde_json::from_slice::<WatchRequest>(&body) {
            Ok(r) => watch(store, shutdown, r),
            Err(e) => error_response(Reason::BadRequest, format!("bad watch request: {e}")),
        },
        "/v1/shutdown" => {
            shutdown.cancel();
            json_response(StatusCode::OK, &serde_json::json!({"stopping": true}))
        }
        other => match routes.and_then(|routes| routes.route(other, body)) {
            Some(answer) => match answer.await {
                Ok(Reply::Json(value)) => json_response(StatusCode::OK, &value),
                Ok(Reply::Stream(chunks)) => stream_response(chunks),
                Err(e) => error_response(e.reason, e.message),
            },
            None => error_response(
                Reason::NotFound,
                format!("no route {other}; this CLI and control plane may be different versions"),
            ),
        },
    }
}

fn stream_response(chunks: ByteStream) -> Response<Body> {
    let frames = chunks.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

async fn with_request<R, T>(
    store: Arc<Store>,
    body: &[u8],
    handler: impl FnOnce(&Store, R) -> Result<T, StoreError> + Send + 'static,
) -> Response<Body>
where
    R: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
{
    match serde_json::from_slice::<R>(body) {
        Ok(request) => blocking(store, move |store| handler(store, request)).await,
        Err(e) => error_response(Reason::BadRequest, format!("bad request body: {e}")),
    }
}

async fn blocking<T: Serialize + Send + 'static>(
    store: Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Response<Body> {
    match tokio::task::spawn_blocking(move || work(&store)).await {
        Ok(Ok(answer)) => json_response(StatusCode::OK, &answer),
        Ok(Err(e)) => error_response(e.reason(), e.to_string()),
        Err(e) => error_response(
            Reason::InternalError,
            format!("request handler failed: {e}"),
        ),
    }
}

fn watch(store: Arc<Store>, shutdown: CancellationToken, request: WatchRequest) -> Response<Body> {
    let plural = request.plural.clone();
    let namespace = request.namespace.clone();
    let (initial, since, receiver) = if let Some(rv) = request.resource_version {
        match store.subscribe_from(rv) {
            Ok((backlog, receiver)) => {
                // The backlog is replayed; live events start after its last one.
                let last = backlog.last().map_or(rv, |e| e.resource_version);
                let wanted_backlog: Vec<WatchEvent> = backlog
                    .into_iter()
                    .filter(|e| {
                        plural.as_ref().is_none_or(|p| p == &e.plural)
                            && namespace
                                .as_deref()
                                .is_none_or(|ns| crate::object::namespace_of(&e.object) == Some(ns))
                    })
                    .collect();
                (wanted_backlog, last, receiver)
            }
            Err(e) => return error_response(e.reason(), e.to_string()),
        }
    } else {
        match store.list_and_subscribe(plural.as_deref(), namespace.as_deref()) {
            Ok((list, receiver)) => {
                let initial = list
                    .items
                    .into_iter()
                    .map(|object| WatchEvent {
                        event_type: EventType::Added,
                        plural: plural
                            .clone()
                            .or_else(|| crate::kinds::plural_of(&object))
                            .unwrap_or_default(),
                        resource_version: crate::object::resource_version_of(&object),
                        object,
                    })
                    .collect();
                (initial, list.resource_version, receiver)
            }
            Err(e) => return error_response(e.reason(), e.to_string()),
        }
    };
    let wanted = move |event: &WatchEvent| {
        event.resource_version > since
            && plural.as_ref().is_none_or(|p| p == &event.plural)
            && namespace
                .as_deref()
                .is_none_or(|ns| crate::object::namespace_of(&event.object) == Some(ns))
    };
    let live = futures::stream::unfold(
        (receiver, shutdown),
        move |(mut receiver, shutdown)| async move {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return None,
                next = receiver.recv() => next,
            };
            match next {
                Ok(event) => Some((event, (receiver, shutdown))),
                // The client must list again; ending the stream tells it so.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => None,
            }
        },
    )
    .filter(move |event| futures::future::ready(wanted(event)));
    let frames = futures::stream::iter(initial).chain(live).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn error_response(reason: Reason, message: String) -> Response<Body> {
    let status =
        StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &ErrorBody { reason, message })
}

//! The server side of the configuration stream: per-proxy latest snapshot, debounced pushes, ACK/NACK state.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::proxy_config_service_server::{ProxyConfigService, ProxyConfigServiceServer};
use crate::pb::{ConfigPush, ProxyConfig, ProxyMessage, proxy_message};
use ironmesh_identity::{AuthFailure, TokenAuthenticator};

/// Refusal from the [`Authenticator`]; its text is returned to the proxy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// Decides whether `token` (the bearer token of the stream) may subscribe as `proxy_id` (`<pod>.<namespace>`).
pub type Authenticator = Arc<dyn Fn(&str, &str) -> Result<(), AuthError> + Send + Sync>;

/// How subscriptions are checked: a decision made in place, or a [`TokenAuthenticator`] that tells whose
/// token it is (it may ask the API server), whose pod must then be the one the proxy subscribes as.
#[derive(Clone)]
enum Check {
    Decide(Authenticator),
    Tokens(Arc<dyn TokenAuthenticator>),
}

impl Check {
    async fn check(&self, token: &str, proxy_id: &str) -> Result<(), Status> {
        match self {
            Check::Decide(decide) => decide(token, proxy_id)
                .map_err(|error| Status::permission_denied(format!("proxy {proxy_id}: {error}"))),
            Check::Tokens(auth) => {
                let claims = auth
                    .authenticate(token)
                    .await
                    .map_err(|error| match error {
                        AuthFailure::Refused(reason) => {
                            Status::permission_denied(format!("proxy {proxy_id}: {reason}"))
                        }
                        AuthFailure::Unavailable(reason) => {
                            Status::unavailable(format!("proxy {proxy_id}: {reason}"))
                        }
                    })?;
                let expected = claims.proxy_id();
                if expected == proxy_id {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "proxy {proxy_id}: the token is bound to pod {expected}, not {proxy_id}; use the pod's own token file"
                    )))
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Bind(#[from] ironmesh_home::HomeError),
    #[error("the configuration gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// After a change, wait this long so that a burst of publishes turns into one push.
    pub debounce: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
        }
    }
}

/// What the hub knows about one proxy (for `proxy-status` style output and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStatus {
    /// Number of live streams for this proxy (normally 0 or 1).
    pub streams: u32,
    /// Version most recently published for this proxy.
    pub published_version: Option<String>,
    /// Version the proxy last acknowledged (or reported holding on reconnect).
    pub acked_version: Option<String>,
    /// Last refusal: (version, resource, reason).
    pub last_nack: Option<(String, String, String)>,
    /// Time from `publish` to the proxy's ACK of that version.
    pub last_push_latency: Option<Duration>,
    /// Number of snapshots sent to the proxy.
    pub pushes: u64,
}

#[derive(Clone)]
struct Published {
    config: Arc<ProxyConfig>,
    at: Instant,
}

struct Entry {
    latest: watch::Sender<Option<Published>>,
    status: ProxyStatus,
}

struct Inner {
    proxies: Mutex<HashMap<String, Entry>>,
    check: Check,
    options: HubOptions,
}

/// The push hub. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ConfigHub {
    inner: Arc<Inner>,
}

/// A stable version for a configuration: a hash of its encoding (ignoring any version already set), so that a
/// restarted control plane computing the same configuration does not push it again.
pub fn content_version(config: &ProxyConfig) -> String {
    let mut unversioned = config.clone();
    unversioned.version.clear();
    // FNV-1a: stable across builds and processes, unlike std's randomly keyed hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in unversioned.encode_to_vec() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl ConfigHub {
    pub fn new(authenticator: Authenticator, options: HubOptions) -> Self {
        Self::checking(Check::Decide(authenticator), options)
    }

    /// A hub whose subscribers prove with their token (checked by `auth`) that they are the pod they
    /// subscribe as.
    pub fn with_token_authenticator(
        auth: Arc<dyn TokenAuthenticator>,
        options: HubOptions,
    ) -> Self {
        Self::checking(Check::Tokens(auth), options)
    }

    fn checking(check: Check, options: HubOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                proxies: Mutex::default(),
                check,
                options,
            }),
        }
    }

    /// Sets the configuration of `proxy_id`; connected proxies get it after the debounce delay. An empty
    /// `version` is replaced by [`content_version`]. Publishing the version already held is a no-op.
    pub fn publish(&self, proxy_id: &str, mut config: ProxyConfig) {
        if config.version.is_empty() {
            config.version = content_version(&config);
        }
        let mut proxies = self.lock();
        let entry = proxies
            .entry(proxy_id.to_string())
            .or_insert_with(new_entry);
        if entry.status.published_version.as_deref() == Some(config.version.as_str()) {
            return;
        }
        entry.status.published_version = Some(config.version.clone());
        entry.latest.send_replace(Some(Published {
            config: Arc::new(config),
            at: Instant::now(),
        }));
    }

    /// Forgets a proxy (its pod is gone); its open stream stays open but receives nothing more.
    pub fn remove(&self, proxy_id: &str) {
        self.lock().remove(proxy_id);
    }

    pub fn status(&self, proxy_id: &str) -> Option<ProxyStatus> {
        self.lock().get(proxy_id).map(|entry| entry.status.clone())
    }

    /// Every known proxy with its status, sorted by id.
    pub fn statuses(&self) -> Vec<(String, ProxyStatus)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.status.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The tonic service to mount on the control plane's gRPC server (next to the CA service).
    pub fn service(&self) -> ProxyConfigServiceServer<HubService> {
        ProxyConfigServiceServer::new(HubService { hub: self.clone() })
    }

    /// Serves only this hub on a Unix socket until `shutdown` completes (tests, small deployments).
    pub async fn serve_unix(
        &self,
        path: &Path,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), HubError> {
        let listener = tokio::net::UnixListener::from_std(ironmesh_home::bind_unix(path)?)
            .map_err(|e| ironmesh_home::HomeError::Io {
                action: "listen on",
                path: path.to_path_buf(),
                source: e,
            })?;
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }

    /// Serves only this hub on an already bound TCP listener until `shutdown` completes.
    pub async fn serve_tcp(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), HubError> {
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner
            .proxies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, proxy_id: &str, change: impl FnOnce(&mut ProxyStatus)) {
        if let Some(entry) = self.lock().get_mut(proxy_id) {
            change(&mut entry.status);
        }
    }

    async fn run_stream(
        self,
        proxy_id: String,
        known_version: String,
        mut inbound: Streaming<ProxyMessage>,
        outbound: mpsc::Sender<Result<ConfigPush, Status>>,
    ) {
        let mut latest = {
            let mut proxies = self.lock();
            let entry = proxies.entry(proxy_id.clone()).or_insert_with(new_entry);
            entry.status.streams += 1;
            entry.latest.subscribe()
        };
        // Counts the stream down however this task ends (closed, failed or cancelled).
        let _stream_guard = StreamGuard {
            hub: self.clone(),
            proxy_id: proxy_id.clone(),
        };
        let mut sent: Option<Published> = None;
        let current = latest.borrow_and_update().clone();
        if let Some(current) = current {
            if current.config.version == known_version {
                // The proxy already holds it (reconnect): skip the identical push.
                self.update(&proxy_id, |status| {
                    status.acked_version = Some(known_version.clone())
                });
                sent = Some(current);
            } else if self.push(&proxy_id, &outbound, &current).await {
                sent = Some(current);
            } else {
                return;
            }
        }
        loop {
            tokio::select! {
                changed = latest.changed() => {
                    if changed.is_err() {
                        break; // proxy removed from the hub
                    }
                    tokio::time::sleep(self.inner.options.debounce).await;
                    let Some(current) = latest.borrow_and_update().clone() else { continue };
                    if sent.as_ref().is_some_and(|sent| sent.config.version == current.config.version) {
                        continue;
                    }
                    if !self.push(&proxy_id, &outbound, &current).await {
                        break;
                    }
                    sent = Some(current);
                }
                message = inbound.message() => {
                    let Ok(Some(message)) = message else { break };
                    self.record_reply(&proxy_id, message, sent.as_ref());
                }
            }
        }
    }

    async fn push(
        &self,
        proxy_id: &str,
        outbound: &mpsc::Sender<Result<ConfigPush, Status>>,
        published: &Published,
    ) -> bool {
        let push = ConfigPush {
            config: Some((*published.config).clone()),
        };
        if outbound.send(Ok(push)).await.is_err() {
            return false;
        }
        self.update(proxy_id, |status| status.pushes += 1);
        tracing::debug!(proxy = proxy_id, version = %published.config.version, "pushed configuration");
        true
    }

    fn record_reply(&self, proxy_id: &str, message: ProxyMessage, sent: Option<&Published>) {
        match message.kind {
            Some(proxy_message::Kind::Ack(ack)) => {
                let latency = sent
                    .filter(|sent| sent.config.version == ack.version)
                    .map(|sent| sent.at.elapsed());
                self.update(proxy_id, |status| {
                    status.acked_version = Some(ack.version);
                    if latency.is_some() {
                        status.last_push_latency = latency;
                    }
                });
            }
            Some(proxy_message::Kind::Nack(nack)) => {
                tracing::warn!(proxy = proxy_id, version = %nack.version, resource = %nack.resource,
                    reason = %nack.reason, "proxy refused configuration");
                self.update(proxy_id, |status| {
                    status.last_nack = Some((nack.version, nack.resource, nack.reason))
                });
            }
            Some(proxy_message::Kind::Subscribe(_)) | None => {}
        }
    }
}

struct StreamGuard {
    hub: ConfigHub,
    proxy_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.hub.update(&self.proxy_id, |status| {
            status.streams = status.streams.saturating_sub(1)
        });
    }
}

fn new_entry() -> Entry {
    Entry {
        latest: watch::channel(None).0,
        status: ProxyStatus::default(),
    }
}

/// The tonic service behind [`ConfigHub::service`].
pub struct HubService {
    hub: ConfigHub,
}

fn bearer_token<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

#[tonic::async_trait]
impl ProxyConfigService for HubService {
    type StreamConfigStream = Pin<Box<dyn Stream<Item = Result<ConfigPush, Status>> + Send>>;

    async fn stream_config(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let token = bearer_token(&request);
        let mut inbound = request.into_inner();
        let subscribe = match inbound.message().await? {
            Some(ProxyMessage {
                kind: Some(proxy_message::Kind::Subscribe(subscribe)),
            }) => subscribe,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of the stream must be Subscribe",
                ));
            }
        };
        self.hub
            .inner
            .check
            .check(&token, &subscribe.proxy_id)
            .await?;
        let (outbound, receiver) = mpsc::channel(4);
        let hub = self.hub.clone();
        tokio::spawn(hub.run_stream(
            subscribe.proxy_id,
            subscribe.known_version,
            inbound,
            outbound,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

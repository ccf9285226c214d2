//! The proxy side of the configuration stream: subscribe, compile each push once into what the proxy
//! serves, ACK/NACK, keep the last good compiled snapshot, reconnect with jittered exponential backoff and
//! resend the known version.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

use crate::pb::proxy_config_service_client::ProxyConfigServiceClient;
use crate::pb::{Ack, Nack, ProxyConfig, ProxyMessage, Subscribe, proxy_message};
use crate::validate::{CompiledConfig, ConfigRejection, compile_config};
use ironmesh_identity::{ControlPlaneAddress, EndpointError, connect_channel};

/// Where the bearer token comes from. A file is re-read on every connection so a rotated token is picked up.
#[derive(Debug, Clone)]
pub enum TokenSource {
    None,
    Static(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("cannot read the pod token {path}: {source}; check IRONMESH_TOKEN_FILE")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("the control plane refused the stream: {0}")]
    Refused(#[from] tonic::Status),
}

/// How a received configuration becomes what the proxy serves, in one step (an error is NACKed and the
/// last good one kept); [`compile_config`] for a client that needs no more.
pub type Compile<T> = Arc<dyn Fn(ProxyConfig) -> Result<T, ConfigRejection> + Send + Sync>;

#[derive(Clone)]
pub struct ConfigClientOptions {
    pub address: ControlPlaneAddress,
    /// `<pod>.<namespace>`
    pub proxy_id: String,
    pub token: TokenSource,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ConfigClientOptions {
    pub fn new(
        address: ControlPlaneAddress,
        proxy_id: impl Into<String>,
        token: TokenSource,
    ) -> Self {
        Self {
            address,
            proxy_id: proxy_id.into(),
            token,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(15),
        }
    }
}

/// A running subscription, holding configurations compiled into `T`. Dropping it stops the background
/// task; the last good config stays readable in receivers obtained before.
pub struct ConfigClient<T = CompiledConfig> {
    config: watch::Receiver<Option<Arc<T>>>,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl<T> Drop for ConfigClient<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigClient {
    /// Starts the subscription on the current tokio runtime, compiling with [`compile_config`].
    pub fn spawn(options: ConfigClientOptions) -> Self {
        Self::spawn_compiling(options, Arc::new(compile_config))
    }
}

impl<T: Send + Sync + 'static> ConfigClient<T> {
    /// Starts the subscription on the current tokio runtime; `compile` turns each push into what is served.
    pub fn spawn_compiling(options: ConfigClientOptions, compile: Compile<T>) -> Self {
        let (config_tx, config) = watch::channel(None);
        let (connected_tx, connected) = watch::channel(false);
        let task = tokio::spawn(run(options, compile, config_tx, connected_tx));
        Self {
            config,
            connected,
            task,
        }
    }

    /// The last good configuration (`None` until the first one is applied).
    pub fn config(&self) -> watch::Receiver<Option<Arc<T>>> {
        self.config.clone()
    }

    /// Whether a stream to the control plane is currently established.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }
}

fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// What one stream needs and what outlives it.
struct Subscription<T> {
    options: ConfigClientOptions,
    compile: Compile<T>,
    config_tx: watch::Sender<Option<Arc<T>>>,
    connected_tx: watch::Sender<bool>,
    /// The version of the last applied configuration, sent on reconnect; empty before the first.
    known_version: String,
}

async fn run<T>(
    options: ConfigClientOptions,
    compile: Compile<T>,
    config_tx: watch::Sender<Option<Arc<T>>>,
    connected_tx: watch::Sender<bool>,
) {
    let mut backoff = options.backoff_initial;
    let mut subscription = Subscription {
        options,
        compile,
        config_tx,
        connected_tx,
        known_version: String::new(),
    };
    loop {
        let result = session(&mut subscription, &mut backoff).await;
        let Subscription {
            options,
            connected_tx,
            ..
        } = &subscription;
        connected_tx.send_replace(false);
        match result {
            Ok(()) => {
                tracing::info!(address = %options.address, "configuration stream closed; reconnecting")
            }
            Err(error) => tracing::warn!(%error, "configuration stream failed; reconnecting"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(options.backoff_max);
    }
}

async fn read_token(source: &TokenSource) -> Result<Option<String>, ClientError> {
    match source {
        TokenSource::None => Ok(None),
        TokenSource::Static(token) => Ok(Some(token.clone())),
        TokenSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map(|token| Some(token.trim().to_string()))
            .map_err(|source| ClientError::Token {
                path: path.display().to_string(),
                source,
            }),
    }
}

fn message(kind: proxy_message::Kind) -> ProxyMessage {
    ProxyMessage { kind: Some(kind) }
}

async fn session<T>(
    subscription: &mut Subscription<T>,
    backoff: &mut Duration,
) -> Result<(), ClientError> {
    let options = &subscription.options;
    let token = read_token(&options.token).await?;
    let channel = connect_channel(&options.address).await?;
    let mut client = ProxyConfigServiceClient::new(channel);
    let (replies, outbound) = mpsc::channel(4);
    let subscribe = Subscribe {
        proxy_id: options.proxy_id.clone(),
        known_version: subscription.known_version.clone(),
    };
    // Cannot fail: the receiver is alive and the channel is empty.
    let _ = replies
        .send(message(proxy_message::Kind::Subscribe(subscribe)))
        .await;
    let mut request = Request::new(ReceiverStream::new(outbound));
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    let mut pushes = client.stream_config(request).await?.into_inner();
    subscription.connected_tx.send_replace(true);
    *backoff = options.backoff_initial;
    tracing::info!(address = %options.address, proxy = %options.proxy_id, "configuration stream established");
    while let Some(push) = pushes.message().await? {
        let Some(config) = push.config else { continue };
        let version = config.version.clone();
        let reply = match (subscription.compile)(config) {
            Ok(compiled) => {
                subscription
                    .config_tx
                    .send_replace(Some(Arc::new(compiled)));
                subscription.known_version = version.clone();
                tracing::info!(%version, "applied configuration");
                proxy_message::Kind::Ack(Ack { version })
            }
            Err(rejection) => {
                tracing::warn!(%version, %rejection, "refused configuration; keeping the last good one");
                proxy_message::Kind::Nack(Nack {
                    version,
                    resource: rejection.resource,
                    reason: rejection.reason,
                })
            }
        };
        if replies.send(message(reply)).await.is_err() {
            break;
        }
    }
    Ok(())
}

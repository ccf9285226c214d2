//! The data plane: binds the outbound and inbound listeners, follows configuration updates, and drains.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use ironmesh_identity::WorkloadCertificates;
use ironmesh_proto::pb::ProxyConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context::Context;
pub use crate::context::WorkloadInfo;
use crate::index::ConfigIndex;
use crate::limits::{Acceptor, ConnectionCount, ConnectionLimits};
use crate::metrics::{Metrics, PodLabels};
use crate::sockets::SocketLayer;
use crate::upstream::Pools;
use crate::{inbound, outbound};

/// Where to listen and how long to wait for a client's first bytes.
#[derive(Debug, Clone)]
pub struct DataPlaneOptions {
    pub workload: WorkloadInfo,
    /// 0.0.0.0:15001 in a pod; 127.0.0.1:0 in tests.
    pub outbound_listen: SocketAddr,
    /// 0.0.0.0:15006 in a pod; 127.0.0.1:0 in tests.
    pub inbound_listen: SocketAddr,
    pub peek_timeout: Duration,
    /// Timeouts and the connection cap (inbound and outbound share it).
    pub limits: ConnectionLimits,
    /// The pod's IP (`POD_IP`), where the inbound forwards; `None`: the connection's original destination.
    pub pod_ip: Option<IpAddr>,
}

impl DataPlaneOptions {
    pub fn new(workload: WorkloadInfo) -> Self {
        Self {
            workload,
            outbound_listen: SocketAddr::from(([0, 0, 0, 0], 15001)),
            inbound_listen: SocketAddr::from(([0, 0, 0, 0], 15006)),
            peek_timeout: Duration::from_secs(1),
            limits: ConnectionLimits::DATA_PLANE,
            pod_ip: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error(
        "cannot listen on {address}: {source}; is another proxy already running in this network namespace?"
    )]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A running data plane. Must be started inside the runtime that should carry the proxied traffic.
pub struct DataPlane {
    outbound_addr: SocketAddr,
    inbound_addr: SocketAddr,
    context: Arc<Context>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(address: SocketAddr) -> Result<TcpListener, DataPlaneError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| DataPlaneError::Bind { address, source })
}

impl DataPlane {
    pub async fn start(
        options: DataPlaneOptions,
        certs: WorkloadCertificates,
        mut config: watch::Receiver<Option<Arc<ConfigIndex>>>,
        sockets: Arc<dyn SocketLayer>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, DataPlaneError> {
        let outbound_listener = bind(options.outbound_listen).await?;
        let inbound_listener = bind(options.inbound_listen).await?;
        let outbound_addr =
            outbound_listener
                .local_addr()
                .map_err(|source| DataPlaneError::Bind {
                    address: options.outbound_listen,
                    source,
                })?;
        let inbound_addr =
            inbound_listener
                .local_addr()
                .map_err(|source| DataPlaneError::Bind {
                    address: options.inbound_listen,
                    source,
                })?;
        let initial = config.borrow_and_update().clone();
        let (shutdown, stopped) = watch::channel(false);
        let labels = PodLabels::new(
            &options.workload.name,
            &options.workload.namespace,
            certs.identity(),
        );
        let context = Arc::new(Context {
            sockets,
            certs,
            labels,
            index: ArcSwap::new(initial.unwrap_or_default()),
            metrics,
            workload: options.workload,
            client_configs: Default::default(),
            active_connections: Default::default(),
            draining: stopped.clone(),
            index_changes: watch::Sender::new(0),
            limits: options.limits,
            pod_ip: options.pod_ip,
        });
        let follow = {
            let context = context.clone();
            tokio::spawn(async move {
                while config.changed().await.is_ok() {
                    if let Some(latest) = config.borrow_and_update().clone() {
                        context.index.store(latest);
                        context
                            .index_changes
                            .send_modify(|generation| *generation += 1);
                    }
                }
            })
        };
        let pools = Arc::new(Pools::new(context.clone()));
        let count = Arc::new(ConnectionCount::default());
        let max = options.limits.max_connections;
        let outbound_listener = Acceptor::new(outbound_listener, "outbound", max, count.clone());
        let inbound_listener = Acceptor::new(inbound_listener, "inbound", max, count.clone());
        let tasks = vec![
            follow,
            tokio::spawn(crate::trim::return_freed_memory(count)),
            tokio::spawn(outbound::serve(
                context.clone(),
                pools.clone(),
                outbound_listener,
                stopped.clone(),
            )),
            tokio::spawn(inbound::serve(
                context.clone(),
                pools,
                inbound_listener,
                options.peek_timeout,
                stopped,
            )),
        ];
        Ok(Self {
            outbound_addr,
            inbound_addr,
            context,
            shutdown,
            tasks,
        })
    }

    pub fn outbound_addr(&self) -> SocketAddr {
        self.outbound_addr
    }

    pub fn inbound_addr(&self) -> SocketAddr {
        self.inbound_addr
    }

    /// The configuration the data plane is currently applying.
    pub fn current_config(&self) -> Option<Arc<ProxyConfig>> {
        self.context.index.load().config.clone()
    }

    pub fn active_connections(&self) -> usize {
        self.context.active_connections.load(Ordering::Relaxed)
    }

    /// Stops accepting, asks HTTP connections to close after their in-flight requests (idle keep-alive
    /// connections close at once), then waits up to `grace` for the remaining connections to finish.
    pub async fn drain(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

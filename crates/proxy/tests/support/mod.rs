//! An in-process mesh for tests and benches: a fake socket layer over loopback, a real CA and certificate
//! managers, a real `ConfigHub` and `ConfigClient` per proxy, and tiny apps.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ironmesh_identity::{
    CaOptions, CertificateAuthority, LocalSigner, RotationOptions, SpiffeId, WorkloadCertificates,
};
use ironmesh_proto::pb::ProxyConfig;
use ironmesh_proto::{
    AuthError, ConfigClient, ConfigClientOptions, ConfigHub, HubOptions, TokenSource,
};
use ironmesh_proxy::admin::AdminState;
use ironmesh_proxy::{BoxFuture, DataPlane, DataPlaneOptions, Metrics, SocketLayer, WorkloadInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

#[derive(Default)]
struct Pod {
    /// The proxy's inbound listener, when the pod has a sidecar.
    inbound: Option<SocketAddr>,
    /// The proxy's outbound listener, when the pod has a sidecar.
    outbound: Option<SocketAddr>,
    /// Container port -> where the app really listens on loopback.
    apps: HashMap<u16, SocketAddr>,
}

/// Virtual pod IPs mapped onto loopback listeners; plays the role of iptables REDIRECT + SO_ORIGINAL_DST.
#[derive(Default)]
pub struct FakeNetwork {
    pods: Mutex<HashMap<IpAddr, Pod>>,
    /// Real local address of a redirected connection -> its virtual original destination.
    redirects: Mutex<HashMap<SocketAddr, SocketAddr>>,
}

impl FakeNetwork {
    fn pod<T>(&self, ip: IpAddr, f: impl FnOnce(&mut Pod) -> T) -> T {
        f(self.pods.lock().unwrap().entry(ip).or_default())
    }

    /// Connects to `real`, remembering `virtual_destination` as what the listener's SO_ORIGINAL_DST returns.
    async fn redirect(
        &self,
        real: SocketAddr,
        virtual_destination: SocketAddr,
    ) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        self.redirects
            .lock()
            .unwrap()
            .insert(socket.local_addr()?, virtual_destination);
        socket.connect(real).await
    }

    /// How a connection from pod `from` (leaving its network namespace) reaches `destination`.
    async fn route_from_pod_to(&self, destination: SocketAddr) -> io::Result<TcpStream> {
        let (inbound, app) = {
            let pods = self.pods.lock().unwrap();
            let pod = pods
                .get(&destination.ip())
                .ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            (pod.inbound, pod.apps.get(&destination.port()).copied())
        };
        match (inbound, app) {
            (Some(inbound), _) => self.redirect(inbound, destination).await,
            (None, Some(app)) => TcpStream::connect(app).await,
            (None, None) => Err(io::ErrorKind::ConnectionRefused.into()),
        }
    }

    /// What an application in pod `from` sees when it dials `destination` (through its sidecar if any).
    pub async fn dial(&self, from: IpAddr, destination: SocketAddr) -> io::Result<TcpStream> {
        let outbound = self.pod(from, |pod| pod.outbound);
        match outbound {
            Some(outbound) => self.redirect(outbound, destination).await,
            None => self.route_from_pod_to(destination).await,
        }
    }
}

/// The socket layer of one pod's proxy.
pub struct PodSockets {
    network: Arc<FakeNetwork>,
    ip: IpAddr,
}

impl SocketLayer for PodSockets {
    fn connect(&self, destination: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            // The pod's own IP reaches its apps without capture (the proxy's socket is marked), as loopback does.
            if destination.ip().is_loopback() || destination.ip() == self.ip {
                let app = self
                    .network
                    .pod(self.ip, |pod| pod.apps.get(&destination.port()).copied());
                return TcpStream::connect(app.ok_or(io::ErrorKind::ConnectionRefused)?).await;
            }
            // The proxy's own sockets are not captured again (the mark), so go straight to the destination pod.
            self.network.route_from_pod_to(destination).await
        })
    }

    fn original_destination(&self, accepted: &TcpStream) -> io::Result<SocketAddr> {
        let peer = accepted.peer_addr()?;
        self.network
            .redirects
            .lock()
            .unwrap()
            .get(&peer)
            .copied()
            .ok_or_else(|| io::Error::other("not redirected"))
    }
}

/// An HTTP app answering 200 with `pod=<name> xfcc=<header or ->`.
pub async fn start_http_app(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let xfcc = request
                            .headers()
                            .get("x-forwarded-client-cert")
                            .map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(format!("pod={name} xfcc={xfcc}")),
                        )))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(stream), service)
                .await;
            });
        }
    });
    address
}

pub struct Mesh {
    pub network: Arc<FakeNetwork>,
    pub ca: Arc<CertificateAuthority>,
    pub hub: ConfigHub,
    pub socket: PathBuf,
    pub hub_server: Option<HubServer>,
    pub proxies: HashMap<IpAddr, Proxy>,
    /// Timeouts and the connection cap of the proxies added from now on.
    pub proxy_limits: ironmesh_proxy::ConnectionLimits,
    _dir: tempfile::TempDir,
}

pub struct Proxy {
    pub data_plane: DataPlane,
    pub client: ConfigClient<ironmesh_proxy::ConfigIndex>,
    pub certs: WorkloadCertificates,
    pub metrics: Arc<Metrics>,
    pub admin: AdminState,
}

/// The hub on its own thread and runtime, so that killing it drops every stream like a crashed process.
pub struct HubServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubServer {
    pub fn start(hub: &ConfigHub, path: &Path) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (hub, path) = (hub.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    hub.serve_unix(&path, std::future::pending())
                        .await
                        .expect("hub serves")
                });
                let _ = stopped.await;
            });
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn kill(mut self) {
        drop(self.stop.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub const TRUST_DOMAIN: &str = "cluster.local";

pub fn spiffe(namespace: &str, service_account: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, namespace, service_account).unwrap()
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

impl Mesh {
    pub async fn new() -> Self {
        ironmesh_identity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(
            CertificateAuthority::load_or_create(
                &dir.path().join("ca"),
                CaOptions::new(TRUST_DOMAIN),
            )
            .unwrap(),
        );
        // Tokens are `token-<proxy id>` in these tests; the real control plane verifies signed credentials.
        let hub = ConfigHub::new(
            Arc::new(|token: &str, proxy: &str| {
                if token == format!("token-{proxy}") {
                    Ok(())
                } else {
                    Err(AuthError("bad token".into()))
                }
            }),
            HubOptions {
                debounce: Duration::from_millis(10),
            },
        );
        let socket = dir.path().join("xds.sock");
        let hub_server = Some(HubServer::start(&hub, &socket));
        Self {
            network: Arc::default(),
            ca,
            hub,
            socket,
            hub_server,
            proxies: HashMap::new(),
            proxy_limits: ironmesh_proxy::ConnectionLimits::DATA_PLANE,
            _dir: dir,
        }
    }

    /// Registers an app of pod `pod_ip` listening for container port `port`.
    pub fn add_app(&self, pod_ip: IpAddr, port: u16, real: SocketAddr) {
        self.network.pod(pod_ip, |pod| pod.apps.insert(port, real));
    }

    /// Starts a sidecar for pod `name.namespace` at `pod_ip` with service account `sa`.
    pub async fn add_proxy(&mut self, pod_ip: IpAddr, name: &str, namespace: &str, sa: &str) {
        let certs = WorkloadCertificates::spawn(
            spiffe(namespace, sa),
            Arc::new(LocalSigner::new(self.ca.clone(), spiffe(namespace, sa))),
            RotationOptions::default(),
        );
        let proxy_id = ironmesh_identity::proxy_id(name, namespace);
        let mut options = ConfigClientOptions::new(
            ironmesh_identity::ControlPlaneAddress::Unix(self.socket.clone()),
            proxy_id.clone(),
            TokenSource::Static(format!("token-{proxy_id}")),
        );
        options.backoff_initial = Duration::from_millis(20);
        options.backoff_max = Duration::from_millis(200);
        let client = ironmesh_proxy::config_client(options);
        let metrics = Arc::new(Metrics::default());
        let mut data_options = DataPlaneOptions::new(WorkloadInfo {
            name: name.into(),
            namespace: namespace.into(),
        });
        data_options.outbound_listen = "127.0.0.1:0".parse().unwrap();
        data_options.inbound_listen = "127.0.0.1:0".parse().unwrap();
        data_options.peek_timeout = Duration::from_millis(200);
        data_options.limits = self.proxy_limits;
        let sockets = Arc::new(PodSockets {
            network: self.network.clone(),
            ip: pod_ip,
        });
        let data_plane = DataPlane::start(
            data_options,
            certs.clone(),
            client.config(),
            sockets,
            metrics.clone(),
        )
        .await
        .unwrap();
        self.network.pod(pod_ip, |pod| {
            pod.inbound = Some(data_plane.inbound_addr());
            pod.outbound = Some(data_plane.outbound_addr());
        });
        let admin = AdminState {
            certs: certs.clone(),
            config: client.config(),
            metrics: metrics.clone(),
            set_log_level: None,
        };
        self.proxies.insert(
            pod_ip,
            Proxy {
                data_plane,
                client,
                certs,
                metrics,
                admin,
            },
        );
    }

    /// Publishes `config` for the proxy of `name.namespace` at `pod_ip` and waits until it is applied.
    pub async fn publish(&self, pod_ip: IpAddr, proxy_id: &str, config: ProxyConfig) {
        let version = config.version.clone();
        assert!(!version.is_empty(), "tests set explicit versions");
        self.hub.publish(proxy_id, config);
        let proxy = &self.proxies[&pod_ip];
        for _ in 0..500 {
            if proxy
                .data_plane
                .current_config()
                .is_some_and(|c| c.version == version)
                && proxy.certs.snapshot().is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("proxy {proxy_id} did not apply version {version}");
    }
}

/// The outcome of a one-shot HTTP/1.1 GET, as curl would report it.
#[derive(Debug)]
pub enum Outcome {
    Response {
        status: u16,
        body: String,
    },
    /// The connection was reset (curl exit 56).
    Reset,
    Failed(String),
}

pub async fn http_get(
    network: &FakeNetwork,
    from: IpAddr,
    destination: SocketAddr,
    path: &str,
) -> Outcome {
    let mut stream = match network.dial(from, destination).await {
        Ok(stream) => stream,
        Err(error) => return Outcome::Failed(format!("connect: {error}")),
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {destination}\r\nConnection: close\r\n\r\n");
    if let Err(error) = stream.write_all(request.as_bytes()).await {
        return if error.kind() == io::ErrorKind::ConnectionReset {
            Outcome::Reset
        } else {
            Outcome::Failed(error.to_string())
        };
    }
    let mut raw = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await {
        Err(_) => return Outcome::Failed("timed out".into()),
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => return Outcome::Reset,
        Ok(Err(error)) => return Outcome::Failed(error.to_string()),
        Ok(Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Failed(format!("no HTTP response: {text:?}"));
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Outcome::Response {
        status,
        body: body.to_string(),
    }
}

impl Mesh {
    /// The usual two pods, each with its sidecar: `client-1` (service account `client`) at 10.0.0.1, and
    /// `<server>-1` (service account `server`) at 10.0.0.2 whose app listens on `app` for container port
    /// `app_port`; each is sent `config(name, service account)` and applies it before this returns.
    pub async fn pair(
        app_port: u16,
        app: SocketAddr,
        server: &str,
        config: impl Fn(&str, &str) -> ProxyConfig,
    ) -> Self {
        let mut mesh = Mesh::new().await;
        let server_name = format!("{server}-1");
        mesh.add_app(ip("10.0.0.2"), app_port, app);
        mesh.add_proxy(ip("10.0.0.1"), "client-1", "foo", "client")
            .await;
        mesh.add_proxy(ip("10.0.0.2"), &server_name, "foo", server)
            .await;
        mesh.publish(ip("10.0.0.1"), "client-1.foo", config("client-1", "client"))
            .await;
        mesh.publish(
            ip("10.0.0.2"),
            &format!("{server_name}.foo"),
            config(&server_name, server),
        )
        .await;
        mesh
    }
}

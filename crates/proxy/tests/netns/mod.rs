//! The rig of the proxy's root tests: network namespaces joined by veth pairs, the processes started in
//! them, and the control plane (CA and configuration hub) the proxies reach, all removed on drop even when
//! an assertion failed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironmesh_identity::ca_service::CaService;
use ironmesh_identity::{CA_AUDIENCE, CaOptions, CertificateAuthority, CredentialAuthority};
use ironmesh_proto::{AuthError, ConfigHub, HubOptions};

/// Everything the test created, removed on drop even when an assertion failed.
pub struct Topology {
    pub namespaces: Vec<String>,
    pub children: Vec<Child>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

pub fn sh(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Topology {
    pub fn netns(&mut self, name: &str) {
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    pub fn veth(&self, (a, a_ip): (&str, &str), (b, b_ip): (&str, &str), tag: &str) {
        let (a_if, b_if) = (format!("v{tag}a"), format!("v{tag}b"));
        sh(&[
            "ip", "link", "add", &a_if, "netns", a, "type", "veth", "peer", "name", &b_if, "netns",
            b,
        ]);
        for (ns, interface, address) in [(a, &a_if, a_ip), (b, &b_if, b_ip)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                interface,
            ]);
            sh(&["ip", "-n", ns, "link", "set", interface, "up"]);
        }
    }
}

/// The control plane side: CA and configuration hub on one Unix socket in the host namespace, stopped
/// on drop.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub credentials: Arc<CredentialAuthority>,
    pub hub: ConfigHub,
    server: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    pub fn start() -> Self {
        ironmesh_identity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("xds.sock");
        let ca = Arc::new(
            CertificateAuthority::load_or_create(
                &dir.path().join("ca"),
                CaOptions::new("cluster.local"),
            )
            .unwrap(),
        );
        let credentials = Arc::new(CredentialAuthority::from_secret(
            b"root-test-secret-0123456789abcdef",
        ));
        let verifier = credentials.clone();
        let hub = ConfigHub::new(
            Arc::new(move |token: &str, proxy_id: &str| {
                let claims = verifier
                    .verify(token, CA_AUDIENCE, SystemTime::now())
                    .map_err(|e| AuthError(e.to_string()))?;
                if claims.proxy_id() == proxy_id {
                    Ok(())
                } else {
                    Err(AuthError("not your proxy id".into()))
                }
            }),
            HubOptions::default(),
        );
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(CaService::new(ca, credentials.clone()).into_server())
            .add_service(hub.service())
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        Self {
            dir,
            socket,
            credentials,
            hub,
            server,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A pod's application: a tiny HTTP/1.1 server on `bind` inside `namespace`, served by a thread
/// of this test that entered the namespace (a socket stays in the namespace it was created in). Only the
/// Rust toolchain is needed: no python3 or other server on the machine. Stops when dropped.
pub struct App {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    pub fn start_in(namespace: &str, bind: std::net::SocketAddrV4) -> App {
        use std::os::fd::AsRawFd;
        let netns = std::fs::File::open(format!("/run/netns/{namespace}"))
            .unwrap_or_else(|e| panic!("cannot open /run/netns/{namespace}: {e}"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready, started) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace file descriptor.
            let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            if entered != 0 {
                let _ = ready.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            let listener = match std::net::TcpListener::bind(bind) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
            };
            listener.set_nonblocking(true).unwrap();
            let _ = ready.send(Ok(()));
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || serve_http(stream));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the app cannot listen on {bind} in {namespace}: {e}"),
            Err(_) => panic!("the app thread for {namespace} ended before listening"),
        }
        App {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers every request of a keep-alive connection with 200 and a short body (requests here have none).
fn serve_http(stream: std::net::TcpStream) {
    use std::io::{BufRead, BufReader, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let body = "hello from the app\n";
    loop {
        let mut line = String::new();
        // The request line, then headers up to the blank line.
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" || header == "\n" => break,
                Ok(_) => {}
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

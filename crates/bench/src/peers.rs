//! Peer sidecar pairs (nginx, haproxy, stunnel): config files written to a temp dir and the foreground
//! command lines. Each pair is a client sidecar in the client netns (plain HTTP in on 127.0.0.1, mutual
//! TLS 1.3 out with the client certificate) and a server sidecar in the server netns (mutual TLS in,
//! requiring a client certificate from our root; plain HTTP to the upstream on 127.0.0.1).

use std::fs;
use std::path::Path;

use crate::certs::{BenchCerts, SERVER_NAME};
use crate::error::{BenchError, Result};
use crate::netns::SERVER_IP;

/// Where the client sidecar accepts plain HTTP from the load generator.
pub const CLIENT_SIDECAR_PORT: u16 = 15001;
/// Where the client sidecar accepts plain TCP for the bulk test (stunnel only).
pub const CLIENT_SIDECAR_TCP_PORT: u16 = 15201;
/// Where the server sidecar accepts mutual TLS.
pub const SERVER_SIDECAR_PORT: u16 = 8443;
/// Where the server sidecar accepts mutual TLS for the bulk TCP tunnel (stunnel only).
pub const SERVER_SIDECAR_TCP_PORT: u16 = 8444;
/// The upstream HTTP server, in the server netns.
pub const UPSTREAM_PORT: u16 = 8080;
/// iperf3's server, in the server netns.
pub const IPERF_PORT: u16 = 5201;

/// Which peer proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Nginx,
    Haproxy,
    Stunnel,
}

impl Peer {
    pub const ALL: [Peer; 3] = [Peer::Nginx, Peer::Haproxy, Peer::Stunnel];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Stunnel => "stunnel",
        }
    }

    /// (binary, Debian package).
    pub fn tool(self) -> (&'static str, &'static str) {
        match self {
            Peer::Nginx => ("nginx", "nginx-light"),
            Peer::Haproxy => ("haproxy", "haproxy"),
            Peer::Stunnel => ("stunnel4", "stunnel4"),
        }
    }

    /// Whether the pair also carries a raw TCP tunnel for iperf3.
    pub fn has_tcp_tunnel(self) -> bool {
        self == Peer::Stunnel
    }

    /// Writes both configs under `dir` and returns (client argv, server argv).
    pub fn configure(self, dir: &Path, certs: &BenchCerts) -> Result<(Vec<String>, Vec<String>)> {
        let dir = dir.join(self.name());
        fs::create_dir_all(&dir).map_err(|error| BenchError::io(&dir, error))?;
        let (client_text, server_text) = match self {
            Peer::Nginx => (nginx_client(&dir, certs), nginx_server(&dir, certs)),
            Peer::Haproxy => (haproxy_client(certs), haproxy_server(certs)),
            Peer::Stunnel => (stunnel_client(certs), stunnel_server(certs)),
        };
        let client_conf = dir.join("client.conf");
        let server_conf = dir.join("server.conf");
        fs::write(&client_conf, client_text)
            .map_err(|error| BenchError::io(&client_conf, error))?;
        fs::write(&server_conf, server_text)
            .map_err(|error| BenchError::io(&server_conf, error))?;
        let argv = |conf: &Path, side: &str| -> Vec<String> {
            let conf = conf.display().to_string();
            match self {
                Peer::Nginx => {
                    let prefix = dir.join(side);
                    let _ = fs::create_dir_all(&prefix);
                    let error_log = dir.join(format!("{side}-error.log")).display().to_string();
                    vec![
                        "nginx".into(),
                        "-p".into(),
                        prefix.display().to_string(),
                        "-e".into(),
                        error_log,
                        "-c".into(),
                        conf,
                    ]
                }
                Peer::Haproxy => vec!["haproxy".into(), "-db".into(), "-f".into(), conf],
                Peer::Stunnel => vec!["stunnel4".into(), conf],
            }
        };
        Ok((argv(&client_conf, "client"), argv(&server_conf, "server")))
    }
}

fn nginx_common(dir: &Path, side: &str) -> String {
    let pid = dir.join(format!("{side}.pid")).display().to_string();
    let error_log = dir.join(format!("{side}-error.log")).display().to_string();
    let temp = dir.join(side).display().to_string();
    format!(
        "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {error_log} warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n\
         fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n\
         keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  tcp_nodelay on;\n"
    )
}

fn nginx_client(dir: &Path, certs: &BenchCerts) -> String {
    format!(
        "{common}  upstream server_sidecar {{ server {SERVER_IP}:{SERVER_SIDECAR_PORT}; keepalive 256; keepalive_requests 100000000; }}\n\
         server {{\n    listen 127.0.0.1:{CLIENT_SIDECAR_PORT};\n    location / {{\n\
         proxy_pass https://server_sidecar;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_ssl_certificate {cert};\n      proxy_ssl_certificate_key {key};\n\
         proxy_ssl_trusted_certificate {ca};\n      proxy_ssl_verify on;\n      proxy_ssl_name {SERVER_NAME};\n\
         proxy_ssl_server_name on;\n      proxy_ssl_protocols TLSv1.3;\n      proxy_ssl_session_reuse on;\n\
         proxy_buffering off;\n    }}\n  }}\n}}\n",
        common = nginx_common(dir, "client"),
        cert = certs.client.cert.display(),
        key = certs.client.key.display(),
        ca = certs.ca.display(),
    )
}

fn nginx_server(dir: &Path, certs: &BenchCerts) -> String {
    format!(
        "{common}  upstream app {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 256; keepalive_requests 100000000; }}\n\
         server {{\n    listen {SERVER_IP}:{SERVER_SIDECAR_PORT} ssl;\n    ssl_certificate {cert};\n\
         ssl_certificate_key {key};\n    ssl_client_certificate {ca};\n    ssl_verify_client on;\n\
         ssl_protocols TLSv1.3;\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
        common = nginx_common(dir, "server"),
        cert = certs.server.cert.display(),
        key = certs.server.key.display(),
        ca = certs.ca.display(),
    )
}

const HAPROXY_COMMON: &str = "global\n  nbthread 1\n  maxconn 8192\n  tune.ssl.default-dh-param 2048\n\
defaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\
  http-reuse always\n";

fn haproxy_client(certs: &BenchCerts) -> String {
    format!(
        "{HAPROXY_COMMON}frontend outbound\n  bind 127.0.0.1:{CLIENT_SIDECAR_PORT}\n  default_backend server_sidecar\n\
         backend server_sidecar\n  server peer {SERVER_IP}:{SERVER_SIDECAR_PORT} ssl crt {crt} ca-file {ca} verify required \
         verifyhost {SERVER_NAME} sni str({SERVER_NAME}) ssl-min-ver TLSv1.3\n",
        crt = certs.client.combined.display(),
        ca = certs.ca.display(),
    )
}

fn haproxy_server(certs: &BenchCerts) -> String {
    format!(
        "{HAPROXY_COMMON}frontend inbound\n  bind {SERVER_IP}:{SERVER_SIDECAR_PORT} ssl crt {crt} ca-file {ca} verify required \
         ssl-min-ver TLSv1.3\n  default_backend app\nbackend app\n  server app 127.0.0.1:{UPSTREAM_PORT}\n",
        crt = certs.server.combined.display(),
        ca = certs.ca.display(),
    )
}

fn stunnel_global() -> &'static str {
    "foreground = yes\npid =\ndebug = 3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
}

fn stunnel_client(certs: &BenchCerts) -> String {
    let service = |name: &str, accept: u16, connect: u16| {
        format!(
            "[{name}]\nclient = yes\naccept = 127.0.0.1:{accept}\nconnect = {SERVER_IP}:{connect}\ncert = {cert}\n\
             key = {key}\nCAfile = {ca}\nverifyChain = yes\ncheckHost = {SERVER_NAME}\nsni = {SERVER_NAME}\n\
             sslVersionMin = TLSv1.3\n",
            cert = certs.client.cert.display(),
            key = certs.client.key.display(),
            ca = certs.ca.display(),
        )
    };
    format!(
        "{}{}{}",
        stunnel_global(),
        service("http", CLIENT_SIDECAR_PORT, SERVER_SIDECAR_PORT),
        service("tcp", CLIENT_SIDECAR_TCP_PORT, SERVER_SIDECAR_TCP_PORT)
    )
}

fn stunnel_server(certs: &BenchCerts) -> String {
    let service = |name: &str, accept: u16, connect: u16| {
        format!(
            "[{name}]\naccept = {SERVER_IP}:{accept}\nconnect = 127.0.0.1:{connect}\ncert = {cert}\nkey = {key}\n\
             CAfile = {ca}\nverifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.3\n",
            cert = certs.server.cert.display(),
            key = certs.server.key.display(),
            ca = certs.ca.display(),
        )
    };
    format!(
        "{}{}{}",
        stunnel_global(),
        service("http", SERVER_SIDECAR_PORT, UPSTREAM_PORT),
        service("tcp", SERVER_SIDECAR_TCP_PORT, IPERF_PORT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_requires_client_certificates_and_tls13() {
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::certs::mint(dir.path()).unwrap();
        for peer in Peer::ALL {
            peer.configure(dir.path(), &certs).unwrap();
            let server =
                fs::read_to_string(dir.path().join(peer.name()).join("server.conf")).unwrap();
            let client =
                fs::read_to_string(dir.path().join(peer.name()).join("client.conf")).unwrap();
            let requires_client_cert = match peer {
                Peer::Nginx => server.contains("ssl_verify_client on"),
                Peer::Haproxy => server.contains("verify required"),
                Peer::Stunnel => server.contains("requireCert = yes"),
            };
            assert!(
                requires_client_cert,
                "{} server must demand a client certificate",
                peer.name()
            );
            assert!(
                server.contains("TLSv1.3") && client.contains("TLSv1.3"),
                "{} must pin TLS 1.3",
                peer.name()
            );
            assert!(
                client.contains(&certs.client.key.display().to_string())
                    || client.contains("client-combined")
            );
        }
    }
}

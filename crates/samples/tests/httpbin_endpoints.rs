//! End-to-end tests of the httpbin sample over loopback TCP: one test per endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ironmesh_samples::httpbin::serve(listener));
    addr
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// A deliberately dumb HTTP/1.1 client (Connection: close, read to EOF) so the test checks the wire format.
async fn get(addr: SocketAddr, path: &str, extra_headers: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let headers = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

#[tokio::test]
async fn index_ends_like_httpbin() {
    let addr = start_server().await;
    let reply = get(addr, "/", "").await;
    assert_eq!(reply.status, 200);
    let body = String::from_utf8(reply.body).unwrap();
    assert!(body.contains(r#"<h2 id="AUTHOR">AUTHOR</h2>"#));
    assert!(
        body.ends_with("</html>"),
        "curl -w '%{{http_code}}' must print </html>200"
    );
}

#[tokio::test]
async fn get_echoes_args_headers_origin_and_url() {
    let addr = start_server().await;
    let reply = get(addr, "/get?show_env=1&a=b", "User-Agent: curl/7.88.1\r\n").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let json = reply.json();
    assert_eq!(json["args"]["a"], "b");
    assert_eq!(json["headers"]["User-Agent"], "curl/7.88.1");
    assert_eq!(json["origin"], "127.0.0.1");
    assert_eq!(json["url"], format!("http://{addr}/get?show_env=1&a=b"));
}

#[tokio::test]
async fn headers_lists_request_headers() {
    let addr = start_server().await;
    let json = get(addr, "/headers", "X-B3-Traceid: 1234\r\n").await.json();
    assert_eq!(json["headers"]["X-B3-Traceid"], "1234");
    assert_eq!(json["headers"]["Host"], addr.to_string());
}

#[tokio::test]
async fn ip_reports_the_peer_address() {
    let addr = start_server().await;
    let reply = get(addr, "/ip", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"origin": "127.0.0.1"}));
}

#[tokio::test]
async fn status_returns_the_requested_code() {
    let addr = start_server().await;
    for code in [200u16, 201, 404, 418, 503] {
        assert_eq!(get(addr, &format!("/status/{code}"), "").await.status, code);
    }
    let teapot = get(addr, "/status/418", "").await;
    assert!(String::from_utf8(teapot.body).unwrap().contains("teapot"));
    assert_eq!(get(addr, "/status/abc", "").await.status, 400);
    let either = get(addr, "/status/201,202", "").await.status;
    assert!(either == 201 || either == 202, "got {either}");
}

#[tokio::test]
async fn delay_waits_then_echoes() {
    let addr = start_server().await;
    let started = Instant::now();
    let reply = get(addr, "/delay/0.3", "").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["origin"], "127.0.0.1");
    assert_eq!(get(addr, "/delay/soon", "").await.status, 400);
}

#[tokio::test]
async fn bytes_returns_n_bytes_capped_at_100k() {
    let addr = start_server().await;
    let reply = get(addr, "/bytes/1500", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 1500);
    assert!(
        reply
            .headers
            .to_ascii_lowercase()
            .contains("application/octet-stream")
    );
    let seeded_a = get(addr, "/bytes/64?seed=42", "").await.body;
    let seeded_b = get(addr, "/bytes/64?seed=42", "").await.body;
    assert_eq!(seeded_a, seeded_b);
    let capped = get(addr, "/bytes/500000", "").await;
    assert_eq!(capped.body.len(), 100 * 1024);
}

#[tokio::test]
async fn unknown_path_is_404() {
    let addr = start_server().await;
    assert_eq!(get(addr, "/nope", "").await.status, 404);
}

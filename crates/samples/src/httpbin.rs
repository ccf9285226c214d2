//! The httpbin sample: routes, JSON bodies shaped like httpbin.org's, and the accept loop.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

/// Longest `/delay/{s}` we honour, as httpbin does.
pub const MAX_DELAY_SECS: f64 = 10.0;
/// Largest `/bytes/{n}` body we send, as httpbin does (100 kB).
pub const MAX_BYTES: usize = 100 * 1024;

/// The landing page; like httpbin's it ends with the AUTHOR section so `curl http://httpbin:8000`
/// prints the same last lines as the walkthrough.
const INDEX_HTML: &str = r#"<!DOCTYPE html>
<html>
<head>
<meta http-equiv='content-type' value='text/html;charset=utf8'>
<title>httpbin(1): HTTP Client Testing Service</title>
</head>
<body id='manpage'>
<h1>httpbin(1): HTTP Request &amp; Response Service</h1>
<h2 id="ENDPOINTS">ENDPOINTS</h2>
<ul>
<li><a href="/"><code>/</code></a> This page.</li>
<li><a href="/ip"><code>/ip</code></a> Returns Origin IP.</li>
<li><a href="/headers"><code>/headers</code></a> Returns header dict.</li>
<li><a href="/get"><code>/get</code></a> Returns GET data.</li>
<li><a href="/status/418"><code>/status/:code</code></a> Returns given HTTP Status code.</li>
<li><a href="/delay/3"><code>/delay/:n</code></a> Delays responding for <em>min(n, 10)</em> seconds.</li>
<li><a href="/bytes/1024"><code>/bytes/:n</code></a> Generates <em>n</em> random bytes of binary data.</li>
</ul>
<h2 id="DESCRIPTION">DESCRIPTION</h2>
<p>Testing an HTTP Library can become difficult sometimes. This sample, bundled with ironmesh, answers the
same endpoints as httpbin so the mesh walkthrough can be followed on one machine.</p>
<h2 id="AUTHOR">AUTHOR</h2>

</body>
</html>"#;

type HttpResponse = Response<Full<Bytes>>;

/// Accepts connections forever and serves each one (HTTP/1.1, or h2c with prior knowledge).
pub async fn serve(listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient: back off instead of spinning.
                eprintln!("ironmesh-httpbin: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service =
                service_fn(move |req| async move { Ok::<_, Infallible>(handle(req, peer).await) });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client hanging up mid-request is normal for a test server; nothing to report.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request; `peer` is the TCP peer, reported by `/ip` and as `origin`.
pub async fn handle(req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, [""]) => html(INDEX_HTML),
        (_, ["ip"]) => json_response(StatusCode::OK, &json!({ "origin": peer.ip().to_string() })),
        (_, ["headers"]) => json_response(
            StatusCode::OK,
            &json!({ "headers": headers_json(req.headers()) }),
        ),
        (&Method::GET | &Method::HEAD, ["get"]) => json_response(StatusCode::OK, &echo(&req, peer)),
        (_, ["status", codes]) => status(codes),
        (_, ["delay", seconds]) => delay(seconds, &req, peer).await,
        (_, ["bytes", count]) => random_bytes(count, req.uri().query()),
        (_, ["get"]) => plain(StatusCode::METHOD_NOT_ALLOWED, ""),
        _ => html_status(StatusCode::NOT_FOUND, NOT_FOUND_HTML),
    }
}

const NOT_FOUND_HTML: &str = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p>\n";

/// `/get`-style body: query arguments, headers, origin and the full URL.
fn echo<B>(req: &Request<B>, peer: SocketAddr) -> Value {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    json!({
        "args": query_args(req.uri().query()),
        "headers": headers_json(req.headers()),
        "origin": peer.ip().to_string(),
        "url": format!("http://{host}{path_and_query}"),
    })
}

/// Query arguments as httpbin shows them: one value as a string, repeated keys as a list.
pub fn query_args(query: Option<&str>) -> Value {
    let mut args: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.entry(percent_decode(key))
            .or_default()
            .push(percent_decode(value));
    }
    let mut out = Map::new();
    for (key, mut values) in args {
        let value = if values.len() == 1 {
            Value::String(values.remove(0))
        } else {
            json!(values)
        };
        out.insert(key, value);
    }
    Value::Object(out)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
            {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// Headers with httpbin's Title-Case names (`User-Agent`); repeated headers are joined with commas.
pub fn headers_json(headers: &HeaderMap) -> Value {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(title_case(name.as_str()))
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    json!(out)
}

fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `/status/{code}` or `/status/{a},{b},...` (one picked at random, as httpbin does).
fn status(codes: &str) -> HttpResponse {
    let parsed: Result<Vec<u16>, _> = codes.split(',').map(|c| c.trim().parse::<u16>()).collect();
    let Ok(parsed) = parsed else {
        return plain(StatusCode::BAD_REQUEST, "Invalid status code");
    };
    if parsed.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "Invalid status code");
    }
    let chosen = parsed[(Prng::from_clock().next() % parsed.len() as u64) as usize];
    let Ok(code) = StatusCode::from_u16(chosen) else {
        return plain(StatusCode::BAD_REQUEST, "Invalid status code");
    };
    if code == StatusCode::IM_A_TEAPOT {
        return plain(code, TEAPOT);
    }
    plain(code, "")
}

const TEAPOT: &str = "\n    -=[ teapot ]=-\n\n       _...._\n     .'  _ _ `.\n    | .\"` ^ `\". _,\n    \\_;`\"---\"`|//\n      |       ;/\n      \\_     _/\n        `\"\"\"`\n";

/// `/delay/{s}`: waits `min(s, 10)` seconds, then answers like `/get`.
async fn delay<B>(seconds: &str, req: &Request<B>, peer: SocketAddr) -> HttpResponse {
    let Ok(requested) = seconds.parse::<f64>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Invalid delay: expected a number of seconds",
        );
    };
    let wait = if requested.is_finite() {
        requested.clamp(0.0, MAX_DELAY_SECS)
    } else {
        0.0
    };
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    json_response(StatusCode::OK, &echo(req, peer))
}

/// `/bytes/{n}`: `min(n, 100 kB)` pseudo-random bytes; `?seed=N` makes them reproducible.
fn random_bytes(count: &str, query: Option<&str>) -> HttpResponse {
    let Ok(requested) = count.parse::<usize>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Invalid byte count: expected a non-negative integer",
        );
    };
    let seed = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("seed="))
        .and_then(|s| s.parse::<u64>().ok());
    let mut prng = seed.map(Prng::new).unwrap_or_else(Prng::from_clock);
    let len = requested.min(MAX_BYTES);
    let mut body = Vec::with_capacity(len + 8);
    while body.len() < len {
        body.extend_from_slice(&prng.next().to_le_bytes());
    }
    body.truncate(len);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// splitmix64: plenty for test payloads, and keeps the sample free of extra dependencies.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Self {
        Prng(seed)
    }

    fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Prng(nanos as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn json_response(status: StatusCode, value: &Value) -> HttpResponse {
    // httpbin pretty-prints with a trailing newline; keep that so shell output looks the same.
    let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_owned());
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("access-control-allow-origin", "*")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn html(body: &'static str) -> HttpResponse {
    html_status(StatusCode::OK, body)
}

fn html_status(status: StatusCode, body: &'static str) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_args_single_and_repeated() {
        let args = query_args(Some("a=1&b=x+y&a=2&c=%41"));
        assert_eq!(args, json!({"a": ["1", "2"], "b": "x y", "c": "A"}));
        assert_eq!(query_args(None), json!({}));
    }

    #[test]
    fn header_names_are_title_cased() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "curl/7.88.1".parse().unwrap());
        headers.insert("x-b3-traceid", "abc".parse().unwrap());
        assert_eq!(
            headers_json(&headers),
            json!({"User-Agent": "curl/7.88.1", "X-B3-Traceid": "abc"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_is_capped_at_ten_seconds() {
        // Paused time auto-advances, so this measures the virtual wait without sleeping for real.
        let req = Request::builder().uri("/delay/60").body(()).unwrap();
        let started = tokio::time::Instant::now();
        let reply = delay("60", &req, "127.0.0.1:1".parse().unwrap()).await;
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    async fn body_of(reply: HttpResponse) -> Bytes {
        use http_body_util::BodyExt;
        reply
            .into_body()
            .collect()
            .await
            .expect("a Full body cannot fail")
            .to_bytes()
    }

    #[tokio::test]
    async fn seeded_bytes_are_reproducible_and_capped() {
        let a = body_of(random_bytes("33", Some("seed=7"))).await;
        let b = body_of(random_bytes("33", Some("seed=7"))).await;
        assert_eq!(a.len(), 33);
        assert_eq!(a, b);
        assert_ne!(a, body_of(random_bytes("33", Some("seed=8"))).await);
        assert_eq!(
            body_of(random_bytes("999999999", None)).await.len(),
            MAX_BYTES
        );
    }
}

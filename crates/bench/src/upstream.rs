//! The upstream every configuration talks to: a minimal HTTP/1.1 keep-alive server answering
//! `/bytes/<n>` (default 1024) with n fixed bytes, so upstream cost is identical for all rows.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{BenchError, Result};

/// Largest body the upstream sends, so a typo cannot make it allocate without bound.
const MAX_BODY: usize = 1 << 20;

/// Serves until the process is killed.
pub async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| BenchError::Command {
            command: format!("bind {listen}"),
            detail: error.to_string(),
        })?;
    let body_1k = Bytes::from(vec![b'x'; 1024]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body_1k = body_1k.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let body = body_for(request.uri().path(), &body_1k);
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The body for `path`: `/bytes/<n>` gives n bytes, anything else 1 kB.
pub(crate) fn body_for(path: &str, body_1k: &Bytes) -> Bytes {
    match path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(1024) | None => body_1k.clone(),
        Some(n) => Bytes::from(vec![b'x'; n.min(MAX_BODY)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_path_sets_the_body_length() {
        let body_1k = Bytes::from(vec![b'x'; 1024]);
        assert_eq!(body_for("/bytes/1024", &body_1k).len(), 1024);
        assert_eq!(body_for("/bytes/10", &body_1k).len(), 10);
        assert_eq!(body_for("/", &body_1k).len(), 1024);
        assert_eq!(body_for("/bytes/999999999", &body_1k).len(), MAX_BODY);
    }
}

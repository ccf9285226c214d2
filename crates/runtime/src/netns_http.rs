//! A plain HTTP GET to an address inside a pod's network namespace: how the control plane asks a
//! sidecar's localhost admin (`127.0.0.1:15000/certs`), which nothing outside the pod can reach.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Result, RuntimeError};

/// How long the whole exchange may take: the admin answers from memory.
const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` from `address` inside network namespace `netns` and answers the body of a 200.
///
/// The request runs on a thread of its own that enters the namespace and ends with it: a thread's network
/// namespace is its own (setns), and a pooled thread left inside a pod's would make later sockets of the
/// control plane open there.
pub fn http_get_in_netns(netns: &str, address: SocketAddr, path: &str) -> Result<String> {
    let netns_path = std::path::Path::new("/var/run/netns").join(netns);
    let path = path.to_owned();
    let target = format!("{address}{path} in network namespace {netns}");
    let io = |action: &'static str, source: std::io::Error| RuntimeError::Io {
        action,
        path: netns_path.clone(),
        source,
    };
    let file = std::fs::File::open(&netns_path).map_err(|e| io("open", e))?;
    let exchange = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        // HTTP/1.0: the answer is the bytes up to the close, never chunked.
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    });
    let answer = exchange
        .join()
        .map_err(|_| io("ask", std::io::Error::other("the request thread panicked")))?
        .map_err(|e| io("ask", e))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(RuntimeError::CommandFailed {
            command: format!("GET {target}"),
            status: status.to_owned(),
            stderr: body.trim().to_owned(),
        });
    }
    Ok(body.to_owned())
}

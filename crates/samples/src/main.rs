//! `ironmesh-httpbin`: the bundled httpbin sample, listening on `--port` (8000 by default) on every address.

use std::net::{Ipv4Addr, SocketAddr};

use clap::Parser;

/// A small httpbin: `/`, `/get`, `/headers`, `/ip`, `/status/{code}`, `/delay/{s}`, `/bytes/{n}`.
#[derive(Parser, Debug)]
#[command(name = "ironmesh-httpbin", version, about)]
struct Args {
    /// TCP port to listen on.
    #[arg(long, short = 'p', default_value_t = 8000, env = "HTTPBIN_PORT")]
    port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.port));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (is the port already taken?)")
    })?;
    eprintln!("ironmesh-httpbin listening on {addr}");
    ironmesh_samples::httpbin::serve(listener).await;
    Ok(())
}

//! A trivial HTTP/1.1 server answering `200 hello` to every request, for
//! measuring the load generator itself (and comparing it with `wrk`).
//!
//! ```text
//! cargo run --release -p loadgen --example hello_server -- [ADDR] [THREADS]
//! ```
//!
//! ADDR defaults to 127.0.0.1:8081, THREADS to 1. Prints
//! `listening on http://ADDR` once it accepts connections.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned())
        .parse()
        .context("ADDR must be ip:port")?;
    let threads: usize = args
        .next()
        .map_or(Ok(1), |t| t.parse())
        .context("THREADS must be a number")?;
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    runtime.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
            // A client closing its connection is the normal end.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

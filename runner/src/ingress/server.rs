//! One accept loop for both listeners: a bound on open connections, back-off
//! on accept errors, HTTP/1.1 with header limits, the idle timeout, and a
//! graceful drain on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Counter, Gauge};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::idle::IdleIo;
use crate::body::OutBody;

/// What a listener enforces on its connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Connection gauges of a listener, where it has them.
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub rejected: Counter,
}

/// How long to wait after an accept error (out of file descriptors, say)
/// before trying again, rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Serves `listener` with `handler` until `shutdown` resolves, then lets open
/// connections finish their requests for up to `grace`. The handler gets
/// each request with its connection's peer address.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: &ConnectionLimits,
    metrics: Option<ConnectionMetrics>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, std::net::SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<OutBody>> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // hyper keeps up to 100 headers on the stack; asking for another count
    // moves them to the heap, so only do it when asked to.
    if limits.max_headers != 100 {
        http.max_headers(limits.max_headers);
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(m) = &metrics {
                m.rejected.increment(1);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = IdleIo::new(stream);
        let idle = io.clock();
        let handler = handler.clone();
        let conn = http.serve_connection(
            TokioIo::new(io),
            service_fn(move |req| {
                let response = handler(req, peer);
                async move { Ok::<_, Infallible>(response.await) }
            }),
        );
        let mut stop = stop_rx.clone();
        let idle_timeout = limits.idle_timeout;
        let open = metrics.as_ref().map(|m| m.open.clone());
        if let Some(open) = &open {
            open.increment(1.0);
        }
        tasks.spawn(async move {
            tokio::pin!(conn);
            let mut check = tokio::time::interval(idle_timeout.max(Duration::from_millis(40)) / 4);
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                        break;
                    }
                    _ = check.tick() => {
                        if idle.idle_for() > idle_timeout {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            if let Some(open) = open {
                open.decrement(1.0);
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "shutdown grace period over; closing the remaining connections"
        );
    }
}

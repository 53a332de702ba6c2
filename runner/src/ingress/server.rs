//! One accept loop for both listeners: a bound on open connections, back-off
//! on accept errors, HTTP/1.1 with header limits (and, over TLS, HTTP/2 as
//! ALPN chooses), the TLS handshake's timeout, the idle timeout, and a
//! graceful drain on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use metrics::{Counter, Gauge};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::idle::{IdleClock, IdleIo};
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

/// TLS on a listener: its handshakes' configuration, the time one may
/// take, and the counters of those that fail.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub handshake_timeout: Duration,
    pub timed_out: Counter,
    pub failed: Counter,
    /// Plain HTTP too, on the same port: a connection whose first byte
    /// opens no TLS handshake is served as HTTP/1.1, not secure.
    pub plain_too: bool,
}

/// The connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub peer: std::net::SocketAddr,
    /// Whether TLS ended here.
    pub secure: bool,
}

/// Serves `listener` with `handler` until `shutdown` resolves, then lets open
/// connections finish their requests for up to `grace`. The handler gets
/// each request with its connection. With `tls`, every connection is TLS
/// first (HTTP/2 or HTTP/1.1, as ALPN chose); its handshake holds a
/// connection slot and has the handshake timeout to finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: &ConnectionLimits,
    metrics: Option<ConnectionMetrics>,
    tls: Option<Tls>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, Conn) -> F + Clone + Send + Sync + 'static,
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
    // Over TLS, HTTP/2 too, with the same bounds on a request's head.
    let mut both = auto::Builder::new(TokioExecutor::new());
    both.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    if limits.max_headers != 100 {
        both.http1().max_headers(limits.max_headers);
    }
    both.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let both = Arc::new(both);
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
        let service = move |secure| {
            let handler = handler.clone();
            let conn = Conn { peer, secure };
            service_fn(move |req| {
                let response = handler(req, conn);
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        let stop = stop_rx.clone();
        let idle_timeout = limits.idle_timeout;
        let open = metrics.as_ref().map(|m| m.open.clone());
        if let Some(open) = &open {
            open.increment(1.0);
        }
        let watch = Watch {
            stop,
            idle,
            idle_timeout,
        };
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(io), service(false));
                tasks.spawn(async move {
                    watch.drive(conn).await;
                    if let Some(open) = open {
                        open.decrement(1.0);
                    }
                    drop(permit);
                });
            }
            Some(tls) => {
                let (tls, both) = (tls.clone(), both.clone());
                let http = http.clone();
                tasks.spawn(async move {
                    let handshake = async {
                        if tls.plain_too && !io.starts_tls().await? {
                            return Ok(Err(io));
                        }
                        tls.acceptor.accept(io).await.map(Ok)
                    };
                    match tokio::time::timeout(tls.handshake_timeout, handshake).await {
                        Ok(Ok(Ok(stream))) => {
                            let conn = both.serve_connection(TokioIo::new(stream), service(true));
                            watch.drive(conn).await;
                        }
                        Ok(Ok(Err(plain))) => {
                            let conn = http.serve_connection(TokioIo::new(plain), service(false));
                            watch.drive(conn).await;
                        }
                        Ok(Err(e)) => {
                            tls.failed.increment(1);
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            tls.timed_out.increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                    if let Some(open) = open {
                        open.decrement(1.0);
                    }
                    drop(permit);
                });
            }
        }
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

/// What ends a connection early: the listener stopping (after its
/// requests finish) and the idle timeout.
struct Watch {
    stop: watch::Receiver<bool>,
    idle: Arc<IdleClock>,
    idle_timeout: Duration,
}

impl Watch {
    async fn drive<C: GracefulConnection>(mut self, conn: C) {
        tokio::pin!(conn);
        let mut check = tokio::time::interval(self.idle_timeout.max(Duration::from_millis(40)) / 4);
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = self.stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                    break;
                }
                _ = check.tick() => {
                    if self.idle.idle_for() > self.idle_timeout {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

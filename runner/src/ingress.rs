//! HTTP ingress: the tenant listener (`/t/{tenant}/...`) and the admin
//! listener (`/metrics`, `/healthz`, `/readyz`).
//!
//! Admission happens here, before a guest is touched: the connection cap,
//! the global and per-tenant in-flight caps, and the request body limit
//! (from `Content-Length` at once, and again while the body streams).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::{Failure, Runtime};
use crate::limits::Limit;
use crate::metrics::{self, Outcome};
use crate::tenant::Tenant;

/// The settings the tenant listener enforces.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub max_request_body: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// State shared by every connection of the tenant listener.
pub struct Ingress {
    runtime: Arc<Runtime>,
    tenants: HashMap<Box<str>, Arc<Tenant>>,
    /// The global in-flight cap, as permits.
    in_flight: Arc<Semaphore>,
    limits: HttpLimits,
}

/// The response body type wasmtime-wasi-http produces; host answers use it too.
type OutBody = HyperOutgoingBody;

impl Ingress {
    pub fn new(runtime: Arc<Runtime>, tenants: Vec<Arc<Tenant>>, limits: HttpLimits) -> Self {
        Self {
            runtime,
            tenants: tenants
                .into_iter()
                .map(|t| (Box::from(t.name()), t))
                .collect(),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
        }
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    /// Serves `listener` until `shutdown` resolves, then lets connections
    /// finish their in-flight requests for up to `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) {
        let connections = Arc::new(Semaphore::new(self.limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .max_buf_size(self.limits.max_header_bytes.max(8192));
        // hyper keeps up to 100 headers on the stack; asking for another
        // count moves them to the heap, so only do it when asked to.
        if self.limits.max_headers != 100 {
            http.max_headers(self.limits.max_headers);
        }
        let open = &self.runtime.metrics().connections_open;
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors, say: back off briefly
                        // rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            while tasks.try_join_next().is_some() {}
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                self.runtime.metrics().connections_rejected.increment(1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let io = IdleIo::new(stream);
            let idle = io.clock();
            let conn = http.serve_connection(
                TokioIo::new(io),
                service_fn({
                    let this = self.clone();
                    move |req| this.clone().handle(req)
                }),
            );
            let mut stop = stop_rx.clone();
            let idle_timeout = self.limits.idle_timeout;
            let open = open.clone();
            open.increment(1.0);
            tasks.spawn(async move {
                tokio::pin!(conn);
                let mut check =
                    tokio::time::interval(idle_timeout.max(Duration::from_millis(40)) / 4);
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
                open.decrement(1.0);
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

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<OutBody>, Infallible> {
        let path = req.uri().path();
        let Some((name, rest)) = split_tenant(path) else {
            self.runtime.metrics().unrouted.increment(1);
            return Ok(text(
                StatusCode::NOT_FOUND,
                "not found: tenant requests go to /t/{tenant}/{path}".into(),
            ));
        };
        let Some(tenant) = self.tenants.get(name).cloned() else {
            self.runtime.metrics().unrouted.increment(1);
            return Ok(text(
                StatusCode::NOT_FOUND,
                format!("unknown tenant {name:?}"),
            ));
        };
        let rest_len = rest.len();
        let started = Instant::now();
        let (response, outcome) = self.admit_and_call(&tenant, req, rest_len).await;
        tenant
            .metrics()
            .request_finished(outcome, started.elapsed());
        Ok(response)
    }

    async fn admit_and_call(
        &self,
        tenant: &Arc<Tenant>,
        req: Request<Incoming>,
        rest_len: usize,
    ) -> (Response<OutBody>, Outcome) {
        tenant.metrics().request_started();
        let Ok(global) = self.in_flight.clone().try_acquire_owned() else {
            let msg = format!(
                "runner busy: all {} request slots are in use; retry later",
                self.limits.max_in_flight
            );
            return self.refuse(tenant, Limit::GlobalConcurrency, msg);
        };
        let Ok(own) = tenant.permits().clone().try_acquire_owned() else {
            let msg = format!(
                "too many requests: tenant {} already has {} requests in flight",
                tenant.name(),
                tenant.limits().max_in_flight
            );
            return self.refuse(tenant, Limit::TenantConcurrency, msg);
        };
        let max_body = self.limits.max_request_body;
        if content_length(&req).is_some_and(|len| len > max_body) {
            return self.refuse(tenant, Limit::RequestBody, body_too_large(max_body));
        }

        let (mut parts, body) = req.into_parts();
        parts.uri = guest_uri(&parts, rest_len);
        let tripped = Arc::new(AtomicBool::new(false));
        let body = LimitedBody {
            inner: body,
            left: max_body,
            limit: max_body,
            tripped: tripped.clone(),
        };
        let result = self
            .runtime
            .call(tenant, Request::from_parts(parts, body), [global, own])
            .await;
        if tripped.load(Ordering::Relaxed) {
            return self.refuse(tenant, Limit::RequestBody, body_too_large(max_body));
        }
        match result {
            Ok(response) => {
                let outcome = match response.status().as_u16() {
                    400..=499 => Outcome::Guest4xx,
                    500..=599 => Outcome::Guest5xx,
                    _ => Outcome::Ok,
                };
                (response, outcome)
            }
            Err(Failure::Limit(limit, message)) => {
                tracing::debug!(tenant = tenant.name(), limit = limit.as_str(), "{message}");
                let outcome = match limit {
                    Limit::Fuel => Outcome::FuelExhausted,
                    Limit::Deadline => Outcome::DeadlineExceeded,
                    Limit::InstancePool | Limit::GlobalConcurrency | Limit::TenantConcurrency => {
                        Outcome::Rejected
                    }
                    _ => Outcome::Trap,
                };
                (limit_response(limit, message), outcome)
            }
            Err(Failure::Trap(message)) => {
                tracing::debug!(tenant = tenant.name(), "{message}");
                (
                    text(StatusCode::INTERNAL_SERVER_ERROR, message),
                    Outcome::Trap,
                )
            }
            Err(Failure::Guest(message)) => {
                tracing::debug!(tenant = tenant.name(), "{message}");
                (
                    text(StatusCode::INTERNAL_SERVER_ERROR, message),
                    Outcome::Guest5xx,
                )
            }
            Err(Failure::Internal(message)) => {
                tracing::error!(
                    tenant = tenant.name(),
                    "request failed in the host: {message}"
                );
                let body = "internal error in the runner; the operator's log has details".into();
                (text(StatusCode::INTERNAL_SERVER_ERROR, body), Outcome::Trap)
            }
        }
    }

    fn refuse(
        &self,
        tenant: &Tenant,
        limit: Limit,
        message: String,
    ) -> (Response<OutBody>, Outcome) {
        tenant.metrics().rejected(limit);
        (limit_response(limit, message), Outcome::Rejected)
    }
}

fn body_too_large(max: u64) -> String {
    format!("request body too large: the limit is {max} bytes")
}

/// Splits `/t/{tenant}/{rest}` into the tenant and the byte length of
/// `/{rest}` (which keeps its leading slash; `/t/x` alone means `/`).
fn split_tenant(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/t/")?;
    match after.find('/') {
        Some(i) => Some((&after[..i], &after[i..])),
        None => Some((after, "")),
    }
    .filter(|(name, _)| !name.is_empty())
}

/// The URI the guest sees: the path below its mount point, the query, and
/// an authority from the Host header (wasi:http needs one).
fn guest_uri(parts: &http::request::Parts, rest_len: usize) -> Uri {
    let path = parts.uri.path();
    let rest = &path[path.len() - rest_len..];
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .unwrap_or_else(|_| Uri::from_static("http://localhost/"))
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub(crate) fn full(body: impl Into<Bytes>) -> OutBody {
    Full::new(body.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn text(status: StatusCode, mut message: String) -> Response<OutBody> {
    message.push('\n');
    let mut response = Response::new(full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A limit's response: its status, `x-runner-limit` naming it, and
/// `Retry-After` when waiting may help.
fn limit_response(limit: Limit, message: String) -> Response<OutBody> {
    let mut response = text(limit.status(), message);
    let headers = response.headers_mut();
    headers.insert("x-runner-limit", HeaderValue::from_static(limit.as_str()));
    if limit.retry_later() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The request body as the guest reads it, cut off (and flagged) past the
/// limit, so an oversized streamed body is refused without buffering it.
struct LimitedBody {
    inner: Incoming,
    left: u64,
    limit: u64,
    tripped: Arc<AtomicBool>,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        this.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.limit)),
                        )));
                    }
                    this.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that remembers when bytes last moved, for the idle timeout.
struct IdleIo {
    inner: tokio::net::TcpStream,
    clock: Arc<IdleClock>,
}

struct IdleClock {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl IdleClock {
    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

impl IdleIo {
    fn new(inner: tokio::net::TcpStream) -> Self {
        Self {
            inner,
            clock: Arc::new(IdleClock {
                epoch: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }

    fn clock(&self) -> Arc<IdleClock> {
        self.clock.clone()
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        result
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The admin listener: `/metrics`, `/healthz` and `/readyz`.
pub struct Admin {
    pub prometheus: PrometheusHandle,
    pub ingress: Arc<Ingress>,
    pub runtime: Arc<Runtime>,
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let this = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.route(&req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn route(&self, req: &Request<Incoming>) -> Response<OutBody> {
        match req.uri().path() {
            "/metrics" => {
                let usage = self
                    .ingress
                    .tenants()
                    .map(|t| (t.metrics().label().to_string(), t.namespace().usage()));
                metrics::sample(
                    self.runtime.engine(),
                    self.runtime.config().pool_size as usize,
                    usage,
                );
                let mut response = Response::new(full(self.prometheus.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok".into()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready".into()),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready".into()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_tenant;

    #[test]
    fn tenant_paths_split_at_the_mount_point() {
        assert_eq!(split_tenant("/t/t0/kv/a"), Some(("t0", "/kv/a")));
        assert_eq!(split_tenant("/t/t0"), Some(("t0", "")));
        assert_eq!(split_tenant("/t/t0/"), Some(("t0", "/")));
        assert_eq!(split_tenant("/t//x"), None);
        assert_eq!(split_tenant("/x/t0/a"), None);
    }
}

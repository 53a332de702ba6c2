//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and with an
//! admin token the `/v1` API ([`super::api`]). Tenant traffic never
//! reaches it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::api::Api;
use super::server::{self, ConnectionLimits};
use crate::body::{OutBody, full, text};
use crate::engine::Runtime;
use crate::fleet::Fleet;
use crate::metrics::Recorder;

pub struct Admin {
    pub recorder: Recorder,
    pub fleet: Arc<Fleet>,
    pub runtime: Arc<Runtime>,
    pub ready: Arc<AtomicBool>,
    /// `None` where no admin token is configured: `/v1` is then off.
    pub api: Option<Arc<Api>>,
}

impl Admin {
    /// Serves the admin endpoints until `shutdown` resolves, under the same
    /// connection bound as the tenant listener.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        limits: &ConnectionLimits,
        shutdown: impl Future<Output = ()>,
    ) {
        let handler = move |req: Request<Incoming>| {
            let this = self.clone();
            async move {
                match &this.api {
                    Some(api) if is_api(req.uri().path()) => api.handle(&this.fleet, req).await,
                    _ => this.route(&req).await,
                }
            }
        };
        server::serve(listener, limits, None, handler, shutdown, Duration::ZERO).await;
    }

    async fn route(&self, req: &Request<Incoming>) -> Response<OutBody> {
        match req.uri().path() {
            "/metrics" => {
                let tenants = self.fleet.all();
                let usage = tenants
                    .iter()
                    .map(|t| (t.metrics().label().to_string(), t.namespace().usage()));
                let body = self.recorder.render(
                    &self.runtime.engines(),
                    self.runtime.config().pool_size as usize,
                    usage,
                );
                let mut response = Response::new(full(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok".into()),
            "/readyz" => self.readiness().await,
            _ if self.api.is_none() && is_api(req.uri().path()) => text(
                StatusCode::NOT_FOUND,
                "not found: the admin API is off; start the runner with an admin token \
                 (--admin-token-file or RUNNER_ADMIN_TOKEN) to turn it on"
                    .into(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz".into(),
            ),
        }
    }
}

impl Admin {
    /// `/readyz`: 200 while the runner takes requests and its store
    /// answers; 503 with why not while it shuts down or the store (a Redis
    /// it shares) cannot be reached, and 200 again once it can.
    async fn readiness(&self) -> Response<OutBody> {
        if !self.ready.load(Ordering::Relaxed) {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: shutting down".into(),
            );
        }
        match self.fleet.store_ready().await {
            Ok(()) => text(StatusCode::OK, "ready".into()),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the store cannot be reached: {e}"),
            ),
        }
    }
}

fn is_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

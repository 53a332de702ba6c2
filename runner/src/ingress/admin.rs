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
        tls: Option<server::Tls>,
        shutdown: impl Future<Output = ()>,
    ) {
        let handler = move |req: Request<Incoming>, conn: server::Conn| {
            let this = self.clone();
            async move {
                match &this.api {
                    Some(api) if is_api(req.uri().path()) => {
                        api.handle(&this.fleet, req, conn.secure).await
                    }
                    _ => this.route(&req).await,
                }
            }
        };
        server::serve(
            listener,
            limits,
            None,
            tls,
            handler,
            shutdown,
            Duration::ZERO,
        )
        .await;
    }

    async fn route(&self, req: &Request<Incoming>) -> Response<OutBody> {
        match req.uri().path() {
            "/metrics" => {
                let tenants = self.fleet.all();
                let usage = tenants
                    .iter()
                    .map(|t| (t.metrics().label().to_string(), t.namespace().usage()));
                // Limits only for a tenant with a label of its own: a
                // shared one (`_other`) has no one tenant's limits.
                let limits = tenants
                    .iter()
                    .filter(|t| t.metrics().label() == t.name())
                    .map(|t| (t.name(), t.limits()));
                let body = self.recorder.render(
                    &self.runtime.engines(),
                    self.runtime.config().pool_size as usize,
                    usage,
                    limits,
                );
                // Prometheus asks for gzip; a scrape of many tenants shrinks
                // about tenfold.
                let gzip = accepts_gzip(req.headers());
                let body = if gzip {
                    gzipped(body.as_bytes())
                } else {
                    body.into_bytes()
                };
                let mut response = Response::new(full(body));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                if gzip {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
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

/// Whether `Accept-Encoding` allows gzip (RFC 9110 12.5.3: `gzip` or `*`
/// without `q=0`).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `bytes` gzipped, at the fast level: a scrape is compressed on every
/// request, and most of its size goes at any level.
fn gzipped(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn is_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        let accepts = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(http::header::ACCEPT_ENCODING, v.parse().expect("a value"));
            }
            accepts_gzip(&headers)
        };
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["identity, GZIP;q=0.5"]));
        assert!(accepts(&["br", "gzip"]));
        assert!(accepts(&["*"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["br, deflate"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.0"]));
        assert!(!accepts(&["x-gzip-ish"]));
    }
}

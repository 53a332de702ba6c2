//! Outgoing HTTP: a tenant's guests reach the hosts on its allow-list and
//! nothing else, over connections pooled per tenant, under its limits.
//!
//! Every request is checked in this order, and the first rule it breaks
//! answers it with a wasi:http error code (README, "Outgoing HTTP"):
//! 1. the per-request cap (`max-outbound-requests`): HTTP-request-denied;
//! 2. its target: scheme http or https, a host, no user info, a path in
//!    origin form (`/...`: an absolute-form path would let the request line
//!    name another host than the one checked), and a `Host` header, if
//!    any, naming the same authority: HTTP-request-denied otherwise;
//! 3. the allow-list (`allowed-outbound-hosts`) on scheme, host and port:
//!    HTTP-request-denied;
//! 4. the connection cap (`max-outbound-connections`):
//!    connection-limit-reached once the connect timeout passes;
//! 5. the address policy on each resolved address (`connect`):
//!    destination-IP-prohibited.
//!
//! The `Host` the upstream sees is always the checked authority (the
//! guest's is removed and the pool writes it from the URI). Redirects are
//! the guest's to follow: the pool follows none.

mod connect;
pub mod policy;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::RwLock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use self::connect::{CONNECT_TIMEOUT, ConnectError, Connector};
use self::policy::{AddressPolicy, AllowedHosts, Networks, Scheme, normalize_host};
use crate::limits::Limits;
use crate::metrics::{Outbound, TenantMetrics};
use crate::request_id::RequestId;

/// What every tenant's outgoing requests share: the address policy and the
/// TLS client settings.
pub struct Egress {
    policy: RwLock<AddressPolicy>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Egress {
    pub fn new(allowed: Networks) -> Arc<Self> {
        Arc::new(Self {
            policy: RwLock::new(AddressPolicy::new(allowed)),
            tls: OnceLock::new(),
        })
    }

    /// Adds the runner's listening addresses, which no guest may reach.
    pub fn refuse_own(&self, own: Vec<std::net::SocketAddr>) {
        let mut policy = self.policy.write();
        *policy = policy.clone().with_own(own);
    }

    /// The system's trusted roots (`SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// honoured), loaded at the first https request.
    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        self.tls
            .get_or_init(|| {
                let loaded = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
                    tracing::error!(
                        "outgoing https: no trusted certificates found ({}); set SSL_CERT_FILE",
                        errors.join("; ")
                    );
                    return Err("no trusted certificates".into());
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Ok(Arc::new(config))
            })
            .clone()
            .map_err(ConnectError::TlsCertificate)
    }
}

/// One tenant's outgoing requests: its allow-list, its limits and its pool
/// of connections, made at its first request and never shared with
/// another tenant.
pub struct TenantEgress {
    tenant: Arc<str>,
    allowed: AllowedHosts,
    limits: OutboundLimits,
    egress: Arc<Egress>,
    in_use: Arc<Semaphore>,
    metrics: Arc<TenantMetrics>,
    pool: OnceLock<Client<Connector, Sent>>,
}

#[derive(Clone, Copy)]
struct OutboundLimits {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
    response_bytes: u64,
    idle: usize,
    idle_timeout: Duration,
}

/// A refused or failed outgoing request: the code the guest sees, the
/// outcome it is counted under, and for a refusal the rule, for the log.
struct Failure {
    code: HttpError,
    outcome: Outbound,
    refused: Option<String>,
}

impl Failure {
    fn denied(outcome: Outbound, code: HttpError, why: impl Into<String>) -> Self {
        Self {
            code,
            outcome,
            refused: Some(why.into()),
        }
    }
}

impl TenantEgress {
    pub fn new(
        tenant: Arc<str>,
        limits: &Limits,
        egress: &Arc<Egress>,
        metrics: Arc<TenantMetrics>,
    ) -> Self {
        Self {
            tenant,
            allowed: limits.allowed_outbound_hosts.clone(),
            limits: OutboundLimits {
                connect: limits.outbound_connect_timeout,
                first_byte: limits.outbound_first_byte_timeout,
                between_bytes: limits.outbound_between_bytes_timeout,
                response_bytes: limits.max_outbound_response_bytes.as_u64(),
                idle: limits.outbound_idle_connections,
                idle_timeout: limits.outbound_idle_timeout,
            },
            egress: egress.clone(),
            in_use: Arc::new(Semaphore::new(limits.max_outbound_connections)),
            metrics,
            pool: OnceLock::new(),
        }
    }

    fn pool(&self) -> &Client<Connector, Sent> {
        self.pool.get_or_init(|| {
            let connector = Connector {
                egress: self.egress.clone(),
                metrics: self.metrics.clone(),
                connect_timeout: self.limits.connect,
            };
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(self.limits.idle)
                .pool_idle_timeout(self.limits.idle_timeout)
                .pool_timer(TokioTimer::new())
                // A request the guest's body could not replay is the
                // guest's to retry.
                .retry_canceled_requests(false)
                .build(connector)
        })
    }

    /// Sends `request` (after `over_cap`, refused) and answers its
    /// response head; see the module docs for the order of the checks. A
    /// refusal is logged, naming the rule and the target, never a header.
    pub async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        over_cap: bool,
        id: Option<RequestId>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        // Kept for a refusal's log line (reference-counted, not copied):
        // the line is written only then.
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let started = Instant::now();
        let result = self.clone().try_send(request, options, over_cap).await;
        let (outcome, elapsed) = match &result {
            Ok(_) => (Outbound::Ok, Some(started.elapsed())),
            Err(f) => (f.outcome, None),
        };
        self.metrics.outbound(outcome, elapsed);
        result.map_err(|failure| {
            if let Some(why) = &failure.refused {
                tracing::warn!(
                    target: "guest",
                    tenant = %self.tenant,
                    request_id = id.as_ref().map(tracing::field::display),
                    "outgoing request refused: {why}: {method} {}://{}{}",
                    uri.scheme_str().unwrap_or("?"),
                    uri.authority().map_or("?", |a| a.as_str()),
                    uri.path()
                );
            }
            failure.code
        })
    }

    async fn try_send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        over_cap: bool,
    ) -> Result<http::Response<WasiBody>, Failure> {
        if over_cap {
            return Err(Failure::denied(
                Outbound::DeniedLimit,
                HttpError::HttpRequestDenied,
                "past max-outbound-requests for this request",
            ));
        }
        let (scheme, host, port) = self.check_target(&request)?;
        if !self.allowed.allows(scheme, &host, port) {
            let why = if self.allowed.is_empty() {
                "the tenant's allowed-outbound-hosts is empty"
            } else {
                "not in the tenant's allowed-outbound-hosts"
            };
            return Err(Failure::denied(
                Outbound::DeniedHost,
                HttpError::HttpRequestDenied,
                why,
            ));
        }
        // The upstream sees the authority just checked, written by the
        // pool from the URI.
        request.headers_mut().remove(HOST);
        let limits = &self.limits;
        let pick = |guest: Option<Duration>, ours: Duration| guest.map_or(ours, |g| g.min(ours));
        let connect = pick(options.and_then(|o| o.connect_timeout), limits.connect);
        let first_byte = pick(
            options.and_then(|o| o.first_byte_timeout),
            limits.first_byte,
        );
        let between = pick(
            options.and_then(|o| o.between_bytes_timeout),
            limits.between_bytes,
        );
        let permit = match tokio::time::timeout(connect, self.in_use.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(Failure::denied(
                    Outbound::DeniedLimit,
                    HttpError::ConnectionLimitReached,
                    "max-outbound-connections in use for the whole connect timeout",
                ));
            }
        };
        let metrics = self.metrics.clone();
        // The tenant's byte counters start at its first request, bodies or
        // not, as its other series do.
        metrics.outbound_sent(0);
        metrics.outbound_received(0);
        let request = request.map(|body| Sent {
            body,
            metrics: metrics.clone(),
        });
        let sending = CONNECT_TIMEOUT.scope(connect, self.pool().request(request));
        // Connecting ends at its own timeout, inside.
        let response = match tokio::time::timeout(connect.saturating_add(first_byte), sending).await
        {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(classify(&e)),
            Err(_) => {
                return Err(Failure {
                    code: HttpError::ConnectionReadTimeout,
                    outcome: Outbound::Timeout,
                    refused: None,
                });
            }
        };
        if let Some(declared) = response.body().size_hint().exact()
            && declared > limits.response_bytes
        {
            return Err(Failure {
                code: HttpError::HttpResponseBodySize(Some(declared)),
                outcome: Outbound::Error,
                refused: None,
            });
        }
        Ok(response.map(|incoming| {
            Received {
                incoming,
                left: limits.response_bytes,
                between,
                timer: None,
                metrics,
                _permit: Some(permit),
            }
            .boxed_unsync()
        }))
    }

    /// The scheme, host and port a request goes to, after the checks on
    /// its form (module docs, 2).
    fn check_target<B>(
        &self,
        request: &http::Request<B>,
    ) -> Result<(Scheme, String, u16), Failure> {
        let uri = request.uri();
        let denied = |why: &str| {
            Err(Failure::denied(
                Outbound::DeniedHost,
                HttpError::HttpRequestDenied,
                why,
            ))
        };
        let Some(scheme) = uri.scheme_str().and_then(Scheme::parse) else {
            return denied("the scheme is neither http nor https");
        };
        let Some(authority) = uri.authority() else {
            return denied("no host");
        };
        if authority.as_str().contains('@') {
            return denied("user info in the authority");
        }
        let path = uri.path();
        let origin_form =
            path.starts_with('/') || (path == "*" && request.method() == http::Method::OPTIONS);
        if !origin_form {
            return denied("the path is not in origin form (/...)");
        }
        if let Some(host_header) = request.headers().get(HOST) {
            let same = host_header
                .to_str()
                .is_ok_and(|h| h.eq_ignore_ascii_case(authority.as_str()));
            if !same || request.headers().get_all(HOST).iter().count() > 1 {
                return denied("a Host header naming another authority");
            }
        }
        let host = normalize_host(authority.host());
        if host.is_empty() {
            return denied("no host");
        }
        Ok((
            scheme,
            host,
            uri.port_u16().unwrap_or(scheme.default_port()),
        ))
    }
}

/// The guest's code for a failure of the pool.
fn classify(e: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(connect) = err.downcast_ref::<ConnectError>() {
            let (outcome, refused) = match connect {
                ConnectError::Prohibited(..) => {
                    (Outbound::DeniedAddress, Some(connect.to_string()))
                }
                ConnectError::Timeout => (Outbound::Timeout, None),
                _ => (Outbound::Error, None),
            };
            return Failure {
                code: connect.code(),
                outcome,
                refused,
            };
        }
        if let Some(wasi) = err.downcast_ref::<HttpError>() {
            // The guest's own body failed while it was sent.
            return Failure {
                code: copy_code(wasi),
                outcome: Outbound::Error,
                refused: None,
            };
        }
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            let code = if hyper.is_incomplete_message() || hyper.is_canceled() {
                HttpError::ConnectionTerminated
            } else if hyper.is_parse() {
                HttpError::HttpProtocolError
            } else {
                HttpError::ConnectionTerminated
            };
            return Failure {
                code,
                outcome: Outbound::Error,
                refused: None,
            };
        }
        source = err.source();
    }
    Failure {
        code: HttpError::InternalError(Some(e.to_string())),
        outcome: Outbound::Error,
        refused: None,
    }
}

/// A guest body's error as the guest will see it again.
fn copy_code(e: &HttpError) -> HttpError {
    match e {
        HttpError::HttpRequestBodySize(n) => HttpError::HttpRequestBodySize(*n),
        other => HttpError::InternalError(Some(other.to_string())),
    }
}

/// A request body on its way out, counted.
pub struct Sent {
    body: WasiBody,
    metrics: Arc<TenantMetrics>,
}

impl Body for Sent {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.metrics.outbound_sent(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body on its way in: counted, cut at the tenant's size limit
/// and its time between bytes, and holding the request's connection slot
/// until it ends.
struct Received {
    incoming: hyper::body::Incoming,
    left: u64,
    between: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<TenantMetrics>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Body for Received {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                this._permit = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this._permit = None;
                let code = if e.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::ConnectionTerminated
                };
                Poll::Ready(Some(Err(code)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.metrics.outbound_received(n);
                    if n > this.left {
                        this._permit = None;
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(None))));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let between = this.between;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this._permit = None;
                        Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Recorder;

    fn egress() -> TenantEgress {
        let recorder = Recorder::new().expect("a recorder");
        let metrics = Arc::new(TenantMetrics::new("t".into(), &recorder));
        TenantEgress::new(
            "t".into(),
            &Limits::default(),
            &Egress::new(Networks::default()),
            metrics,
        )
    }

    fn check(uri: &str, host: Option<&str>) -> Result<(Scheme, String, u16), String> {
        let mut request = http::Request::get(uri);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        let request = request.body(()).expect("a request");
        egress()
            .check_target(&request)
            .map_err(|f| f.refused.unwrap_or_default())
    }

    /// What wasi:http lets a guest build is checked again here, where the
    /// request leaves: the authority the connection goes to is the one
    /// the request line and `Host` name.
    #[test]
    fn the_target_is_the_authority_the_connection_goes_to() {
        assert_eq!(
            check("https://API.example.com./v1?x=1", Some("API.example.com.")),
            Ok((Scheme::Https, "api.example.com".into(), 443))
        );
        assert_eq!(
            check("http://[::1]:8080/", None),
            Ok((Scheme::Http, "[::1]".into(), 8080))
        );
        for (uri, host, why) in [
            (
                "ftp://example.com/",
                None,
                "the scheme is neither http nor https",
            ),
            ("/relative", None, "the scheme is neither http nor https"),
            (
                "http://user:pw@example.com/",
                None,
                "user info in the authority",
            ),
            (
                "http://example.com/",
                Some("evil.example"),
                "a Host header naming another authority",
            ),
            (
                "http://example.com:8080/",
                Some("example.com"),
                "a Host header naming another authority",
            ),
        ] {
            assert_eq!(check(uri, host), Err(why.to_string()), "{uri} {host:?}");
        }
        // An absolute URL cannot even be a path here (the http crate
        // refuses it, as wasi:http refuses it to a guest); `*` can, and
        // goes only with OPTIONS.
        assert!(
            "http://evil.example/x"
                .parse::<http::uri::PathAndQuery>()
                .is_err()
        );
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some("allowed.example".parse().expect("an authority"));
        parts.path_and_query = Some("*".parse().expect("a target"));
        let uri = http::Uri::from_parts(parts).expect("a URI");
        let request = http::Request::get(uri).body(()).expect("a request");
        assert_eq!(
            egress().check_target(&request).map_err(|f| f.refused),
            Err(Some("the path is not in origin form (/...)".to_string()))
        );
    }
}

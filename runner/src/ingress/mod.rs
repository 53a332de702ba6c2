//! Where requests come in: the tenant listener (`/t/{tenant}/...`) and the
//! admin listener (`/metrics`, `/healthz`, `/readyz`, the admin API).
//!
//! - [`server`]: the accept loop both listeners share (connection bound,
//!   accept back-off, header limits, TLS handshakes, idle timeout,
//!   graceful drain), with the certificates of [`crate::tls`].
//! - [`idle`]: the socket wrapper behind the idle timeout.
//! - [`admin`]: the admin listener's routes.
//! - [`api`]: the admin API (`/v1`): tenants deployed at runtime.
//!
//! Routing and admission happen here, before a guest is touched; the
//! request's end is recorded once, through [`crate::outcome`].

pub mod admin;
pub mod api;
mod idle;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use self::server::{Conn, ConnectionLimits, ConnectionMetrics};
use crate::admission::{Admission, GlobalCap};
use crate::body::{GuestBody, LimitedBody, OutBody, body_too_large, text};
use crate::engine::Runtime;
use crate::fleet::Fleet;
use crate::limits::Limit;
use crate::outbound::policy::Networks;
use crate::outcome::{self, Access, Outcome};
use crate::request_id::{self, RequestId};
use crate::routes::{HostNames, request_host, suffix_tenant};
use crate::tenant::Tenant;
use crate::tls::Certs;

/// The settings the tenant listener enforces.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_in_flight: usize,
    pub max_request_body: u64,
    /// Bodies declared this small or smaller are read whole before the
    /// request takes a slot.
    pub max_buffered_body: u64,
    /// The time a client has to send such a body.
    pub body_read_timeout: Duration,
    pub connections: ConnectionLimits,
    /// Where each request's id comes from.
    pub request_ids: request_id::Policy,
    /// One log line per request (target `access`).
    pub access_log: bool,
    /// Domains whose subdomains name tenants.
    pub host_suffixes: HostNames,
    /// Whether `/t/{tenant}/` reaches tenants.
    pub path_routing: bool,
    /// Time a client has to finish its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Proxies whose forwarding headers guests see.
    pub trusted_proxies: Networks,
}

/// State shared by every connection of the tenant listener.
pub struct Ingress {
    runtime: Arc<Runtime>,
    fleet: Arc<Fleet>,
    global: GlobalCap,
    limits: HttpLimits,
    /// With TLS on, the certificates its handshakes get.
    certs: Option<Arc<Certs>>,
}

impl Ingress {
    pub fn new(fleet: Arc<Fleet>, limits: HttpLimits, certs: Option<Arc<Certs>>) -> Self {
        if let Some(certs) = &certs {
            // A tenant's own certificate answers for its hosts and its
            // suffix subdomain; anything else gets the operator's.
            let (fleet, suffixes) = (fleet.clone(), limits.host_suffixes.clone());
            certs.look_up_tenants(Box::new(move |name| {
                let tenant = fleet.by_host(name).or_else(|| {
                    suffix_tenant(name, &suffixes).and_then(|tenant| fleet.get(tenant))
                })?;
                tenant.certified().cloned()
            }));
        }
        Self {
            runtime: fleet.runtime().clone(),
            fleet,
            global: GlobalCap::new(limits.max_in_flight),
            limits,
            certs,
        }
    }

    /// With TLS on, the certificates its handshakes get.
    pub fn certs(&self) -> Option<&Arc<Certs>> {
        self.certs.as_ref()
    }

    /// Whether `peer` is a trusted proxy.
    fn is_trusted(&self, peer: std::net::IpAddr) -> bool {
        let proxies = &self.limits.trusted_proxies.0;
        !proxies.is_empty() && {
            let peer = peer.to_canonical();
            proxies.iter().any(|net| net.contains(&peer))
        }
    }

    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Serves `listener` until `shutdown` resolves, then lets connections
    /// finish their in-flight requests for up to `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let metrics = self.runtime.metrics();
        let tls = match &self.certs {
            None => None,
            Some(certs) => Some(server::Tls {
                acceptor: tokio_rustls::TlsAcceptor::from(certs.server_config()?),
                handshake_timeout: self.limits.tls_handshake_timeout,
                timed_out: metrics.tls_timed_out.clone(),
                failed: metrics.tls_failed.clone(),
                plain_too: false,
            }),
        };
        let connection_metrics = ConnectionMetrics {
            open: metrics.connections_open.clone(),
            rejected: metrics.connections_rejected.clone(),
        };
        let limits = self.limits.connections.clone();
        let handler = move |req, conn| self.clone().handle(req, conn);
        server::serve(
            listener,
            &limits,
            Some(connection_metrics),
            tls,
            handler,
            shutdown,
            grace,
        )
        .await;
        Ok(())
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Conn) -> Response<OutBody> {
        let id = RequestId::for_request(req.headers(), self.limits.request_ids);
        // A body left unread ends the connection (hyper cannot skip it), so
        // an answer that does not read it says so.
        let unread = !http_body::Body::is_end_stream(req.body());
        let mut access = self.limits.access_log.then(|| Access {
            method: req.method().clone(),
            path: req.uri().path().into(),
            received: std::time::Instant::now(),
            routed: "-",
        });
        // RFC 9112 3.2: an HTTP/1.1 request without exactly one Host header
        // is answered 400, before it can reach any tenant.
        if req.version() == http::Version::HTTP_11
            && req.headers().get_all(header::HOST).iter().count() != 1
        {
            let message = "bad request: an HTTP/1.1 request needs exactly one Host header";
            return self.unrouted(StatusCode::BAD_REQUEST, message.into(), id, access, unread);
        }
        let path = req.uri().path();
        let by_host = if self.fleet.claims_hosts() || !self.limits.host_suffixes.0.is_empty() {
            request_host(req.uri(), req.headers()).and_then(|host| {
                self.fleet.by_host(&host).or_else(|| {
                    suffix_tenant(&host, &self.limits.host_suffixes)
                        .and_then(|name| self.fleet.get(name))
                })
            })
        } else {
            None
        };
        let metrics = self.runtime.metrics();
        let (tenant, rest_len) = match by_host {
            // The whole path is the tenant's.
            Some(tenant) => {
                metrics.routed_by_host.increment(1);
                if let Some(access) = &mut access {
                    access.routed = "host";
                }
                (tenant, path.len())
            }
            None => {
                let split = split_tenant(path).filter(|_| self.limits.path_routing);
                let Some((name, rest)) = split else {
                    // Over TLS the client may have reused a connection made
                    // for another name (RFC 9110 15.5.20): 421 tells it to
                    // ask again on one of its own.
                    let (status, message) = match (self.limits.path_routing, conn.secure) {
                        (true, _) => (
                            StatusCode::NOT_FOUND,
                            "not found: tenant requests go to /t/{tenant}/{path}",
                        ),
                        (false, false) => (
                            StatusCode::NOT_FOUND,
                            "not found: no tenant is served at this host",
                        ),
                        (false, true) => (
                            StatusCode::MISDIRECTED_REQUEST,
                            "misdirected request: no tenant is served at this host",
                        ),
                    };
                    return self.unrouted(status, message.into(), id, access, unread);
                };
                let Some(tenant) = self.fleet.get(name) else {
                    let message = format!("unknown tenant {name:?}");
                    return self.unrouted(StatusCode::NOT_FOUND, message, id, access, unread);
                };
                metrics.routed_by_path.increment(1);
                if let Some(access) = &mut access {
                    access.routed = "path";
                }
                (tenant, rest.len())
            }
        };
        let for_guest = id.clone();
        let request = outcome::Request::start(tenant.scope(), id)
            .head(req.method() == http::Method::HEAD)
            .access(access);
        let outcome = self
            .admit_and_call(&tenant, req, rest_len, for_guest, conn)
            .await;
        request.end(outcome)
    }

    /// The answer to a request that reached no tenant, counted, with its
    /// id and, with the access log on, its line (tenant `-`).
    fn unrouted(
        &self,
        status: StatusCode,
        message: String,
        id: RequestId,
        access: Option<Access>,
        unread: bool,
    ) -> Response<OutBody> {
        self.runtime.metrics().unrouted.increment(1);
        let bytes = message.len() as u64;
        if let Some(access) = access {
            access.log("-", &id, status, "unrouted", bytes);
        }
        let mut response = text(status, message);
        let headers = response.headers_mut();
        headers.insert(request_id::HEADER, id.header_value());
        if unread {
            headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        response
    }

    async fn admit_and_call(
        &self,
        tenant: &Arc<Tenant>,
        req: Request<Incoming>,
        rest_len: usize,
        id: RequestId,
        conn: Conn,
    ) -> Outcome {
        let max_body = self.limits.max_request_body;
        let declared = content_length(&req);
        if declared.is_some_and(|len| len > max_body) {
            return Outcome::Refused(Limit::RequestBody, body_too_large(max_body));
        }
        let (mut parts, body) = req.into_parts();
        // What a proxy says of the client is believed from a trusted proxy
        // alone; anyone else's claims never reach a guest.
        let trusted = self.is_trusted(conn.peer.ip());
        if !trusted {
            for name in FORWARDING {
                parts.headers.remove(name);
            }
        }
        let secure = conn.secure || (trusted && forwarded_https(&parts.headers));
        parts.uri = guest_uri(&parts, rest_len, secure);
        let mut tenant = tenant.clone();
        if let Some(routes) = tenant.routes() {
            // Before any body is read or slot taken: a path no route
            // matches never reaches a component.
            let path = parts.uri.path();
            let Some((index, spin)) = routes.headers(path, &parts.uri.to_string()) else {
                let message = format!("no route of tenant {:?} matches {path}", tenant.name());
                return Outcome::Served(text(StatusCode::NOT_FOUND, message));
            };
            // The component trusts spin-* headers to be the host's: a
            // client's own are dropped.
            let forged: Vec<header::HeaderName> = parts
                .headers
                .keys()
                .filter(|name| name.as_str().starts_with("spin-"))
                .cloned()
                .collect();
            for name in forged {
                parts.headers.remove(name);
            }
            parts.headers.extend(spin);
            if let Ok(peer) = http::HeaderValue::try_from(conn.peer.to_string()) {
                parts.headers.insert("spin-client-addr", peer);
            }
            tenant = tenant.component_at(index);
        }
        let tenant = &tenant;
        let (body, tripped) = LimitedBody::new(body, max_body);
        // A small body is read before admission: a client that declares
        // one and never sends it waits here, holding no slot of the
        // tenant's, and is cut off by the body-read timeout.
        let body = match declared {
            Some(len) if len <= self.limits.max_buffered_body => {
                let timeout = self.limits.body_read_timeout;
                match tokio::time::timeout(timeout, body.collect()).await {
                    Ok(Ok(collected)) => GuestBody::Buffered(Some(collected.to_bytes())),
                    Ok(Err(e)) => {
                        return Outcome::ClientError(format!(
                            "the request body could not be read: {e}"
                        ));
                    }
                    Err(_) => {
                        return Outcome::Refused(
                            Limit::BodyReadTimeout,
                            format!(
                                "request body timeout: {len} declared bytes did not arrive within {}",
                                humantime::format_duration(timeout)
                            ),
                        );
                    }
                }
            }
            _ => GuestBody::Streaming(body),
        };
        // A tenant removed while this request's body came (its purge may
        // hold every permit of its) is gone for this request too: 404, as
        // for a request that came after, not a 429.
        let gone = || {
            let message = format!("unknown tenant {:?}", tenant.name());
            Outcome::Served(text(StatusCode::NOT_FOUND, message))
        };
        if tenant.scope().is_removed() {
            return gone();
        }
        let admission = match Admission::try_admit(&self.global, tenant.scope()) {
            Ok(admission) => admission,
            Err(_) if tenant.scope().is_removed() => return gone(),
            Err(refused) => return refused.into(),
        };
        let request = Request::from_parts(parts, body);
        let outcome = crate::call::run(&self.runtime, tenant, request, admission, Some(id)).await;
        if tripped.load(Ordering::Relaxed) {
            return Outcome::Refused(Limit::RequestBody, body_too_large(max_body));
        }
        outcome
    }
}

/// The headers by which a proxy tells of the client it forwards.
const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// Whether a (trusted) proxy says the client came over https.
fn forwarded_https(headers: &http::HeaderMap) -> bool {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let forwarded = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| {
            first.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("proto")
                    .then(|| value.trim().trim_matches('"'))
            })
        });
    proto
        .or(forwarded)
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
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

/// The URI the guest sees: the path below its mount point, the query, an
/// authority from the Host header (HTTP/2's `:authority` without one;
/// wasi:http needs one), and `https` where TLS ended here.
fn guest_uri(parts: &http::request::Parts, rest_len: usize, secure: bool) -> Uri {
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
        .or_else(|| parts.uri.authority().cloned())
        .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
    Uri::builder()
        .scheme(if secure { "https" } else { "http" })
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

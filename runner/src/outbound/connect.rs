//! Connections for a tenant's pool: the name resolved once, every address
//! checked against the address policy, and the connection made to exactly
//! an address that passed (a second lookup could answer otherwise: DNS
//! rebinding). TLS through rustls, HTTP/2 where the server offers it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::Egress;
use super::policy::{Blocked, Scheme, parse_ip};
use crate::metrics::TenantMetrics;

tokio::task_local! {
    /// The connect timeout of the request being sent: the pool calls the
    /// connector with nothing but the URI, inside the request's future.
    pub(super) static CONNECT_TIMEOUT: Duration;
}

/// Why no connection was made: a wasi:http error code, and for the
/// address policy the address and the rule.
#[derive(Clone, Debug)]
pub enum ConnectError {
    Prohibited(SocketAddr, Blocked),
    Dns(String),
    Timeout,
    Refused(String),
    Unroutable(String),
    TlsCertificate(String),
    TlsAlert(u8, String),
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Prohibited(addr, rule) => {
                write!(
                    f,
                    "{} is refused by the address policy ({})",
                    addr.ip(),
                    rule.as_str()
                )
            }
            ConnectError::Dns(e) => write!(f, "resolving failed: {e}"),
            ConnectError::Timeout => f.write_str("connecting timed out"),
            ConnectError::Refused(e) | ConnectError::Unroutable(e) => {
                write!(f, "connecting failed: {e}")
            }
            ConnectError::TlsCertificate(e) => write!(f, "TLS certificate refused: {e}"),
            ConnectError::TlsAlert(_, e) => write!(f, "TLS alert: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    /// The code the guest sees.
    pub fn code(&self) -> wasmtime_wasi_http::Error {
        use wasmtime_wasi_http::Error as E;
        match self {
            ConnectError::Prohibited(..) => E::DestinationIpProhibited,
            ConnectError::Dns(_) => E::DnsError {
                rcode: None,
                info_code: None,
            },
            ConnectError::Timeout => E::ConnectionTimeout,
            ConnectError::Refused(_) => E::ConnectionRefused,
            ConnectError::Unroutable(_) => E::DestinationIpUnroutable,
            ConnectError::TlsCertificate(_) => E::TlsCertificateError,
            ConnectError::TlsAlert(id, message) => E::TlsAlertReceived {
                alert_id: Some(*id),
                alert_message: Some(message.clone()),
            },
            ConnectError::Tls(_) => E::TlsProtocolError,
        }
    }
}

/// Opens one tenant's connections; cloned into its pool.
#[derive(Clone)]
pub struct Connector {
    pub(super) egress: Arc<Egress>,
    pub(super) metrics: Arc<TenantMetrics>,
    pub(super) connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = CONNECT_TIMEOUT
            .try_with(|t| *t)
            .unwrap_or(self.connect_timeout);
        let this = self.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, this.connect(uri))
                .await
                .unwrap_or(Err(ConnectError::Timeout))
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<Conn, ConnectError> {
        // The caller checked the URI: a scheme it sends, a host.
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .unwrap_or(Scheme::Https);
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let addrs: Vec<SocketAddr> = match parse_ip(&host) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(found) => found.collect(),
                Err(e) => return Err(ConnectError::Dns(e.to_string())),
            },
        };
        let policy = self.egress.policy.read().clone();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| match policy.check(*addr) {
                None => true,
                Some(rule) => {
                    refused.get_or_insert((*addr, rule));
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(match refused {
                Some((addr, rule)) => ConnectError::Prohibited(addr, rule),
                None => ConnectError::Dns(format!("{host} has no address")),
            });
        }
        let mut last = None;
        let mut tcp = None;
        for addr in allowed {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            let e = last.expect("at least one address was tried");
            return Err(match e.kind() {
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                    ConnectError::Unroutable(e.to_string())
                }
                _ => ConnectError::Refused(e.to_string()),
            });
        };
        let _ = tcp.set_nodelay(true);
        let open = OpenGuard::new(self.metrics.clone());
        if scheme == Scheme::Http {
            return Ok(Conn {
                io: TokioIo::new(Box::new(tcp)),
                h2: false,
                _open: open,
            });
        }
        let config = self.egress.tls()?;
        let name = match parse_ip(&host) {
            Some(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            None => rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Tls(e.to_string()))?,
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(tls_error)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Conn {
            io: TokioIo::new(Box::new(tls)),
            h2,
            _open: open,
        })
    }
}

fn tls_error(e: std::io::Error) -> ConnectError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => {
            ConnectError::TlsCertificate(format!("{why:?}"))
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            ConnectError::TlsAlert(u8::from(*alert), format!("{alert:?}"))
        }
        _ => ConnectError::Tls(e.to_string()),
    }
}

/// Counts a connection open for as long as it lives.
struct OpenGuard(Arc<TenantMetrics>);

impl OpenGuard {
    fn new(metrics: Arc<TenantMetrics>) -> Self {
        metrics.outbound_connection(1.0);
        Self(metrics)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.outbound_connection(-1.0);
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// One upstream connection, plain or TLS.
pub struct Conn {
    io: TokioIo<Box<dyn Stream>>,
    h2: bool,
    _open: OpenGuard,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

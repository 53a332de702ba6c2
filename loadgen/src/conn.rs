//! One HTTP/1.1 keep-alive connection.
//!
//! hyper's `client::conn::http1` hands back a request sender and a connection
//! future that does the socket I/O; the future runs as its own task on the
//! worker's (single-threaded) runtime. Nothing pools or retries: a connection
//! that fails or times out is dropped, which ends its task, and the worker
//! opens a new one for its next request.
//!
//! (Polling the connection future inside the worker task instead, to save the
//! hand-offs between the two tasks, measured ~0.4 µs *more* CPU per request:
//! every wake-up of the worker then polls the whole dispatcher as well.)

use std::net::SocketAddr;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The request side of an open connection; its I/O runs in a spawned task
/// that ends when this is dropped.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr` with Nagle off (small requests, one at a time) and
    /// spawns the connection's I/O task on the current runtime.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        // Its error, if any, also fails the request in flight, which is
        // where it is counted.
        tokio::spawn(connection);
        Ok(Conn { sender })
    }

    /// Whether the connection can carry another request: false once the
    /// server has closed it (e.g. after `Connection: close`).
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends `req` and appends the response body to `body`; returns the status.
    /// After an error the connection is unusable and should be dropped.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
        body: &mut Vec<u8>,
    ) -> Result<StatusCode, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let status = response.status();
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame?.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok(status)
    }
}

/// An `http://host:port/path` address, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address, as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The path, without a trailing slash (empty for the root).
    pub path: String,
}

impl Endpoint {
    /// Parses an `http://` URL; `https` is not supported.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("URL {url:?} has scheme {other:?}; only http is supported"),
            None => bail!("URL {url:?} has no scheme; write it as http://host:port"),
        }
        let host = uri
            .host()
            .with_context(|| format!("URL {url:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ensure!(!host.is_empty(), "URL {url:?} has no host");
        ensure!(
            uri.query().is_none(),
            "URL {url:?} has a query string; give the base URL only"
        );
        Ok(Endpoint {
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(80),
            path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The `Host` header value: `host:port`, with brackets for IPv6.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the host to the first socket address it names.
    pub async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("resolving {}", self.authority()))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.authority()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!(
            e,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 8080,
                path: String::new()
            }
        );
        let e = Endpoint::parse("http://localhost/base/").expect("valid");
        assert_eq!((e.port, e.path.as_str()), (80, "/base"));
        assert_eq!(e.to_string(), "http://localhost:80/base");
        let e = Endpoint::parse("http://[::1]:9095/metrics").expect("valid");
        assert_eq!(e.host, "::1");
        assert_eq!(e.authority(), "[::1]:9095");
        assert_eq!(e.path, "/metrics");
    }

    #[test]
    fn rejects_unsupported_urls() {
        let err = |u: &str| format!("{:#}", Endpoint::parse(u).expect_err("should fail"));
        assert!(err("https://x:1").contains("only http"));
        assert!(err("127.0.0.1:8080").contains("no scheme"));
        assert!(err("http://x:1/?a=b").contains("query"));
        assert!(err("not a url").contains("invalid URL"));
    }
}

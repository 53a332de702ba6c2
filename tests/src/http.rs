//! A plain HTTP/1.1 client for tests: one request on a fresh connection, a
//! keep-alive [`Client`], chunked and raw requests, and [`Reply`], a
//! response read whole.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .trim_end_matches('\n')
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Checks a limit's answer: its status, the `x-runner-limit` token and
    /// the message that names the limit.
    #[track_caller]
    pub fn assert_limit(&self, status: StatusCode, limit: &str, message: &str) {
        assert_eq!(
            (
                self.status,
                self.header("x-runner-limit"),
                self.text().as_str()
            ),
            (status, Some(limit), message)
        );
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path, Vec::new()).await
}

/// A GET that reports a refused or broken connection as `None`, for
/// probing a server that may not be up yet.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let res = sender
        .send_request(build_request(addr, Method::GET, path, Vec::new()))
        .await
        .ok()?;
    Some(read_reply(res).await)
}

fn build_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

/// Reads a whole response; a body cut off midway reads as empty.
async fn read_reply(res: hyper::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The reply, or `None` if its body did not arrive whole.
async fn try_read_reply(res: hyper::Response<hyper::body::Incoming>) -> Option<Reply> {
    let (parts, body) = res.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `GET path` with extra `headers`, on a fresh connection.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = build_request(addr, Method::GET, path, Vec::new());
    // A Host given replaces the one the request has.
    if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        req.headers_mut().remove(http::header::HOST);
    }
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(value).expect("a header value"),
        );
    }
    send(addr, req).await
}

/// One request on a fresh connection.
pub async fn request(addr: SocketAddr, method: Method, path: &str, body: Vec<u8>) -> Reply {
    send(addr, build_request(addr, method, path, body)).await
}

/// Sends `req` on a fresh connection and reads the reply whole.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the runner");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let res = sender.send_request(req).await.expect("sending the request");
    read_reply(res).await
}

/// A keep-alive connection for many requests in a row.
pub struct Client {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connecting to the runner");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        Self { addr, sender }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, Vec::new()).await
    }

    /// Any request on this connection, read whole; `None` if the connection
    /// failed before a whole reply came.
    pub async fn try_send(&mut self, method: Method, path: &str, body: Vec<u8>) -> Option<Reply> {
        self.sender.ready().await.ok()?;
        let res = self
            .sender
            .send_request(build_request(self.addr, method, path, body))
            .await
            .ok()?;
        try_read_reply(res).await
    }

    /// Any request on this connection, read whole.
    pub async fn send(&mut self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        self.sender.ready().await.expect("connection ready");
        let res = self
            .sender
            .send_request(build_request(self.addr, method, path, body))
            .await
            .expect("sending the request");
        read_reply(res).await
    }
}

/// A PUT whose body is sent chunked (no Content-Length), frame by frame.
pub async fn chunked_put(addr: SocketAddr, path: &str, chunks: &[&[u8]]) -> Reply {
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = chunks
        .iter()
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let req = Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header("host", addr.to_string())
        .body(body)
        .expect("a valid request");
    send(addr, req).await
}

/// Writes raw bytes and returns whatever the server answers before closing
/// (or within two seconds).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_for(addr, bytes, Duration::from_secs(2)).await
}

/// Writes raw bytes and returns whatever the server answers before closing
/// or within `patience`, whichever comes first.
pub async fn raw_for(addr: SocketAddr, bytes: &[u8], patience: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    stream.write_all(bytes).await.expect("writing");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(patience, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A keep-alive TLS connection that asked for `name` (SNI), speaking the
/// HTTP version ALPN chose.
pub struct TlsClient {
    authority: String,
    sender: TlsSender,
    /// The version ALPN chose: HTTP/2 or HTTP/1.1.
    pub version: http::Version,
    /// The server's certificate (the leaf, DER).
    pub leaf: Vec<u8>,
}

enum TlsSender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsClient {
    /// Connects to `addr`, asks for `name` and checks the certificate with
    /// `config`; an error for a handshake that fails.
    pub async fn connect(
        addr: SocketAddr,
        name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, stream)
            .await?;
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.to_vec())
            .unwrap_or_default();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let (sender, version) = if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            (TlsSender::H2(sender), http::Version::HTTP_2)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            (TlsSender::H1(sender), http::Version::HTTP_11)
        };
        Ok(Self {
            authority: format!("{name}:{}", addr.port()),
            sender,
            version,
            leaf,
        })
    }

    /// `GET path` on this connection, read whole; `None` if the connection
    /// failed first.
    pub async fn get(&mut self, path: &str) -> Option<Reply> {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra `headers` (a `host` replaces the one it has).
    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
        let mut req = Request::builder()
            .uri(format!("https://{}{path}", self.authority))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        if let TlsSender::H1(_) = self.sender {
            let host = self.authority.parse().expect("a host header");
            req.headers_mut().insert(http::header::HOST, host);
            *req.uri_mut() = path.parse().expect("a path");
        }
        for (name, value) in headers {
            let name: http::HeaderName = name.parse().expect("a header name");
            req.headers_mut()
                .insert(name, value.parse().expect("a header value"));
        }
        let res = match &mut self.sender {
            TlsSender::H1(sender) => {
                sender.ready().await.ok()?;
                sender.send_request(req).await.ok()?
            }
            TlsSender::H2(sender) => {
                sender.ready().await.ok()?;
                sender.send_request(req).await.ok()?
            }
        };
        try_read_reply(res).await
    }
}

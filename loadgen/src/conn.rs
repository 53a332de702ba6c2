//! One HTTP/1.1 keep-alive connection, spoken directly over a `TcpStream`
//! (or TLS over one, for an `https://` target: rustls, sessions resumed).
//!
//! A worker has one request in flight at a time, so the client is a plain
//! request/response exchange inside the worker's own task: the request is
//! written with one `write_all` from a reused buffer (the request line's
//! fixed tail, the `Host` header and any `-H` headers are formatted once per
//! connection), the
//! response is read into a reused buffer, its head parsed with `httparse`
//! and its body framed by `Content-Length`, `Transfer-Encoding: chunked` or
//! the end of the connection. Nothing pools or retries: a connection that
//! fails or times out is dropped and the worker opens a new one for its next
//! request. (hyper's client did the same with a dispatcher task, channels and
//! header maps, ~1.4 µs more CPU per request.)

use std::io::{self, ErrorKind, Write as _};
use std::net::SocketAddr;
use std::task::{self, Waker};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use http::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Initial size of the read buffer; it grows only for a larger response head
/// (or chunk-size or trailer line), up to `MAX_BUFFER`.
const READ_BUFFER: usize = 16 * 1024;
/// Largest response head (or chunk-size or trailer line) accepted.
const MAX_BUFFER: usize = 1024 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 64;

/// A connection's socket: plain, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// How an `https://` target's connections are made: the one client
/// configuration they all share (so sessions are resumed), and the name
/// asked for.
#[derive(Clone, Debug)]
pub struct Tls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    /// For `host`, trusting the CA certificates of `cacert` (PEM), or the
    /// system's without one; HTTP/1.1 by ALPN.
    pub fn new(host: &str, cacert: Option<&std::path::Path>) -> anyhow::Result<Tls> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = match cacert {
            Some(file) => CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| anyhow::anyhow!("--cacert {}: {e}", file.display()))?,
            None => rustls_native_certs::load_native_certs().certs,
        };
        let (added, _) = roots.add_parsable_certificates(certs);
        ensure!(
            added > 0,
            "no trusted certificates to check https targets with: give --cacert FILE"
        );
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .with_context(|| format!("{host:?} is not a host name for TLS"))?;
        Ok(Tls {
            config: std::sync::Arc::new(config),
            name,
        })
    }
}

/// An open connection, idle between requests.
pub struct Conn {
    stream: Stream,
    /// ` HTTP/1.1\r\n` and the connection's header lines, written after
    /// every request's path.
    tail: Vec<u8>,
    /// The request being written.
    request: Vec<u8>,
    /// Bytes read: `buf[start..end]` are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// False once the server has said it closes the connection, or it can
    /// otherwise carry no further request.
    open: bool,
}

impl Conn {
    /// Connects to `addr` with Nagle off (small requests, one at a time);
    /// `headers` (`Name: value\r\n` lines, `Host` among them) are sent with
    /// every request.
    pub async fn open(addr: SocketAddr, headers: &[u8]) -> io::Result<Conn> {
        Self::open_with(addr, headers, None).await
    }

    /// [`Conn::open`], with TLS over the connection where `tls` says.
    pub async fn open_with(
        addr: SocketAddr,
        headers: &[u8],
        tls: Option<&Tls>,
    ) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                Stream::Tls(Box::new(connector.connect(tls.name.clone(), tcp).await?))
            }
        };
        let mut tail = Vec::with_capacity(headers.len() + 11);
        tail.extend_from_slice(b" HTTP/1.1\r\n");
        tail.extend_from_slice(headers);
        Ok(Conn {
            stream,
            tail,
            request: Vec::with_capacity(1024),
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            open: true,
        })
    }

    /// Whether the connection can carry another request: false once the
    /// server has said it closes it (`Connection: close`) or has closed it
    /// while idle.
    ///
    /// Costs no system call unless the socket has become readable since the
    /// last read; then one `recv`, which the read of the next response would
    /// otherwise spend to learn that nothing has arrived yet.
    pub fn is_open(&mut self) -> bool {
        if !self.open {
            return false;
        }
        let mut cx = task::Context::from_waker(Waker::noop());
        if self.stream.tcp().poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let Stream::Plain(tcp) = &self.stream else {
            // Bytes on an idle TLS connection are the server's goodbye (or
            // nothing an HTTP/1.1 client asked for): a new one is made.
            self.open = false;
            return false;
        };
        let mut probe = [0u8; 1];
        match tcp.try_read(&mut probe) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            // End of stream, bytes nobody asked for, or an error.
            _ => {
                self.open = false;
                false
            }
        }
    }

    /// Sends a request, with `headers` (`Name: value\r\n` lines) beside the
    /// connection's own, and appends the response body to `body`; returns
    /// the status. After an error the connection is unusable and should be
    /// dropped (as it should if the future is dropped before it completes).
    pub async fn send(
        &mut self,
        method: &str,
        path: &[u8],
        headers: &[u8],
        content: &[u8],
        body: &mut Vec<u8>,
    ) -> io::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(method.as_bytes());
        self.request.push(b' ');
        self.request.extend_from_slice(path);
        self.request.extend_from_slice(&self.tail);
        self.request.extend_from_slice(headers);
        if !content.is_empty() || !matches!(method, "GET" | "HEAD") {
            self.request.extend_from_slice(b"Content-Length: ");
            // Writing into a Vec cannot fail.
            let _ = write!(self.request, "{}\r\n", content.len());
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(content);
        self.stream.write_all(&self.request).await?;

        let mut response = Response::new(method == "HEAD");
        loop {
            loop {
                let used = response.advance(&self.buf[self.start..self.end], body)?;
                self.start += used;
                if used == 0 || response.is_done() {
                    break;
                }
            }
            if response.is_done() {
                break;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else if self.buf.len() < MAX_BUFFER {
                    let len = (self.buf.len() * 2).min(MAX_BUFFER);
                    self.buf.resize(len, 0);
                } else {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "response head or line too large",
                    ));
                }
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                response.eof()?;
                self.open = false;
                break;
            }
            self.end += n;
        }
        if response.close || self.start != self.end {
            // Told to close, or sent more than the answer: nothing further
            // can be read reliably from this connection.
            self.open = false;
        }
        Ok(response.status)
    }
}

/// Where the parse of one response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The status line and headers (or an interim `1xx` response's).
    Head,
    /// This many body bytes still to come.
    Length(u64),
    /// A chunk-size line, with any chunk extensions.
    ChunkSize,
    /// This many bytes of the current chunk still to come.
    ChunkData(u64),
    /// The line break after a chunk's data.
    ChunkEnd,
    /// Trailer fields, up to the empty line that ends the message.
    Trailers,
    /// The body runs to the end of the connection.
    UntilClose,
    Done,
}

/// The incremental parse of one response: it is fed the bytes not parsed
/// yet, and says how many it used.
#[derive(Debug)]
struct Response {
    state: State,
    /// An answer to `HEAD`: no body, whatever the headers say.
    head_request: bool,
    status: u16,
    /// The connection ends after this response.
    close: bool,
}

impl Response {
    fn new(head_request: bool) -> Response {
        Response {
            state: State::Head,
            head_request,
            status: 0,
            close: false,
        }
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parses what it can of the start of `input`, appending body bytes to
    /// `body`; returns how many bytes it used, 0 when it needs more input
    /// (or is done).
    fn advance(&mut self, input: &[u8], body: &mut Vec<u8>) -> io::Result<usize> {
        match self.state {
            State::Head => self.head(input),
            State::Length(left) | State::ChunkData(left) => {
                let take = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                body.extend_from_slice(&input[..take]);
                let left = left - take as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), _) => State::Length(left),
                    (_, 0) => State::ChunkEnd,
                    _ => State::ChunkData(left),
                };
                Ok(take)
            }
            State::ChunkSize => {
                let Some((line, used)) = line(input) else {
                    return Ok(0);
                };
                let size = chunk_size(line)?;
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(used)
            }
            State::ChunkEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok(2)
                }
                [b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok(1)
                }
                [] | [b'\r'] => Ok(0),
                _ => Err(invalid("chunk data longer than its size")),
            },
            State::Trailers => {
                let Some((line, used)) = line(input) else {
                    return Ok(0);
                };
                if line.is_empty() {
                    self.state = State::Done;
                }
                Ok(used)
            }
            State::UntilClose => {
                body.extend_from_slice(input);
                Ok(input.len())
            }
            State::Done => Ok(0),
        }
    }

    /// Parses a response head, if `input` holds a whole one, and sets how
    /// the body is framed.
    fn head(&mut self, input: &[u8]) -> io::Result<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let used = match head.parse(input) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return Ok(0),
            Err(e) => return Err(invalid(e)),
        };
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // An interim response; the final one follows.
            return Ok(used);
        }
        self.status = status;
        // HTTP/1.0 closes unless asked to keep alive.
        self.close = head.version != Some(1);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut encoded = false;
        for header in head.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| invalid("invalid Content-Length"))?;
                if length.is_some_and(|l| l != value) {
                    return Err(invalid("conflicting Content-Length headers"));
                }
                length = Some(value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                encoded = true;
                // Chunked only if it is the last coding applied.
                chunked = tokens(header.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in tokens(header.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && head.version == Some(0) {
                        self.close = false;
                    }
                }
            }
        }
        self.state = if self.head_request || matches!(status, 101 | 204 | 304) {
            if status == 101 {
                // Switched to a protocol this client does not speak.
                self.close = true;
            }
            State::Done
        } else if chunked {
            State::ChunkSize
        } else if encoded {
            // Not chunked: the body runs to the end of the connection.
            self.close = true;
            State::UntilClose
        } else {
            match length {
                Some(0) => State::Done,
                Some(n) => State::Length(n),
                None => {
                    self.close = true;
                    State::UntilClose
                }
            }
        };
        Ok(used)
    }

    /// The server closed the connection: fine only if the body runs to it.
    fn eof(&mut self) -> io::Result<()> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before the response was complete",
            )),
        }
    }
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, error)
}

/// The first line of `input` without its line break, and the bytes it takes
/// up with it; `None` if it is not complete yet.
fn line(input: &[u8]) -> Option<(&[u8], usize)> {
    let end = input.iter().position(|&b| b == b'\n')?;
    let line = &input[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

/// The size in a chunk-size line, `size [; extensions]`.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let size = line.split(|&b| b == b';').next().unwrap_or(line);
    let size = size.trim_ascii();
    if size.is_empty() || size.len() > 16 {
        return Err(invalid("invalid chunk size"));
    }
    size.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char)
            .to_digit(16)
            .ok_or_else(|| invalid("invalid chunk size"))?;
        Ok(n << 4 | u64::from(digit))
    })
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// An `http://host:port/path` address, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address, as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The path, without a trailing slash (empty for the root).
    pub path: String,
    /// `https://`: TLS over each connection.
    pub tls: bool,
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => bail!("URL {url:?} has scheme {other:?}; http and https are supported"),
            None => bail!("URL {url:?} has no scheme; write it as http://host:port"),
        };
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
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: uri.path().trim_end_matches('/').to_owned(),
            tls,
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
            .await?
            .next()
            .context("the host resolves to no address")
    }
}

/// A target that could not be reached before the run: `main` exits with
/// status 4 for it.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("cannot resolve the host of {url}")]
    Resolve {
        url: String,
        #[source]
        error: io::Error,
    },
    #[error("cannot connect to {url} (tried for {}s)", tried.as_secs_f64())]
    Connect {
        url: String,
        tried: Duration,
        #[source]
        error: io::Error,
    },
}

/// Between two connection attempts in [`Endpoint::reach`].
const REACH_RETRY: Duration = Duration::from_millis(100);

impl Endpoint {
    /// Resolves the host and opens (then closes) one connection, retrying for
    /// up to `within` while it is refused, so a server still starting is
    /// waited for but a dead one is reported at once. Returns the address.
    pub async fn reach(&self, within: Duration) -> Result<SocketAddr, Unreachable> {
        let url = self.to_string();
        let addr = self.resolve().await.map_err(|e| Unreachable::Resolve {
            url: url.clone(),
            error: io::Error::other(format!("{e:#}")),
        })?;
        let start = tokio::time::Instant::now();
        let deadline = start + within;
        let mut last: Option<io::Error> = None;
        loop {
            let error = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => return Ok(addr),
                Ok(Err(e)) => e,
                // Cut short at the deadline: an earlier try's error says more.
                Err(_) => last.take().unwrap_or_else(|| {
                    io::Error::new(ErrorKind::TimedOut, "no answer to the connection")
                }),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Unreachable::Connect {
                    url,
                    tried: within,
                    error,
                });
            }
            last = Some(error);
            // The last try is at the deadline itself.
            tokio::time::sleep_until((now + REACH_RETRY).min(deadline)).await;
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` to a parser as successive reads would deliver them,
    /// keeping unparsed bytes as `Conn::send` does; then the end of stream
    /// if `eof`. Returns the response, its body and the bytes left over.
    fn parse_pieces(
        head_request: bool,
        pieces: &[&[u8]],
        eof: bool,
    ) -> io::Result<(Response, Vec<u8>, Vec<u8>)> {
        let mut response = Response::new(head_request);
        let mut body = Vec::new();
        let mut unparsed: Vec<u8> = Vec::new();
        for piece in pieces {
            assert!(!response.is_done(), "done before all pieces were read");
            unparsed.extend_from_slice(piece);
            loop {
                let used = response.advance(&unparsed, &mut body)?;
                unparsed.drain(..used);
                if used == 0 || response.is_done() {
                    break;
                }
            }
        }
        if eof {
            response.eof()?;
        }
        Ok((response, body, unparsed))
    }

    /// Splits `bytes` before each offset in `at`.
    fn split<'a>(bytes: &'a [u8], at: &[usize]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut from = 0;
        for &to in at {
            pieces.push(&bytes[from..to]);
            from = to;
        }
        pieces.push(&bytes[from..]);
        pieces
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        1a;name=\"quoted;value\"\r\nabcdefghijklmnopqrstuvwxyz\r\n\
        5\r\n01234\r\n\
        0;last\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n";

    #[test]
    fn chunked_body_split_at_every_point() {
        let whole = b"abcdefghijklmnopqrstuvwxyz01234";
        // One read, then every single split point (inside the size lines,
        // the extensions, the CRLFs, the trailers), then byte by byte.
        let (r, body, rest) = parse_pieces(false, &[CHUNKED], false).expect("valid");
        assert!(r.is_done());
        assert_eq!(
            (r.status, r.close, &body[..], rest.len()),
            (200, false, &whole[..], 0)
        );
        for at in 1..CHUNKED.len() {
            let (r, body, rest) =
                parse_pieces(false, &split(CHUNKED, &[at]), false).expect("valid");
            assert!(r.is_done(), "split at {at}");
            assert_eq!(&body[..], &whole[..], "split at {at}");
            assert!(rest.is_empty(), "split at {at}");
        }
        let bytes: Vec<&[u8]> = CHUNKED.chunks(1).collect();
        let (r, body, _) = parse_pieces(false, &bytes, false).expect("valid");
        assert!(r.is_done());
        assert_eq!(&body[..], &whole[..]);
    }

    #[test]
    fn chunked_body_split_inside_size_line_and_crlf() {
        let text = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n\
            10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let head = text.iter().position(|&b| b == b'1').expect("size line");
        // "1|0\r\n", "10\r|\n", and data followed by "\r|\n".
        let data_end = head + 4 + 16;
        let pieces = split(text, &[head + 1, head + 3, data_end + 1, data_end + 3]);
        let (r, body, rest) = parse_pieces(false, &pieces, false).expect("valid");
        assert!(r.is_done());
        assert_eq!(&body[..], b"0123456789abcdef");
        assert!(rest.is_empty());
        // Incomplete at the end of stream is an error.
        let cut = &text[..text.len() - 2];
        assert!(parse_pieces(false, &[cut], true).is_err());
    }

    #[test]
    fn bad_chunks_are_errors() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcd\r\n",
            b"11111111111111111\r\n",
        ] {
            let text = [&head[..], bad].concat();
            assert!(parse_pieces(false, &[&text], false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn head_split_across_reads() {
        let text = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\
            Content-Length: 13\r\n\r\nkey not found";
        for at in 1..text.len() {
            let (r, body, rest) = parse_pieces(false, &split(text, &[at]), false).expect("valid");
            assert!(r.is_done(), "split at {at}");
            assert_eq!(
                (r.status, &body[..]),
                (404, &b"key not found"[..]),
                "split at {at}"
            );
            assert!(rest.is_empty());
        }
        // Split at two points inside the head at once.
        let (r, body, _) = parse_pieces(false, &split(text, &[3, 30, 60]), false).expect("valid");
        assert_eq!((r.status, &body[..]), (404, &b"key not found"[..]));
        // A response head that is never finished.
        assert!(parse_pieces(false, &[&text[..20]], true).is_err());
    }

    #[test]
    fn responses_without_a_body() {
        // 204 and 304 have no body, whatever they say; neither has a HEAD
        // answer. What follows is the next response, left unparsed.
        for text in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (r, body, rest) = parse_pieces(false, &[text], false).expect("valid");
            assert!(
                r.is_done() && body.is_empty() && rest.is_empty(),
                "{text:?}"
            );
            assert!(!r.close);
        }
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1";
        let (r, body, rest) = parse_pieces(true, &[text], false).expect("valid");
        assert!(r.is_done() && body.is_empty());
        assert_eq!(&rest[..], b"HTTP/1.1");
        // Content-Length: 0, and an interim 100 before the final answer.
        let text =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
        let (r, body, rest) = parse_pieces(false, &split(text, &[10, 25]), false).expect("valid");
        assert!(r.is_done() && body.is_empty() && rest.is_empty());
        assert_eq!(r.status, 201);
    }

    #[test]
    fn connection_close_and_read_to_end() {
        let text =
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 2\r\n\r\nok";
        let (r, body, _) = parse_pieces(false, &[text], false).expect("valid");
        assert!(r.is_done() && r.close);
        assert_eq!(&body[..], b"ok");
        // No length: the body runs to the end of the connection.
        let text = b"HTTP/1.1 200 OK\r\n\r\nall of ";
        let (r, body, _) = parse_pieces(false, &[text, b"this"], true).expect("valid");
        assert!(r.is_done() && r.close);
        assert_eq!(&body[..], b"all of this");
        // HTTP/1.0 closes unless it says keep-alive.
        let text = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_pieces(false, &[text], false).expect("valid").0.close);
        let text = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!parse_pieces(false, &[text], false).expect("valid").0.close);
        // A body cut short by the end of stream is an error.
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert!(parse_pieces(false, &[text], true).is_err());
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(parse_pieces(false, &[text], false).is_err());
    }

    /// A real socket: the response arrives in pieces, the server says
    /// `Connection: close`, and the connection then reports itself closed.
    #[tokio::test]
    async fn exchanges_over_a_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            for (n, pieces) in [
                &[
                    &b"HTTP/1.1 200 OK\r\nTransfer-"[..],
                    b"Encoding: chunked\r\n\r\n3",
                    b"\r\nabc\r",
                    b"\n0\r\n\r\n",
                ][..],
                &[&b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"[..]][..],
            ]
            .iter()
            .enumerate()
            {
                // Read the whole request head (and the body of the second).
                let end: &[u8] = if n == 0 { b"\r\n\r\n" } else { b"\r\n\r\nhi" };
                while !request.ends_with(end) {
                    let read = socket.read(&mut buf).await.expect("read");
                    assert!(read > 0);
                    request.extend_from_slice(&buf[..read]);
                }
                if n == 1 {
                    let text = String::from_utf8_lossy(&request).into_owned();
                    assert!(
                        text.ends_with(
                            "PUT /b HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi"
                        ),
                        "{text}"
                    );
                }
                request.clear();
                for piece in *pieces {
                    socket.write_all(piece).await.expect("write");
                    socket.flush().await.expect("flush");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        });
        let mut conn = Conn::open(addr, b"Host: h:1\r\n").await.expect("connect");
        let mut body = Vec::new();
        let status = conn
            .send("GET", b"/a", b"", b"", &mut body)
            .await
            .expect("first");
        assert_eq!((status, &body[..]), (200, &b"abc"[..]));
        assert!(conn.is_open());
        body.clear();
        let status = conn
            .send("PUT", b"/b", b"X-A: 1\r\n", b"hi", &mut body)
            .await
            .expect("second");
        assert_eq!(status, 204);
        assert!(body.is_empty());
        assert!(!conn.is_open());
        server.await.expect("server");
    }

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!(
            e,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 8080,
                path: String::new(),
                tls: false,
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
        assert!(err("ftp://x:1").contains("http and https are supported"));
        let e = Endpoint::parse("https://localhost/x").expect("valid");
        assert_eq!(
            (e.port, e.tls, e.to_string().as_str()),
            (443, true, "https://localhost:443/x")
        );
        assert!(err("127.0.0.1:8080").contains("no scheme"));
        assert!(err("http://x:1/?a=b").contains("query"));
        assert!(err("not a url").contains("invalid URL"));
    }
}

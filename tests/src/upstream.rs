//! An HTTP/1.1 server on a free loopback port for the runner's guests to
//! call: it counts the connections it accepts and the requests it gets, and
//! keeps each request's target and `Host` header, so a test can tell what
//! reached it and what did not. Routes:
//!
//! - `/small`: 200 `upstream says hi`
//! - `/redirect`: 302 to `/small`
//! - `/silent`: never answers, not even a head
//! - `/stall`: answers a head and one piece of body, then nothing
//! - `/big?bytes=N`: N bytes of `x`
//! - anything else: 404
//!
//! [`Upstream::start_tls`] serves the same over HTTPS, HTTP/1.1 or HTTP/2
//! as ALPN settles, with a certificate from a [`TestCa`] the test makes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use parking_lot::Mutex;

/// What reached the upstream.
#[derive(Default)]
pub struct Seen {
    accepts: AtomicUsize,
    requests: AtomicUsize,
    /// Each request's target (as on the request line) and Host header
    /// (`:authority` over HTTP/2).
    heads: Mutex<Vec<(String, String)>>,
    /// Each request's HTTP version.
    versions: Mutex<Vec<http::Version>>,
}

/// A certificate authority a test makes, and a certificate from it for
/// `localhost` and 127.0.0.1; its certificate is written as PEM to
/// [`TestCa::ca_file`], for `SSL_CERT_FILE`.
pub struct TestCa {
    dir: crate::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    leaf: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "runner test CA");
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().expect("a key");
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf parameters")
            .signed_by(&leaf_key, &issuer)
            .expect("the leaf certificate");
        let dir = crate::TempDir::new();
        std::fs::write(dir.path.join("ca.pem"), ca_cert.pem()).expect("writing the CA");
        Self {
            dir,
            issuer,
            leaf: leaf.der().clone(),
            key: leaf_key.serialize_der(),
        }
    }

    /// A new certificate from the CA for `names`, with a key of its own,
    /// written as PEM to `{file}.pem` and `{file}.key` beside the CA's:
    /// their paths.
    pub fn write_leaf(
        &self,
        file: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("leaf parameters")
            .signed_by(&key, &self.issuer)
            .expect("the leaf certificate");
        let (cert_path, key_path) = (
            self.dir.path.join(format!("{file}.pem")),
            self.dir.path.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("writing a certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("writing a key");
        (cert_path, key_path)
    }

    /// A client configuration that trusts the CA alone, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(self.ca_file()).expect("reading the CA");
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
            roots
                .add(cert.expect("the CA's PEM"))
                .expect("the CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The CA's certificate, PEM.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path.join("ca.pem")
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key.clone().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], key)
            .expect("the server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    rt: Option<tokio::runtime::Runtime>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    /// Starts one on 127.0.0.1, on a runtime of its own.
    pub fn start() -> Self {
        Self::serve(None)
    }

    /// Starts one serving HTTPS with `ca`'s certificate.
    pub fn start_tls(ca: &TestCa) -> Self {
        Self::serve(Some(ca.server_config()))
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the upstream's runtime");
        // Bound here, so a test on a runtime of its own may start one.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the upstream");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the upstream's address");
        let seen = Arc::new(Seen::default());
        let state = seen.clone();
        rt.spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("the upstream's listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.accepts.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                if req.uri().path() == "/silent" {
                                    state.requests.fetch_add(1, Ordering::SeqCst);
                                    futures::future::pending::<()>().await;
                                }
                                Ok::<_, Infallible>(answer(&state, req))
                            }
                        });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Each request's HTTP version, in order.
    pub fn versions(&self) -> Vec<http::Version> {
        self.seen.versions.lock().clone()
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.seen.accepts.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// Each request's target and Host header, in order.
    pub fn heads(&self) -> Vec<(String, String)> {
        self.seen.heads.lock().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn answer(seen: &Seen, req: Request<hyper::body::Incoming>) -> Response<Body> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let target = if req.version() == http::Version::HTTP_2 {
        target
    } else {
        req.uri().to_string()
    };
    seen.heads.lock().push((target, host));
    seen.versions.lock().push(req.version());
    let full = |status: u16, body: &'static str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
            .expect("a response")
    };
    match req.uri().path() {
        "/small" => full(200, "upstream says hi"),
        "/redirect" => {
            let mut r = full(302, "moved");
            r.headers_mut().insert(
                http::header::LOCATION,
                "/small".parse().expect("a location"),
            );
            r
        }
        "/stall" => {
            let first = futures::stream::iter([Ok(Frame::data(Bytes::from_static(b"begun")))]);
            let then = futures::stream::pending();
            let stream = futures::StreamExt::chain(first, then);
            Response::new(StreamBody::new(stream).boxed())
        }
        "/big" => {
            let n: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Response::new(Full::new(Bytes::from(vec![b'x'; n])).boxed())
        }
        _ => full(404, "no such route"),
    }
}

/// Waits a little for counters that move after a response was sent.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

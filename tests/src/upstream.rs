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
    /// Each request's target (as on the request line) and Host header.
    heads: Mutex<Vec<(String, String)>>,
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
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move {
                            if req.uri().path() == "/silent" {
                                state.requests.fetch_add(1, Ordering::SeqCst);
                                futures::future::pending::<()>().await;
                            }
                            Ok::<_, Infallible>(answer(&state, req))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
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
        .unwrap_or_default()
        .to_owned();
    seen.heads.lock().push((req.uri().to_string(), host));
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

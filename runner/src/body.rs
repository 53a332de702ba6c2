//! Response bodies the host builds, and the request body as the guest reads
//! it: cut off, and flagged, past the request body limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::metrics::Ended;

/// The response body type wasmtime-wasi-http produces; host answers use it too.
pub type OutBody = HyperOutgoingBody;

/// The guest's response head, or the error code it answered with instead.
pub type Head = Result<Response<OutBody>, String>;

pub fn full(body: impl Into<Bytes>) -> OutBody {
    Full::new(body.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A plain-text answer of the host's own, ending in a newline.
pub fn text(status: StatusCode, mut message: String) -> Response<OutBody> {
    message.push('\n');
    let mut response = Response::new(full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn body_too_large(max: u64) -> String {
    format!("request body too large: the limit is {max} bytes")
}

/// The request body as the guest reads it, cut off (and flagged) past the
/// limit, so an oversized streamed body is refused without buffering it.
pub struct LimitedBody {
    inner: Incoming,
    left: u64,
    limit: u64,
    tripped: Arc<AtomicBool>,
}

impl LimitedBody {
    /// The body, and a flag that is set once it passes `limit` bytes.
    pub fn new(inner: Incoming, limit: u64) -> (Self, Arc<AtomicBool>) {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = Self {
            inner,
            left: limit,
            limit,
            tripped: tripped.clone(),
        };
        (body, tripped)
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        this.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.limit)),
                        )));
                    }
                    this.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the guest behind a response failed (a trap or a limit that
/// stopped it mid-body): known already, or sent once it ends (`None`:
/// cleanly).
pub enum Failed {
    Known(bool),
    Later(tokio::sync::oneshot::Receiver<Option<Ended>>),
    /// Sent once it ends, but the body's own end is the guest's word that
    /// it finished the body: a WASIp3 body ends only when the guest closes
    /// it or its instance is dropped, and the caller sends how the guest
    /// ended before it drops the instance. So the body ends when it ends,
    /// whole, however long the guest's other tasks go on; only a failure
    /// already sent cuts it.
    BodyEnds(tokio::sync::oneshot::Receiver<Option<Ended>>),
}

/// Told, once, how a streamed request ended: as its guest did, or
/// [`Ended::CLIENT_GONE`] when the body was dropped before its end.
pub type OnEnd = Box<dyn FnOnce(Option<Ended>, u64) + Send>;

/// A guest's response body that cannot be cut short and still look whole:
/// when the guest failed, the body ends in an error instead of its end, so
/// hyper drops the connection without the final chunk (or short of the
/// `Content-Length`) and the client sees a broken response.
pub struct Guarded {
    inner: OutBody,
    failed: Failed,
    on_end: Option<OnEnd>,
    /// The body's declared length, and how much of it has gone out: hyper
    /// drops a body once its declared length is written (or at once, where
    /// no body is sent), without asking for its end.
    declared: Option<u64>,
    delivered: u64,
}

impl Guarded {
    pub fn wrap(inner: OutBody, failed: Failed) -> OutBody {
        Guarded {
            declared: inner.size_hint().exact(),
            inner,
            failed,
            on_end: None,
            delivered: 0,
        }
        .boxed_unsync()
    }

    /// A body the guest is still writing, of `declared` bytes (by its
    /// `Content-Length`, or 0 where none is sent); `on_end` learns how it
    /// ended.
    pub fn streaming(
        inner: OutBody,
        declared: Option<u64>,
        failed: Failed,
        on_end: OnEnd,
    ) -> OutBody {
        Guarded {
            declared,
            inner,
            failed,
            on_end: Some(on_end),
            delivered: 0,
        }
        .boxed_unsync()
    }

    /// A whole body (the guest is done with it), whose `on_end` learns
    /// how much of it went out once it is done or dropped.
    pub fn observed(inner: OutBody, declared: Option<u64>, on_end: OnEnd) -> OutBody {
        Guarded {
            declared,
            inner,
            failed: Failed::Known(false),
            on_end: Some(on_end),
            delivered: 0,
        }
        .boxed_unsync()
    }

    fn end(&mut self, ended: Option<Ended>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(ended, self.delivered);
        }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.delivered += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            other => return other,
        }
        // The guest's body ended: cleanly only if the guest did not fail.
        let failed = match &mut this.failed {
            Failed::Known(failed) => *failed,
            Failed::BodyEnds(receiver) => {
                let ended = receiver.try_recv().unwrap_or(None);
                this.end(ended);
                ended.is_some()
            }
            Failed::Later(receiver) => match Pin::new(receiver).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ended) => {
                    let ended = ended.unwrap_or(None);
                    this.end(ended);
                    ended.is_some()
                }
            },
        };
        this.failed = Failed::Known(failed);
        if failed {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.failed, Failed::Known(false)) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Guarded {
    /// Dropped before its end was asked for: whole if its declared length
    /// went out (then it ends as its guest does, which may be later),
    /// else the client left, unless the guest is known to have failed.
    fn drop(&mut self) {
        let Some(on_end) = self.on_end.take() else {
            return;
        };
        let delivered = self.delivered;
        let whole = self.declared == Some(delivered);
        let (Failed::Later(mut receiver) | Failed::BodyEnds(mut receiver)) =
            std::mem::replace(&mut self.failed, Failed::Known(false))
        else {
            return on_end(
                if whole {
                    None
                } else {
                    Some(Ended::CLIENT_GONE)
                },
                delivered,
            );
        };
        match receiver.try_recv() {
            Ok(Some(failed)) => on_end(Some(failed), delivered),
            Ok(None) => on_end((!whole).then_some(Ended::CLIENT_GONE), delivered),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) if whole => {
                // Counted when the guest, still running, ends.
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(
                            async move { on_end(receiver.await.unwrap_or(None), delivered) },
                        );
                    }
                    Err(_) => on_end(None, delivered),
                }
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                on_end(Some(Ended::CLIENT_GONE), delivered);
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                on_end((!whole).then_some(Ended::CLIENT_GONE), delivered);
            }
        }
    }
}

/// A guest's body that ends at `deadline` at the latest: one still open
/// then (or that ends only then, its instance dropped) is cut, and `ended`
/// says the request went past its deadline; one the guest ends before, or
/// fails, says so there.
pub struct UntilDeadline {
    inner: OutBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    at: std::time::Instant,
    ended: Option<tokio::sync::oneshot::Sender<Option<Ended>>>,
    past: Ended,
}

impl UntilDeadline {
    /// `inner` until `at`, and the receiver of how it ended (`None`:
    /// whole); `past` is what a body cut at its deadline counts as.
    pub fn wrap(
        inner: OutBody,
        at: std::time::Instant,
        past: Ended,
    ) -> (OutBody, tokio::sync::oneshot::Receiver<Option<Ended>>) {
        let (ended, receiver) = tokio::sync::oneshot::channel();
        let body = UntilDeadline {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(at.into())),
            at,
            ended: Some(ended),
            past,
        };
        (body.boxed_unsync(), receiver)
    }

    fn end(&mut self, ended: Option<Ended>) {
        if let Some(sender) = self.ended.take() {
            let _ = sender.send(ended);
        }
    }
}

impl Body for UntilDeadline {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
            // Its end, before the deadline: the guest's own.
            Poll::Ready(None) if std::time::Instant::now() < this.at => {
                this.end(None);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(Some(Ended {
                    kind: crate::metrics::Kind::Guest5xx,
                    limit: None,
                    trap: None,
                }));
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(None) => {}
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        let past = this.past;
        this.end(Some(past));
        Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body the guest reads: read whole before admission when it
/// is small (so a client that never sends it holds no request slot), or
/// streamed under the size limit.
pub enum GuestBody {
    Buffered(Option<Bytes>),
    Streaming(LimitedBody),
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            GuestBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            GuestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GuestBody::Buffered(bytes) => bytes.is_none(),
            GuestBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GuestBody::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            GuestBody::Streaming(body) => body.size_hint(),
        }
    }
}

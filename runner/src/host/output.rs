//! Guest stdout and stderr: each line (however many writes it took) becomes
//! a log line with the tenant and the request, up to the request's log
//! budget and the tenant's log rate, both counted in what is written; past
//! them, output is dropped without blocking or failing the guest, so a
//! flood costs only the guest's own fuel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::request_id::RequestId;
use crate::tenant::scope::LogRate;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What one log line costs beyond the guest's text, tenant and request id:
/// the timestamp, level, target and field names the runner writes around
/// it. Budgets count what
/// is written, so a flood of tiny lines cannot write many times its budget.
pub const LINE_OVERHEAD: usize = 96;

/// What a request's guest output shares (`wasi:logging`, stdout and
/// stderr, each stream the guest opens): the bytes it may still log, the
/// tenant's log rate above that, the request its lines are for, and the
/// text of each stdio stream not yet ended by a newline.
#[derive(Clone, Debug)]
pub struct GuestLog(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    tenant: Arc<str>,
    left: AtomicUsize,
    warned: AtomicBool,
    rate: Arc<LogRate>,
    /// None on an instance that serves several requests at once.
    request: Mutex<Option<RequestId>>,
    /// stdout's and stderr's unfinished line.
    partial: [Mutex<Vec<u8>>; 2],
}

/// Longest line kept waiting for its newline; a longer one is written in
/// pieces of this size, small enough for a modest log rate to let through.
pub const MAX_LINE: usize = 4 * 1024;

impl GuestLog {
    pub fn new(tenant: Arc<str>, bytes: usize, rate: Arc<LogRate>) -> Self {
        Self(Arc::new(Shared {
            tenant,
            left: AtomicUsize::new(bytes),
            warned: AtomicBool::new(false),
            rate,
            request: Mutex::new(None),
            partial: Default::default(),
        }))
    }

    /// Starts a request's output: the last request's unfinished lines
    /// written under its id, then a whole budget for request `id` (none
    /// where several requests share the instance).
    pub fn begin(&self, bytes: usize, id: Option<RequestId>) {
        self.flush();
        *self.request.lock() = id;
        self.left.store(bytes, Ordering::Relaxed);
        self.warned.store(false, Ordering::Relaxed);
    }
}

impl std::ops::Deref for GuestLog {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Writes out the unfinished line of each stream.
    pub fn flush(&self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut *self.partial[stream as usize].lock());
            if !rest.is_empty() {
                self.line(stream, &rest);
            }
        }
    }

    /// Runs `log` with the current request's id, if there is one.
    pub fn with_request<R>(&self, log: impl FnOnce(Option<&str>) -> R) -> R {
        let request = self.request.lock();
        log(request.as_ref().map(RequestId::as_str))
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The id of the request its lines are for, if one.
    pub fn request_id(&self) -> Option<RequestId> {
        self.request.lock().clone()
    }

    /// Takes what a line of `text` bytes costs (see [`LINE_OVERHEAD`]) from
    /// the request's budget and the tenant's rate; false, and nothing
    /// written, when either is spent. The first refusal is logged once per
    /// request, so an operator sees why output stopped.
    pub fn take_line(&self, text: usize) -> bool {
        let tenant = &*self.tenant;
        let id = self.with_request(|id| id.map_or(0, str::len));
        let n = LINE_OVERHEAD + tenant.len() + id + text;
        let taken = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            });
        let why = match taken {
            Err(_) => "log budget of this request spent",
            Ok(_) if !self.rate.take(n) => "log rate of this tenant exceeded",
            Ok(_) => return true,
        };
        if !self.warned.swap(true, Ordering::Relaxed) {
            self.with_request(|request_id| {
                tracing::warn!(target: "guest", %tenant, request_id = request_id.map(tracing::field::display), "{why}; dropping the rest of its output");
            });
        }
        false
    }

    /// Takes `bytes` written to `stream`: each line they end is logged,
    /// the rest waits for its newline (or the request's end).
    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut partial = self.partial[stream as usize].lock();
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&bytes[..end], &bytes[end + 1..]);
            if partial.is_empty() {
                self.line(stream, line);
            } else {
                partial.extend_from_slice(line);
                let whole = std::mem::take(&mut *partial);
                self.line(stream, &whole);
            }
            bytes = rest;
        }
        partial.extend_from_slice(bytes);
        while partial.len() >= MAX_LINE {
            let piece: Vec<u8> = partial.drain(..MAX_LINE).collect();
            self.line(stream, &piece);
        }
    }

    /// Logs one line of a stream, as text, unless it is blank or the
    /// budget is spent.
    fn line(&self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return;
        }
        let text = super::printable(text);
        if !self.take_line(text.len()) {
            return;
        }
        let tenant = &*self.tenant;
        let stream = stream.name();
        self.with_request(|request_id| {
            tracing::info!(target: "guest", %tenant, request_id = request_id.map(tracing::field::display), stream, text = &*text);
        });
    }
}

impl Drop for Shared {
    /// The instance is gone: what it left unfinished is its last word.
    fn drop(&mut self) {
        self.flush();
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A `StdoutStream` for one instance's guest.
pub struct GuestOutput {
    stream: Stream,
    log: GuestLog,
}

impl GuestOutput {
    pub fn new(stream: Stream, log: GuestLog) -> Self {
        Self { stream, log }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 guests use this path, and the world is WASIp2.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Writer {
            stream: self.stream,
            log: self.log.clone(),
        })
    }
}

struct Writer {
    stream: Stream,
    log: GuestLog,
}

/// Most bytes accepted by one write; the guest loops for more.
const WRITE_CHUNK: usize = 64 * 1024;

impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_CHUNK)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {}
}

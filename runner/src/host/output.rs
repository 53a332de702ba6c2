//! Guest stdout and stderr: each line becomes a log line with the tenant, up
//! to the request's log budget and the tenant's log rate, both counted in
//! what is written; past them, output is dropped without blocking or failing
//! the guest, so a flood costs only the guest's own fuel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;

use crate::tenant::scope::LogRate;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What one log line costs beyond the guest's text: the timestamp, level,
/// target and field names the runner writes around it. Budgets count what
/// is written, so a flood of tiny lines cannot write many times its budget.
pub const LINE_OVERHEAD: usize = 96;

/// Bytes a request may still log, shared by `wasi:logging` and stdio, and
/// the tenant's log rate above it.
#[derive(Clone, Debug)]
pub struct LogBudget(Arc<Budget>);

#[derive(Debug)]
struct Budget {
    left: AtomicUsize,
    warned: AtomicBool,
    rate: Arc<LogRate>,
}

impl LogBudget {
    pub fn new(bytes: usize, rate: Arc<LogRate>) -> Self {
        Self(Arc::new(Budget {
            left: AtomicUsize::new(bytes),
            warned: AtomicBool::new(false),
            rate,
        }))
    }

    /// Gives a reused instance's next request a whole budget again. Its
    /// stdout and stderr streams, which the guest may keep, share this one.
    pub fn refill(&self, bytes: usize) {
        self.0.left.store(bytes, Ordering::Relaxed);
        self.0.warned.store(false, Ordering::Relaxed);
    }

    /// Takes what a line of `text` bytes costs (see [`LINE_OVERHEAD`]) from
    /// the request's budget and the tenant's rate; false, and nothing
    /// written, when either is spent. The first refusal is logged once per
    /// request, so an operator sees why output stopped.
    pub fn take_line(&self, text: usize, tenant: &str) -> bool {
        let n = LINE_OVERHEAD + tenant.len() + text;
        let taken = self
            .0
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            });
        let why = match taken {
            Err(_) => "log budget of this request spent",
            Ok(_) if !self.0.rate.take(n) => "log rate of this tenant exceeded",
            Ok(_) => return true,
        };
        if !self.0.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "guest", %tenant, "{why}; dropping the rest of its output");
        }
        false
    }
}

/// A `StdoutStream` for one request's guest.
pub struct GuestOutput {
    tenant: Arc<str>,
    stream: &'static str,
    budget: LogBudget,
}

impl GuestOutput {
    pub fn new(tenant: Arc<str>, stream: &'static str, budget: LogBudget) -> Self {
        Self {
            tenant,
            stream,
            budget,
        }
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
            tenant: self.tenant.clone(),
            stream: self.stream,
            budget: self.budget.clone(),
        })
    }
}

struct Writer {
    tenant: Arc<str>,
    stream: &'static str,
    budget: LogBudget,
}

/// Most bytes accepted by one write; the guest loops for more.
const WRITE_CHUNK: usize = 64 * 1024;

impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let text = super::printable(line);
            if !self.budget.take_line(text.len(), &self.tenant) {
                break;
            }
            tracing::info!(target: "guest", tenant = %self.tenant, stream = self.stream, ?text);
        }
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

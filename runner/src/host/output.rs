//! Guest stdout and stderr: each write becomes a log line with the tenant,
//! up to the request's log budget; past it, output is dropped without
//! blocking or failing the guest, so a flood costs only the guest's own fuel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a request may still log, shared by `wasi:logging` and stdio.
#[derive(Clone, Debug)]
pub struct LogBudget(Arc<Budget>);

#[derive(Debug)]
struct Budget {
    left: AtomicUsize,
    warned: AtomicBool,
}

impl LogBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Budget {
            left: AtomicUsize::new(bytes),
            warned: AtomicBool::new(false),
        }))
    }

    /// Takes `n` bytes of budget; false (and nothing taken) when too little
    /// is left. The first refusal is logged once, so an operator sees why
    /// output stopped.
    pub fn take(&self, n: usize, tenant: &str) -> bool {
        let taken = self
            .0
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            });
        if taken.is_err() && !self.0.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "guest", %tenant, "log budget of this request spent; dropping the rest of its output");
        }
        taken.is_ok()
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
        if self.budget.take(bytes.len(), &self.tenant) {
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let text = super::printable(line);
                tracing::info!(target: "guest", tenant = %self.tenant, stream = self.stream, ?text);
            }
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

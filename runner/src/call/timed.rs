//! CPU time per tenant, measured around each poll of its guest.

use std::sync::Arc;

use crate::tenant::Tenant;

/// A tenant's guest future, the time each poll of it takes added to the
/// tenant's CPU time (`runner_cpu_seconds_total`): the worker thread runs
/// nothing else meanwhile. Unpin, so it can be polled in place and then
/// moved into a task.
pub struct Timed<F> {
    inner: std::pin::Pin<Box<F>>,
    tenant: Arc<Tenant>,
}

impl<F: Future> Timed<F> {
    pub fn new(tenant: Arc<Tenant>, inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            tenant,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // The TSC clock: a few nanoseconds a reading.
        let started = crate::metrics::Stopwatch::now();
        let polled = self.inner.as_mut().poll(cx);
        self.tenant.metrics().cpu(started.elapsed());
        polled
    }
}

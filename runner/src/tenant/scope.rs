//! What a tenant's requests and instances see of it: its name, limits,
//! key-value namespace, metric handles, log rate and in-flight permits.
//!
//! Host state holds a [`Scope`], not the whole tenant: the tenant owns its
//! kept instances, and an instance that held its tenant would keep it
//! alive in a cycle.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::limits::Limits;
use crate::metrics::TenantMetrics;
use crate::outbound::{Egress, TenantEgress};
use crate::store::Namespace;
use crate::vars::Variables;

pub struct Scope {
    name: Arc<str>,
    limits: Limits,
    namespace: Namespace,
    /// Bounds this tenant's share of the runner: one tenant's flood cannot
    /// take every instance slot.
    permits: Arc<Semaphore>,
    /// The log rate all its requests share.
    log_rate: Arc<LogRate>,
    /// Shared with the other tenants past the labelled ones.
    metrics: Arc<TenantMetrics>,
    /// Its outgoing requests: allow-list, limits, connection pool.
    egress: Arc<TenantEgress>,
    /// Its configuration and secrets.
    vars: Variables,
    /// Set when the tenant is removed: a request that found it just before
    /// and was not admitted yet is answered as if it had come after.
    /// Shared by its components.
    removed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Scope {
    pub fn new(
        name: &str,
        limits: Limits,
        namespace: Namespace,
        metrics: Arc<TenantMetrics>,
        egress: &Arc<Egress>,
        vars: Variables,
    ) -> Self {
        let name: Arc<str> = name.into();
        Self {
            vars,
            egress: Arc::new(TenantEgress::new(
                name.clone(),
                &limits,
                egress,
                metrics.clone(),
            )),
            name,
            permits: Arc::new(Semaphore::new(limits.max_tenant_in_flight)),
            log_rate: Arc::new(LogRate::new(crate::limits::bytes(
                limits.max_log_bytes_per_second,
            ))),
            limits,
            namespace,
            metrics,
            removed: Arc::default(),
        }
    }

    /// The scope of another component of the same tenant, under `limits`
    /// (the tenant's, with the component's own route, outbound hosts and
    /// stores) and with its own variables: it shares the tenant's data,
    /// permits, log rate, metrics and removal.
    pub fn part(&self, limits: Limits, egress: &Arc<Egress>, vars: Variables) -> Self {
        Self {
            vars,
            egress: Arc::new(TenantEgress::new(
                self.name.clone(),
                &limits,
                egress,
                self.metrics.clone(),
            )),
            name: self.name.clone(),
            permits: self.permits.clone(),
            log_rate: self.log_rate.clone(),
            namespace: self.namespace.with_buckets(limits.quotas().buckets),
            limits,
            metrics: self.metrics.clone(),
            removed: self.removed.clone(),
        }
    }

    /// Marks the tenant removed: from now on no request of it is admitted.
    pub fn remove(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn metrics(&self) -> &TenantMetrics {
        &self.metrics
    }

    pub fn vars(&self) -> &Variables {
        &self.vars
    }

    pub fn egress(&self) -> &Arc<TenantEgress> {
        &self.egress
    }

    pub fn log_rate(&self) -> &Arc<LogRate> {
        &self.log_rate
    }

    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }
}

/// A tenant's log rate: a token bucket of bytes per second shared by all
/// its requests, holding at most one second's worth.
#[derive(Debug)]
pub struct LogRate {
    per_second: f64,
    state: parking_lot::Mutex<(f64, Instant)>,
}

impl LogRate {
    pub fn new(bytes_per_second: usize) -> Self {
        let per_second = bytes_per_second as f64;
        Self {
            per_second,
            state: parking_lot::Mutex::new((per_second, Instant::now())),
        }
    }

    pub(crate) fn take(&self, n: usize) -> bool {
        let mut state = self.state.lock();
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second)
            .min(self.per_second);
        *last = now;
        if *tokens < n as f64 {
            return false;
        }
        *tokens -= n as f64;
        true
    }
}

impl Scope {
    /// The scope of a tenant `t0` with the default limits, its metrics in
    /// `recorder`, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(recorder: &crate::metrics::Recorder) -> Arc<Self> {
        use crate::store::{Quotas, memory};
        let namespace = Namespace::new(&memory::Store::new(1), "t0", Quotas::default())
            .expect("a fresh namespace");
        let metrics = Arc::new(TenantMetrics::new("t0".into(), recorder));
        let egress = Egress::new(Default::default());
        Arc::new(Self::new(
            "t0",
            Limits::default(),
            namespace,
            metrics,
            &egress,
            Variables::default(),
        ))
    }
}

//! A tenant: its name, limits, pre-instantiated component, key-value
//! namespace and metric handles. Built when the tenant is deployed (at
//! start-up or through the admin API) and never changed after: an update
//! builds a new one, and requests already running keep the one they
//! started on.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::component::Digest;
use crate::concurrent::Workers;
use crate::engine::Loaded;
use crate::host::{HandlerPre, LogRate};
use crate::instances::IdleInstances;
use crate::limits::Limits;
use crate::metrics::TenantMetrics;
use crate::store::Namespace;

pub struct Tenant {
    name: Arc<str>,
    limits: Limits,
    component: Digest,
    pre: HandlerPre,
    namespace: Namespace,
    /// Bounds this tenant's share of the runner: one tenant's flood cannot
    /// take every instance slot.
    permits: Arc<Semaphore>,
    /// The log rate all its requests share.
    log_rate: Arc<LogRate>,
    /// Instances kept for its next requests (with max-instance-reuse).
    idle: IdleInstances,
    /// Its WASIp3 instances serving several requests at once (with
    /// max-instance-concurrency).
    workers: Workers,
    /// Shared with the other tenants past the labelled ones.
    metrics: Arc<TenantMetrics>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub fn new(
        name: &str,
        limits: Limits,
        component: &Loaded,
        namespace: Namespace,
        metrics: Arc<TenantMetrics>,
    ) -> Self {
        Self {
            name: name.into(),
            permits: Arc::new(Semaphore::new(limits.max_tenant_in_flight)),
            log_rate: Arc::new(LogRate::new(crate::limits::bytes(
                limits.max_log_bytes_per_second,
            ))),
            limits,
            component: component.digest,
            pre: component.pre.clone(),
            namespace,
            idle: IdleInstances::default(),
            workers: Workers::default(),
            metrics,
        }
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

    /// The digest of the component it runs.
    pub fn component(&self) -> Digest {
        self.component
    }

    pub fn pre(&self) -> &HandlerPre {
        &self.pre
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn metrics(&self) -> &TenantMetrics {
        &self.metrics
    }

    pub fn log_rate(&self) -> &Arc<LogRate> {
        &self.log_rate
    }

    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub fn idle(&self) -> &IdleInstances {
        &self.idle
    }
}

/// A valid tenant name: 1 to 64 ASCII letters, digits, `-` or `_`. It
/// appears in URLs, logs and metric labels, so nothing else is allowed.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant name {name:?} must be 1 to 64 ASCII letters, digits, '-' or '_'"
        ))
    }
}

/// A tenant on the embedded default guest with the default limits, its
/// metrics in `recorder`, for unit tests that need a real one.
#[cfg(test)]
pub(crate) fn for_tests(
    recorder: &crate::metrics::Recorder,
) -> (crate::engine::Runtime, Arc<Tenant>) {
    use crate::engine::{EngineConfig, Runtime};
    use crate::store::{Namespace, Quotas, memory};

    let config = EngineConfig {
        pool_size: 4,
        ..EngineConfig::default()
    };
    let runtime = recorder
        .scope(|| Runtime::new(config))
        .expect("the test engine builds");
    let loaded = runtime
        .load(crate::DEFAULT_GUEST, usize::MAX)
        .expect("the default guest loads");
    let namespace =
        Namespace::new(&memory::Store::new(1), "t0", Quotas::default()).expect("a fresh namespace");
    let metrics = Arc::new(recorder.scope(|| TenantMetrics::new("t0".into())));
    let tenant = Tenant::new("t0", Limits::default(), &loaded, namespace, metrics);
    (runtime, Arc::new(tenant))
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn names_are_url_and_label_safe() {
        assert!(validate_name("t0").is_ok());
        assert!(validate_name("team-a_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("ä").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}

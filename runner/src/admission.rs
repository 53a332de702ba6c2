//! Admission: the global and per-tenant in-flight caps, taken before a
//! guest is touched.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::Limit;
use crate::outcome::Outcome;
use crate::tenant::scope::Scope;

/// The cap on requests in flight across all tenants.
#[derive(Debug)]
pub struct GlobalCap {
    permits: Arc<Semaphore>,
    max: usize,
}

impl GlobalCap {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// A request's place in the global and the tenant's in-flight caps. The
/// call holds it until the guest's store is dropped, so the caps bound
/// live instances, not just response heads.
#[derive(Debug)]
pub struct Admission {
    _global: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
}

impl Admission {
    /// Takes a slot of each cap, or refuses for the first one that is full.
    pub fn try_admit(global: &GlobalCap, tenant: &Scope) -> Result<Self, Refusal> {
        let Ok(global_permit) = global.permits.clone().try_acquire_owned() else {
            return Err(Refusal(
                Limit::GlobalConcurrency,
                format!(
                    "runner busy: all {} request slots are in use; retry later",
                    global.max
                ),
            ));
        };
        let Ok(tenant_permit) = tenant.permits().clone().try_acquire_owned() else {
            return Err(Refusal(
                Limit::TenantConcurrency,
                format!(
                    "too many requests: tenant {} already has {} requests in flight",
                    tenant.name(),
                    tenant.limits().max_tenant_in_flight
                ),
            ));
        };
        Ok(Self {
            _global: global_permit,
            _tenant: tenant_permit,
        })
    }
}

/// Why a request was not admitted: the cap that was full, and the message
/// that names it.
#[derive(Debug)]
pub struct Refusal(pub Limit, pub String);

impl From<Refusal> for Outcome {
    fn from(Refusal(limit, message): Refusal) -> Self {
        Outcome::Refused(limit, message)
    }
}

//! Instances kept between requests, for tenants that opt into reuse.
//!
//! With `max-instance-reuse` above 1, an instance that served a request
//! cleanly is parked in its tenant's [`IdleInstances`] instead of being
//! dropped, and the tenant's next request runs in it: no instantiation, no
//! memory reset. An instance leaves the pool for good when it has served
//! `max-instance-reuse` requests, when its linear memory has grown past
//! `max-reused-memory`, when it has been idle for `instance-idle-timeout`
//! (the [`Reaper`] drops it, off the request path), or when a fresh
//! instance of any tenant needs its pool slot.
//!
//! Idle instances hold pooling-allocator slots but no admission permit, so
//! they never count against in-flight caps; a full pool evicts them first
//! ([`Registry::evict_one`]) before a request is refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use metrics::{Gauge, Histogram};
use parking_lot::Mutex;
use wasmtime::Store;

use crate::host::{Handler, Host};
use crate::limits::{self, Limits};
use crate::periodic::Periodic;

/// How often the reaper looks for instances past their idle timeout: an idle
/// instance is dropped within this long after its timeout.
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// A live instance of a tenant's component, in its own store.
pub struct Instance {
    pub store: Store<Host>,
    pub guest: Handler,
    /// Requests it has started, this one included.
    pub served: u64,
}

/// One tenant's parked instances, most recently used last, and the limits
/// they are kept under.
pub struct IdleInstances {
    /// The tenant's name, for the log.
    tenant: Arc<str>,
    /// Its `instance-idle-timeout`.
    timeout: Duration,
    /// Its `max-instance-reuse`.
    max_reuse: u64,
    /// Its `max-reused-memory`, in bytes.
    max_memory: usize,
    /// Whether its instances are WASIp3 ones, in that engine's pool.
    p3: bool,
    parked: Mutex<VecDeque<(Instance, Instant)>>,
    /// Whether the tenant is in the [`Registry`] yet.
    registered: AtomicBool,
    /// Set when the tenant parks no more instances: a kept instance failed
    /// to answer (the component cannot serve twice, so the tenant gets
    /// fresh instances from then on), or the tenant was replaced by an
    /// update or removed.
    refused: AtomicBool,
}

impl IdleInstances {
    pub fn new(tenant: Arc<str>, limits: &Limits, p3: bool) -> Self {
        Self {
            tenant,
            timeout: limits.instance_idle_timeout,
            max_reuse: limits.max_instance_reuse,
            max_memory: limits::bytes(limits.max_reused_memory),
            p3,
            parked: Mutex::default(),
            registered: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        }
    }

    /// The most recently parked instance that is still within `timeout`;
    /// older ones that are past it are handed back to be dropped.
    fn take(&self, now: Instant, timeout: Duration) -> (Option<Instance>, Vec<Instance>) {
        let mut parked = self.parked.lock();
        let found = parked.pop_back();
        let stale = expired(&mut parked, now, timeout);
        match found {
            Some((instance, since)) if now.duration_since(since) < timeout => {
                (Some(instance), stale)
            }
            Some((instance, _)) => {
                let mut stale = stale;
                stale.push(instance);
                (None, stale)
            }
            None => (None, stale),
        }
    }

    fn put(&self, instance: Instance, now: Instant) {
        self.parked.lock().push_back((instance, now));
    }

    /// When the longest-parked instance was parked.
    fn oldest_since(&self) -> Option<Instant> {
        self.parked.lock().front().map(|(_, since)| *since)
    }

    fn oldest(&self) -> Option<Instance> {
        self.parked.lock().pop_front().map(|(instance, _)| instance)
    }

    fn expire(&self, now: Instant, timeout: Duration) -> Vec<Instance> {
        expired(&mut self.parked.lock(), now, timeout)
    }

    fn drain(&self) -> Vec<Instance> {
        self.parked.lock().drain(..).map(|(i, _)| i).collect()
    }
}

/// Pops the instances at the front (the oldest) that are past `timeout`.
fn expired(
    parked: &mut VecDeque<(Instance, Instant)>,
    now: Instant,
    timeout: Duration,
) -> Vec<Instance> {
    let mut stale = Vec::new();
    while let Some((_, since)) = parked.front() {
        if now.duration_since(*since) < timeout {
            break;
        }
        stale.extend(parked.pop_front().map(|(i, _)| i));
    }
    stale
}

/// Every tenant that has parked an instance, for the reaper and for
/// eviction when the pool is full.
pub struct Registry {
    tenants: Mutex<Vec<Weak<IdleInstances>>>,
    idle: Gauge,
    lifetimes: Histogram,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            tenants: Mutex::new(Vec::new()),
            idle: metrics::gauge!(crate::metrics::INSTANCES_IDLE),
            lifetimes: metrics::histogram!(crate::metrics::INSTANCE_REQUESTS),
        }
    }

    /// A parked instance of `tenant` for a new request, if one is within
    /// its idle timeout.
    pub fn take(&self, idle: &IdleInstances) -> Option<Instance> {
        if idle.refused.load(Ordering::Relaxed) {
            return None;
        }
        let (found, stale) = idle.take(Instant::now(), idle.timeout);
        if found.is_some() {
            self.idle.decrement(1.0);
        }
        self.retire(stale);
        found
    }

    /// Ends a request's use of `instance`: parks it if `clean` (the request
    /// ended without a trap or a limit and the guest sent its response) and
    /// it may serve more, else drops it. True when it was dropped only
    /// because its memory had grown past `max-reused-memory`.
    pub fn release(&self, idle: &Arc<IdleInstances>, instance: Instance, clean: bool) -> bool {
        let reusable =
            clean && instance.served < idle.max_reuse && !idle.refused.load(Ordering::Relaxed);
        let grown = reusable && instance.store.data().limiter.memory > idle.max_memory;
        if reusable && !grown {
            if !idle.registered.swap(true, Ordering::AcqRel) {
                self.tenants.lock().push(Arc::downgrade(idle));
            }
            idle.put(instance, Instant::now());
            self.idle.increment(1.0);
            // A `forget` between the check above and the put drained
            // before this instance was there: drop it as forget would.
            if idle.refused.load(Ordering::Acquire) {
                self.retire(idle.drain());
            }
        } else {
            self.lifetimes.record(instance.served as f64);
        }
        grown
    }

    /// Turns reuse off for `tenant` after a kept instance returned without
    /// answering a request, which some toolchains' components do on every
    /// call after their first (ComponentizeJS with a `fetch` event
    /// listener); its parked instances are dropped and the log says why,
    /// once.
    pub fn refuse(&self, idle: &IdleInstances) {
        if !idle.refused.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                tenant = %idle.tenant,
                "a reused instance of this tenant's component returned without sending a \
                 response: the component cannot serve more than one request per instance, \
                 so it gets a fresh instance per request from now on (set max-instance-reuse \
                 = 1 for it)"
            );
            self.retire(idle.drain());
        }
    }

    /// Drops `tenant`'s parked instances and parks no more of them: it was
    /// replaced by an update or removed, and its requests still running
    /// finish on instances that are then dropped.
    pub fn forget(&self, idle: &IdleInstances) {
        idle.refused.store(true, Ordering::Release);
        self.retire(idle.drain());
    }

    /// Drops the parked instance that has waited longest in the pool of
    /// `p3` (WASIp3 instances, or WASIp2 ones), whichever tenant's, to free
    /// its slot; false if none was parked there. Only a full pool calls
    /// this, so it may look at every tenant; an instance of the other pool
    /// would free nothing for it.
    pub fn evict_one(&self, p3: bool) -> bool {
        let tenants: Vec<Arc<IdleInstances>> = self
            .tenants
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|t| t.p3 == p3)
            .collect();
        let oldest = tenants
            .iter()
            .filter_map(|t| Some((t.oldest_since()?, t)))
            .min_by_key(|(since, _)| *since);
        // Another request may take it first; then the caller tries again.
        match oldest.and_then(|(_, idle)| idle.oldest()) {
            Some(instance) => {
                self.retire(vec![instance]);
                true
            }
            None => tenants.iter().any(|t| {
                t.oldest()
                    .map(|instance| self.retire(vec![instance]))
                    .is_some()
            }),
        }
    }

    /// Drops every parked instance past its tenant's idle timeout, and
    /// forgets tenants that are gone.
    fn reap(&self) {
        let now = Instant::now();
        let tenants: Vec<Arc<IdleInstances>> = {
            let mut list = self.tenants.lock();
            list.retain(|t| t.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for idle in tenants {
            self.retire(idle.expire(now, idle.timeout));
        }
    }

    /// Drops every parked instance of every tenant.
    fn drain(&self) {
        let tenants: Vec<Arc<IdleInstances>> = self
            .tenants
            .lock()
            .drain(..)
            .filter_map(|t| t.upgrade())
            .collect();
        for idle in tenants {
            self.retire(idle.drain());
        }
    }

    /// Drops parked instances, counting them out of the idle gauge.
    fn retire(&self, instances: Vec<Instance>) {
        for instance in instances {
            self.idle.decrement(1.0);
            self.lifetimes.record(instance.served as f64);
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// Owns the thread that drops idle instances past their timeout, so the
/// memory reset of a dropped instance happens off the request path; on drop
/// it stops and drops every parked instance of the tenants still there (a
/// tenant dropped before it takes its parked instances with it).
pub struct Reaper {
    registry: Arc<Registry>,
    thread: Option<Periodic>,
}

impl Reaper {
    pub fn start(registry: Arc<Registry>) -> Self {
        let reaped = registry.clone();
        let thread = Periodic::start("instance-reaper", REAP_INTERVAL, move || reaped.reap());
        Self {
            registry,
            thread: Some(thread),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // The thread first, so it cannot run while the pool drains.
        drop(self.thread.take());
        self.registry.drain();
    }
}

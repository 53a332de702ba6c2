//! A tenant: its name, limits, pre-instantiated component, key-value
//! namespace and metric handles. Built when the tenant is deployed (at
//! start-up or through the admin API) and never changed after: an update
//! builds a new one, and requests already running keep the one they
//! started on.
//!
//! A tenant made from a Spin application of several HTTP components has
//! further parts: each a [`Tenant`] of its own component, route, outbound
//! hosts, stores and variables, sharing the tenant's data, permits, log
//! rate, metrics and removal. Its routes send each request to one.
//!
//! - [`Scope`]: the part its requests and instances see.
//! - `workers`: its WASIp3 instances that serve several requests at once.

pub mod scope;
pub(crate) mod workers;

use std::sync::Arc;

use tokio::sync::Semaphore;

pub use self::scope::{LogRate, Scope};
use self::workers::Workers;
use crate::engine::Loaded;
use crate::engine::component::Digest;
use crate::engine::kept::IdleInstances;
use crate::host::HandlerPre;
use crate::limits::Limits;
use crate::metrics::TenantMetrics;
use crate::outbound::Egress;
use crate::routes::Routes;
use crate::store::Namespace;
use crate::tls::TenantCert;
use crate::vars::Variables;
use rustls::sign::CertifiedKey;

pub struct Tenant {
    scope: Arc<Scope>,
    /// Its component, compiled: held here too, so the runner letting go
    /// of the component (no tenant left on it) cannot take it from under
    /// a version still running.
    component: Loaded,
    /// Instances kept for its next requests (with max-instance-reuse).
    idle: Arc<IdleInstances>,
    /// Its WASIp3 instances serving several requests at once (with
    /// max-instance-concurrency).
    workers: Workers,
    /// The paths it serves, when its `route` (or a part's) is set.
    routes: Option<Routes>,
    /// Its component's id in a Spin manifest; empty otherwise.
    id: Box<str>,
    /// Its further components, when it has several.
    parts: Box<[Arc<Tenant>]>,
    /// Its own certificate for the hosts it claims, checked, with the
    /// pair it was made from.
    tls: Option<(TenantCert, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name())
            .field("limits", self.limits())
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
        egress: &Arc<Egress>,
        vars: Variables,
    ) -> Self {
        let scope = Scope::new(name, limits, namespace, metrics, egress, vars);
        Self::over(Arc::new(scope), component)
    }

    fn over(scope: Arc<Scope>, component: &Loaded) -> Self {
        let idle = IdleInstances::new(scope.shared_name(), scope.limits(), component.pre.is_p3());
        let workers = Workers::new(scope.limits().max_tenant_in_flight);
        let routes = Routes::new([&scope.limits().route]);
        Self {
            scope,
            component: component.clone(),
            idle: Arc::new(idle),
            workers,
            routes,
            id: "".into(),
            parts: Box::default(),
            tls: None,
        }
    }

    /// This tenant with its own certificate, checked.
    pub fn with_cert(mut self, tls: Option<(TenantCert, Arc<CertifiedKey>)>) -> Self {
        self.tls = tls;
        self
    }

    /// Its own certificate, as deployed.
    pub fn tls(&self) -> Option<&TenantCert> {
        self.tls.as_ref().map(|(cert, _)| cert)
    }

    /// Its own certificate, ready for a handshake.
    pub fn certified(&self) -> Option<&Arc<CertifiedKey>> {
        self.tls.as_ref().map(|(_, certified)| certified)
    }

    /// Another component of this tenant, `id` in its manifest, under
    /// `limits` (this tenant's, with the component's own route, outbound
    /// hosts and stores) and with its own variables.
    pub fn part(
        &self,
        id: &str,
        limits: Limits,
        component: &Loaded,
        egress: &Arc<Egress>,
        vars: Variables,
    ) -> Self {
        let scope = self.scope.part(limits, egress, vars);
        Self::over(Arc::new(scope), component).named(id)
    }

    /// This component named `id`, as its manifest names it.
    pub fn named(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// This tenant with its further components: each request goes to the
    /// one whose route matches it best.
    pub fn with_parts(mut self, parts: Vec<Arc<Tenant>>) -> Self {
        self.parts = parts.into();
        let own = &self.scope.limits().route;
        let routes = std::iter::once(own).chain(self.parts.iter().map(|p| &p.limits().route));
        self.routes = Routes::new(routes);
        self
    }

    /// The paths it serves, when a route is set: requests to others never
    /// reach a component. A match's index names the component:
    /// [`Tenant::component_at`].
    pub fn routes(&self) -> Option<&Routes> {
        self.routes.as_ref()
    }

    /// Component `index` of its routes: 0 is its own, then its parts'.
    pub fn component_at(self: &Arc<Self>, index: usize) -> Arc<Tenant> {
        match index.checked_sub(1).and_then(|i| self.parts.get(i)) {
            Some(part) => part.clone(),
            None => self.clone(),
        }
    }

    /// Its further components.
    pub fn parts(&self) -> &[Arc<Tenant>] {
        &self.parts
    }

    /// Each of its components: its own, then its parts'.
    pub fn components(&self) -> impl Iterator<Item = &Tenant> {
        std::iter::once(self).chain(self.parts.iter().map(|p| &**p))
    }

    /// Its component's id in a Spin manifest; empty otherwise.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What its requests and instances see of it.
    pub fn scope(&self) -> &Arc<Scope> {
        &self.scope
    }

    pub fn name(&self) -> &str {
        self.scope.name()
    }

    pub fn limits(&self) -> &Limits {
        self.scope.limits()
    }

    pub fn vars(&self) -> &Variables {
        self.scope.vars()
    }

    /// The digest of the component it runs.
    pub fn component(&self) -> Digest {
        self.component.digest
    }

    /// Its component, compiled.
    pub fn loaded(&self) -> &Loaded {
        &self.component
    }

    pub fn pre(&self) -> &HandlerPre {
        &self.component.pre
    }

    pub fn namespace(&self) -> &Namespace {
        self.scope.namespace()
    }

    pub fn metrics(&self) -> &TenantMetrics {
        self.scope.metrics()
    }

    pub fn permits(&self) -> &Arc<Semaphore> {
        self.scope.permits()
    }

    pub(crate) fn workers(&self) -> &Workers {
        &self.workers
    }

    pub(crate) fn idle(&self) -> &Arc<IdleInstances> {
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

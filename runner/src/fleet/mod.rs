//! The fleet: the tenants a runner serves now, and the one way they change.
//!
//! Tenants are created, updated and removed while requests run: at
//! start-up from the tenants file and flags, later through the admin API
//! ([`crate::ingress::api`]) and a reload of the tenants file on SIGHUP. Every
//! path goes through [`Fleet::put`] and [`Fleet::remove`], so each change
//! is checked, logged and counted the same way.
//!
//! A tenant is immutable once built: an update builds a whole new
//! [`Tenant`] (compiled component looked up, namespace reopened under the
//! new quotas, component instantiated once under the new limits) before it
//! replaces the old one in the routing table, in one step under its lock.
//! A request holds the tenant it was routed to, so requests already running
//! finish on the old version and new ones start on the new one; nothing
//! fails because of the switch. The old version's kept instances are
//! dropped, so no instance serves two versions.
//!
//! - [`deployed`]: what the admin API deployed, kept in the data directory
//!   or in the Redis several runners share.
//! - [`follow`]: keeps a runner's fleet in step with the others on its
//!   Redis.
//! - [`components`]: the components held, and letting go of those no
//!   tenant runs.

pub mod components;
pub mod deployed;
pub mod follow;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use metrics::{Counter, Gauge};
use parking_lot::{Mutex, RwLock};

use self::deployed::{Keeper, SavedPart, SavedTenant, SavedTenants, SavedTls};
use crate::engine::component::Digest;
use crate::engine::{Loaded, Runtime};
use crate::limits::{self, Limits, LimitsFile};
use crate::metrics::{Recorder, TenantLabelMode, TenantLabels, TenantMetrics};
use crate::outbound::Egress;
use crate::seal::{Sealer, Unsealed};
use crate::store::{self, Backend};
use crate::tenant::Tenant;
use crate::tls::TenantCert;
use crate::vars::Variables;

/// Where a tenant's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentSource {
    /// The default guest built into the runner binary.
    Embedded,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    pub component: ComponentSource,
    pub limits: Limits,
    /// Its configuration and secrets, read (secrets from their files and
    /// variables) when the tenants file was.
    pub vars: Variables,
    /// Its own certificate, read when the tenants file was.
    pub tls: Option<TenantCert>,
}

/// One version of a tenant: its component under its limits with its
/// variables, and its further components, if any.
#[derive(Clone)]
pub struct Version {
    /// Its component's id in a Spin manifest; empty otherwise.
    pub id: String,
    pub component: Loaded,
    pub limits: Limits,
    pub vars: Variables,
    pub parts: Vec<Part>,
    /// Its own certificate for the hosts it claims.
    pub tls: Option<TenantCert>,
}

impl Version {
    /// A tenant of one component.
    pub fn new(component: Loaded, limits: Limits, vars: Variables) -> Self {
        Self {
            id: String::new(),
            component,
            limits,
            vars,
            parts: Vec::new(),
            tls: None,
        }
    }

    /// The same tenant, with `parts`.
    pub fn with_parts(mut self, parts: Vec<Part>) -> Self {
        self.parts = parts;
        self
    }
}

/// A further component of a tenant: a Spin application's second and later
/// HTTP triggers. Requests go to it by its route.
#[derive(Clone)]
pub struct Part {
    /// Its component's id in the manifest.
    pub id: String,
    pub component: Loaded,
    /// The tenant's limits with its own [`PART_LIMITS`].
    pub limits: Limits,
    /// Its own configuration and secrets.
    pub vars: Variables,
}

/// The limits each component of a tenant has for itself (a Spin manifest
/// gives them per component); every other limit is the tenant's.
pub const PART_LIMITS: [&str; 3] = ["route", "allowed-outbound-hosts", "key-value-stores"];

/// The name a part's secrets are sealed for: no tenant's name has a `/`.
fn seal_name(tenant: &str, part: &str) -> String {
    format!("{tenant}/{part}")
}

/// The name a tenant's certificate key is sealed for, as secret `key`.
fn tls_seal_name(tenant: &str) -> String {
    format!("{tenant}#tls")
}

/// A change refused while being built: the store failing is the runner's
/// fault (a 5xx), anything else the change's.
fn refused(error: anyhow::Error) -> Refused {
    match error.downcast_ref::<store::Error>() {
        Some(store::Error::Unavailable(_)) => Refused::Failed(error),
        _ => Refused::Invalid(error),
    }
}

/// `limits` with those a kept deployment sets (by config key) over them.
fn overlaid(
    mut limits: Limits,
    set: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Limits> {
    let file: LimitsFile = serde_json::from_value(serde_json::Value::Object(set.clone()))?;
    limits.overlay(&file, "", &|_| false)?;
    Ok(limits)
}

/// Names a kept deployment in an error.
fn who(name: &str) -> String {
    format!("tenant {name:?} (deployed through the admin API)")
}

/// What a [`Fleet::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Removed,
    /// The tenant already ran this component under these limits.
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Removed => "removed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Who asked for a change, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Startup,
    Api,
    Reload,
    /// Another runner sharing this one's Redis changed it.
    Peer,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Startup => "start-up",
            Source::Api => "admin API",
            Source::Reload => "reload",
            Source::Peer => "fleet's shared store",
        })
    }
}

/// A change the fleet refused, and why, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The request names something that is not there.
    #[error("{0}")]
    NotFound(String),
    /// A component to remove that tenants still run.
    #[error("{0}")]
    InUse(String),
    /// A host name another tenant claims.
    #[error("{0}")]
    HostClaimed(String),
    /// The component or the limits cannot run here.
    #[error("{0:#}")]
    Invalid(anyhow::Error),
    /// The change was made in part and a step after failed (the store).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

pub struct Fleet {
    runtime: Arc<Runtime>,
    backend: Arc<dyn Backend>,
    recorder: Recorder,
    labels: TenantLabels,
    /// Routing: read by every request, written by a change. Hashed with
    /// foldhash (randomly seeded per process): a lookup per request.
    tenants: RwLock<HashMap<Box<str>, Arc<Tenant>, foldhash::fast::RandomState>>,
    /// The host names tenants claim (`hosts`), to the tenant's name;
    /// changed where `tenants` is, under the change lock.
    hosts: RwLock<HashMap<Box<str>, Box<str>, foldhash::fast::RandomState>>,
    /// Whether `hosts` has any: read by every request without the lock.
    any_hosts: std::sync::atomic::AtomicBool,
    /// Metric handles by label: one per tenant name with a label of its
    /// own (at most `labels.max_tenants` of them, so the series count stays
    /// bounded however many tenants come and go), and the shared `_other`
    /// or `_all`, registered once however many tenants share them.
    labelled: Mutex<Labels>,
    /// (component, limits) pairs already instantiated once: tenants that
    /// share both are checked once, not once each.
    checked: Mutex<HashSet<(Digest, String)>>,
    /// One change at a time: two updates of one tenant cannot interleave
    /// their check and their swap.
    changes: tokio::sync::Mutex<()>,
    /// The limits a tenant deployed through the API starts from.
    defaults: RwLock<Limits>,
    /// Where a data directory or a shared Redis keeps the components and
    /// tenants deployed through the API: the keeper, and those tenants now.
    deployed: Option<(Keeper, Mutex<SavedTenants>)>,
    default_guest: Digest,
    /// Components held that no tenant runs, since when (see
    /// [`components`]).
    unused: Mutex<HashMap<Digest, std::time::Instant>>,
    metrics: FleetMetrics,
    /// What every tenant's outgoing requests share.
    egress: Arc<Egress>,
    /// Seals the secrets of tenants deployed through the API, where they
    /// are kept (`--secrets-key-file`).
    sealer: Option<Arc<Sealer>>,
    /// `[defaults]`' config and secrets.
    default_vars: RwLock<Variables>,
}

#[derive(Default)]
struct Labels {
    by_label: HashMap<Box<str>, Arc<TenantMetrics>>,
    /// Names given a label of their own so far.
    own: usize,
}

struct FleetMetrics {
    tenants: Gauge,
    components: Gauge,
    code_bytes: Gauge,
    created: Counter,
    updated: Counter,
    removed: Counter,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("tenants", &self.len())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    pub fn new(
        runtime: Arc<Runtime>,
        backend: Arc<dyn Backend>,
        recorder: Recorder,
        labels: TenantLabels,
        defaults: Limits,
        deployed: Option<Keeper>,
        egress: Arc<Egress>,
    ) -> Self {
        let metrics = recorder.scope(|| {
            use crate::metrics::{COMPONENT_CODE_BYTES, COMPONENTS, TENANT_CHANGES, TENANTS};
            FleetMetrics {
                tenants: metrics::gauge!(TENANTS),
                components: metrics::gauge!(COMPONENTS),
                code_bytes: metrics::gauge!(COMPONENT_CODE_BYTES),
                created: metrics::counter!(TENANT_CHANGES, "change" => "created"),
                updated: metrics::counter!(TENANT_CHANGES, "change" => "updated"),
                removed: metrics::counter!(TENANT_CHANGES, "change" => "removed"),
            }
        });
        Self {
            runtime,
            backend,
            recorder,
            labels,
            tenants: RwLock::new(HashMap::default()),
            hosts: RwLock::new(HashMap::default()),
            any_hosts: std::sync::atomic::AtomicBool::new(false),
            labelled: Mutex::new(Labels::default()),
            checked: Mutex::new(HashSet::new()),
            changes: tokio::sync::Mutex::new(()),
            defaults: RwLock::new(defaults),
            deployed: deployed.map(|d| (d, Mutex::new(SavedTenants::new()))),
            default_guest: Digest::of(crate::engine::DEFAULT_GUEST),
            unused: Mutex::new(HashMap::new()),
            metrics,
            egress,
            sealer: None,
            default_vars: RwLock::default(),
        }
    }

    /// What every tenant's outgoing requests share.
    pub fn egress(&self) -> &Arc<Egress> {
        &self.egress
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The tenant a request for `name` goes to.
    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().get(name).cloned()
    }

    /// Whether any tenant claims a host name: requests look their host up
    /// only then.
    pub fn claims_hosts(&self) -> bool {
        self.any_hosts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The tenant that claims `host` (lowercase, no port or trailing dot).
    pub fn by_host(&self, host: &str) -> Option<Arc<Tenant>> {
        let name = self.hosts.read().get(host).cloned()?;
        self.get(&name)
    }

    /// Refuses host names that one of `batch` (tenants about to be
    /// deployed) claims beside another of them, or that a served tenant
    /// outside the batch claims.
    fn check_hosts<'a>(
        &self,
        batch: impl IntoIterator<Item = (&'a str, &'a Limits)>,
    ) -> anyhow::Result<()> {
        let batch: Vec<(&str, &Limits)> = batch.into_iter().collect();
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        let held = self.hosts.read();
        for (name, limits) in &batch {
            for host in &limits.hosts.0 {
                let host = host.as_str();
                let other = claimed.insert(host, name).or_else(|| {
                    held.get(host)
                        .map(|owner| &**owner)
                        .filter(|owner| !batch.iter().any(|(n, _)| n == owner))
                });
                if let Some(other) = other.filter(|other| other != name) {
                    anyhow::bail!(
                        "host {host} is claimed by tenant {other:?} and tenant {name:?}; a host \
                         reaches one tenant"
                    );
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tenants.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the key-value store answers now, or why not.
    pub async fn store_ready(&self) -> Result<(), store::Error> {
        self.backend.ready().await
    }

    /// Every tenant now, in no order.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.tenants.read().values().cloned().collect()
    }

    /// Up to `limit` tenants in name order, starting after `after`, and
    /// whether more follow. A tenant that exists throughout a walk of the
    /// pages is listed exactly once.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Arc<Tenant>>, bool) {
        let mut names: Vec<(Box<str>, Arc<Tenant>)> = self
            .tenants
            .read()
            .iter()
            .filter(|(name, _)| after.is_none_or(|after| &***name > after))
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect();
        let more = names.len() > limit;
        if more {
            names.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
            names.truncate(limit);
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        (names.into_iter().map(|(_, t)| t).collect(), more)
    }

    /// The limits a tenant gets for every key its deployment leaves out.
    pub fn defaults(&self) -> Limits {
        self.defaults.read().clone()
    }

    pub fn set_defaults(&self, defaults: Limits) {
        *self.defaults.write() = defaults;
    }

    /// The config a tenant deployed through the API starts from
    /// (`[defaults]`'; its secrets are its own).
    pub fn default_vars(&self) -> Variables {
        self.default_vars.read().clone()
    }

    pub fn set_default_vars(&self, vars: Variables) {
        *self.default_vars.write() = vars;
    }

    /// Compiles `bytes` (nothing, if these bytes were compiled before) and
    /// checks they can run here; says whether they were new.
    pub async fn add_component(
        &self,
        bytes: Bytes,
        max_memory: Option<usize>,
    ) -> Result<(Loaded, bool), Refused> {
        // The start-up check's own words, whoever asks.
        let added = self
            .runtime
            .add(bytes, max_memory)
            .await
            .map_err(|e| Refused::Invalid(anyhow::Error::from(e)))?;
        self.count_components();
        Ok(added)
    }

    /// The embedded default guest, compiled on first use; `max_memory`,
    /// where a tenant's limit is known, is checked first, so a refusal names
    /// that limit rather than the pool's.
    async fn embedded(&self, max_memory: Option<usize>) -> Result<Loaded, Refused> {
        match self.runtime.loaded(&self.default_guest) {
            Some(found) => Ok(found),
            None => self
                .add_component(Bytes::from_static(crate::engine::DEFAULT_GUEST), max_memory)
                .await
                .map(|(c, _)| c),
        }
    }

    /// [`Fleet::add_component`] for a component uploaded through the API:
    /// kept in the data directory or the shared Redis, where there is one,
    /// before it counts as added.
    ///
    /// Its grace (see [`components`]) starts afresh: an upload is meant to
    /// be deployed.
    pub async fn upload(&self, bytes: Bytes) -> Result<(Loaded, bool), Refused> {
        let (loaded, new) = self.add_component(bytes.clone(), None).await?;
        // Under the change lock, so no collection comes between the copy
        // kept and the component held.
        let _one_at_a_time = self.changes.lock().await;
        if let Some((keeper, _)) = &self.deployed {
            keeper
                .save_component(&loaded.digest, &bytes)
                .await
                .map_err(Refused::Failed)?;
        }
        self.runtime.hold(&loaded);
        self.unused.lock().remove(&loaded.digest);
        self.count_components();
        Ok((loaded, new))
    }

    /// The component `source` names: `default` (the embedded guest) or a
    /// digest uploaded before: held here, or else read back from the data
    /// directory or the fleet's Redis (uploaded before a restart, through
    /// another runner, or released here for want of a tenant).
    pub async fn component(&self, source: &str) -> Result<Loaded, Refused> {
        if source == "default" {
            return self.embedded(None).await;
        }
        let digest = Digest::parse(source).map_err(|e| Refused::Invalid(anyhow::anyhow!(e)))?;
        if let Some(found) = self.runtime.loaded(&digest) {
            return Ok(found);
        }
        let kept = match &self.deployed {
            Some((keeper, _)) => keeper
                .find_component(&digest)
                .await
                .map_err(Refused::Failed)?,
            None => None,
        };
        match kept {
            Some(bytes) => Ok(self.add_component(bytes.into(), None).await?.0),
            None => Err(Refused::NotFound(format!(
                "no component {digest}: upload it first with PUT /v1/components"
            ))),
        }
    }

    /// Creates tenant `name`, or replaces it, running `version`. The new
    /// version is built and checked whole before it replaces the old, so a
    /// refused change changes nothing.
    pub async fn put(
        &self,
        name: &str,
        version: Version,
        source: Source,
    ) -> Result<Change, Refused> {
        let _one_at_a_time = self.changes.lock().await;
        if source == Source::Api {
            self.check_kept(&version.component.digest).await?;
            for part in &version.parts {
                self.check_kept(&part.component.digest).await?;
            }
        }
        self.check_hosts([(name, &version.limits)])
            .map_err(|e| Refused::HostClaimed(e.to_string()))?;
        let saved = self.saved(name, &version)?;
        let tenant = match self.prepare(name, &version).await {
            Ok(Some(tenant)) => tenant,
            // A shared store may hold another version than this runner
            // serves (a peer's change not followed yet): it gets this one.
            Ok(None) if source != Source::Api || self.shared().is_none() => {
                return Ok(Change::Unchanged);
            }
            Ok(None) => {
                self.save_one(name, Some(saved))
                    .await
                    .map_err(Refused::Failed)?;
                return Ok(Change::Unchanged);
            }
            Err(e) => {
                self.reassert_quotas([name]);
                return Err(refused(e));
            }
        };
        if source == Source::Api {
            // Kept before it is served: an acknowledged deploy survives a
            // restart.
            if let Err(e) = self.save_one(name, Some(saved)).await {
                self.reassert_quotas([name]);
                return Err(Refused::Failed(e));
            }
        }
        Ok(self.install(vec![tenant], source)[0])
    }

    /// `version` of tenant `name` as it is kept: its secrets sealed.
    fn saved(&self, name: &str, version: &Version) -> Result<SavedTenant, Refused> {
        let digest = |loaded: &Loaded| {
            if loaded.digest == self.default_guest {
                "default".into()
            } else {
                loaded.digest.to_string()
            }
        };
        let config = |vars: &Variables| {
            vars.config()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let parts = version
            .parts
            .iter()
            .map(|part| {
                let mut limits = part.limits.to_json();
                limits.retain(|key, _| PART_LIMITS.contains(&key.as_str()));
                Ok(SavedPart {
                    id: part.id.clone(),
                    component: digest(&part.component),
                    limits,
                    config: config(&part.vars),
                    secrets: self.seal(&seal_name(name, &part.id), &part.vars)?,
                })
            })
            .collect::<Result<_, Refused>>()?;
        Ok(SavedTenant {
            id: version.id.clone(),
            component: digest(&version.component),
            limits: version.limits.to_json(),
            config: config(&version.vars),
            secrets: self.seal(name, &version.vars)?,
            // An update keeps the tenant's incarnation; a creation makes one.
            tls: match &version.tls {
                None => None,
                Some(tls) => {
                    let vars = Variables::new(
                        Default::default(),
                        [("key".to_string(), tls.key.clone())].into(),
                    );
                    let mut sealed = self.seal(&tls_seal_name(name), &vars)?;
                    Some(SavedTls {
                        cert: tls.cert.clone(),
                        key: sealed.remove("key").unwrap_or_default(),
                    })
                }
            },
            incarnation: self
                .get(name)
                .and_then(|_| {
                    let (_, saved) = self.deployed.as_ref()?;
                    Some(saved.lock().get(name)?.incarnation.clone())
                })
                .unwrap_or_else(SavedTenant::new_incarnation),
            parts,
        })
    }

    /// `vars`' secrets, each sealed for `name`; refused without a key.
    fn seal(
        &self,
        name: &str,
        vars: &Variables,
    ) -> Result<std::collections::BTreeMap<String, String>, Refused> {
        match (&self.sealer, vars.secrets().is_empty()) {
            (_, true) => Ok(Default::default()),
            (Some(sealer), false) => Ok(vars
                .secrets()
                .iter()
                .map(|(k, v)| (k.clone(), sealer.seal(name, k, v.expose())))
                .collect()),
            (None, false) => Err(Refused::Invalid(anyhow::anyhow!(
                "secrets are kept only sealed, under --secrets-key-file, which this runner has \
                 not"
            ))),
        }
    }

    /// Building a tenant reopens its namespace under the new quotas, which
    /// applies them to its data at once; a change refused after that puts
    /// back the quotas of the version still served.
    fn reassert_quotas<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if let Some(current) = self.get(name) {
                let reopened =
                    store::Namespace::new(&*self.backend, name, current.limits().quotas());
                if let Err(e) = reopened {
                    tracing::error!(tenant = %name, "restoring its quotas after a refused change: {e}");
                }
            }
        }
    }

    /// Changes the saved API deployments, where a keeper keeps them, and
    /// writes the change out; changes nothing if that fails. Callers hold
    /// `changes`, so no other change comes between.
    async fn save(&self, change: impl FnOnce(&mut SavedTenants)) -> anyhow::Result<()> {
        let Some((keeper, tenants)) = &self.deployed else {
            return Ok(());
        };
        let (before, after) = {
            let mut tenants = tenants.lock();
            let before = tenants.clone();
            change(&mut tenants);
            (before, tenants.clone())
        };
        if after == before {
            return Ok(());
        }
        let written = keeper.save_tenants(&before, &after).await;
        if written.is_err() {
            *tenants.lock() = before;
        }
        written
    }

    /// [`Fleet::save`] for one tenant (`None`: removed). A shared store is
    /// written whatever this runner held, so the last acknowledged change
    /// is the one every runner ends with.
    async fn save_one(&self, name: &str, value: Option<SavedTenant>) -> anyhow::Result<()> {
        let Some((keeper, tenants)) = &self.deployed else {
            return Ok(());
        };
        let Some(shared) = keeper.shared() else {
            return self
                .save(|tenants| match value {
                    Some(t) => {
                        tenants.insert(name.to_string(), t);
                    }
                    None => {
                        tenants.remove(name);
                    }
                })
                .await;
        };
        shared.save_tenant(name, value.as_ref()).await?;
        let mut tenants = tenants.lock();
        match value {
            Some(t) => tenants.insert(name.to_string(), t),
            None => tenants.remove(name),
        };
        Ok(())
    }

    /// Brings back the tenants deployed through the API that the keeper
    /// kept, except those `configured` names (the tenants file owns the
    /// names it lists, at start-up as on reload). Returns how many.
    pub async fn restore(&self, configured: &[TenantConfig]) -> anyhow::Result<usize> {
        let Some((keeper, saved)) = &self.deployed else {
            return Ok(0);
        };
        let mut kept = keeper.load_tenants().await?;
        let listed: HashSet<&str> = configured.iter().map(|t| t.name.as_str()).collect();
        kept.retain(|name, _| !listed.contains(name.as_str()));
        let mut built = Vec::with_capacity(kept.len());
        let mut refused = Vec::new();
        let names: Vec<&str> = kept.keys().map(String::as_str).collect();
        self.backend
            .enter_many(&names)
            .await
            .context("opening the tenants' key-value namespaces")?;
        let mut resealed = Vec::new();
        for (name, t) in &kept {
            let prepared = match self.resolve(keeper, name, t).await {
                Ok(version) => {
                    if self.reseal_due(t) {
                        resealed.push((name.clone(), self.resealed(name, t)?));
                    }
                    self.prepare(name, &version)
                        .await
                        .with_context(|| who(name))
                }
                Err(e) => Err(e),
            };
            match prepared {
                Ok(prepared) => built.extend(prepared),
                // One peer's tenant that cannot run here (say its max-memory
                // is above this runner's pool) must not keep this runner
                // from serving the rest.
                Err(e) if keeper.shared().is_some() => {
                    tracing::error!(tenant = %name, "not serving it here: {e:#}");
                    refused.push(name.clone());
                }
                Err(e) => return Err(e),
            }
        }
        for name in &refused {
            kept.remove(name);
        }
        // Secrets sealed under the previous key are sealed anew under the
        // current one, and written back below, where this runner alone
        // keeps them (peers on a shared Redis may not have the new key
        // yet: there the next deploy seals them anew).
        if keeper.shared().is_none() {
            for (name, resealed) in resealed {
                if let Some(t) = kept.get_mut(&name) {
                    *t = resealed;
                }
            }
        }
        let _one_at_a_time = self.changes.lock().await;
        self.install(built, Source::Startup);
        let count = kept.len();
        *saved.lock() = kept.clone();
        if keeper.shared().is_none() {
            // The file no longer lists the names the tenants file took
            // over; a shared Redis keeps them for the other runners.
            keeper.save_tenants(&SavedTenants::new(), &kept).await?;
        }
        Ok(count)
    }

    /// The version a kept deployment names; a component this runner has
    /// not compiled yet is read from the keeper.
    async fn resolve(
        &self,
        keeper: &Keeper,
        name: &str,
        t: &SavedTenant,
    ) -> anyhow::Result<Version> {
        let component = self
            .resolve_component(keeper, &t.component)
            .await
            .with_context(|| who(name))?;
        let limits = overlaid(Limits::default(), &t.limits).with_context(|| who(name))?;
        let secrets = self.unseal(name, &t.secrets).with_context(|| who(name))?;
        let mut parts = Vec::with_capacity(t.parts.len());
        for part in &t.parts {
            let context = || format!("{}: component {:?}", who(name), part.id);
            parts.push(Part {
                id: part.id.clone(),
                component: self
                    .resolve_component(keeper, &part.component)
                    .await
                    .with_context(context)?,
                limits: overlaid(limits.clone(), &part.limits).with_context(context)?,
                vars: Variables::new(
                    part.config.clone(),
                    self.unseal(&seal_name(name, &part.id), &part.secrets)
                        .with_context(context)?,
                ),
            });
        }
        let vars = Variables::new(t.config.clone(), secrets);
        let mut version = Version::new(component, limits, vars).with_parts(parts);
        version.id = t.id.clone();
        if let Some(tls) = &t.tls {
            let sealed = [("key".to_string(), tls.key.clone())].into();
            let mut key = self
                .unseal(&tls_seal_name(name), &sealed)
                .with_context(|| format!("{}: tls", who(name)))?;
            version.tls = Some(TenantCert {
                cert: tls.cert.clone(),
                key: key.remove("key").context("tls.key")?,
            });
        }
        Ok(version)
    }

    /// The component a kept deployment names (`default`, or a digest).
    async fn resolve_component(&self, keeper: &Keeper, named: &str) -> anyhow::Result<Loaded> {
        if named == "default" {
            return Ok(self.embedded(None).await?);
        }
        let digest = Digest::parse(named).map_err(anyhow::Error::msg)?;
        if let Some(found) = self.runtime.loaded(&digest) {
            return Ok(found);
        }
        let bytes = keeper.load_component(&digest).await?;
        Ok(self.add_component(bytes.into(), None).await?.0)
    }

    /// Opens sealed secrets, sealed for `name`; an error names the secret
    /// and the key, never a value.
    fn unseal(
        &self,
        name: &str,
        sealed: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<std::collections::BTreeMap<String, crate::vars::Secret>> {
        let mut secrets = std::collections::BTreeMap::new();
        if sealed.is_empty() {
            return Ok(secrets);
        }
        let Some(sealer) = &self.sealer else {
            anyhow::bail!(
                "its secrets are sealed; start the runner with the --secrets-key-file they \
                 were sealed with"
            );
        };
        for (secret, sealed) in sealed {
            let value = match sealer.open(name, secret, sealed) {
                Ok((value, _)) => value,
                Err(Unsealed::UnknownKey(id)) => anyhow::bail!(
                    "secrets.{secret}: sealed under key {id}, which is neither \
                     --secrets-key-file (key {}) nor --secrets-previous-key-file",
                    sealer.key_id()
                ),
                Err(Unsealed::Damaged) => anyhow::bail!(
                    "secrets.{secret}: does not open under key {}: altered, or not this \
                     tenant's",
                    sealer.key_id()
                ),
            };
            secrets.insert(secret.clone(), crate::vars::Secret::new(value));
        }
        Ok(secrets)
    }

    /// Whether a kept deployment has secrets sealed under another key than
    /// the current one.
    fn reseal_due(&self, t: &SavedTenant) -> bool {
        let Some(sealer) = &self.sealer else {
            return false;
        };
        let current = format!("v1:{}:", sealer.key_id());
        t.secrets
            .values()
            .chain(t.parts.iter().flat_map(|p| p.secrets.values()))
            .chain(t.tls.iter().map(|tls| &tls.key))
            .any(|sealed| !sealed.starts_with(&current))
    }

    /// A kept deployment with its secrets sealed anew under the current
    /// key.
    fn resealed(&self, name: &str, t: &SavedTenant) -> anyhow::Result<SavedTenant> {
        let Some(sealer) = &self.sealer else {
            anyhow::bail!("this runner has no --secrets-key-file to seal secrets with");
        };
        let reseal = |name: &str, sealed: &std::collections::BTreeMap<String, String>| {
            let secrets = self.unseal(name, sealed).with_context(|| who(name))?;
            anyhow::Ok(
                secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), sealer.seal(name, k, v.expose())))
                    .collect(),
            )
        };
        let mut t = t.clone();
        t.secrets = reseal(name, &t.secrets)?;
        for part in &mut t.parts {
            part.secrets = reseal(&seal_name(name, &part.id), &part.secrets)?;
        }
        if let Some(tls) = &mut t.tls {
            let sealed = [("key".to_string(), tls.key.clone())].into();
            let mut resealed = reseal(&tls_seal_name(name), &sealed)?;
            tls.key = resealed.remove("key").unwrap_or_default();
        }
        Ok(t)
    }

    /// Seals every kept tenant's secrets that another key sealed anew under
    /// the current key, where they are kept (the data directory, or the
    /// fleet's Redis, whichever runner deployed them): after a rotation,
    /// so that the previous key can be retired. Returns how many tenants
    /// it sealed anew. On Redis each tenant is replaced only if no runner
    /// changed it meanwhile (then it is read again).
    pub async fn reseal(&self) -> anyhow::Result<usize> {
        if self.sealer.is_none() {
            anyhow::bail!("this runner has no --secrets-key-file to seal secrets with");
        }
        let Some((keeper, saved)) = &self.deployed else {
            return Ok(0);
        };
        let _one_at_a_time = self.changes.lock().await;
        let reseal = |name: &str, t: &SavedTenant| self.resealed(name, t);
        let Some(shared) = keeper.shared() else {
            let mut resealed = Vec::new();
            for (name, t) in saved.lock().iter() {
                if self.reseal_due(t) {
                    resealed.push((name.clone(), reseal(name, t)?));
                }
            }
            let count = resealed.len();
            self.save(|tenants| tenants.extend(resealed)).await?;
            return Ok(count);
        };
        let mut count = 0;
        for name in keeper.load_tenants().await?.keys() {
            // A runner's change between the read and the write: read again.
            for _ in 0..10 {
                let Some(text) = shared.load_tenant_text(name).await? else {
                    break;
                };
                let t: SavedTenant = serde_json::from_str(&text)
                    .with_context(|| format!("tenant {name:?} in Redis is not readable"))?;
                if !self.reseal_due(&t) {
                    break;
                }
                if shared
                    .replace_tenant(name, &text, &reseal(name, &t)?)
                    .await?
                {
                    count += 1;
                    break;
                }
            }
        }
        Ok(count)
    }

    /// Seals secrets deployed through the API with `sealer`; without one,
    /// the API refuses them.
    pub fn seal_with(&mut self, sealer: Option<Arc<Sealer>>) {
        self.sealer = sealer;
    }

    pub fn sealer(&self) -> Option<&Arc<Sealer>> {
        self.sealer.as_ref()
    }

    /// Applies what the fleet's shared store holds for tenant `name` now
    /// (read under the change lock, so no change of this runner's comes
    /// between the read and its application), as another runner left it:
    /// the tenant is created, updated or removed here to match, its data
    /// left as it is (the runner that removed it purged it, if asked to).
    /// A name this runner's tenants file lists stays as the file says.
    /// Returns what changed, if anything.
    pub async fn follow(&self, name: &str) -> anyhow::Result<Option<Change>> {
        let Some((keeper, saved)) = &self.deployed else {
            return Ok(None);
        };
        let Some(shared) = keeper.shared() else {
            return Ok(None);
        };
        // A component new to this runner is compiled before the change
        // lock is taken: a compile takes seconds, and the lock holds every
        // change and removal meanwhile. What is read again under the lock
        // decides; the compile is then a lookup.
        if let Some(remote) = shared.load_tenant(name).await? {
            self.resolve(keeper, name, &remote).await?;
        }
        let _one_at_a_time = self.changes.lock().await;
        let remote = shared.load_tenant(name).await?;
        let local = saved.lock().get(name).cloned();
        if local == remote || (local.is_none() && self.get(name).is_some()) {
            return Ok(None);
        }
        let Some(remote) = remote else {
            saved.lock().remove(name);
            let Some(old) = self.tenants.write().remove(name) else {
                return Ok(None);
            };
            self.metrics.tenants.set(self.len() as f64);
            self.retire(&old, false, Source::Peer);
            // What this process knows of its data (usage, buckets opened)
            // may be stale now: a peer may purge it.
            self.backend.forget(name);
            return Ok(Some(Change::Removed));
        };
        let version = self.resolve(keeper, name, &remote).await?;
        // Removed (maybe purged) and made again since this runner's
        // version, maybe with the same component and limits: built afresh,
        // in the tenant's new key-value generation.
        let reborn = local.is_some_and(|local| local.incarnation != remote.incarnation);
        let prepared = if reborn {
            self.build(name, &version).await.map(Some)
        } else {
            self.prepare(name, &version).await
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.reassert_quotas([name]);
                return Err(e.context(who(name)));
            }
        };
        saved.lock().insert(name.to_string(), remote);
        Ok(Some(match prepared {
            Some(tenant) => self.install(vec![tenant], Source::Peer)[0],
            None => Change::Unchanged,
        }))
    }

    /// [`Fleet::follow`] for every tenant the shared store holds that this
    /// runner holds otherwise, or not: after a reconnect, when
    /// announcements may have been missed. Returns how many changed; a
    /// tenant that cannot be applied is logged and left as it was.
    pub async fn resync(&self) -> anyhow::Result<usize> {
        let (Some(shared), Some((_, saved))) = (self.shared(), &self.deployed) else {
            return Ok(0);
        };
        let remote = shared.load_tenants().await?;
        let local = saved.lock().clone();
        let names: Vec<&String> = remote
            .iter()
            .filter(|(name, t)| local.get(*name) != Some(t))
            .map(|(name, _)| name)
            .chain(local.keys().filter(|name| !remote.contains_key(*name)))
            .collect();
        let mut changed = 0;
        for name in names {
            match self.follow(name).await {
                Ok(Some(Change::Unchanged) | None) => {}
                Ok(Some(_)) => changed += 1,
                Err(e) => tracing::error!(tenant = %name, "following the shared store: {e:#}"),
            }
        }
        Ok(changed)
    }

    /// The Redis the fleet shares with other runners, if any.
    pub fn shared(&self) -> Option<&deployed::Shared> {
        self.deployed
            .as_ref()
            .and_then(|(keeper, _)| keeper.shared())
    }

    /// Puts every tenant of `tenants` and removes every tenant named in
    /// `remove`, checked whole first: if one cannot load, nothing changes
    /// and the error names it. Returns what changed.
    pub async fn apply(
        &self,
        tenants: &[TenantConfig],
        remove: &[String],
        source: Source,
    ) -> anyhow::Result<Vec<(String, Change)>> {
        // Compiled before the change lock is taken, as in `follow`.
        let components = self.components_of(tenants).await?;
        let _one_at_a_time = self.changes.lock().await;
        let built = match self.prepare_all(tenants, &components).await {
            Ok(built) => built,
            Err(e) => {
                self.reassert_quotas(tenants.iter().map(|t| t.name.as_str()));
                return Err(e);
            }
        };
        if source == Source::Reload {
            self.take_over(tenants).await?;
        }
        let names: Vec<String> = built.iter().map(|t| t.name().to_string()).collect();
        let mut changes: Vec<(String, Change)> =
            names.into_iter().zip(self.install(built, source)).collect();
        for name in remove {
            if let Some(old) = self.tenants.write().remove(name.as_str()) {
                self.retire(&old, false, source);
                changes.push((name.clone(), Change::Removed));
            }
        }
        self.metrics.tenants.set(self.len() as f64);
        Ok(changes)
    }

    /// A reload's tenants file takes over the names it lists from the API's
    /// deployments. In a data directory they are forgotten; in a shared
    /// Redis they stay for the other runners, and only this one stops
    /// following them.
    async fn take_over(&self, tenants: &[TenantConfig]) -> anyhow::Result<()> {
        if self.shared().is_none() {
            return self
                .save(|saved| {
                    for t in tenants {
                        saved.remove(&t.name);
                    }
                })
                .await;
        }
        if let Some((_, saved)) = &self.deployed {
            let mut saved = saved.lock();
            for t in tenants {
                saved.remove(&t.name);
            }
        }
        Ok(())
    }

    /// The components of `tenants`, compiled: each distinct one once (all
    /// at once, as many as the runtime compiles in parallel), and for each
    /// tenant, in order, the index of its own. Many tenants usually share a
    /// few files (or the embedded guest): each is read once, and held once
    /// however many tenants share it.
    async fn components_of(
        &self,
        tenants: &[TenantConfig],
    ) -> anyhow::Result<(Vec<Loaded>, Vec<usize>)> {
        // Each distinct source, with the first tenant that names it.
        let mut sources: Vec<&TenantConfig> = Vec::new();
        let mut which = Vec::with_capacity(tenants.len());
        let mut seen: HashMap<&ComponentSource, usize> = HashMap::new();
        for t in tenants {
            let index = *seen.entry(&t.component).or_insert_with(|| {
                sources.push(t);
                sources.len() - 1
            });
            which.push(index);
        }
        let distinct = futures::future::try_join_all(sources.into_iter().map(|t| async move {
            let limit = limits::bytes(t.limits.max_memory);
            match &t.component {
                ComponentSource::Embedded => self
                    .embedded(Some(limit))
                    .await
                    .with_context(|| format!("tenant {:?}", t.name)),
                ComponentSource::File(path) => {
                    let added =
                        match std::fs::read(path) {
                            Ok(bytes) => self
                                .add_component(bytes.into(), Some(limit))
                                .await
                                .map_err(anyhow::Error::from),
                            Err(e) => Err(anyhow::Error::new(e)
                                .context(format!("reading {}", path.display()))),
                        };
                    added.map(|(loaded, _)| loaded).with_context(|| {
                        format!("tenant {:?}: component {}", t.name, path.display())
                    })
                }
            }
        }))
        .await?;
        Ok((distinct, which))
    }

    /// The new versions of `tenants`, each running its component of
    /// `components` ([`Fleet::components_of`]), built and checked; those
    /// unchanged are left out.
    async fn prepare_all(
        &self,
        tenants: &[TenantConfig],
        (distinct, which): &(Vec<Loaded>, Vec<usize>),
    ) -> anyhow::Result<Vec<Arc<Tenant>>> {
        let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
        self.check_hosts(tenants.iter().map(|t| (t.name.as_str(), &t.limits)))?;
        self.backend
            .enter_many(&names)
            .await
            .context("opening the tenants' key-value namespaces")?;
        let mut built = Vec::new();
        for (t, index) in tenants.iter().zip(which) {
            let mut version =
                Version::new(distinct[*index].clone(), t.limits.clone(), t.vars.clone());
            version.tls = t.tls.clone();
            let prepared = self
                .prepare(&t.name, &version)
                .await
                .with_context(|| format!("tenant {:?}", t.name))?;
            built.extend(prepared);
        }
        Ok(built)
    }

    /// A new version of tenant `name`, built and checked; `None` when it
    /// already runs `version`.
    async fn prepare(&self, name: &str, version: &Version) -> anyhow::Result<Option<Arc<Tenant>>> {
        let same = |t: &Tenant, id: &str, component: &Loaded, limits: &Limits, vars: &Variables| {
            t.id() == id
                && t.component() == component.digest
                && t.limits() == limits
                && t.vars() == vars
        };
        if let Some(current) = self.get(name)
            && same(
                &current,
                &version.id,
                &version.component,
                &version.limits,
                &version.vars,
            )
            && current.tls() == version.tls.as_ref()
            && current.parts().len() == version.parts.len()
            && current
                .parts()
                .iter()
                .zip(&version.parts)
                .all(|(t, p)| same(t, &p.id, &p.component, &p.limits, &p.vars))
        {
            return Ok(None);
        }
        self.build(name, version).await.map(Some)
    }

    /// Swaps built tenants into the routing table, in one step.
    fn install(&self, tenants: Vec<Arc<Tenant>>, source: Source) -> Vec<Change> {
        for part in tenants.iter().flat_map(|t| t.components()) {
            self.runtime.hold(part.loaded());
        }
        let replaced: Vec<Option<Arc<Tenant>>> = {
            let mut table = self.tenants.write();
            tenants
                .iter()
                .map(|t| table.insert(t.name().into(), t.clone()))
                .collect()
        };
        {
            let mut hosts = self.hosts.write();
            for old in replaced.iter().flatten() {
                release_hosts(&mut hosts, old);
            }
            for t in &tenants {
                for host in &t.limits().hosts.0 {
                    hosts.insert(host.as_str().into(), t.name().into());
                }
            }
            self.any_hosts
                .store(!hosts.is_empty(), std::sync::atomic::Ordering::Relaxed);
        }
        self.metrics.tenants.set(self.len() as f64);
        tenants
            .iter()
            .zip(replaced)
            .map(|(tenant, old)| {
                let change = match old {
                    Some(old) => {
                        crate::call::forget(&self.runtime, &old);
                        self.metrics.updated.increment(1);
                        Change::Updated
                    }
                    None => {
                        self.metrics.created.increment(1);
                        Change::Created
                    }
                };
                if source != Source::Startup {
                    tracing::info!(
                        tenant = %tenant.name(),
                        component = %tenant.component(),
                        "tenant {} through the {source}",
                        change.as_str()
                    );
                }
                change
            })
            .collect()
    }

    /// Builds and checks a tenant: limits in range and within the pool, its
    /// namespace opened under its quotas, each of its components
    /// instantiated once under its limits (once per distinct component and
    /// limits).
    pub async fn build(&self, name: &str, version: &Version) -> anyhow::Result<Arc<Tenant>> {
        let Version {
            id,
            component,
            limits,
            vars,
            parts,
            tls,
        } = version;
        crate::tenant::validate_name(name).map_err(anyhow::Error::msg)?;
        self.check_component(component, limits, vars)?;
        if !parts.is_empty()
            && (!limits.route.is_set() || parts.iter().any(|p| !p.limits.route.is_set()))
        {
            anyhow::bail!(
                "a tenant of several components needs a route for each: requests go to a \
                 component by its route"
            );
        }
        for part in parts {
            self.check_component(&part.component, &part.limits, &part.vars)
                .with_context(|| format!("component {:?}", part.id))?;
        }
        // Every version of a tenant writes through one fence (see
        // `store::Fence`): the one before's, or, for a new tenant, a new one.
        let fence = self
            .get(name)
            .map(|current| current.namespace().fence().clone())
            .unwrap_or_default();
        self.backend
            .enter(name)
            .await
            .context("opening its key-value namespace")?;
        let namespace = store::Namespace::new(&*self.backend, name, limits.quotas())
            .context("opening its key-value namespace")?
            .fenced(fence);
        let metrics = self.metrics_for(name);
        let tenant = Tenant::new(
            name,
            limits.clone(),
            component,
            namespace,
            metrics,
            &self.egress,
            vars.clone(),
        );
        let certified = match tls {
            None => None,
            Some(tls) => {
                let hosts: Vec<&str> = limits.hosts.0.iter().map(|h| h.as_str()).collect();
                Some((tls.clone(), tls.load(&hosts)?))
            }
        };
        let tenant = tenant.named(id).with_cert(certified);
        self.preflight(&tenant).await?;
        let mut built = Vec::with_capacity(parts.len());
        for part in parts {
            let part_tenant = tenant.part(
                &part.id,
                part.limits.clone(),
                &part.component,
                &self.egress,
                part.vars.clone(),
            );
            self.preflight(&part_tenant)
                .await
                .with_context(|| format!("component {:?}", part.id))?;
            built.push(Arc::new(part_tenant));
        }
        Ok(Arc::new(tenant.with_parts(built)))
    }

    /// Whether `component` can run under `limits` with `vars`.
    fn check_component(
        &self,
        component: &Loaded,
        limits: &Limits,
        vars: &Variables,
    ) -> anyhow::Result<()> {
        limits.validate("")?;
        vars.check(limits.var_limits())
            .map_err(anyhow::Error::msg)?;
        let pool = self.runtime.config().max_memory;
        let max_memory = limits::bytes(limits.max_memory);
        if max_memory > pool {
            anyhow::bail!(
                "max-memory {} is above the runner's pool-max-memory of {pool} bytes, fixed \
                 when it started; restart it with a larger --pool-max-memory",
                crate::settings::Setting::show(&limits.max_memory)
            );
        }
        component.fits(max_memory)?;
        Ok(())
    }

    /// Instantiates a component of a tenant once, the first time its
    /// component runs under its limits.
    async fn preflight(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let key = (tenant.component(), format!("{:?}", tenant.limits()));
        if !self.checked.lock().contains(&key) {
            crate::call::preflight(&self.runtime, tenant).await?;
            self.checked.lock().insert(key);
        }
        Ok(())
    }

    /// Removes tenant `name`: new requests get 404 from now on; requests in
    /// flight finish on it. With `purge`, its key-value data is deleted too,
    /// once its requests in flight have finished or `grace` has passed;
    /// without, the data stays for a later tenant of the same name.
    pub async fn remove(
        &self,
        name: &str,
        purge: bool,
        grace: Duration,
        source: Source,
    ) -> Result<(), Refused> {
        let _one_at_a_time = self.changes.lock().await;
        if self.get(name).is_none() {
            // A peer's deployment this runner has not followed yet is still
            // the fleet's to remove.
            let held = match self.shared() {
                Some(shared) => shared.load_tenant(name).await.map_err(Refused::Failed)?,
                None => None,
            };
            if held.is_none() {
                return Err(Refused::NotFound(format!("no tenant {name:?}")));
            }
            self.save_one(name, None).await.map_err(Refused::Failed)?;
            if purge {
                self.backend.purge(name).await.map_err(|e| {
                    Refused::Failed(anyhow::Error::from(e).context("purging its key-value data"))
                })?;
            }
            return Ok(());
        }
        self.save_one(name, None).await.map_err(Refused::Failed)?;
        let Some(old) = self.tenants.write().remove(name) else {
            return Err(Refused::NotFound(format!("no tenant {name:?}")));
        };
        self.metrics.tenants.set(self.len() as f64);
        self.retire(&old, purge, source);
        if purge {
            // Its requests in flight hold its permits, and its instances
            // that outlive their requests (tasks a WASIp3 guest left
            // running) their places: all of them back means none is left
            // to write. Past the grace, the fence stops what still runs.
            let max = old.limits().max_tenant_in_flight;
            let all = u32::try_from(max).unwrap_or(u32::MAX);
            let drained = tokio::time::timeout(grace, async {
                let _requests = old.permits().acquire_many(all).await;
                for part in old.components() {
                    part.workers().ended().await;
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    tenant = %name,
                    "requests of the removed tenant still running after {}; its writes are \
                     refused from now on, and its data purged",
                    humantime::format_duration(grace)
                );
            }
            // A tenant made again under the name has a fence of its own.
            old.namespace().fence().close().await;
            self.backend.purge(name).await.map_err(|e| {
                Refused::Failed(anyhow::Error::from(e).context("purging its key-value data"))
            })?;
        }
        Ok(())
    }

    /// What every removal does: its kept instances go, and it is logged
    /// and counted.
    fn retire(&self, old: &Tenant, purge: bool, source: Source) {
        {
            let mut hosts = self.hosts.write();
            release_hosts(&mut hosts, old);
            self.any_hosts
                .store(!hosts.is_empty(), std::sync::atomic::Ordering::Relaxed);
        }
        self.metrics.removed.increment(1);
        old.scope().remove();
        crate::call::forget(&self.runtime, old);
        tracing::info!(tenant = %old.name(), purge, "tenant removed through the {source}");
    }

    /// The metric handles for tenant `name`: its own label's, or those
    /// every tenant past the labelled ones shares, registered once.
    fn metrics_for(&self, name: &str) -> Arc<TenantMetrics> {
        let mut labels = self.labelled.lock();
        if let Some(found) = labels.by_label.get(name) {
            return found.clone();
        }
        let label = match self.labels.mode {
            TenantLabelMode::Aggregate => "_all",
            TenantLabelMode::PerTenant if labels.own < self.labels.max_tenants => {
                labels.own += 1;
                name
            }
            TenantLabelMode::PerTenant => "_other",
        };
        labels
            .by_label
            .entry(label.into())
            .or_insert_with(|| Arc::new(TenantMetrics::new(label.into(), &self.recorder)))
            .clone()
    }
}

/// Lets go of the host names `old` claims, those still its own.
fn release_hosts(
    hosts: &mut HashMap<Box<str>, Box<str>, foldhash::fast::RandomState>,
    old: &Tenant,
) {
    for host in &old.limits().hosts.0 {
        if hosts
            .get(host.as_str())
            .is_some_and(|owner| **owner == *old.name())
        {
            hosts.remove(host.as_str());
        }
    }
}

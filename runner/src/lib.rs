//! An async multi-tenant WebAssembly component runner.
//!
//! Map of the crate, from the bottom up: each module imports only from the
//! modules listed above it (`tests/integration/layers.rs` holds the code to this).
//!
//! Leaves, shared by every layer:
//! - [`settings`]: one declaration per setting (flag, config key, default,
//!   range, help), from which [`config`] and [`limits`] build theirs.
//! - [`request_id`]: each request's id, made or taken from a trusted
//!   client's `traceparent` or `x-request-id`.
//! - `periodic`: the background thread behind the epoch ticker, the
//!   instance reaper and the store's expiry, stopped on drop.
//! - [`metrics::names`]: every metric's name, which the store's own
//!   counters use too.
//! - [`store`]: the key-value store: the backend seam, the sharded
//!   in-memory backend (and its journal on disk), Redis, quotas, and the
//!   conformance suite every backend runs.
//! - [`routes`]: HTTP routes in Spin's syntax and the `spin-*` headers of
//!   a match.
//! - [`limits`]: every per-tenant limit, declared, and the token and status
//!   of each limit a request can run into.
//! - [`manifest`]: a Spin application's manifest (`spin.toml`), read into
//!   a tenant's component, settings, configuration and secrets.
//! - [`metrics`]: every Prometheus metric's labels, help and buckets, and
//!   the runner's own registry.
//! - `body`: host-made responses and the size-limited request body.
//! - [`tenant::Scope`]: what a tenant's requests and instances see of it
//!   (name, limits, namespace, metric handles, log rate, permits); the rest
//!   of [`tenant`] sits with the lifetimes below.
//! - [`outcome`]: how a request ended, decided once, and the
//!   classification of a failed call; the response, the log line and the
//!   metrics come from it.
//! - [`admission`]: the global and per-tenant in-flight caps.
//!
//! Lifetimes, process to request:
//! - [`host`]: the per-instance host state and the imports guests use
//!   (`wasi:keyvalue`, `wasmcloud:keyvalue`, `wasi:logging`, and WASI from
//!   wasmtime-wasi); it holds the tenant's [`tenant::Scope`], never the
//!   tenant.
//! - [`engine`]: the process's wasmtime engines, linker, epoch ticker,
//!   compiled components, the embedded default guest, and the pool of
//!   instances kept between requests.
//! - [`tenant`]: a tenant's component, limits, namespace and metrics, and
//!   the instances it keeps.
//! - [`call`]: one request in an instance: fresh, kept or shared, WASIp2
//!   or WASIp3, under its fuel and deadline.
//!
//! Above them:
//! - [`fleet`]: the tenants served now, and the one way they are created,
//!   updated and removed (at start-up, through the admin API, on reload);
//!   what was deployed, kept on disk or in Redis, and following the other
//!   runners on a shared Redis.
//! - `ingress`: the HTTP listeners (one accept loop for both), routing,
//!   the admin routes and API.
//! - [`client`]: `runner tenant ...`, the admin API's client.
//! - [`config`]: the command line and tenants file, merged and validated.

pub mod admission;
pub(crate) mod body;
pub mod call;
pub mod client;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod host;
pub(crate) mod ingress;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod outcome;
pub(crate) mod periodic;
pub mod request_id;
pub mod routes;
pub mod seal;
pub mod settings;
pub mod store;
pub mod tenant;
pub mod tls;
pub mod vars;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Runtime;
use crate::fleet::{Change, Fleet, Source};
use crate::fleet::{components, deployed, follow};
use crate::ingress::Ingress;
use crate::ingress::admin::Admin;
use crate::ingress::api::Api;
use crate::metrics::Recorder;
use crate::outbound::Egress;

pub use crate::engine::DEFAULT_GUEST;

/// A runner with every tenant loaded, ready to serve.
pub struct Runner {
    config: Config,
    runtime: Arc<Runtime>,
    fleet: Arc<Fleet>,
    /// The admin API, where a token is configured.
    api: Option<Arc<Api>>,
    ingress: Arc<Ingress>,
    /// The admin listener's certificates, with TLS on there.
    admin_certs: Option<Arc<crate::tls::Certs>>,
    recorder: Recorder,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Applies a changed tenants file and flags to a running runner, as the
/// binary does on SIGHUP: the tenants it lists are created or updated (if
/// their component or limits changed), tenants an earlier version listed
/// and this one does not are removed (their data kept), and tenants
/// deployed through the admin API under other names are left alone. The
/// new configuration is checked whole first: if any tenant cannot load,
/// nothing changes.
#[derive(Debug)]
pub struct Reloader {
    fleet: Arc<Fleet>,
    api: Option<Arc<Api>>,
    /// The tenants the configuration listed last time.
    configured: Vec<String>,
    server: config::ServerSettings,
    /// The tenant listener's certificates, with TLS on.
    certs: Option<Arc<crate::tls::Certs>>,
    /// The admin listener's, with TLS on there.
    admin_certs: Option<Arc<crate::tls::Certs>>,
}

impl Reloader {
    pub async fn reload(&mut self, config: Config) -> anyhow::Result<Vec<(String, Change)>> {
        let listed: HashSet<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        let remove: Vec<String> = self
            .configured
            .iter()
            .filter(|name| !listed.contains(name.as_str()))
            .cloned()
            .collect();
        let changes = self
            .fleet
            .apply(&config.tenants, &remove, Source::Reload)
            .await?;
        self.fleet.set_defaults(config.defaults.clone());
        self.fleet
            .set_default_vars(config.default_vars.config_only());
        match (&self.api, config.admin.token) {
            (Some(api), Some(token)) => api.rotate(token),
            (Some(_), None) => tracing::warn!(
                "reload: no admin token any more; the API keeps the one it has until a restart"
            ),
            (None, Some(_)) => tracing::warn!(
                "reload: an admin token was added; the API turns on only at a restart"
            ),
            (None, None) => {}
        }
        self.configured = config.tenants.iter().map(|t| t.name.clone()).collect();
        // Certificates are read again, changed or not: renewed files keep
        // their names.
        reload_certs("tenant", self.certs.as_deref(), config.tls.as_ref());
        reload_certs(
            "admin",
            self.admin_certs.as_deref(),
            config.admin_tls.as_ref(),
        );
        let before = self.server.to_json();
        let changed: Vec<String> = config
            .server
            .to_json()
            .into_iter()
            .filter(|(key, value)| before.get(key) != Some(value))
            .filter(|(key, _)| match key.as_str() {
                "tls-cert" | "tls-key" => self.certs.is_none(),
                "admin-tls-cert" | "admin-tls-key" => self.admin_certs.is_none(),
                _ => true,
            })
            .map(|(key, _)| key)
            .collect();
        if !changed.is_empty() {
            tracing::warn!(
                "reload: runner-wide settings take effect only at a restart; changed: {}",
                changed.join(", ")
            );
        }
        Ok(changes)
    }
}

/// Reads the `listener`'s certificate `pair` again into `certs`; a pair
/// that does not load leaves the one served.
fn reload_certs(
    listener: &str,
    certs: Option<&crate::tls::Certs>,
    pair: Option<&crate::tls::KeyPair>,
) {
    match (certs, pair) {
        (Some(certs), Some(pair)) => match certs.reload(pair) {
            Ok(()) => tracing::info!(
                cert = %pair.cert.display(),
                "reload: the {listener} listener's TLS certificate read again; new handshakes \
                 get it"
            ),
            Err(e) => tracing::error!(
                "reload: the {listener} listener's TLS certificate was not replaced, the one \
                 before is still served: {e:#}"
            ),
        },
        (Some(_), None) => tracing::warn!(
            "reload: TLS on the {listener} listener is turned off only at a restart; the \
             certificate served stays"
        ),
        (None, Some(_)) => {
            tracing::warn!("reload: TLS on the {listener} listener is turned on only at a restart")
        }
        (None, None) => {}
    }
}

impl Runner {
    /// Compiles and checks every tenant's component. Fails, naming the
    /// tenant, if one cannot load; binds nothing.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let recorder = Recorder::new()?;
        let runtime = Arc::new(recorder.scope(|| Runtime::new(config.engine.clone()))?);
        let (backend, deployed) = open_store(&config, &recorder).await?;
        let mut fleet = Fleet::new(
            runtime.clone(),
            backend,
            recorder.clone(),
            config.tenant_labels,
            config.defaults.clone(),
            deployed,
            Egress::new(config.server.allowed_outbound_networks.clone()),
        );
        fleet.seal_with(config.sealer.clone());
        // A deployment through the API starts from [defaults]' config; its
        // secrets are its own (kept sealed), never the file's.
        fleet.set_default_vars(config.default_vars.config_only());
        let fleet = Arc::new(fleet);
        fleet.apply(&config.tenants, &[], Source::Startup).await?;
        let restored = fleet.restore(&config.tenants).await?;
        if restored > 0 {
            let from = match &config.store {
                store::location::StoreConfig::Redis { .. } => "the fleet's Redis",
                _ => "the data directory",
            };
            tracing::info!(
                restored,
                "tenants deployed through the admin API brought back from {from}"
            );
        }
        let load = |pair: Option<&crate::tls::KeyPair>, flag: &str| match pair {
            Some(pair) => crate::tls::Certs::load(pair)
                .map(|certs| Some(Arc::new(certs)))
                .context(flag.to_owned()),
            None => Ok(None),
        };
        let certs = load(config.tls.as_ref(), "--tls-cert")?;
        let admin_certs = load(config.admin_tls.as_ref(), "--admin-tls-cert")?;
        let ingress = Arc::new(Ingress::new(fleet.clone(), config.http.clone(), certs));
        let api = Api::new(config.admin.clone(), &recorder).map(Arc::new);
        Ok(Self {
            config,
            runtime,
            fleet,
            api,
            ingress,
            admin_certs,
            recorder,
        })
    }

    /// The tenants it serves, for changes while it runs.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// What applies a changed configuration to this runner (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            fleet: self.fleet.clone(),
            api: self.api.clone(),
            configured: self.config.tenants.iter().map(|t| t.name.clone()).collect(),
            server: self.config.server.clone(),
            certs: self.ingress.certs().cloned(),
            admin_certs: self.admin_certs.clone(),
        }
    }

    /// Counts the log lines the process's log writer drops (it drops rather
    /// than block when stderr falls behind) on `/metrics`.
    pub fn count_log_drops(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        self.recorder.count_log_drops(dropped);
    }

    /// Serves tenant traffic on `listener` and the admin endpoints on
    /// `admin` until `shutdown` resolves; then stops accepting and lets
    /// in-flight requests finish, up to the shutdown timeout.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin_listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.runtime.serving();
        // A guest allowed loopback still may not call the runner itself.
        let own = [listener.local_addr(), admin_listener.local_addr()];
        self.fleet
            .egress()
            .refuse_own(own.into_iter().filter_map(Result::ok).collect());
        let ready = Arc::new(AtomicBool::new(true));
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = Arc::new(Admin {
            api: self.api.clone(),
            recorder: self.recorder,
            fleet: self.fleet.clone(),
            runtime: self.runtime.clone(),
            ready: ready.clone(),
        });
        let connections = self.ingress.limits().connections.clone();
        let follower = follow::Follower::start(self.fleet.clone());
        let collector =
            components::Collector::start(self.fleet.clone(), self.config.server.component_grace);
        let admin_tls = match &self.admin_certs {
            None => None,
            Some(certs) => {
                let metrics = self.runtime.metrics();
                Some(ingress::server::Tls {
                    acceptor: tokio_rustls::TlsAcceptor::from(certs.server_config()?),
                    handshake_timeout: self.config.server.tls_handshake_timeout,
                    timed_out: metrics.admin_tls_timed_out.clone(),
                    failed: metrics.admin_tls_failed.clone(),
                    // Prometheus and health probes may stay on plain HTTP.
                    plain_too: true,
                })
            }
        };
        let admin_task = tokio::spawn(async move {
            admin
                .serve(admin_listener, &connections, admin_tls, async {
                    let _ = admin_stopped.await;
                })
                .await;
        });
        let stopping = async {
            shutdown.await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
        };
        let served = self
            .ingress
            .serve(listener, stopping, self.config.server.shutdown_timeout)
            .await;
        drop(follower);
        drop(collector);
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        served
    }
}

/// The key-value backend the configuration names, and where the API's
/// deployments are kept: a shared Redis (checked to answer, so a wrong URL
/// stops the start-up with its reason), the data directory, or nowhere.
async fn open_store(
    config: &Config,
    recorder: &Recorder,
) -> anyhow::Result<(Arc<dyn store::Backend>, Option<deployed::Keeper>)> {
    use store::location::StoreConfig;
    use store::redis::{Connection, PREFIX};
    let timeout = config.server.store_timeout;
    Ok(match &config.store {
        StoreConfig::Redis { urls, cluster } => {
            let reaching = || format!("reaching the store at {}", config.store.describe());
            let connection = Connection::open(urls, *cluster, timeout)
                .await
                .with_context(reaching)?;
            let redis = store::redis::Store::new(connection.clone(), PREFIX, timeout);
            redis.ping().await.with_context(reaching)?;
            let shared = deployed::Shared::new(connection, urls, PREFIX, timeout);
            (Arc::new(redis), Some(deployed::Keeper::Redis(shared)))
        }
        StoreConfig::Durable { dir, fsync } => {
            let durable =
                recorder.scope(|| store::memory::Store::durable(config.shards, dir, *fsync))?;
            let kept = deployed::Deployed::open(dir)?;
            (Arc::new(durable), Some(deployed::Keeper::Files(kept)))
        }
        StoreConfig::Memory => (Arc::new(store::memory::Store::new(config.shards)), None),
    })
}

//! An async multi-tenant WebAssembly component runner.
//!
//! Map of the crate:
//! - [`config`]: the command line and tenants file, merged and validated.
//! - [`settings`]: one declaration per setting (flag, config key, default,
//!   range, help), from which [`config`] and [`limits`] build theirs.
//! - [`engine`]: the wasmtime engine, pooling allocator, epoch ticker, and
//!   the per-request call path (a fresh or kept instance, fuel, deadline).
//! - [`instances`]: instances kept between a tenant's requests (opt-in
//!   reuse), their idle timeout and eviction when the pool is full.
//! - [`host`]: the per-instance host state and the imports guests use
//!   (`wasi:keyvalue`, `wasi:logging`, and WASI from wasmtime-wasi).
//! - [`store`]: the key-value store: the backend seam (async traits), the
//!   sharded in-memory backend, quotas, and the conformance suite every
//!   backend runs.
//! - [`tenant`]: a tenant's component, limits, namespace and metrics.
//! - [`limits`]: every per-tenant limit, declared, and the token and status
//!   of each limit a request can run into.
//! - [`http`]: the HTTP listeners (one accept loop for both), admission,
//!   bodies and routing; the admin routes.
//! - [`outcome`]: how a request ended, decided once; the response, the log
//!   line and the metrics come from it.
//! - [`metrics`]: every Prometheus metric name, label and bucket, and the
//!   runner's own registry.
//!
//! Lifetimes are kept apart: the process owns the engine, linker, store and
//! metrics; a tenant owns its pre-instantiated component, namespace and
//! kept instances; a request owns one wasmtime `Store` while it runs,
//! dropped when it ends unless its tenant reuses instances.

pub mod component;
pub mod config;
pub mod engine;
pub mod host;
pub mod http;
pub mod instances;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod settings;
pub mod store;
pub mod tenant;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::{ComponentSource, Config};
use crate::engine::Runtime;
use crate::http::Ingress;
use crate::http::admin::Admin;
use crate::metrics::{Recorder, TenantMetrics};
use crate::tenant::Tenant;

/// The default guest component, built from `guest/default` by `build.rs`.
pub static DEFAULT_GUEST: &[u8] = include_bytes!(env!("RUNNER_DEFAULT_GUEST"));

/// A runner with every tenant loaded, ready to serve.
pub struct Runner {
    config: Config,
    runtime: Arc<Runtime>,
    ingress: Arc<Ingress>,
    recorder: Recorder,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Compiles and checks every tenant's component. Fails, naming the
    /// tenant, if one cannot load; binds nothing.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let recorder = Recorder::new()?;
        let runtime = Arc::new(recorder.scope(|| Runtime::new(config.engine.clone()))?);
        let backend = match &config.server.data_dir.0 {
            Some(dir) => recorder
                .scope(|| store::memory::Store::durable(config.shards, dir, config.server.fsync))?,
            None => store::memory::Store::new(config.shards),
        };
        let mut tenants = Vec::with_capacity(config.tenants.len());
        for (index, t) in config.tenants.iter().enumerate() {
            let max_memory = limits::bytes(t.limits.max_memory);
            let loaded = match &t.component {
                ComponentSource::Embedded => runtime
                    .load(DEFAULT_GUEST, max_memory)
                    .map_err(anyhow::Error::from),
                ComponentSource::File(path) => std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))
                    .and_then(|bytes| Ok(runtime.load(&bytes, max_memory)?))
                    .with_context(|| format!("component {}", path.display())),
            };
            let pre = loaded.with_context(|| format!("tenant {:?}", t.name))?;
            let label = config.tenant_labels.label(index, &t.name);
            let tenant = Arc::new(Tenant::new(
                &t.name,
                t.limits.clone(),
                pre,
                store::Namespace::new(&backend, &t.name, t.limits.quotas()).with_context(|| {
                    format!("tenant {:?}: opening its key-value namespace", t.name)
                })?,
                recorder.scope(|| TenantMetrics::new(label)),
            ));
            runtime
                .preflight(&tenant)
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| format!("tenant {:?}", t.name))?;
            tenants.push(tenant);
        }
        recorder.scope(|| ::metrics::gauge!(metrics::TENANTS).set(tenants.len() as f64));
        let ingress = Arc::new(Ingress::new(runtime.clone(), tenants, config.http.clone()));
        Ok(Self {
            config,
            runtime,
            ingress,
            recorder,
        })
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
        let ready = Arc::new(AtomicBool::new(true));
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = Arc::new(Admin {
            recorder: self.recorder,
            ingress: self.ingress.clone(),
            runtime: self.runtime.clone(),
            ready: ready.clone(),
        });
        let connections = self.ingress.limits().connections.clone();
        let admin_task = tokio::spawn(async move {
            admin
                .serve(admin_listener, &connections, async {
                    let _ = admin_stopped.await;
                })
                .await;
        });
        let stopping = async {
            shutdown.await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
        };
        self.ingress
            .serve(listener, stopping, self.config.server.shutdown_timeout)
            .await;
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        Ok(())
    }
}

//! The process-wide wasmtime engine and the per-request call path.
//!
//! One [`Runtime`] owns the engine (pooling allocator, fuel, epochs), the
//! linker, the epoch ticker thread, the compiled components and the
//! tenants' kept instances. Each request gets a fresh `Store` and instance
//! from its tenant's pre-instantiated component, or, where the tenant
//! reuses instances, one kept from its own last clean request. A store is
//! dropped after a trap or a limit, so nothing carries over from a failed
//! request, and never serves another tenant.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use wasmtime::component::{Component, Linker, ResourceTableError};
use wasmtime::error::Context as _;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
};
use wasmtime::{PoolConcurrencyLimitError, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{FieldMapError, WasiHttpView};

use crate::compiled::Cache;
use crate::component::{self, Digest};
use crate::concurrent::{Job, Reply};
use crate::host::{self, Handler, HandlerPre, Host};
use crate::http::Admission;
use crate::http::body::{Failed, Guarded};
use crate::instances::{Instance, Reaper, Registry};
use crate::limits::{Limit, Limits};
use crate::metrics::{RunnerMetrics, TrapKind};
use crate::outcome::{self, Outcome};
use crate::tenant::Tenant;

/// Engine-wide settings; per-tenant limits must fit inside them.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Component instances that can exist at once (pooling allocator
    /// slots), in each engine's pool.
    pub pool_size: u32,
    /// The largest linear memory any tenant may have, in bytes.
    pub max_memory: usize,
    /// Bytes of native stack wasm may use before it traps.
    pub max_wasm_stack: usize,
    /// Epoch tick: how often a running guest yields and its deadline is
    /// checked.
    pub epoch_tick: Duration,
    /// Bytes of each linear-memory slot kept resident between requests.
    pub keep_resident: usize,
    /// Where compiled components are kept between runs; `None`: compiled
    /// at every start.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pool_size: 1000,
            max_memory: crate::limits::bytes(Limits::default().max_memory),
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
            keep_resident: 2 << 20,
            cache_dir: None,
        }
    }
}

pub struct Runtime {
    /// WASIp2 components run here: an engine without concurrency support,
    /// because with it wasmtime sends every call, WASIp2 ones included,
    /// through its concurrent event loop, which cost a tenth of a WASIp2
    /// request (BENCHMARKS.md).
    p2: Flavor,
    /// WASIp3 components run here, with their own pool of `pool_size` slots.
    p3: Flavor,
    config: EngineConfig,
    metrics: RunnerMetrics,
    /// Components compiled so far, by digest, so tenants that run the
    /// same component share one compilation.
    compiled: Mutex<HashMap<Digest, Loaded>>,
    /// Tenants' kept instances, and the thread that drops idle ones.
    reaper: Reaper,
    /// Advances the engine's epoch every tick.
    _ticker: Periodic,
}

/// An engine, the linker of what its components may import, and its
/// compiled components on disk.
struct Flavor {
    engine: Engine,
    linker: Linker<Host>,
    /// Where `--cache-dir` is given.
    cache: Option<Cache>,
}

impl Flavor {
    fn new(wasm: &Config, p3: bool, cache_dir: Option<&std::path::Path>) -> wasmtime::Result<Self> {
        let engine = Engine::new(wasm).context("configuring the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker, p3).context("linking host interfaces")?;
        Ok(Self {
            cache: cache_dir.map(|dir| Cache::new(dir.to_path_buf(), &engine)),
            engine,
            linker,
        })
    }
}

/// A compiled, linked component, ready to instantiate.
#[derive(Clone)]
pub struct Loaded {
    pub digest: Digest,
    pub pre: HandlerPre,
    /// The initial linear memory it needs, in bytes.
    pub needed: u64,
}

impl Loaded {
    /// Refuses a tenant memory limit the component cannot start under.
    pub fn fits(&self, max_memory: usize) -> wasmtime::Result<()> {
        let limit = max_memory as u64;
        if self.needed > limit {
            wasmtime::bail!(component::memory_too_small(self.needed, limit));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Core instances, memories and tables a component may use, per component
/// instance: a Rust component has a handful of core instances (its module
/// plus adapter shims), one or two memories and a few tables.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 16;

impl Runtime {
    pub fn new(config: EngineConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let slots = config.pool_size;
        pool.total_component_instances(slots)
            .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots * MEMORIES_PER_COMPONENT)
            .total_tables(slots * TABLES_PER_COMPONENT)
            .total_stacks(slots)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(config.max_memory)
            // Keeping the first pages of each slot resident (reset in place
            // instead of returned with madvise, which costs page faults and
            // TLB shootdowns on the next request) removes most of the
            // per-request kernel work. It bounds RSS at slots x this size.
            .linear_memory_keep_resident(config.keep_resident)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), the reset
            // after a request touches only the pages the guest dirtied
            // instead of memsetting the whole kept-resident prefix;
            // elsewhere wasmtime falls back to that memset by itself.
            .pagemap_scan(Enabled::Auto)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10);

        let mut wasm = Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .wasm_component_model_async(false)
            .concurrency_support(false)
            .wasm_backtrace_max_frames(None)
            .max_wasm_stack(config.max_wasm_stack)
            .async_stack_size(config.max_wasm_stack + (512 << 10))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let cache_dir = config.cache_dir.as_deref();
        let p2 = Flavor::new(&wasm, false, cache_dir)?;
        // WASIp3 components: async functions, streams and futures.
        wasm.concurrency_support(true)
            .wasm_component_model_async(true);
        let p3 = Flavor::new(&wasm, true, cache_dir)?;

        Ok(Self {
            _ticker: {
                let engines = [p2.engine.clone(), p3.engine.clone()];
                Periodic::start("epoch-ticker", config.epoch_tick, move || {
                    engines.iter().for_each(Engine::increment_epoch)
                })
            },
            p2,
            p3,
            config,
            metrics: RunnerMetrics::new(),
            compiled: Mutex::new(HashMap::new()),
            reaper: Reaper::start(Arc::new(Registry::new())),
        })
    }

    /// The engine WASIp2 components run on.
    pub fn engine(&self) -> &Engine {
        &self.p2.engine
    }

    /// Each engine, by the kind of component it runs: `wasip2`, `wasip3`.
    pub fn engines(&self) -> [(&'static str, &Engine); 2] {
        [("wasip2", &self.p2.engine), ("wasip3", &self.p3.engine)]
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn metrics(&self) -> &RunnerMetrics {
        &self.metrics
    }

    /// Compiles a component (once per distinct bytes) and checks that it
    /// can run here: its initial memory fits the pool's, every import is
    /// satisfied and the incoming handler is exported, so a bad component
    /// fails when it is loaded, not on its first request. A refusal gives
    /// every reason at once. Also says whether these bytes were new.
    ///
    /// `max_memory`, where a tenant's limit is known, is checked before
    /// compiling, so the refusal names the tenant's own limit.
    pub fn add(&self, bytes: &[u8], max_memory: Option<usize>) -> wasmtime::Result<(Loaded, bool)> {
        let digest = Digest::of(bytes);
        if let Some(found) = self.loaded(&digest) {
            return Ok((found, false));
        }
        if !bytes.starts_with(b"\0asm") {
            wasmtime::bail!(
                "reading the component: not a WebAssembly binary (it does not start with \\0asm)"
            );
        }
        let needed = component::initial_memory(bytes)
            .map_err(wasmtime::Error::from)
            .context("reading the component")?;
        let pool = self.config.max_memory as u64;
        if let Some(limit) = max_memory {
            let limit = (limit as u64).min(pool);
            if needed > limit {
                wasmtime::bail!(component::memory_too_small(needed, limit));
            }
        }
        if needed > pool {
            wasmtime::bail!(
                "the component needs {needed} bytes of linear memory from its start, over the \
                 runner's pool-max-memory of {pool} bytes (fixed at start-up; raise it with \
                 --pool-max-memory)"
            );
        }
        let loaded = Loaded {
            digest,
            pre: self.compile(bytes, &digest)?,
            needed,
        };
        // Two callers compiling the same bytes at once keep the first.
        let kept = self.compiled.lock().entry(digest).or_insert(loaded).clone();
        Ok((kept, true))
    }

    /// A component compiled earlier, by its digest.
    pub fn loaded(&self, digest: &Digest) -> Option<Loaded> {
        self.compiled.lock().get(digest).cloned()
    }

    /// Components compiled so far.
    pub fn components(&self) -> usize {
        self.compiled.lock().len()
    }

    /// [`Runtime::add`], then checks the component's initial memory against
    /// a tenant's `max_memory`.
    pub fn load(&self, bytes: &[u8], max_memory: usize) -> wasmtime::Result<Loaded> {
        let (loaded, _) = self.add(bytes, Some(max_memory))?;
        loaded.fits(max_memory)?;
        Ok(loaded)
    }

    /// Compiles `bytes`, or reads what an earlier run compiled from them,
    /// and links it.
    fn compile(&self, bytes: &[u8], digest: &Digest) -> wasmtime::Result<HandlerPre> {
        // The exports say which engine: a component that exports both
        // handlers is served as WASIp3 (see `HandlerPre::new`).
        let p3 = component::exports_p3_handler(bytes);
        let flavor = if p3 { &self.p3 } else { &self.p2 };
        let cached = flavor
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&flavor.engine, digest));
        let component = match cached {
            Some(component) => {
                self.metrics.cached.increment(1);
                component
            }
            None => {
                let component =
                    Component::new(&flavor.engine, bytes).context("compiling the component")?;
                self.metrics.compiled.increment(1);
                if let Some(cache) = &flavor.cache {
                    cache.store(digest, &component);
                }
                component
            }
        };
        let instance_pre = match flavor.linker.instantiate_pre(&component) {
            Ok(pre) => pre,
            Err(first) => {
                let missing = component::missing_imports(&flavor.engine, &component, p3);
                return Err(match missing {
                    Ok(missing) if !missing.is_empty() => {
                        wasmtime::format_err!(component::describe_missing(&missing))
                    }
                    _ => {
                        first.context("the component imports something the runner does not provide")
                    }
                });
            }
        };
        HandlerPre::new(instance_pre)
    }

    /// A fresh store for `tenant`: its limits, and an epoch callback that
    /// yields every tick and traps at the current request's deadline.
    fn store(&self, tenant: &Arc<Tenant>) -> Store<Host> {
        let mut store = Store::new(tenant.pre().engine(), Host::new(tenant.clone()));
        store.limiter(|host| &mut host.limiter);
        let yields = self.metrics.epoch_yields.clone();
        // Set once per store and reading the deadline from the store's data,
        // so a reused instance needs no new callback per request.
        store.epoch_deadline_callback(move |store| {
            if Instant::now() >= store.data().deadline {
                return Err(DeadlineExceeded.into());
            }
            yields.increment(1);
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Drops `tenant`'s kept instances and keeps no more: it was replaced or
    /// removed.
    pub fn forget(&self, tenant: &Tenant) {
        self.reaper.registry().forget(tenant);
        tenant.workers().close();
    }

    /// Instantiates the tenant's component once, under its own limits, so a
    /// component that cannot fit them (too large an initial memory, too many
    /// instances) fails at start-up rather than on every request.
    pub async fn preflight(&self, tenant: &Arc<Tenant>) -> wasmtime::Result<()> {
        let mut store = self.store(tenant);
        begin(&mut store, tenant, Instant::now() + tenant.limits().timeout)?;
        tenant
            .pre()
            .instantiate_async(&mut store)
            .await
            .context("instantiating it under the tenant's limits")?;
        Ok(())
    }

    /// An instance for one request of `tenant`, begun with its fuel and
    /// `deadline`: one the tenant kept from an earlier request where it
    /// reuses instances, else a fresh one. A full pool first evicts kept
    /// instances, any tenant's, before it refuses.
    async fn instance(
        &self,
        tenant: &Arc<Tenant>,
        deadline: Instant,
    ) -> wasmtime::Result<Instance> {
        if tenant.limits().max_instance_reuse > 1
            && let Some(mut kept) = self.reaper.registry().take(tenant)
        {
            kept.served += 1;
            begin(&mut kept.store, tenant, deadline)?;
            tenant.metrics().instances_reused.increment(1);
            return Ok(kept);
        }
        self.fresh(tenant, deadline).await
    }

    /// A new instance of `tenant`'s component, begun with its fuel and
    /// `deadline`. A full pool first evicts kept instances, any tenant's,
    /// before it refuses.
    async fn fresh(&self, tenant: &Arc<Tenant>, deadline: Instant) -> wasmtime::Result<Instance> {
        loop {
            let mut store = self.store(tenant);
            begin(&mut store, tenant, deadline)?;
            let started = Instant::now();
            match tenant.pre().instantiate_async(&mut store).await {
                Ok(guest) => {
                    self.metrics.instantiation.record(started.elapsed());
                    tenant.metrics().instances_created.increment(1);
                    return Ok(Instance {
                        store,
                        guest,
                        served: 1,
                    });
                }
                Err(e)
                    if e.is::<PoolConcurrencyLimitError>()
                        && self.reaper.registry().evict_one() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs one request of `tenant` in an instance of its component.
    ///
    /// Returns once the guest has sent its response head; the guest may
    /// still be streaming the body. `admission` is held until the guest's
    /// instance is dropped or kept, so it bounds instances in use, not just
    /// heads.
    pub async fn call<B>(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        request: http::Request<B>,
        admission: Admission,
    ) -> Outcome
    where
        B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    {
        if tenant.limits().max_instance_concurrency > 1 && tenant.pre().is_p3() {
            return self.call_shared(tenant, request, admission).await;
        }
        let deadline = Instant::now() + tenant.limits().timeout;
        let (sender, mut head) = oneshot::channel();
        let runtime = self.clone();
        let for_guest = tenant.clone();
        let mut guest = Box::pin(async move {
            let tenant = for_guest;
            let mut instance = None;
            let run = async {
                let instance = instance.insert(runtime.instance(&tenant, deadline).await?);
                match &instance.guest {
                    Handler::P2(guest) => {
                        serve_p2(&mut instance.store, guest, request, sender).await
                    }
                    Handler::P3(service) => {
                        serve_p3(&mut instance.store, service, request, sender).await
                    }
                }
            };
            // The epoch callback ends a guest that computes past its
            // deadline; this ends one blocked in a host call.
            let result = match (Backstop {
                inner: std::pin::pin!(run),
                deadline,
                timer: None,
                waited: 0,
            })
            .await
            {
                Some(result) => result,
                None => Err(DeadlineExceeded.into()),
            };
            let hit = instance.as_ref().and_then(|i| i.store.data().limiter.hit);
            let failure = result.err().map(|e| classify(&e, hit, &tenant));
            if let Some(instance) = &instance {
                let fuel = instance.store.get_fuel().unwrap_or(0);
                tenant
                    .metrics()
                    .fuel_consumed(tenant.limits().fuel.saturating_sub(fuel));
            }
            (failure, instance)
        });

        // The guest runs in this task: most guests finish within one poll,
        // and then no task is spawned and no other thread is woken. One
        // that is still running when its response head arrives (streaming a
        // body, say) continues in a task of its own.
        let registry = self.reaper.registry();
        // How a request ends once its guest has: the instance kept or
        // dropped, and the response whole or cut short.
        let finished = |(failure, instance): (Option<Outcome>, Option<Instance>),
                        head: Option<Head>,
                        admission: Admission| {
            let clean = failure.is_none() && matches!(head, Some(Ok(_)));
            if let Some(instance) = instance {
                if failure.is_none() && head.is_none() && instance.served > 1 {
                    registry.refuse(tenant);
                }
                registry.release(tenant, instance, clean);
            }
            drop(admission);
            match (head, failure) {
                // Done and whole: nothing to guard, and no box per request.
                (Some(Ok(response)), None) => Outcome::Served(response),
                // It answered, then failed before its body was done.
                (Some(Ok(response)), Some(failure)) => {
                    Outcome::CutShort(guarded(response, Failed::Known(true)), Box::new(failure))
                }
                (Some(Err(code)), _) => guest_error(&code),
                (None, failure) => failure.unwrap_or_else(no_response),
            }
        };
        tokio::select! {
            biased;
            ended = &mut guest => finished(ended, head.try_recv().ok(), admission),
            sent = &mut head => {
                // A guest that answers before it has written its body (the
                // usual WASIp3 shape: a task of the guest's writes it, into
                // a channel that holds the first chunk) is often done a few
                // polls later; then the response goes out whole, in one
                // write, and no task is spawned.
                for _ in 0..EAGER_POLLS {
                    if let Some(ended) = (&mut guest).now_or_never() {
                        return finished(ended, sent.ok(), admission);
                    }
                }
                let answered = matches!(sent, Ok(Ok(_)));
                let (ended, ended_later) = oneshot::channel();
                let tenant = tenant.clone();
                let registry = registry.clone();
                tokio::spawn(async move {
                    let (failure, instance) = guest.await;
                    if let Some(instance) = instance {
                        registry.release(&tenant, instance, answered && failure.is_none());
                    }
                    drop(admission);
                    let _ = ended.send(failure.as_ref().map(outcome::Ended::of));
                });
                match sent {
                    Ok(Ok(response)) => Outcome::Streaming(response, ended_later),
                    Ok(Err(code)) => guest_error(&code),
                    // Unreachable while the guest's store, which holds the
                    // sender, is alive; handled all the same.
                    Err(_) => no_response(),
                }
            }
        }
    }

    /// Runs one request of `tenant` in one of its WASIp3 instances that
    /// serve several requests at once ([`crate::concurrent`]), making a new
    /// one when none has room. `admission` is held until the response head.
    async fn call_shared<B>(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        request: http::Request<B>,
        admission: Admission,
    ) -> Outcome
    where
        B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    {
        use http_body_util::BodyExt as _;

        let limits = tenant.limits();
        let deadline = Instant::now() + limits.timeout;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: request.map(|body| body.boxed_unsync()),
            deadline,
            reply,
        };
        let taken = match tenant.workers().offer(job, limits.max_instance_concurrency) {
            Ok(taken) => taken,
            Err(job) => match self.fresh(tenant, deadline).await {
                Ok(Instance {
                    mut store,
                    guest: Handler::P3(service),
                    ..
                }) => {
                    // The worker adds each request's budget as it starts.
                    let _ = store.set_fuel(0);
                    tenant.workers().start(tenant.clone(), store, service, *job)
                }
                Ok(_) => return Outcome::HostFault("a WASIp2 instance of a WASIp3 tenant".into()),
                Err(e) => return classify(&e, None, tenant),
            },
        };
        let outcome = match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(Reply::Head(Ok(response)))) => Outcome::Served(response),
            Ok(Ok(Reply::Head(Err(code)))) => guest_error(&code),
            Ok(Ok(Reply::Failed(outcome))) => outcome,
            Ok(Err(_dropped)) => no_response(),
            Err(_elapsed) => {
                tenant.workers().expired(&taken);
                deadline_exceeded(tenant)
            }
        };
        drop(admission);
        outcome
    }
}

/// Polls of a guest that has sent its response head, before it is left to
/// finish in a task of its own.
const EAGER_POLLS: usize = 4;

/// `inner` until `deadline` (`None` past it), with the timer armed only
/// once `inner` has kept waiting: most guests finish within a few polls,
/// and a timer armed per request costs a wake-up of the runtime's driver
/// (a system call) each time. Until then it asks to be polled again at
/// once, which is cheap.
struct Backstop<F> {
    inner: F,
    deadline: Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    waited: usize,
}

/// Pending polls of a guest before its deadline timer is armed: past the
/// eager polls after its response head, so a guest that finishes within
/// them never arms one.
const UNTIMED_POLLS: usize = EAGER_POLLS + 2;

impl<F: Future + Unpin> Future for Backstop<F> {
    type Output = Option<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(done) = std::pin::Pin::new(&mut this.inner).poll(cx) {
            return Poll::Ready(Some(done));
        }
        if this.timer.is_none() {
            if this.waited < UNTIMED_POLLS && Instant::now() < this.deadline {
                this.waited += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.timer = Some(Box::pin(tokio::time::sleep_until(this.deadline.into())));
        }
        match this.timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

/// The guest's response head, or the error code it answered with instead.
pub(crate) type Head = Result<http::Response<crate::http::body::OutBody>, String>;

/// Runs one request through a WASIp2 handler: returns when `handle` does,
/// with the response head sent on `head` as soon as the guest set it.
async fn serve_p2<B>(
    store: &mut Store<Host>,
    guest: &host::Guest,
    request: http::Request<B>,
    head: oneshot::Sender<Head>,
) -> wasmtime::Result<()>
where
    B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    let mut http = store.data_mut().http();
    let request = http
        .new_incoming_request(Scheme::Http, request)
        .context("passing the request to the guest")?;
    let outparam = http
        .new_response_outparam_from_callback(move |result| {
            let _ = head.send(result.map_err(|code| format!("{code:?}")));
        })
        .context("creating the response slot")?;
    guest
        .wasi_http_incoming_handler()
        .call_handle(store, request, outparam)
        .await
}

/// Runs one request through a WASIp3 handler, in the store's concurrent
/// event loop: the response head is sent on `head` when `handle` returns
/// it, and this returns once the guest's task has exited, which a guest
/// writing its body after returning (the usual WASIp3 shape) does when
/// the body is written.
async fn serve_p3<B>(
    store: &mut Store<Host>,
    service: &wasmtime_wasi_http::p3::bindings::Service,
    request: http::Request<B>,
    head: oneshot::Sender<Head>,
) -> wasmtime::Result<()>
where
    B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    let (mut parts, body) = request.into_parts();
    // The guest sees the scheme as WASIp2 guests do.
    if parts.uri.scheme().is_none() {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        parts.uri = http::Uri::from_parts(uri).context("passing the request to the guest")?;
    }
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(
        store.data_mut().http().hooks,
        http::Request::from_parts(parts, body),
    );
    let view: fn(&mut Host) -> wasmtime_wasi_http::WasiHttpCtxView<'_> = Host::http;
    store
        .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
            let request = accessor
                .with(|mut store| view(store.get()).table.push(request))
                .context("passing the request to the guest")?;
            let answer = service
                .wasi_http_handler()
                .call_handle(accessor, request)
                .await?;
            let sent = match answer {
                Ok(response) => Ok(accessor.with(|mut store| {
                    let response = view(store.get()).table.delete(response)?;
                    response.into_http_with_getter(&mut store, request_io, view)
                })?),
                Err(code) => Err(format!("{code:?}")),
            };
            let _ = head.send(sent);
            std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
            Ok(())
        })
        .await?
}

/// Starts a request in `store`: the host's per-request state, a whole fuel
/// budget, and the first epoch check one tick away.
fn begin(store: &mut Store<Host>, tenant: &Tenant, deadline: Instant) -> wasmtime::Result<()> {
    store.data_mut().begin_request(deadline);
    store.set_fuel(tenant.limits().fuel)?;
    store.set_epoch_deadline(1);
    Ok(())
}

/// The guest's response with its body guarded against looking whole when
/// the guest failed mid-body.
fn guarded(
    response: http::Response<crate::http::body::OutBody>,
    failed: Failed,
) -> http::Response<crate::http::body::OutBody> {
    response.map(|body| Guarded::wrap(body, failed))
}

fn guest_error(code: &str) -> Outcome {
    Outcome::GuestError(format!("the guest failed the request: {code}"))
}

fn no_response() -> Outcome {
    Outcome::GuestError("the guest ended without sending a response".into())
}

/// The error the epoch callback and the wall-clock backstop raise.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// A request that ran past its deadline.
pub(crate) fn deadline_exceeded(tenant: &Tenant) -> Outcome {
    classify(&DeadlineExceeded.into(), None, tenant)
}

/// Names the limit or trap behind a failed call. Counting is left to the
/// request's end, so each outcome is counted once.
pub(crate) fn classify(
    error: &wasmtime::Error,
    limiter_hit: Option<Limit>,
    tenant: &Tenant,
) -> Outcome {
    let limits = tenant.limits();
    if error.is::<DeadlineExceeded>() {
        return Outcome::LimitHit(
            Limit::Deadline,
            format!(
                "deadline exceeded: the request ran past its {} timeout",
                humantime::format_duration(limits.timeout)
            ),
        );
    }
    let table_full = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    });
    if table_full {
        return Outcome::LimitHit(
            Limit::HostResources,
            format!(
                "host resource limit exceeded: a request may hold at most {} host resources \
                 (headers, bodies, streams) at once",
                limits.max_host_resources
            ),
        );
    }
    let fields_full = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<FieldMapError>(),
            Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)
        )
    });
    if fields_full {
        return Outcome::LimitHit(
            Limit::HeaderFields,
            format!(
                "header limit exceeded: one set of header fields may hold at most {} bytes",
                limits.max_header_field_bytes.as_u64()
            ),
        );
    }
    if let Some(pool) = error.downcast_ref::<PoolConcurrencyLimitError>() {
        return Outcome::Refused(
            Limit::InstancePool,
            format!("instance pool exhausted ({pool}); retry later"),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::LimitHit(
            Limit::Fuel,
            format!(
                "fuel exhausted: the request burned its whole budget of {} fuel units",
                limits.fuel
            ),
        ),
        Some(Trap::StackOverflow) => Outcome::LimitHit(
            Limit::StackOverflow,
            "stack overflow: the guest exhausted its wasm stack".into(),
        ),
        Some(trap) => match limiter_hit {
            // Most guests abort when memory.grow fails; the trap that
            // follows is the limit's doing.
            Some(Limit::Memory) => Outcome::LimitHit(
                Limit::Memory,
                format!(
                    "memory limit exceeded: a linear memory may grow to at most {} bytes",
                    limits.max_memory.as_u64()
                ),
            ),
            Some(Limit::TableElements) => Outcome::LimitHit(
                Limit::TableElements,
                format!(
                    "table limit exceeded: a table may grow to at most {} elements",
                    limits.max_table_elements
                ),
            ),
            _ => {
                let kind = if *trap == Trap::UnreachableCodeReached {
                    TrapKind::Unreachable
                } else {
                    TrapKind::Other
                };
                let what = trap.to_string();
                let what = what.strip_prefix("wasm trap: ").unwrap_or(&what);
                Outcome::Trap(kind, format!("guest trapped: {what}"))
            }
        },
        // Not a trap and not a limit: a host call failed, which is the
        // runner's fault, not the tenant's.
        None => Outcome::HostFault(format!("{error:#}")),
    }
}

/// A plain OS thread that runs `work` every `interval` until dropped. A
/// thread and not a task: it must run even when every tokio worker is busy
/// running guests.
pub(crate) struct Periodic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    pub(crate) fn start(
        name: &str,
        interval: Duration,
        mut work: impl FnMut() + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    work();
                }
            })
            .expect("spawning a runner thread at start-up");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DeadlineExceeded, classify};
    use crate::limits::Limit;
    use crate::metrics::Recorder;
    use crate::outcome::Outcome;

    #[test]
    fn errors_that_are_not_traps_are_host_faults() {
        let recorder = Recorder::new().unwrap();
        let (_runtime, tenant) = crate::tenant::for_tests(&recorder);
        let fault = wasmtime::Error::msg("resource table broke");
        assert!(matches!(
            classify(&fault, None, &tenant),
            Outcome::HostFault(m) if m == "resource table broke"
        ));
        let trap = wasmtime::Error::from(wasmtime::Trap::UnreachableCodeReached);
        assert!(matches!(classify(&trap, None, &tenant), Outcome::Trap(..)));
        assert!(matches!(
            classify(&trap, Some(Limit::Memory), &tenant),
            Outcome::LimitHit(Limit::Memory, _)
        ));
        let late = wasmtime::Error::from(DeadlineExceeded);
        assert!(matches!(
            classify(&late, None, &tenant),
            Outcome::LimitHit(Limit::Deadline, _)
        ));
    }
}

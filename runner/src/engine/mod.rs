//! The process-wide wasmtime engines and the components compiled for them.
//!
//! One [`Runtime`] owns the engines (pooling allocator, fuel, epochs), the
//! linker of what guests may import, the epoch ticker thread, the compiled
//! components, and the pool of instances tenants keep between requests
//! (`kept`). Running a request in an instance is [`crate::call`]'s.
//!
//! - [`component`]: what a component's bytes say before it is compiled
//!   (its digest, imports, exports, initial memory).
//! - [`compile`]: compiling them, off the threads that serve requests,
//!   each compile bounded in time and memory.
//! - [`compiled`]: compiled components kept on disk between runs.
//! - `kept`: instances parked between a tenant's requests, their idle
//!   timeout and eviction when the pool is full.

pub mod compile;
pub mod compiled;
pub mod component;
pub(crate) mod kept;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use self::compile::CompileSettings;
use self::compiled::Cache;
use self::component::Digest;
use self::kept::{Reaper, Registry};
use crate::host::{self, HandlerPre, Host};
use crate::metrics::RunnerMetrics;
use crate::periodic::Periodic;

/// The default guest component, built from `guest/default` by `build.rs`:
/// what `runner --tenants N` serves when no component is named.
pub static DEFAULT_GUEST: &[u8] = include_bytes!(env!("RUNNER_DEFAULT_GUEST"));

/// Engine-wide settings; per-tenant limits must fit inside them. Their
/// defaults come from the declared settings (`--pool-size`,
/// `--pool-keep-resident`, `--max-wasm-stack`, `--epoch-tick`, and the
/// default tenant `max-memory`), in [`crate::config`].
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
    /// How components are compiled (`--compile-workers`,
    /// `--compile-timeout`, `--compile-max-memory`).
    pub compile: CompileSettings,
    /// The key-value store answers reads without waiting (in memory, with
    /// or without a data directory; not Redis), so they are linked as
    /// synchronous imports.
    pub ready_reads: bool,
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
    /// One compile of given bytes at a time: a second upload of the same
    /// bytes waits for the first and takes its result.
    compiling: Mutex<HashMap<Digest, Compiling>>,
    /// Compiles that may run at once: one per core until the runner
    /// serves (nothing waits on the cores then), `compile-workers` after
    /// ([`Runtime::serving`]).
    compilers: tokio::sync::Semaphore,
    /// How many more than `compile-workers` it had before serving.
    start_up_extra: std::sync::atomic::AtomicUsize,
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
    fn new(wasm: &Config, p3: bool, config: &EngineConfig) -> wasmtime::Result<Self> {
        let cache_dir = config.cache_dir.as_deref();
        let engine = Engine::new(wasm).context("configuring the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker, p3).context("linking host interfaces")?;
        if config.ready_reads {
            host::link_ready_reads(&mut linker).context("linking key-value reads")?;
        }
        Ok(Self {
            cache: cache_dir.and_then(|dir| Cache::open(dir, &engine)),
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

        let flavor = |p3| {
            let mut wasm = compile::wasm_config(config.max_wasm_stack, p3);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
            Flavor::new(&wasm, p3, &config)
        };
        let p2 = flavor(false)?;
        // WASIp3 components: async functions, streams and futures.
        let p3 = flavor(true)?;

        Ok(Self {
            _ticker: {
                let engines = [p2.engine.clone(), p3.engine.clone()];
                Periodic::start("epoch-ticker", config.epoch_tick, move || {
                    engines.iter().for_each(Engine::increment_epoch)
                })
            },
            p2,
            p3,
            metrics: RunnerMetrics::new(),
            compiled: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
            compilers: tokio::sync::Semaphore::new(start_up_compilers(&config)),
            start_up_extra: start_up_compilers(&config)
                .saturating_sub(config.compile.workers.max(1))
                .into(),
            reaper: Reaper::start(Arc::new(Registry::new())),
            config,
        })
    }

    /// From now on at most `compile-workers` compiles run at once: the
    /// runner serves, and the other cores are the tenants'. Called once
    /// start-up's compiles are done.
    pub fn serving(&self) {
        let extra = self
            .start_up_extra
            .swap(0, std::sync::atomic::Ordering::AcqRel);
        self.compilers.forget_permits(extra);
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
    /// What can be read from the bytes (the handler export, the packages
    /// imported, the initial memory) is checked before any compile, on a
    /// blocking thread as the digest is taken: a component that cannot
    /// run costs no compile. `max_memory`, where a tenant's limit is
    /// known, is checked then too, so the refusal names the tenant's own
    /// limit.
    pub async fn add(
        &self,
        bytes: Bytes,
        max_memory: Option<usize>,
    ) -> wasmtime::Result<(Loaded, bool)> {
        let read = bytes.clone();
        let (digest, outline) = tokio::task::spawn_blocking(move || {
            (Digest::of(&read), component::Outline::read(&read))
        })
        .await
        .context("reading the component")?;
        if let Some(found) = self.loaded(&digest) {
            return Ok((found, false));
        }
        let outline = outline.map_err(wasmtime::Error::msg)?;
        let pool = self.config.max_memory as u64;
        if let Some(limit) = max_memory {
            let limit = (limit as u64).min(pool);
            if outline.needed > limit {
                wasmtime::bail!(component::memory_too_small(outline.needed, limit));
            }
        }
        if outline.needed > pool {
            wasmtime::bail!(
                "the component needs {} bytes of linear memory from its start, over the \
                 runner's pool-max-memory of {pool} bytes (fixed at start-up; raise it with \
                 --pool-max-memory)",
                outline.needed
            );
        }
        if let Some(refusal) = outline.refusal {
            wasmtime::bail!(refusal);
        }
        let compiling = self.compiling.lock().entry(digest).or_default().clone();
        let mut new = false;
        let outcome = compiling
            .get_or_init(|| async {
                // A compile that ended just before this one began.
                if let Some(found) = self.loaded(&digest) {
                    return Ok(found);
                }
                new = true;
                let compiled = self.compile(bytes, &digest, outline.p3).await;
                let compiled = compiled.map(|pre| Loaded {
                    digest,
                    pre,
                    needed: outline.needed,
                });
                if let Ok(loaded) = &compiled {
                    self.compiled.lock().insert(digest, loaded.clone());
                }
                compiled.map_err(|e| format!("{e:#}"))
            })
            .await
            .clone();
        {
            // Done: a later attempt at the same bytes starts afresh (a
            // refusal for want of time or memory may pass with more).
            let mut map = self.compiling.lock();
            if map.get(&digest).is_some_and(|c| Arc::ptr_eq(c, &compiling)) {
                map.remove(&digest);
            }
        }
        outcome
            .map(|loaded| (loaded, new))
            .map_err(wasmtime::Error::msg)
    }

    /// A component compiled earlier, by its digest.
    pub fn loaded(&self, digest: &Digest) -> Option<Loaded> {
        self.compiled.lock().get(digest).cloned()
    }

    /// Every component held now, with the bytes of its compiled code.
    pub fn held(&self) -> Vec<(Digest, usize)> {
        self.compiled
            .lock()
            .values()
            .map(|loaded| (loaded.digest, loaded.pre.code_bytes()))
            .collect()
    }

    /// Holds `loaded` (again, if it was released meanwhile): a tenant runs
    /// it.
    pub fn hold(&self, loaded: &Loaded) {
        self.compiled
            .lock()
            .entry(loaded.digest)
            .or_insert_with(|| loaded.clone());
    }

    /// Lets go of component `digest`: a later tenant on it compiles it
    /// again, and its entries in the compiled cache go too. Tenants (and
    /// requests) that run it now keep their own hold on its code, which is
    /// freed when the last of them ends. Says whether it was held.
    pub fn release(&self, digest: &Digest) -> bool {
        let held = self.compiled.lock().remove(digest).is_some();
        for flavor in [&self.p2, &self.p3] {
            if let Some(cache) = &flavor.cache {
                cache.remove(digest);
            }
        }
        held
    }

    /// Drops the compiled cache's entries, in each engine's, of components
    /// not held now and not written for `grace`: those of components
    /// released, or of an earlier run's that no tenant runs any more.
    pub fn sweep_cache(&self, grace: Duration) -> usize {
        let held = |digest: &Digest| self.compiled.lock().contains_key(digest);
        [&self.p2, &self.p3]
            .iter()
            .filter_map(|flavor| flavor.cache.as_ref())
            .map(|cache| cache.sweep(&held, grace))
            .sum()
    }

    /// [`Runtime::add`], then checks the component's initial memory against
    /// a tenant's `max_memory`.
    pub async fn load(&self, bytes: Bytes, max_memory: usize) -> wasmtime::Result<Loaded> {
        let (loaded, _) = self.add(bytes, Some(max_memory)).await?;
        loaded.fits(max_memory)?;
        Ok(loaded)
    }

    /// Compiles `bytes` (on the compiler's terms: [`compile`]), or reads
    /// what an earlier run compiled from them, and links it.
    async fn compile(
        &self,
        bytes: Bytes,
        digest: &Digest,
        p3: bool,
    ) -> wasmtime::Result<HandlerPre> {
        // The exports say which engine: a component that exports both
        // handlers is served as WASIp3 (see `HandlerPre::new`).
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
                let _worker = self.compilers.acquire().await.context("compiling")?;
                let settings = &self.config.compile;
                let (component, code) = match &settings.program {
                    Some(program) => {
                        let code = compile::in_child(
                            program,
                            &bytes,
                            p3,
                            self.config.max_wasm_stack,
                            settings,
                        )
                        .await?;
                        // SAFETY: the code is what our own binary's
                        // compiler wrote for this engine's settings, just
                        // now; wasmtime checks its header and settings.
                        #[expect(unsafe_code, reason = "loading natively compiled code we wrote")]
                        let component = unsafe { Component::deserialize(&flavor.engine, &code) }
                            .context("reading the compiled component")?;
                        (component, Some(code))
                    }
                    None => {
                        let engine = flavor.engine.clone();
                        let component =
                            tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
                                .await
                                .context("compiling the component")?
                                .context("compiling the component")?;
                        (component, None)
                    }
                };
                self.metrics.compiled.increment(1);
                if let Some(cache) = &flavor.cache {
                    cache.store(digest, &component, code.as_deref());
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

    /// Tenants' kept instances, for the call path.
    pub(crate) fn kept(&self) -> &Arc<Registry> {
        self.reaper.registry()
    }
}

/// Compiles at once before the runner serves: one per core, or
/// `compile-workers` if more.
fn start_up_compilers(config: &EngineConfig) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.max(config.compile.workers.max(1))
}

/// A compile under way, which whoever brings the same bytes meanwhile waits
/// for and shares: its component, or its refusal in words.
type Compiling = Arc<tokio::sync::OnceCell<Result<Loaded, String>>>;

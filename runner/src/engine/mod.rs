//! The process-wide wasmtime engines and the components compiled for them.
//!
//! One [`Runtime`] owns the engines (pooling allocator, fuel, epochs), the
//! linker of what guests may import, the epoch ticker thread, the compiled
//! components, and the pool of instances tenants keep between requests
//! (`kept`). Running a request in an instance is [`crate::call`]'s.
//!
//! - [`component`]: what a component's bytes say before it is compiled
//!   (its digest, imports, exports, initial memory).
//! - [`compiled`]: compiled components kept on disk between runs.
//! - `kept`: instances parked between a tenant's requests, their idle
//!   timeout and eviction when the pool is full.

pub mod compiled;
pub mod component;
pub(crate) mod kept;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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

    /// Tenants' kept instances, for the call path.
    pub(crate) fn kept(&self) -> &Arc<Registry> {
        self.reaper.registry()
    }
}

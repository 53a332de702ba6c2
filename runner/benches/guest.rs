//! The wasm side of a request, in process and without HTTP: what it costs to
//! instantiate the default guest, and what one key-value call from the guest
//! adds to a request.
//!
//! Run with `cargo bench -p runner --bench guest` (or, for the build the
//! runner is deployed as, `cargo bench --profile dist -p runner --bench
//! guest`). It allocates with jemalloc, as the `runner` binary does.
//!
//! The tenant is built the way `Runner::build` builds one: the production
//! engine (`Runtime::new` with `EngineConfig::default()`: pooling allocator,
//! fuel, 1 ms epochs, 2 MiB kept resident), the embedded default guest, the
//! default limits and a real Prometheus registry. Requests go through
//! `call::run`, the same call the ingress makes after admission, on a
//! single-threaded tokio runtime; the response body is read to its end.
//!
//! What each figure is:
//! - `instantiate`: `GuestPre::instantiate_async` alone, on a store built
//!   (and dropped) outside the timed part.
//! - `drop_store`: dropping that store after instantiation, which returns
//!   the pooled slot (and resets its memory) — paid by every request.
//! - `preflight`: `call::preflight`: the production store set-up (host
//!   state, limiter, fuel, epoch callback), instantiation and drop.
//! - `call/hello`: `GET /hello`: instantiate plus handle, no store access.
//! - `call/kv_get` and `call/kv_put`: `GET` and `PUT /kv/{key}` with a
//!   100-byte value: instantiate plus handle plus one `open` and one
//!   `get` (or `set`) host call.
//! - `call/*_reused`: the same requests for a tenant with
//!   `max-instance-reuse`, so one kept instance serves them all: handle
//!   without instantiation or memory reset.
//!
//! The default guest makes one key-value call per request, so `kv_get -
//! hello` (and `kv_put - hello`), printed at the end from an interleaved run,
//! is a request's cost of one call: the guest's routing of a longer path,
//! percent-decoding the key, the `open` call and its resource, and copying
//! the value in or out. `PUT` also streams a 100-byte request body in.
//!
//! One `get` host call alone is measured on the bench guest (`guest/bench`,
//! default toolchain settings): `GET /getloop/{key}?n=N` opens the bucket
//! once and calls `get` N times, on one kept instance; `(n=1001 - n=1) /
//! 1000`, from interleaved rounds, is one call: the guest's lowering, the
//! async host call, the store's `get` and the 100-byte copy into the guest.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use runner::admission::{Admission, GlobalCap};
use runner::engine::{EngineConfig, Loaded, Runtime};
use runner::host::Host;
use runner::limits::Limits;
use runner::metrics::{Recorder, TenantMetrics};
use runner::outcome::Outcome;
use runner::store::memory::Store;
use runner::store::{Namespace, Quotas};
use runner::tenant::Tenant;

/// The key the `kv_*` requests read and write.
const KEY: &str = "bench-key";
/// Size of the value they read and write, in bytes.
const VALUE_BYTES: usize = 100;

/// A runtime and one tenant running the default guest.
struct Bench {
    runtime: Arc<Runtime>,
    tenant: Arc<Tenant>,
    /// The same guest with `max-instance-reuse`: one instance serves every
    /// request.
    reused: Arc<Tenant>,
    /// Stands in for the ingress's global in-flight cap.
    global: GlobalCap,
    rt: tokio::runtime::Runtime,
    store: Store,
    recorder: Recorder,
}

impl Bench {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        // As in `Runner::build`: a real recorder, so metric updates on the
        // request path cost what they cost in the server.
        let recorder = Recorder::new().expect("building the metrics registry");
        let runtime = recorder
            .scope(|| Runtime::new(EngineConfig::default()))
            .expect("building the engine");
        let loaded = rt
            .block_on(runtime.load(runner::DEFAULT_GUEST.into(), usize::MAX))
            .expect("the default guest loads");
        let store = Store::new(Store::default_shards());
        let tenant =
            |name: &str, limits: Limits| tenant_on(&store, &recorder, &loaded, name, limits);
        let reused = tenant(
            "t1",
            Limits {
                max_instance_reuse: 1_000_000,
                instance_idle_timeout: Duration::from_secs(3600),
                ..Limits::default()
            },
        );
        let tenant = tenant("t0", Limits::default());
        rt.block_on(runner::call::preflight(&runtime, &tenant))
            .expect("the default guest instantiates under the default limits");
        let bench = Self {
            runtime: Arc::new(runtime),
            tenant,
            reused,
            global: GlobalCap::new(1000),
            rt,
            store,
            recorder,
        };
        bench.check();
        bench
    }

    /// The bench guest (`guest/bench`), compiled.
    fn bench_guest(&self) -> Loaded {
        let bytes = include_bytes!(env!("RUNNER_BENCH_GUEST"));
        self.rt
            .block_on(self.runtime.load(bytes[..].into(), usize::MAX))
            .expect("the bench guest loads")
    }

    fn tenant_on(&self, loaded: &Loaded, name: &str, limits: Limits) -> Arc<Tenant> {
        tenant_on(&self.store, &self.recorder, loaded, name, limits)
    }

    /// One request through `call::run`, its body read to the end.
    async fn request(
        &self,
        tenant: &Arc<Tenant>,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .body(Full::new(body).map_err(|never: Infallible| match never {}))
            .expect("a valid request");
        let admission = Admission::try_admit(&self.global, tenant.scope())
            .expect("one request at a time fits every cap");
        // A guest still writing its body when the head is ready streams it.
        let response =
            match runner::call::run(&self.runtime, tenant, request, admission, None).await {
                Outcome::Served(response) | Outcome::Streaming(response, _) => response,
                _ => panic!("the guest answers"),
            };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the guest finishes its body")
            .to_bytes();
        (status, body)
    }

    fn value() -> Bytes {
        Bytes::from(vec![b'v'; VALUE_BYTES])
    }

    /// The routes answer what the figures assume, before anything is timed.
    fn check(&self) {
        self.rt.block_on(async {
            for tenant in [&self.tenant, &self.reused] {
                let hello = self
                    .request(tenant, Method::GET, "/hello", Bytes::new())
                    .await;
                assert_eq!(hello, (StatusCode::OK, Bytes::from_static(b"hello")));
                let path = format!("/kv/{KEY}");
                let put = self
                    .request(tenant, Method::PUT, &path, Self::value())
                    .await;
                assert_eq!(put.0, StatusCode::NO_CONTENT, "{:?}", put.1);
                let get = self.request(tenant, Method::GET, &path, Bytes::new()).await;
                assert_eq!(get, (StatusCode::OK, Self::value()));
            }
        });
    }

    /// Time for `iters` requests, one after another.
    fn time_requests(
        &self,
        tenant: &Arc<Tenant>,
        method: &Method,
        path: &str,
        body: &Bytes,
        iters: u64,
    ) -> Duration {
        self.rt.block_on(async {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(
                    self.request(tenant, method.clone(), path, body.clone())
                        .await,
                );
            }
            started.elapsed()
        })
    }

    /// A store like a request's (fuel, a far epoch deadline), without the
    /// limiter and the deadline callback, which only the call path (`call::preflight`) attaches.
    fn store(&self) -> wasmtime::Store<Host> {
        let mut store = wasmtime::Store::new(
            self.runtime.engine(),
            Host::new(self.tenant.scope().clone()),
        );
        store
            .set_fuel(self.tenant.limits().fuel)
            .expect("the engine consumes fuel");
        store.set_epoch_deadline(1_000_000);
        store
    }

    /// Time spent in `instantiate_async` and in dropping the store, summed
    /// over `iters` instantiations.
    fn time_instantiation(&self, iters: u64) -> (Duration, Duration) {
        self.rt.block_on(async {
            let (mut instantiate, mut drop_store) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..iters {
                let mut store = self.store();
                let started = Instant::now();
                let guest = self
                    .tenant
                    .pre()
                    .instantiate_async(&mut store)
                    .await
                    .expect("instantiating the default guest");
                instantiate += started.elapsed();
                black_box(guest);
                let started = Instant::now();
                drop(store);
                drop_store += started.elapsed();
            }
            (instantiate, drop_store)
        })
    }
}

fn instantiation(c: &mut Criterion, bench: &Bench) {
    let mut group = c.benchmark_group("guest");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("instantiate", |b| {
        b.iter_custom(|iters| bench.time_instantiation(iters).0);
    });
    group.bench_function("drop_store", |b| {
        b.iter_custom(|iters| bench.time_instantiation(iters).1);
    });
    group.bench_function("preflight", |b| {
        b.iter_custom(|iters| {
            bench.rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    runner::call::preflight(&bench.runtime, &bench.tenant)
                        .await
                        .expect("the default guest instantiates");
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

/// A tenant running `loaded` under `limits`, its namespace in `store`.
fn tenant_on(
    store: &Store,
    recorder: &Recorder,
    loaded: &Loaded,
    name: &str,
    limits: Limits,
) -> Arc<Tenant> {
    Arc::new(Tenant::new(
        name,
        limits,
        loaded,
        Namespace::new(store, name, Quotas::default()).expect("a fresh namespace"),
        Arc::new(TenantMetrics::new(name.into(), recorder)),
        &runner::outbound::Egress::new(Default::default()),
        Default::default(),
    ))
}

/// The three requests the `call/*` benches time.
fn routes() -> [(&'static str, Method, String, Bytes); 3] {
    let kv = format!("/kv/{KEY}");
    [
        ("hello", Method::GET, "/hello".to_owned(), Bytes::new()),
        ("kv_get", Method::GET, kv.clone(), Bytes::new()),
        ("kv_put", Method::PUT, kv, Bench::value()),
    ]
}

fn calls(c: &mut Criterion, bench: &Bench) {
    let mut group = c.benchmark_group("guest/call");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, method, path, body) in routes() {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| bench.time_requests(&bench.tenant, &method, &path, &body, iters));
        });
        group.bench_function(format!("{name}_reused"), |b| {
            b.iter_custom(|iters| bench.time_requests(&bench.reused, &method, &path, &body, iters));
        });
    }
    group.finish();
}

/// Per-request time of each route from interleaved rounds (the median
/// round), so slow drift on a shared machine hits all three alike; then the
/// differences that estimate one key-value call.
fn differences(bench: &Bench) {
    const ROUNDS: usize = 15;
    const PER_ROUND: u64 = 2_000;
    let routes = routes();
    let mut rounds: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (i, (_, method, path, body)) in routes.iter().enumerate() {
            let t = bench.time_requests(&bench.tenant, method, path, body, PER_ROUND);
            rounds[i].push(t.as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [hello, get, put] = rounds.map(|mut v| median(&mut v));
    println!("\nper request, median of {ROUNDS} interleaved rounds of {PER_ROUND}:");
    println!("  hello   {:>9.0} ns", hello);
    println!("  kv_get  {:>9.0} ns", get);
    println!("  kv_put  {:>9.0} ns", put);
    println!(
        "one key-value call from the guest, as the difference over hello \
         (routing, key decoding, open and the {VALUE_BYTES}-byte copy included):"
    );
    println!("  get     {:>9.0} ns  (kv_get - hello)", get - hello);
    println!(
        "  set     {:>9.0} ns  (kv_put - hello; also reads a {VALUE_BYTES}-byte body)",
        put - hello
    );
}

/// One `get` host call, from a loop of them inside one request on a kept
/// instance of the bench guest: the median of interleaved rounds of
/// `n=1001` and `n=1`, the difference over 1000.
fn host_call(bench: &Bench) {
    const ROUNDS: usize = 15;
    const PER_ROUND: u64 = 200;
    const LOOP: u64 = 1000;
    let tenant = bench.tenant_on(
        &bench.bench_guest(),
        "loop",
        Limits {
            max_instance_reuse: 1_000_000,
            instance_idle_timeout: Duration::from_secs(3600),
            ..Limits::default()
        },
    );
    let path = |n: u64| format!("/getloop/{KEY}?n={n}");
    bench.rt.block_on(async {
        let kv = format!("/kv/{KEY}");
        let put = bench
            .request(&tenant, Method::PUT, &kv, Bench::value())
            .await;
        assert_eq!(put.0, StatusCode::NO_CONTENT, "{:?}", put.1);
        let read = bench
            .request(&tenant, Method::GET, &path(LOOP + 1), Bytes::new())
            .await;
        let all = (LOOP as usize + 1) * VALUE_BYTES;
        assert_eq!(read, (StatusCode::OK, Bytes::from(all.to_string())));
    });
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (n, into) in [(1, &mut one), (LOOP + 1, &mut many)] {
            let t = bench.time_requests(&tenant, &Method::GET, &path(n), &Bytes::new(), PER_ROUND);
            into.push(t.as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (one, many) = (median(&mut one), median(&mut many));
    println!("\none get host call, {VALUE_BYTES}-byte value, bench guest, kept instance:");
    println!("  n=1     {one:>9.0} ns per request");
    println!("  n={}  {many:>9.0} ns per request", LOOP + 1);
    println!(
        "  get     {:>9.1} ns  ((n={} - n=1) / {LOOP})",
        (many - one) / LOOP as f64,
        LOOP + 1
    );
}

fn benches(c: &mut Criterion) {
    let bench = Bench::new();
    instantiation(c, &bench);
    calls(c, &bench);
    // Only under `cargo bench` (which passes `--bench`), not when
    // `cargo test --benches` runs each bench once as a smoke test.
    if std::env::args().any(|a| a == "--bench") {
        differences(&bench);
        host_call(&bench);
    }
}

criterion_group!(guest, benches);

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    disable_library_backtraces();
    guest();
    Criterion::default().configure_from_args().final_summary();
}

/// As the runner's `main` does: error values must not capture backtraces,
/// whatever `RUST_BACKTRACE` says, or the figures are not the server's.
#[expect(unsafe_code, reason = "set_var before any other thread exists")]
fn disable_library_backtraces() {
    // SAFETY: first thing in main, while the process has one thread.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
}

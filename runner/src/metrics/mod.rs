//! Every metric the runner exports: names, help texts, label sets and
//! histogram buckets live here and nowhere else.
//!
//! Labels come only from bounded sets: tenant (capped, see
//! [`TenantLabels`]), outcome, op, result, kind, limit and quota. Hot paths
//! never look a metric up by name: each tenant holds pre-registered handles,
//! so recording is an atomic add.

use std::time::Duration;

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub mod names;
mod timing;

use crate::limits::{Limit, Limits};
use crate::store::{self, Quota};

pub use self::names::*;
use self::timing::DurationHistogram;
pub use self::timing::Stopwatch;

/// An fsync takes from tens of microseconds (cache) to seconds (a busy
/// disk).
const FSYNC_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Request latency: from the bare path (tens of µs) to the default timeout.
const REQUEST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Instantiation with the pooling allocator takes microseconds.
const INSTANTIATION_BUCKETS: &[f64] = &[
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
    0.025,
];
/// Requests one instance serves in its life: 1 without reuse, up to the
/// largest `max-instance-reuse` with it.
const INSTANCE_REQUEST_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 10_000.0, 100_000.0,
];
/// A key-value call takes well under a microsecond unless it copies a lot
/// (nanoseconds).
const KV_BUCKETS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 100_000, 1_000_000, 10_000_000,
];

/// The runner's own metrics registry: each [`crate::Runner`] has one, so
/// several runners in one process (tests) do not share counters.
///
/// Handles are registered inside [`Recorder::scope`] and keep pointing at
/// this registry afterwards, so the hot path never consults a global.
#[derive(Clone)]
pub struct Recorder {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    log_drops: Arc<std::sync::OnceLock<LogDrops>>,
    /// Tenant labels whose key-value usage has been shown: a label's
    /// gauges appear once it stores something, and stay (at zero once it
    /// stores nothing).
    usage_shown: Arc<parking_lot::Mutex<std::collections::HashSet<String>>>,
    /// `runner_kv_operation_duration_seconds` by op, kept here rather than
    /// in the exporter: it is sampled on every host call ([`timing`]).
    kv_durations: Arc<KvDurations>,
}

type KvDurations = [DurationHistogram; KvOp::ALL.len()];

/// Reads how many log lines the process's log writer has dropped.
type LogDrops = Box<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A fresh registry with every metric described and the build info set.
    pub fn new() -> anyhow::Result<Self> {
        // The TSC clock the host calls time themselves with calibrates on
        // first use (milliseconds): here, not in a tenant's first request.
        timing::calibrate();
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), REQUEST_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(INSTANTIATION_DURATION.into()),
                INSTANTIATION_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full(INSTANCE_REQUESTS.into()),
                INSTANCE_REQUEST_BUCKETS,
            )?
            .set_buckets_for_metric(Matcher::Full(STORE_FSYNC_DURATION.into()), FSYNC_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(OUTBOUND_DURATION.into()), REQUEST_BUCKETS)?
            .build_recorder();
        let this = Self {
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
            process: metrics_process::Collector::default(),
            log_drops: Default::default(),
            usage_shown: Default::default(),
            kv_durations: Arc::new(KvOp::ALL.map(|_| DurationHistogram::new(KV_BUCKETS))),
        };
        this.scope(|| {
            describe();
            this.process.describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // There from the start, so its alert has a series before any
            // outage.
            metrics::counter!(STORE_UNAVAILABLE).absolute(0);
        });
        Ok(this)
    }

    /// Runs `f` with this registry as the recorder for metric macros.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// Reports `dropped()`, the log writer's count of lines it dropped, as
    /// `runner_log_lines_dropped_total` from now on. The writer belongs to
    /// the process, not to a runner, so the binary passes it in.
    pub fn count_log_drops(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.log_drops.set(Box::new(dropped));
    }

    /// Samples the gauges read from state (pool use, each tenant label's
    /// key-value usage, the process figures) and renders the exposition,
    /// with the limits of each tenant that has a label of its own.
    pub fn render<'a>(
        &self,
        engines: &[(&'static str, &wasmtime::Engine)],
        pool_capacity: usize,
        usage: impl Iterator<Item = (String, store::Usage)>,
        limits: impl Iterator<Item = (&'a str, &'a Limits)>,
    ) -> String {
        self.scope(|| {
            self.process.collect();
            sample(engines, pool_capacity);
            if let Some(dropped) = self.log_drops.get() {
                metrics::counter!(LOG_LINES_DROPPED).absolute(dropped());
            }
        });
        let mut text = self.handle.render();
        // The metrics facade has integer counters only, so CPU time is kept
        // in a gauge for its fractions; it is a counter all the same, and
        // says so, as every Prometheus client library does.
        for cpu in [PROCESS_CPU, CPU] {
            text = text.replacen(
                &format!("# TYPE {cpu} gauge"),
                &format!("# TYPE {cpu} counter"),
                1,
            );
        }
        render_kv_durations(&mut text, &self.kv_durations);
        render_usage(&mut text, usage, &mut self.usage_shown.lock());
        render_limits(&mut text, limits);
        text
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the runner build."
    );
    describe_gauge!(TENANTS, "Tenants loaded.");
    describe_gauge!(
        COMPONENTS,
        "Distinct components compiled and held, by digest: those tenants run, and those \
         uploaded or left unused less than --component-grace ago."
    );
    describe_gauge!(
        COMPONENT_CODE_BYTES,
        "Bytes of compiled code of the components held (runner_components)."
    );
    describe_counter!(
        COMPONENT_LOADS,
        "Distinct components made ready to run, by where their code came from: compiled, or \
         read from the compiled-component cache (--cache-dir)."
    );
    describe_counter!(
        TENANT_CHANGES,
        "Tenants created, updated and removed after start-up and at it, by change."
    );
    describe_counter!(
        ADMIN_REQUESTS,
        "Admin API (/v1) requests by result: ok, refused (bad input, 4xx), unauthorized \
         (missing or wrong token), failed (5xx)."
    );
    describe_counter!(REQUESTS, "Tenant requests by outcome.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Tenant request latency, from routing to the response head."
    );
    describe_gauge!(REQUESTS_IN_FLIGHT, "Tenant requests running now.");
    describe_histogram!(
        INSTANTIATION_DURATION,
        Unit::Seconds,
        "Time to instantiate a tenant component for one request."
    );
    describe_counter!(
        INSTANCES_CREATED,
        "Component instances created for tenant requests."
    );
    describe_counter!(
        INSTANCES_REUSED,
        "Tenant requests served by an instance kept from an earlier request (max-instance-reuse)."
    );
    describe_counter!(
        INSTANCES_RECYCLED,
        "Kept instances dropped after a request because their linear memory had grown past the \
         tenant's max-reused-memory."
    );
    describe_gauge!(
        INSTANCES_IDLE,
        "Instances kept between requests, waiting for their tenant's next one."
    );
    describe_histogram!(
        INSTANCE_REQUESTS,
        "Requests one instance served before it was dropped."
    );
    describe_counter!(FUEL_CONSUMED, "Fuel burned by tenant guests.");
    describe_gauge!(
        CPU,
        Unit::Seconds,
        "Time worker threads spent running the tenant's guests (instantiation, guest code and the host calls it makes), measured around each poll with the monotonic clock: CPU time, unless the OS preempted the thread mid-poll."
    );
    describe_counter!(TRAPS, "Guest traps by kind.");
    describe_counter!(LIMIT_HITS, "Requests that ran into a limit, by limit.");
    describe_counter!(
        EPOCH_YIELDS,
        "Times a running guest yielded to the executor at an epoch tick."
    );
    describe_gauge!(
        POOL_INSTANCES_IN_USE,
        "Component instance slots of the pooling allocator in use."
    );
    describe_gauge!(
        POOL_INSTANCES_CAPACITY,
        "Component instance slots of the pooling allocator."
    );
    describe_gauge!(
        POOL_MEMORIES_IN_USE,
        "Linear memory slots of the pooling allocator in use."
    );
    describe_counter!(KV_OPERATIONS, "Key-value calls by op and result.");
    describe_counter!(KV_QUOTA_REJECTIONS, "Key-value writes refused by a quota.");
    describe_counter!(
        CONFIG_READS,
        "Guests' reads of their tenant's configuration by kind: config, secret, or undefined (no such name)."
    );
    describe_counter!(
        OUTBOUND_REQUESTS,
        "Outgoing HTTP requests of tenant guests by outcome: ok, denied_host (not on the tenant's allow-list), denied_address (the address policy), denied_limit (a per-request or connection cap), timeout, error."
    );
    describe_histogram!(
        OUTBOUND_DURATION,
        Unit::Seconds,
        "Outgoing HTTP requests' time to the response head, connecting included."
    );
    describe_counter!(
        OUTBOUND_SENT,
        Unit::Bytes,
        "Outgoing request body bytes sent."
    );
    describe_counter!(
        OUTBOUND_RECEIVED,
        Unit::Bytes,
        "Outgoing response body bytes received."
    );
    describe_gauge!(
        OUTBOUND_CONNECTIONS,
        "Outgoing connections open (in use or idle in the tenant's pool)."
    );
    describe_counter!(
        STORE_UNAVAILABLE,
        "Key-value calls that failed with store-unavailable: the store (Redis, or the data directory's disk) could not be reached or failed."
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because the log writer could not keep up (a slow or full stderr)."
    );
    describe_counter!(
        STORE_COMMITS,
        "Batches the durable store wrote to its data directory (group commits)."
    );
    describe_counter!(
        STORE_WRITES,
        "Key-value writes the durable store wrote to its data directory."
    );
    describe_counter!(
        STORE_FSYNCS,
        "fsyncs of the durable store's data directory."
    );
    describe_histogram!(
        STORE_FSYNC_DURATION,
        Unit::Seconds,
        "Time one fsync of the data directory took."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        "HTTP connections open on the tenant listener."
    );
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Connections closed at once because the connection limit was reached."
    );
    describe_counter!(
        ROUTED,
        "Tenant requests by how they found their tenant: by = host (a host it claims, or a --host-suffix subdomain) or path (/t/{tenant}/)."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed, by listener (tenant, admin) and reason: timeout (past --tls-handshake-timeout) or error (no shared version or cipher, a bad record, a client that refused the certificate, ...)."
    );
    describe_counter!(
        UNROUTED,
        "Requests on the tenant listener that named no tenant or an unknown one (answered 404), or were malformed (400)."
    );
}

/// How tenants appear in the `tenant` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, clap::ValueEnum)]
pub enum TenantLabelMode {
    /// One series per tenant, for the first `--metrics-max-tenants` tenants;
    /// the rest share `tenant="_other"`.
    PerTenant,
    /// Every tenant shares `tenant="_all"`.
    Aggregate,
}

crate::settings::value_enum_setting!(TenantLabelMode, "per-tenant, aggregate");

/// Picks the label value for each tenant, bounding the series count.
#[derive(Clone, Copy, Debug)]
pub struct TenantLabels {
    pub mode: TenantLabelMode,
    pub max_tenants: usize,
}

/// The `outcome` label of `runner_requests_total`: a bounded set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ok,
    Guest4xx,
    Guest5xx,
    Trap,
    FuelExhausted,
    DeadlineExceeded,
    Rejected,
    HostError,
    ClientGone,
}

impl Kind {
    /// A request the guest answered whole, by the status it chose.
    pub fn answered(status: http::StatusCode) -> Kind {
        match status.as_u16() {
            400..=499 => Kind::Guest4xx,
            500..=599 => Kind::Guest5xx,
            _ => Kind::Ok,
        }
    }

    pub const ALL: [Kind; 9] = [
        Kind::Ok,
        Kind::Guest4xx,
        Kind::Guest5xx,
        Kind::Trap,
        Kind::FuelExhausted,
        Kind::DeadlineExceeded,
        Kind::Rejected,
        Kind::HostError,
        Kind::ClientGone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Guest4xx => "guest_4xx",
            Kind::Guest5xx => "guest_5xx",
            Kind::Trap => "trap",
            Kind::FuelExhausted => "fuel_exhausted",
            Kind::DeadlineExceeded => "deadline_exceeded",
            Kind::Rejected => "rejected",
            Kind::HostError => "host_error",
            Kind::ClientGone => "client_gone",
        }
    }
}

/// How a streamed request ended, sent from the guest's task once it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub kind: Kind,
    pub limit: Option<Limit>,
    pub trap: Option<TrapKind>,
}

impl Ended {
    pub const CLIENT_GONE: Ended = Ended {
        kind: Kind::ClientGone,
        limit: None,
        trap: None,
    };
}

/// Why a guest trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    Fuel,
    Deadline,
    Memory,
    Stack,
    Unreachable,
    Other,
}

impl TrapKind {
    const ALL: [TrapKind; 6] = [
        TrapKind::Fuel,
        TrapKind::Deadline,
        TrapKind::Memory,
        TrapKind::Stack,
        TrapKind::Unreachable,
        TrapKind::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            TrapKind::Fuel => "fuel",
            TrapKind::Deadline => "deadline",
            TrapKind::Memory => "memory",
            TrapKind::Stack => "stack",
            TrapKind::Unreachable => "unreachable",
            TrapKind::Other => "other",
        }
    }
}

/// How an outgoing request ended, for the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    Ok,
    /// Not on the tenant's allow-list (or a malformed target).
    DeniedHost,
    /// Resolved only to addresses the address policy refuses.
    DeniedAddress,
    /// Past the tenant's per-request cap or its connection cap.
    DeniedLimit,
    Timeout,
    Error,
}

impl Outbound {
    const ALL: [Outbound; 6] = [
        Outbound::Ok,
        Outbound::DeniedHost,
        Outbound::DeniedAddress,
        Outbound::DeniedLimit,
        Outbound::Timeout,
        Outbound::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outbound::Ok => "ok",
            Outbound::DeniedHost => "denied_host",
            Outbound::DeniedAddress => "denied_address",
            Outbound::DeniedLimit => "denied_limit",
            Outbound::Timeout => "timeout",
            Outbound::Error => "error",
        }
    }
}

/// A key-value call, for the `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    Open,
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    Increment,
    GetMany,
    SetMany,
    DeleteMany,
    /// A compare-and-swap's write (draft2 `swap`); its read counts as `get`.
    Swap,
}

impl KvOp {
    const ALL: [KvOp; 11] = [
        KvOp::Open,
        KvOp::Get,
        KvOp::Set,
        KvOp::Delete,
        KvOp::Exists,
        KvOp::ListKeys,
        KvOp::Increment,
        KvOp::GetMany,
        KvOp::SetMany,
        KvOp::DeleteMany,
        KvOp::Swap,
    ];

    fn as_str(self) -> &'static str {
        match self {
            KvOp::Open => "open",
            KvOp::Get => "get",
            KvOp::Set => "set",
            KvOp::Delete => "delete",
            KvOp::Exists => "exists",
            KvOp::ListKeys => "list_keys",
            KvOp::Increment => "increment",
            KvOp::GetMany => "get_many",
            KvOp::SetMany => "set_many",
            KvOp::DeleteMany => "delete_many",
            KvOp::Swap => "swap",
        }
    }
}

const KV_RESULTS: [&str; 3] = ["ok", "error", "quota"];

/// One tenant label's metric handles, each registered on its first use:
/// a tenant's series appear when something happens to it, so a thousand
/// idle tenants cost a scrape nothing but their limits. After that,
/// recording is an atomic load and an atomic add.
pub struct TenantMetrics {
    requests: [OnceLock<Counter>; Kind::ALL.len()],
    duration: OnceLock<Histogram>,
    in_flight: OnceLock<Gauge>,
    fuel: OnceLock<Counter>,
    cpu: OnceLock<Gauge>,
    instances_created: OnceLock<Counter>,
    instances_reused: OnceLock<Counter>,
    instances_recycled: OnceLock<Counter>,
    traps: [OnceLock<Counter>; TrapKind::ALL.len()],
    limits: [OnceLock<Counter>; Limit::ALL.len()],
    kv_ops: [[OnceLock<Counter>; 3]; KvOp::ALL.len()],
    kv_durations: Arc<KvDurations>,
    kv_quota: [OnceLock<Counter>; Quota::ALL.len()],
    outbound: [OnceLock<Counter>; Outbound::ALL.len()],
    config_reads: [OnceLock<Counter>; 3],
    outbound_duration: OnceLock<Histogram>,
    outbound_sent: OnceLock<Counter>,
    outbound_received: OnceLock<Counter>,
    outbound_connections: OnceLock<Gauge>,
    /// Process-wide, without a tenant label: an outage of the store is
    /// every tenant's.
    store_unavailable: Counter,
    label: String,
    /// Where the handles are registered when first used.
    recorder: Recorder,
}

impl TenantMetrics {
    pub fn new(label: String, recorder: &Recorder) -> Self {
        Self {
            requests: Default::default(),
            duration: OnceLock::new(),
            in_flight: OnceLock::new(),
            fuel: OnceLock::new(),
            cpu: OnceLock::new(),
            instances_created: OnceLock::new(),
            instances_reused: OnceLock::new(),
            instances_recycled: OnceLock::new(),
            traps: Default::default(),
            limits: Default::default(),
            kv_ops: Default::default(),
            kv_durations: recorder.kv_durations.clone(),
            kv_quota: Default::default(),
            outbound: Default::default(),
            config_reads: Default::default(),
            outbound_duration: OnceLock::new(),
            outbound_sent: OnceLock::new(),
            outbound_received: OnceLock::new(),
            outbound_connections: OnceLock::new(),
            store_unavailable: recorder.scope(|| metrics::counter!(STORE_UNAVAILABLE)),
            label,
            recorder: recorder.clone(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The tenant's counter `name`, with `key="value"` beside its tenant.
    fn counter<'a>(
        &self,
        cell: &'a OnceLock<Counter>,
        name: &'static str,
        label: Option<(&'static str, &'static str)>,
    ) -> &'a Counter {
        cell.get_or_init(|| {
            let tenant = self.label.clone();
            self.recorder.scope(|| match label {
                Some((key, value)) => metrics::counter!(name, "tenant" => tenant, key => value),
                None => metrics::counter!(name, "tenant" => tenant),
            })
        })
    }

    fn gauge<'a>(&self, cell: &'a OnceLock<Gauge>, name: &'static str) -> &'a Gauge {
        cell.get_or_init(|| {
            let tenant = self.label.clone();
            self.recorder
                .scope(|| metrics::gauge!(name, "tenant" => tenant))
        })
    }

    pub fn request_started(&self) {
        self.gauge(&self.in_flight, REQUESTS_IN_FLIGHT)
            .increment(1.0);
    }

    /// Records a request's end; only [`crate::outcome`] calls this, once
    /// per request.
    pub fn request_finished(
        &self,
        outcome: Kind,
        limit: Option<Limit>,
        trap: Option<TrapKind>,
        elapsed: Duration,
    ) {
        self.gauge(&self.in_flight, REQUESTS_IN_FLIGHT)
            .decrement(1.0);
        let label = Some(("outcome", outcome.as_str()));
        self.counter(&self.requests[outcome as usize], REQUESTS, label)
            .increment(1);
        self.duration
            .get_or_init(|| {
                let tenant = self.label.clone();
                self.recorder
                    .scope(|| metrics::histogram!(REQUEST_DURATION, "tenant" => tenant))
            })
            .record(elapsed.as_secs_f64());
        self.failed(limit, trap);
    }

    /// Counts the limit and the trap behind a failure.
    pub fn failed(&self, limit: Option<Limit>, trap: Option<TrapKind>) {
        if let Some(limit) = limit {
            let label = Some(("limit", limit.as_str()));
            self.counter(&self.limits[limit as usize], LIMIT_HITS, label)
                .increment(1);
        }
        if let Some(kind) = trap {
            let label = Some(("kind", kind.as_str()));
            self.counter(&self.traps[kind as usize], TRAPS, label)
                .increment(1);
        }
    }

    pub fn fuel_consumed(&self, fuel: u64) {
        self.counter(&self.fuel, FUEL_CONSUMED, None)
            .increment(fuel);
    }

    /// Adds time a worker thread spent running the tenant's guest.
    pub fn cpu(&self, spent: Duration) {
        self.gauge(&self.cpu, CPU).increment(spent.as_secs_f64());
    }

    pub fn instance_created(&self) {
        self.counter(&self.instances_created, INSTANCES_CREATED, None)
            .increment(1);
    }

    pub fn instance_reused(&self) {
        self.counter(&self.instances_reused, INSTANCES_REUSED, None)
            .increment(1);
    }

    /// Counts a kept instance dropped for its grown memory.
    pub fn instance_recycled(&self) {
        self.counter(&self.instances_recycled, INSTANCES_RECYCLED, None)
            .increment(1);
    }

    /// Counts an outgoing request's outcome, and its time to the response
    /// head when it got one.
    pub fn outbound(&self, outcome: Outbound, elapsed: Option<Duration>) {
        let label = Some(("outcome", outcome.as_str()));
        self.counter(&self.outbound[outcome as usize], OUTBOUND_REQUESTS, label)
            .increment(1);
        if let Some(elapsed) = elapsed {
            self.outbound_duration
                .get_or_init(|| {
                    let tenant = self.label.clone();
                    self.recorder
                        .scope(|| metrics::histogram!(OUTBOUND_DURATION, "tenant" => tenant))
                })
                .record(elapsed.as_secs_f64());
        }
    }

    /// Counts a guest's read of a config value or a secret, or of a name
    /// with nothing under it (`None`); never by name.
    pub fn config_read(&self, kind: Option<crate::vars::Kind>) {
        let (cell, label) = match kind {
            Some(crate::vars::Kind::Config) => (0, "config"),
            Some(crate::vars::Kind::Secret) => (1, "secret"),
            None => (2, "undefined"),
        };
        self.counter(
            &self.config_reads[cell],
            CONFIG_READS,
            Some(("kind", label)),
        )
        .increment(1);
    }

    pub fn outbound_sent(&self, bytes: u64) {
        self.counter(&self.outbound_sent, OUTBOUND_SENT, None)
            .increment(bytes);
    }

    pub fn outbound_received(&self, bytes: u64) {
        self.counter(&self.outbound_received, OUTBOUND_RECEIVED, None)
            .increment(bytes);
    }

    /// An outgoing connection opened (`1.0`) or closed (`-1.0`).
    pub fn outbound_connection(&self, change: f64) {
        self.gauge(&self.outbound_connections, OUTBOUND_CONNECTIONS)
            .increment(change);
    }

    /// Counts a key-value call and samples its duration, from `started`.
    pub fn kv_op(&self, op: KvOp, started: Stopwatch, error: Option<&store::Error>) {
        let elapsed = started.elapsed_nanos();
        let result = match error {
            None => 0,
            Some(
                store::Error::Invalid(_) | store::Error::Unsupported(_) | store::Error::Denied(_),
            ) => 1,
            Some(store::Error::Unavailable(_)) => {
                self.store_unavailable.increment(1);
                1
            }
            Some(store::Error::Quota { quota, .. }) => {
                let label = Some(("quota", quota.as_str()));
                self.counter(&self.kv_quota[*quota as usize], KV_QUOTA_REJECTIONS, label)
                    .increment(1);
                2
            }
        };
        self.kv_ops[op as usize][result]
            .get_or_init(|| {
                let tenant = self.label.clone();
                self.recorder.scope(|| {
                    metrics::counter!(KV_OPERATIONS, "tenant" => tenant, "op" => op.as_str(), "result" => KV_RESULTS[result])
                })
            })
            .increment(1);
        self.kv_durations[op as usize].record(elapsed);
    }
}

/// Process-wide handles.
pub struct RunnerMetrics {
    pub instantiation: Histogram,
    pub epoch_yields: Counter,
    pub connections_open: Gauge,
    pub connections_rejected: Counter,
    pub unrouted: Counter,
    pub routed_by_host: Counter,
    pub routed_by_path: Counter,
    pub tls_timed_out: Counter,
    pub tls_failed: Counter,
    pub admin_tls_timed_out: Counter,
    pub admin_tls_failed: Counter,
    pub compiled: Counter,
    pub cached: Counter,
}

impl RunnerMetrics {
    pub fn new() -> Self {
        Self {
            instantiation: metrics::histogram!(INSTANTIATION_DURATION),
            epoch_yields: metrics::counter!(EPOCH_YIELDS),
            connections_open: metrics::gauge!(CONNECTIONS_OPEN),
            connections_rejected: metrics::counter!(CONNECTIONS_REJECTED),
            unrouted: metrics::counter!(UNROUTED),
            routed_by_host: metrics::counter!(ROUTED, "by" => "host"),
            routed_by_path: metrics::counter!(ROUTED, "by" => "path"),
            tls_timed_out: tls_failures("tenant", "timeout"),
            tls_failed: tls_failures("tenant", "error"),
            admin_tls_timed_out: tls_failures("admin", "timeout"),
            admin_tls_failed: tls_failures("admin", "error"),
            compiled: metrics::counter!(COMPONENT_LOADS, "from" => "compiler"),
            cached: metrics::counter!(COMPONENT_LOADS, "from" => "cache"),
        }
    }
}

/// The counter of failed TLS handshakes on `listener` for `reason`.
fn tls_failures(listener: &'static str, reason: &'static str) -> Counter {
    metrics::counter!(TLS_HANDSHAKE_FAILURES, "listener" => listener, "reason" => reason)
}

impl Default for RunnerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The limits an operator compares usage with, as `runner_tenant_limit`
/// samples: written from the tenants served now, so a removed tenant's
/// go with it and none is kept in the registry.
fn render_limits<'a>(text: &mut String, tenants: impl Iterator<Item = (&'a str, &'a Limits)>) {
    use std::fmt::Write as _;
    let mut tenants = tenants.peekable();
    if tenants.peek().is_none() {
        return;
    }
    let _ = write!(
        text,
        "# HELP {TENANT_LIMIT} A tenant's limits, by setting: max_keys and \
         max_store_bytes (compare runner_kv_keys, runner_kv_bytes), max_tenant_in_flight \
         (runner_requests_in_flight), max_memory in bytes, fuel per request, timeout in \
         seconds, max_log_bytes_per_second.\n# TYPE {TENANT_LIMIT} gauge\n"
    );
    for (tenant, l) in tenants {
        for (limit, value) in [
            ("max_keys", l.max_keys as f64),
            ("max_store_bytes", l.max_store_bytes.as_u64() as f64),
            ("max_tenant_in_flight", l.max_tenant_in_flight as f64),
            ("max_memory", l.max_memory.as_u64() as f64),
            ("fuel", l.fuel as f64),
            ("timeout", l.timeout.as_secs_f64()),
            (
                "max_log_bytes_per_second",
                l.max_log_bytes_per_second.as_u64() as f64,
            ),
        ] {
            let _ = writeln!(
                text,
                "{TENANT_LIMIT}{{tenant=\"{tenant}\",limit=\"{limit}\"}} {value}"
            );
        }
    }
}

/// Sets the gauges that are read from state rather than counted: pool use.
fn sample(engines: &[(&'static str, &wasmtime::Engine)], pool_capacity: usize) {
    // One pool per engine: WASIp2 and WASIp3 components each have their
    // own `pool-size` slots.
    for &(kind, engine) in engines {
        if let Some(pool) = engine.pooling_allocator_metrics() {
            metrics::gauge!(POOL_INSTANCES_IN_USE, "pool" => kind)
                .set(pool.component_instances() as f64);
            metrics::gauge!(POOL_MEMORIES_IN_USE, "pool" => kind).set(pool.memories() as f64);
        }
        metrics::gauge!(POOL_INSTANCES_CAPACITY, "pool" => kind).set(pool_capacity as f64);
    }
}

/// Writes `runner_kv_operation_duration_seconds`, a series per op that has
/// been called, once one has.
fn render_kv_durations(text: &mut String, durations: &KvDurations) {
    use std::fmt::Write as _;
    let called = || {
        KvOp::ALL
            .iter()
            .filter(|op| durations[**op as usize].count() > 0)
    };
    if called().next().is_none() {
        return;
    }
    let name = KV_OPERATION_DURATION;
    let help = "Key-value call latency inside the host.";
    let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    for op in called() {
        let labels = format!("op=\"{}\"", op.as_str());
        durations[*op as usize].render(text, name, &labels);
    }
}

/// Each tenant label's key-value usage, written from the tenants served
/// now, so a removed tenant's series end with it: a label appears once it
/// stores something, and stays (at zero once it stores nothing) while a
/// tenant has it.
fn render_usage(
    text: &mut String,
    usage: impl Iterator<Item = (String, store::Usage)>,
    shown: &mut std::collections::HashSet<String>,
) {
    use std::fmt::Write as _;
    let mut sums: std::collections::BTreeMap<String, store::Usage> = Default::default();
    for (label, u) in usage {
        let sum = sums.entry(label).or_default();
        sum.keys += u.keys;
        sum.bytes += u.bytes;
    }
    sums.retain(|label, u| {
        let stored = u.keys > 0 || u.bytes > 0;
        (stored && shown.insert(label.clone())) || shown.contains(label)
    });
    if sums.is_empty() {
        return;
    }
    let keys: fn(&store::Usage) -> u64 = |u| u.keys;
    let bytes: fn(&store::Usage) -> u64 = |u| u.bytes;
    for (name, help, value) in [
        (KV_KEYS, "Keys a tenant holds across its buckets.", keys),
        (KV_BYTES, "Bytes (keys plus values) a tenant holds.", bytes),
    ] {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (label, u) in &sums {
            let _ = writeln!(text, "{name}{{tenant=\"{label}\"}} {}", value(u));
        }
    }
}

//! A tenant-aware HTTP load generator and correctness checker for the runner.
//!
//! `run(config, shutdown)` drives `--concurrency` HTTP/1.1 keep-alive
//! connections, one worker task each, spread over `--threads` load threads
//! that each run a single-threaded tokio runtime, against the runner's
//! `/t/{tenant}/…` routes (the default guest's built-in ops, or request
//! templates), and returns a [`Report`]; `main` only parses the command
//! line, prints, and maps the verdict to an exit status.
//!
//! Layout:
//! - `config`: clap `Args` and the validated `Config` built from them.
//! - `mix`: the built-in ops (default guest routes) and their weighted choice.
//! - `template`: request templates (a URL, or a TOML file), their paths with
//!   `{tenant}` and `{key}`, expected statuses and weighted choice.
//! - `tenant`: the tenant set of `--tenants` (count, list or pattern).
//! - `dist`: uniform and Zipf (inverse-CDF table) index distributions.
//! - `conn`: a minimal HTTP/1.1 client connection (httparse over a tokio
//!   `TcpStream`) driven inside its worker; URLs.
//! - `worker`: the request loop, closed or open (intended send times).
//! - `verify`: predictable values and counters, checked under load.
//! - `report`: per-worker statistics, the merged report, its table.
//! - `live`: the once-a-second progress line.
//! - `scrape`: the runner's Prometheus metrics before and after.

mod config;
mod conn;
mod dist;
mod live;
mod mix;
mod report;
mod scrape;
mod template;
mod tenant;
mod verify;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use config::{Args, Config, JsonOut, StopAfter, Workload};
pub use conn::{Endpoint, Unreachable};
pub use dist::{Dist, DistKind, Zipf};
pub use mix::{Mix, Op};
pub use report::{ErrorKinds, Latency, Report, RouteReport, Routes, Verdict};
pub use scrape::{Exposition, RunnerFigures, histogram_quantile};
pub use template::{Expect, MAX_TEMPLATES, PathTemplate, Template, Templates};
pub use tenant::TenantSet;
pub use verify::VerifyCounts;

use crate::live::Live;
use crate::report::Stats;
use crate::worker::{Plan, Target, Worker};

/// How long `run` tries to open a first connection to each target before
/// it gives up with [`Unreachable`]: a server still starting gets this long,
/// a dead URL is reported this quickly.
pub const REACH_WITHIN: Duration = Duration::from_secs(1);

/// Runs the load described by `config` until its duration or request count
/// is reached, or `shutdown` completes (then the report covers what ran and
/// says it was interrupted).
///
/// Errors for setup failures: [`Unreachable`] when a target does not
/// resolve or takes no connection within [`REACH_WITHIN`]. Failed requests
/// once the run is under way are counted in the report instead.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<Report> {
    // `-H` headers go on each connection once; a `Host` among them replaces
    // the target's.
    let (host, others): (Vec<_>, Vec<_>) = config
        .headers
        .iter()
        .cloned()
        .partition(|(name, _)| name == http::header::HOST);
    let extra = template::render_headers(&others);
    let mut targets = Vec::with_capacity(config.targets.len());
    for (target, tls) in config.targets.iter().zip(&config.tls) {
        let addr = target.reach(REACH_WITHIN).await?;
        let mut headers = match host.last() {
            Some((_, value)) => template::render_headers(&[(http::header::HOST, value.clone())]),
            None => format!("Host: {}\r\n", target.authority()).into_bytes(),
        };
        headers.extend_from_slice(&extra);
        targets.push(Target {
            addr,
            headers,
            prefix: target.path.clone(),
            tls: tls.clone(),
        });
    }
    let before = match &config.scrape {
        Some(endpoint) => Some(scrape::fetch(endpoint, config.timeout).await),
        None => None,
    };

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let live = config.live.then(|| Live::new(start, measure_start));
    let routes = config.workload.route_count();
    let plan = Arc::new(Plan {
        targets,
        tenants: Dist::new(config.tenant_dist, config.tenants.len(), config.zipf_s),
        tenant_names: config.tenants.clone(),
        keys: Dist::new(config.key_dist, config.keys, config.zipf_s),
        workload: config.workload.clone(),
        value_size: config.value_size,
        batch_size: config.batch_size,
        bucket: config.bucket.clone(),
        verify_run: config.verify.then(rand::random),
        timeout: config.timeout,
        concurrency: config.concurrency as u64,
        rate: config.rate,
        start,
        measure_start,
        end: match config.stop_after {
            StopAfter::Duration(d) => Some(measure_start + d),
            StopAfter::Requests(_) => None,
        },
        requests: match config.stop_after {
            StopAfter::Requests(n) => Some(n),
            StopAfter::Duration(_) => None,
        },
        tickets: AtomicU64::new(0),
        seed: config.seed,
        live: live.clone(),
    });

    // Thread per core, as wrk does: each load thread runs its own
    // single-threaded runtime with a fixed share of the connections, so no
    // task migrates and no wake-up crosses threads. This task only waits.
    let threads = config.threads.min(config.concurrency);
    let mut stops = Vec::with_capacity(config.concurrency);
    let mut groups: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for id in 0..config.concurrency {
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        groups[id % threads].push((Worker::new(Arc::clone(&plan), id as u32), stopped));
    }
    let mut results = Vec::with_capacity(threads);
    for (n, group) in groups.into_iter().enumerate() {
        let (done, result) = oneshot::channel();
        results.push(result);
        std::thread::Builder::new()
            .name(format!("loadgen-{n}"))
            .spawn(move || {
                // The receiver is gone only if `run` itself was dropped.
                let _ = done.send(drive(group, routes));
            })
            .context("starting a load thread")?;
    }
    let printer = live.map(|l| tokio::spawn(l.print_every_second()));

    let joined = async move {
        let mut total = Stats::new(routes);
        for result in results {
            let stats = result.await.context("a load thread died")??;
            total.merge(&stats);
        }
        anyhow::Ok(total)
    };
    tokio::pin!(joined);
    tokio::pin!(shutdown);
    let (stats, interrupted) = tokio::select! {
        stats = &mut joined => (stats, false),
        () = &mut shutdown => {
            for stop in stops.drain(..) {
                // A worker that already finished has dropped its receiver.
                let _ = stop.send(());
            }
            (joined.await, true)
        }
    };
    // The senders must live until the workers are joined: dropping one
    // stops its worker.
    drop(stops);
    if let Some(printer) = printer {
        printer.abort();
        Live::clear();
    }
    let stats = stats?;

    let runner = match (before, &config.scrape) {
        (Some(before), Some(endpoint)) => {
            let after = scrape::fetch(endpoint, config.timeout).await;
            Some(RunnerFigures::from_scrapes(
                endpoint.to_string(),
                before,
                after,
            ))
        }
        _ => None,
    };
    Ok(Report::new(
        &config,
        &stats,
        measure_start,
        interrupted,
        runner,
    ))
}

/// Runs one load thread's workers to the end on a single-threaded runtime.
fn drive(workers: Vec<(Worker, oneshot::Receiver<()>)>, routes: usize) -> anyhow::Result<Stats> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a load thread's runtime")?;
    runtime.block_on(async move {
        let tasks: Vec<_> = workers
            .into_iter()
            .map(|(worker, stop)| tokio::spawn(worker.run(stop)))
            .collect();
        let mut total = Stats::new(routes);
        for task in tasks {
            total.merge(&task.await.context("a worker task failed")?);
        }
        Ok(total)
    })
}

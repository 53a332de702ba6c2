//! Results: per-worker statistics merged into one `Report`, shown as a table
//! for people (`Display`) and serialised as JSON for machines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use tokio::time::Instant;

use crate::config::Config;
use crate::scrape::RunnerFigures;
use crate::verify::VerifyCounts;

/// Highest latency the histogram holds exactly, in microseconds (one hour);
/// anything slower is recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Why a request got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection failed while sending or receiving.
    Io,
}

/// A fresh latency histogram: microseconds, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("bounds are constant and valid: 1 ≤ 1h in µs, 3 significant digits")
}

/// What one worker measured of one route (a built-in op or a template).
pub(crate) struct RouteStats {
    /// Measured requests, errors included.
    pub requests: u64,
    pub errors: u64,
    /// Latency of the measured requests that got a response, in µs; made at
    /// the first, so a route never sent costs no memory.
    pub histogram: Option<Histogram<u64>>,
}

impl RouteStats {
    fn new() -> RouteStats {
        RouteStats {
            requests: 0,
            errors: 0,
            histogram: None,
        }
    }

    /// Counts one measured request, and its latency if it got a response.
    #[inline]
    pub fn record(&mut self, latency_us: Option<u64>, error: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        if let Some(us) = latency_us {
            self.histogram
                .get_or_insert_with(histogram)
                .saturating_record(us);
        }
    }

    fn merge(&mut self, other: &RouteStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        if let Some(h) = &other.histogram {
            self.histogram
                .get_or_insert_with(histogram)
                .add(h)
                .expect("histograms share the same bounds");
        }
    }
}

/// What one worker measured; merged into the report at the end.
pub(crate) struct Stats {
    /// Indexed by route (see `Workload::route_count`).
    pub routes: Vec<RouteStats>,
    pub by_status: BTreeMap<u16, u64>,
    /// Indexed by `ErrorKind as usize`.
    pub by_kind: [u64; 3],
    pub verify: VerifyCounts,
    pub warmup_requests: u64,
    /// When the last measured request completed.
    pub last_done: Option<Instant>,
}

impl Stats {
    /// Empty statistics for `routes` routes.
    pub fn new(routes: usize) -> Stats {
        Stats {
            routes: (0..routes).map(|_| RouteStats::new()).collect(),
            by_status: BTreeMap::new(),
            by_kind: [0; 3],
            verify: VerifyCounts::default(),
            warmup_requests: 0,
            last_done: None,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.routes.iter_mut().zip(&other.routes) {
            a.merge(b);
        }
        for (&status, &n) in &other.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind) {
            *a += b;
        }
        self.verify.add(&other.verify);
        self.warmup_requests += other.warmup_requests;
        self.last_done = self.last_done.max(other.last_done);
    }
}

/// Latency percentiles in microseconds, over requests that got a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Responses the figures are drawn from.
    pub samples: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One route's figures: a built-in op's or a template's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RouteReport {
    /// Measured requests, errors included.
    pub requests: u64,
    pub errors: u64,
    pub latency: Latency,
}

/// Per-route figures in the order the routes were given (the mix's op
/// order, or the templates'); serialised as a JSON object keyed by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes(pub Vec<(String, RouteReport)>);

impl Routes {
    pub fn get(&self, name: &str) -> Option<&RouteReport> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RouteReport)> {
        self.0.iter().map(|(n, r)| (n.as_str(), r))
    }
}

impl Serialize for Routes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, route) in &self.0 {
            map.serialize_entry(name, route)?;
        }
        map.end()
    }
}

/// Errors without an HTTP response, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorKinds {
    pub connect: u64,
    pub timeout: u64,
    pub io: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    /// The seed of the run's random choices: `--seed` repeats them.
    pub seed: u64,
    /// The tenants requests went to, in `--tenants` syntax (`t{0..99}`);
    /// absent when no request names a tenant.
    pub tenants: Option<String>,
    /// `closed` (next request when the last is answered) or `open` (`--rate`).
    pub schedule: &'static str,
    pub concurrency: usize,
    /// `--rate`, for an open loop.
    pub requested_rate: Option<f64>,
    /// Measured requests per second.
    pub achieved_rate: f64,
    /// From the end of the warm-up to the last measured response.
    pub elapsed_seconds: f64,
    pub warmup_seconds: f64,
    /// Requests sent during the warm-up, not counted below.
    pub warmup_requests: u64,
    /// Measured requests, errors included.
    pub requests: u64,
    pub successes: u64,
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Over every route.
    pub latency: Latency,
    /// Responses whose status was not the one the route expects, by status.
    pub errors_by_status: BTreeMap<u16, u64>,
    pub errors_by_kind: ErrorKinds,
    /// Per op in the mix, or per template.
    pub routes: Routes,
    /// Present with `--verify`.
    pub verify: Option<VerifyCounts>,
    /// Present with `--scrape`.
    pub runner: Option<RunnerFigures>,
    /// Stopped early (Ctrl-C): the figures cover the part that ran.
    pub interrupted: bool,
}

/// How a run ends, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Requests were sent but not one got a response; this outranks the
    /// others.
    NoResponse,
    /// The error rate exceeded `--max-error-rate`.
    TooManyErrors,
    /// `--verify` found a violation; this outranks `TooManyErrors`.
    VerifyFailed,
}

impl Report {
    pub(crate) fn new(
        config: &Config,
        stats: &Stats,
        measure_start: Instant,
        interrupted: bool,
        runner: Option<RunnerFigures>,
    ) -> Report {
        let elapsed = stats.last_done.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(measure_start)
        });
        let requests: u64 = stats.routes.iter().map(|r| r.requests).sum();
        let errors: u64 = stats.routes.iter().map(|r| r.errors).sum();
        let ratio = |n: u64, d: f64| if d > 0.0 { n as f64 / d } else { 0.0 };
        let mut all = histogram();
        let mut routes = Vec::new();
        for (index, name) in config.workload.routes() {
            let route = &stats.routes[index];
            if let Some(h) = &route.histogram {
                all.add(h).expect("histograms share the same bounds");
            }
            routes.push((
                name,
                RouteReport {
                    requests: route.requests,
                    errors: route.errors,
                    latency: route
                        .histogram
                        .as_ref()
                        .map(Latency::from_histogram)
                        .unwrap_or_default(),
                },
            ));
        }
        Report {
            seed: config.seed,
            tenants: config
                .workload
                .uses_tenant()
                .then(|| config.tenants.to_string()),
            target: config
                .targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            schedule: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            concurrency: config.concurrency,
            requested_rate: config.rate,
            achieved_rate: ratio(requests, elapsed.as_secs_f64()),
            elapsed_seconds: elapsed.as_secs_f64(),
            warmup_seconds: config.warmup.as_secs_f64(),
            warmup_requests: stats.warmup_requests,
            requests,
            successes: requests - errors,
            errors,
            error_rate: ratio(errors, requests as f64),
            latency: Latency::from_histogram(&all),
            errors_by_status: stats.by_status.clone(),
            errors_by_kind: ErrorKinds {
                connect: stats.by_kind[ErrorKind::Connect as usize],
                timeout: stats.by_kind[ErrorKind::Timeout as usize],
                io: stats.by_kind[ErrorKind::Io as usize],
            },
            routes: Routes(routes),
            verify: config.verify.then_some(stats.verify),
            runner,
            interrupted,
        }
    }

    /// Judges the run: no response at all first, then verify violations,
    /// then the error rate.
    pub fn verdict(&self, max_error_rate: Option<f64>) -> Verdict {
        let k = &self.errors_by_kind;
        if self.requests > 0 && k.connect + k.timeout + k.io == self.requests {
            Verdict::NoResponse
        } else if self.verify.is_some_and(|v| v.violations() > 0) {
            Verdict::VerifyFailed
        } else if max_error_rate.is_some_and(|max| self.error_rate > max) {
            Verdict::TooManyErrors
        } else {
            Verdict::Pass
        }
    }
}

/// Microseconds as milliseconds with three decimals.
struct Ms(u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.3}", self.0 as f64 / 1000.0);
        f.pad(&text)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target      {}  ({} loop, {} connections)",
            self.target, self.schedule, self.concurrency
        )?;
        if self.interrupted {
            writeln!(f, "interrupted: partial results")?;
        }
        writeln!(f, "seed        {}", self.seed)?;
        if let Some(tenants) = &self.tenants {
            writeln!(f, "tenants     {tenants}")?;
        }
        writeln!(
            f,
            "measured    {:.2} s after {:.2} s warm-up ({} warm-up requests left out)",
            self.elapsed_seconds, self.warmup_seconds, self.warmup_requests
        )?;
        writeln!(f, "requests    {}", self.requests)?;
        match self.requested_rate {
            Some(r) => writeln!(
                f,
                "rate        {:.1} req/s achieved, {r:.1} req/s requested",
                self.achieved_rate
            )?,
            None => writeln!(f, "throughput  {:.1} req/s", self.achieved_rate)?,
        }
        writeln!(
            f,
            "errors      {} ({:.3}%)",
            self.errors,
            self.error_rate * 100.0
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "\nlatency ms  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p99", "p99.9", "max", "mean"
        )?;
        writeln!(
            f,
            "            {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.3}",
            Ms(l.p50_us),
            Ms(l.p90_us),
            Ms(l.p99_us),
            Ms(l.p999_us),
            Ms(l.max_us),
            l.mean_us / 1000.0
        )?;
        let width = self
            .routes
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0)
            .max("route".len());
        writeln!(
            f,
            "\n{:<width$} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "route", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )?;
        for (name, r) in self.routes.iter() {
            let l = &r.latency;
            writeln!(
                f,
                "{name:<width$} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
                r.requests,
                r.errors,
                Ms(l.p50_us),
                Ms(l.p90_us),
                Ms(l.p99_us),
                Ms(l.max_us)
            )?;
        }
        if self.errors > 0 {
            let k = &self.errors_by_kind;
            write!(
                f,
                "\nerrors      connect {}, timeout {}, io {}",
                k.connect, k.timeout, k.io
            )?;
            for (status, n) in &self.errors_by_status {
                write!(f, ", status {status} ×{n}")?;
            }
            writeln!(f)?;
        }
        if let Some(v) = &self.verify {
            writeln!(
                f,
                "\nverify      {}: lost_writes {}, stale_reads {}, wrong_tenant {}, \
                 bad_increments {}, corrupt_values {} ({} reads, {} increments checked)",
                if v.violations() == 0 { "ok" } else { "FAILED" },
                v.lost_writes,
                v.stale_reads,
                v.wrong_tenant,
                v.bad_increments,
                v.corrupt_values,
                v.checked_reads,
                v.checked_increments
            )?;
        }
        if let Some(r) = &self.runner {
            let figure = |v: Option<f64>, digits: usize| match v {
                Some(v) => format!("{v:.digits$}"),
                None => "absent".to_owned(),
            };
            writeln!(f, "\nrunner      {}", r.url)?;
            writeln!(f, "  requests            {}", figure(r.requests, 0))?;
            writeln!(f, "  fuel per request    {}", figure(r.fuel_per_request, 1))?;
            writeln!(f, "  traps               {}", figure(r.traps, 0))?;
            writeln!(
                f,
                "  instantiation p99   {}",
                match r.instantiation_p99_seconds {
                    Some(s) => format!("{:.3} ms", s * 1000.0),
                    None => "absent".to_owned(),
                }
            )?;
            for note in &r.notes {
                writeln!(f, "  note: {note}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::Op;

    /// 100 `get` requests, the first `errors` of them answered with 500,
    /// answered in 1 … 100 ms; `violations` verify violations.
    fn report(errors: u64, violations: u64) -> Report {
        let config = crate::config::Config::from_args([
            "loadgen",
            "--mix=get=1",
            "--verify",
            "--seed=42",
            "--tenants=shop-{1..3}",
        ])
        .expect("valid");
        let mut stats = Stats::new(config.workload.route_count());
        for ms in 1..=100 {
            stats.routes[Op::Get as usize].record(Some(ms * 1000), ms <= errors);
        }
        stats.by_status.insert(500, errors);
        stats.verify.lost_writes = violations;
        Report::new(&config, &stats, Instant::now(), false, None)
    }

    #[test]
    fn verdict_ranks_verify_over_error_rate() {
        assert_eq!(report(0, 0).verdict(Some(0.0)), Verdict::Pass);
        assert_eq!(report(1, 0).verdict(Some(0.01)), Verdict::Pass);
        assert_eq!(report(2, 0).verdict(Some(0.01)), Verdict::TooManyErrors);
        assert_eq!(report(2, 0).verdict(None), Verdict::Pass);
        assert_eq!(report(2, 1).verdict(Some(0.01)), Verdict::VerifyFailed);
        assert_eq!(report(0, 1).verdict(None), Verdict::VerifyFailed);
    }

    #[test]
    fn no_response_at_all_outranks_everything() {
        let config = crate::config::Config::from_args(["loadgen", "--mix=hello=1"]).expect("valid");
        let mut stats = Stats::new(config.workload.route_count());
        for _ in 0..5 {
            stats.routes[Op::Hello as usize].record(None, true);
        }
        stats.by_kind[ErrorKind::Connect as usize] = 3;
        stats.by_kind[ErrorKind::Timeout as usize] = 2;
        let r = Report::new(&config, &stats, Instant::now(), false, None);
        assert_eq!(r.verdict(None), Verdict::NoResponse);
        // One answer, even an error status, is a response.
        stats.routes[Op::Hello as usize].record(Some(10), true);
        stats.by_status.insert(503, 1);
        let r = Report::new(&config, &stats, Instant::now(), false, None);
        assert_eq!(r.verdict(None), Verdict::Pass);
        // Nothing sent at all is not "no response".
        let empty = Stats::new(config.workload.route_count());
        let r = Report::new(&config, &empty, Instant::now(), false, None);
        assert_eq!(r.verdict(None), Verdict::Pass);
    }

    #[test]
    fn table_and_json_carry_the_figures() {
        let r = report(2, 0);
        let table = r.to_string();
        assert!(table.contains("requests    100"), "{table}");
        assert!(table.contains("errors      2 (2.000%)"), "{table}");
        assert!(table.contains("verify      ok"), "{table}");
        assert!(table.contains("seed        42\n"), "{table}");
        assert!(table.contains("tenants     shop-{1..3}\n"), "{table}");
        // Per route: counts and p50 / p90 / p99 / max in ms.
        assert!(
            table.contains(
                "route   requests   errors    p50 ms    p90 ms    p99 ms    max ms\n\
                 get          100        2    50.015    90.047    99.007   100.031\n"
            ),
            "{table}"
        );
        let json = serde_json::to_value(&r).expect("serialisable");
        assert_eq!(json["requests"], 100);
        assert_eq!(json["seed"], 42);
        assert_eq!(json["tenants"], "shop-{1..3}");
        assert_eq!(json["routes"]["get"]["requests"], 100);
        assert_eq!(json["routes"]["get"]["errors"], 2);
        assert_eq!(json["routes"]["get"]["latency"]["samples"], 100);
        assert_eq!(json["routes"]["get"]["latency"]["p50_us"], 50015);
        assert_eq!(json["latency"]["max_us"], 100031);
        assert_eq!(json["verify"]["lost_writes"], 0);
        assert_eq!(json["schedule"], "closed");
    }
}

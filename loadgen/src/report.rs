//! Results: per-worker statistics merged into one `Report`, shown as a table
//! for people (`Display`) and serialised as JSON for machines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::Config;
use crate::mix::Op;
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

/// Request and error counts of one op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub requests: u64,
    pub errors: u64,
}

/// What one worker measured; merged into the report at the end.
pub(crate) struct Stats {
    /// Latency of every measured request that got a response, in µs.
    pub histogram: Histogram<u64>,
    pub ops: [OpCounts; Op::ALL.len()],
    pub by_status: BTreeMap<u16, u64>,
    /// Indexed by `ErrorKind as usize`.
    pub by_kind: [u64; 3],
    pub verify: VerifyCounts,
    pub warmup_requests: u64,
    /// When the last measured request completed.
    pub last_done: Option<Instant>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            histogram: histogram(),
            ops: [OpCounts::default(); Op::ALL.len()],
            by_status: BTreeMap::new(),
            by_kind: [0; 3],
            verify: VerifyCounts::default(),
            warmup_requests: 0,
            last_done: None,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share the same bounds");
        for (a, b) in self.ops.iter_mut().zip(&other.ops) {
            a.requests += b.requests;
            a.errors += b.errors;
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
    pub latency: Latency,
    /// Responses whose status was not the one the op expects, by status.
    pub errors_by_status: BTreeMap<u16, u64>,
    pub errors_by_kind: ErrorKinds,
    /// Per op in the mix.
    pub ops: BTreeMap<&'static str, OpCounts>,
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
        let requests: u64 = stats.ops.iter().map(|o| o.requests).sum();
        let errors: u64 = stats.ops.iter().map(|o| o.errors).sum();
        let ratio = |n: u64, d: f64| if d > 0.0 { n as f64 / d } else { 0.0 };
        let mut ops = BTreeMap::new();
        for op in config.mix.ops() {
            ops.insert(op.name(), stats.ops[op as usize]);
        }
        Report {
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
            latency: Latency::from_histogram(&stats.histogram),
            errors_by_status: stats.by_status.clone(),
            errors_by_kind: ErrorKinds {
                connect: stats.by_kind[ErrorKind::Connect as usize],
                timeout: stats.by_kind[ErrorKind::Timeout as usize],
                io: stats.by_kind[ErrorKind::Io as usize],
            },
            ops,
            verify: config.verify.then_some(stats.verify),
            runner,
            interrupted,
        }
    }

    /// Judges the run: verify violations first, then the error rate.
    pub fn verdict(&self, max_error_rate: Option<f64>) -> Verdict {
        if self.verify.is_some_and(|v| v.violations() > 0) {
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
        writeln!(f, "\nop          {:>12} {:>9}", "requests", "errors")?;
        for (name, c) in &self.ops {
            writeln!(f, "{name:<12}{:>12} {:>9}", c.requests, c.errors)?;
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

    fn report(errors: u64, violations: u64) -> Report {
        let mut stats = Stats::new();
        stats.ops[Op::Get as usize] = OpCounts {
            requests: 100,
            errors,
        };
        stats.verify.lost_writes = violations;
        let config = crate::config::Config::from_args(["loadgen", "--mix=get=1", "--verify"])
            .expect("valid");
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
    fn table_and_json_carry_the_figures() {
        let r = report(2, 0);
        let table = r.to_string();
        assert!(table.contains("requests    100"), "{table}");
        assert!(table.contains("errors      2 (2.000%)"), "{table}");
        assert!(table.contains("verify      ok"), "{table}");
        let json = serde_json::to_value(&r).expect("serialisable");
        assert_eq!(json["requests"], 100);
        assert_eq!(json["ops"]["get"]["errors"], 2);
        assert_eq!(json["verify"]["lost_writes"], 0);
        assert_eq!(json["schedule"], "closed");
    }
}

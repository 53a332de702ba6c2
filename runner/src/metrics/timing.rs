//! Timings taken on every host call: a clock read straight from the TSC,
//! and a histogram of fixed buckets kept by the runner.
//!
//! A key-value `get` costs about 320 ns in all; through `quanta::Instant`
//! and the exporter's histogram its timing took a fifth of that: three
//! clock readings (the exporter stamps each sample with one of its own),
//! each behind a thread-local lookup, and a sample pushed onto a lock-free
//! list under an epoch guard, drained and bucketed only at a scrape. Here
//! a timing is two `rdtsc`s and a sample two relaxed atomic adds
//! (BENCHMARKS.md, "Host-call timings without the exporter's histogram").

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// quanta's clock, read directly: `quanta::Instant::now` looks for a
/// thread-local override and scales every reading; a [`Stopwatch`] scales
/// only the difference. Calibrated once, on first use (milliseconds).
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// Calibrates the clock now rather than in a tenant's first request.
pub fn calibrate() {
    LazyLock::force(&CLOCK);
}

/// A moment on the TSC clock (the monotonic clock where the CPU has no
/// invariant TSC), for timing what runs on one thread.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(u64);

impl Stopwatch {
    #[inline]
    pub fn now() -> Self {
        Self(CLOCK.raw())
    }

    /// Time since [`Stopwatch::now`]; zero if the clock went backwards.
    #[inline]
    pub fn elapsed(self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos())
    }

    #[inline]
    pub fn elapsed_nanos(self) -> u64 {
        CLOCK.delta_as_nanos(self.0, CLOCK.raw())
    }
}

/// A Prometheus histogram of durations with fixed buckets: a sample is an
/// add to its bucket and one to the sum, and a scrape reads them.
pub struct DurationHistogram {
    /// Upper bounds (`le`), in nanoseconds, ascending.
    bounds: &'static [u64],
    /// A count per bound, then one for the samples past the last.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.is_sorted());
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn record(&self, nanos: u64) {
        // The first bound at or above the sample: Prometheus's `le`.
        let bucket = self.bounds.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the series `{name}_bucket`, `_sum` and `_count` with
    /// `labels` (`key="value"` pairs, comma-separated), buckets cumulative
    /// and in seconds. A scrape during a sample may see its count without
    /// its sum, as with any Prometheus client's histogram.
    pub fn render(&self, text: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(&bound) => seconds(bound).to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(text, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = seconds(self.sum_nanos.load(Ordering::Relaxed));
        let _ = writeln!(text, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(text, "{name}_count{{{labels}}} {cumulative}");
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_counts_in_the_first_bucket_at_or_above_it_and_buckets_are_cumulative() {
        let histogram = DurationHistogram::new(&[100, 1_000]);
        for nanos in [0, 100, 101, 1_000, 5_000, 7_000] {
            histogram.record(nanos);
        }
        let mut text = String::new();
        histogram.render(&mut text, "x_seconds", "op=\"get\"");
        assert_eq!(
            text,
            "x_seconds_bucket{op=\"get\",le=\"0.0000001\"} 2\n\
             x_seconds_bucket{op=\"get\",le=\"0.000001\"} 4\n\
             x_seconds_bucket{op=\"get\",le=\"+Inf\"} 6\n\
             x_seconds_sum{op=\"get\"} 0.000013201\n\
             x_seconds_count{op=\"get\"} 6\n"
        );
        assert_eq!(histogram.count(), 6);
    }

    #[test]
    fn a_stopwatch_measures_what_passes() {
        let started = Stopwatch::now();
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(19) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
    }
}

//! The progress line on stderr, rewritten each second: request rate, p99 and
//! errors over the last second.
//!
//! Workers count into a local `Buffer` and hand it over every 200 ms, so the
//! shared lock is taken a few times a second per worker, never per request.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::report::histogram;

/// How often a worker hands its buffer over.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// What the workers handed over since the line was last printed.
struct Window {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
}

/// Shared between the workers and the printer.
pub(crate) struct Live {
    start: Instant,
    measure_start: Instant,
    window: Mutex<Window>,
}

/// One worker's counts since its last hand-over.
pub(crate) struct Buffer {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
    next_flush: Instant,
}

impl Live {
    pub fn new(start: Instant, measure_start: Instant) -> Arc<Live> {
        Arc::new(Live {
            start,
            measure_start,
            window: Mutex::new(Window {
                histogram: histogram(),
                requests: 0,
                errors: 0,
            }),
        })
    }

    pub fn buffer(&self) -> Buffer {
        Buffer {
            histogram: histogram(),
            requests: 0,
            errors: 0,
            next_flush: Instant::now() + FLUSH_EVERY,
        }
    }

    /// Counts one request (`latency_us` if it got a response); hands the
    /// buffer over when it is due.
    pub fn record(&self, buffer: &mut Buffer, latency_us: Option<u64>, error: bool, now: Instant) {
        buffer.requests += 1;
        buffer.errors += u64::from(error);
        if let Some(us) = latency_us {
            buffer.histogram.saturating_record(us);
        }
        if now >= buffer.next_flush {
            self.flush(buffer, now);
        }
    }

    pub fn flush(&self, buffer: &mut Buffer, now: Instant) {
        {
            // A poisoned lock only means a printer panicked; the counts are fine.
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            w.histogram
                .add(&buffer.histogram)
                .expect("histograms share the same bounds");
            w.requests += buffer.requests;
            w.errors += buffer.errors;
        }
        buffer.histogram.reset();
        buffer.requests = 0;
        buffer.errors = 0;
        buffer.next_flush = now + FLUSH_EVERY;
    }

    /// Prints the line every second until the task is aborted.
    pub async fn print_every_second(self: Arc<Live>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = Instant::now();
        let mut total_errors = 0;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let (requests, errors, p99_us) = {
                let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
                let p99 = w.histogram.value_at_quantile(0.99);
                w.histogram.reset();
                let out = (w.requests, w.errors, p99);
                w.requests = 0;
                w.errors = 0;
                out
            };
            total_errors += errors;
            let rate = requests as f64 / (now - last).as_secs_f64();
            last = now;
            let phase = if now < self.measure_start {
                " warm-up"
            } else {
                ""
            };
            let mut err = std::io::stderr().lock();
            // A failed write to the terminal is not worth stopping the run for.
            let _ = write!(
                err,
                "\r\x1b[2K[{:>5.0}s{phase}] {rate:>10.0} req/s   p99 {:>8.3} ms   errors {total_errors}",
                (now - self.start).as_secs_f64(),
                p99_us as f64 / 1000.0,
            );
            let _ = err.flush();
        }
    }

    /// Clears the progress line before the report is printed.
    pub fn clear() {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

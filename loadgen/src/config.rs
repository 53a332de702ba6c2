//! Command-line arguments (`Args`, parsed by clap) and the validated run
//! configuration (`Config`) built from them. Everything is checked here,
//! before a socket is opened.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;

use crate::conn::Endpoint;
use crate::dist::DistKind;
use crate::mix::Mix;

/// Largest key space or tenant count a Zipf table is built for (8 bytes each).
const MAX_ZIPF_TABLE: usize = 10_000_000;

/// Drive the runner's tenants over HTTP/1.1 keep-alive connections and report
/// throughput, latency (HdrHistogram, microseconds) and errors.
///
/// Exit status: 0 on success, 1 on a usage or setup error, 2 when the error
/// rate exceeds --max-error-rate, 3 when --verify found a correctness
/// violation.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Base URL of the runner's tenant ingress. Several, comma-separated,
    /// for runners that share one store: each connection sends its requests
    /// to each in turn, so with --verify a write through one runner is read
    /// back through another.
    #[arg(long, env = "LOADGEN_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// Number of tenants; requests go to t0 … t{N-1}.
    #[arg(long, env = "LOADGEN_TENANTS", default_value_t = 100)]
    pub tenants: usize,

    /// How a request's tenant is chosen (zipf: t0 is the hottest).
    #[arg(long, value_enum, default_value_t = DistKind::Uniform)]
    pub tenant_dist: DistKind,

    /// Exponent of the Zipf distributions (0 is uniform; larger is more skewed).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,

    /// Operation mix as op=weight pairs. Ops: hello, get, set, delete, incr,
    /// list, batch (batch-get, batch-set and batch-delete in equal parts), or
    /// those three by name.
    #[arg(long, env = "LOADGEN_MIX", default_value = "get=80,set=20")]
    pub mix: String,

    /// Key-space size per tenant.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,

    /// How a request's key is chosen (zipf: the first key is the hottest).
    #[arg(long, value_enum, default_value_t = DistKind::Uniform)]
    pub key_dist: DistKind,

    /// Size of each written value in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Keys per batch request.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,

    /// Key-value bucket to address (adds ?bucket=NAME); the guest's default if unset.
    #[arg(long)]
    pub bucket: Option<String>,

    /// How long to measure, after the warm-up [default: 10s unless --requests].
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Measure exactly this many requests (after the warm-up) instead of a duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Time spent sending before measuring; left out of the results.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,

    /// Connections, one per worker. Without --rate each sends its next request
    /// as soon as the last one is answered (closed loop).
    #[arg(long, short = 'c', env = "LOADGEN_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// Open loop: send this many requests per second in total, spread evenly
    /// across the connections. Latency counts from each request's intended
    /// send time, so server stalls are not hidden (no coordinated omission).
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,

    /// Per-request timeout, connecting included.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Load threads, each running its own single-threaded runtime with an
    /// equal share of the connections [default: available cores].
    #[arg(long, env = "LOADGEN_THREADS")]
    pub threads: Option<usize>,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Exit with status 2 when errors / requests exceeds this fraction (e.g. 0.01).
    #[arg(long, value_name = "F")]
    pub max_error_rate: Option<f64>,

    /// Check correctness under load: predictable values read back, counters
    /// that must add up; any violation exits with status 3.
    #[arg(long)]
    pub verify: bool,

    /// Runner metrics URL to read before and after the run, e.g.
    /// http://127.0.0.1:9095/metrics; adds runner-side figures to the report.
    #[arg(long, env = "LOADGEN_SCRAPE", value_name = "URL")]
    pub scrape: Option<String>,

    /// Seed for tenant, key and op choices [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopAfter {
    Duration(Duration),
    Requests(u64),
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// At least one.
    pub targets: Vec<Endpoint>,
    pub tenants: usize,
    pub tenant_dist: DistKind,
    pub zipf_s: f64,
    pub mix: Mix,
    pub keys: usize,
    pub key_dist: DistKind,
    pub value_size: usize,
    pub batch_size: usize,
    pub bucket: Option<String>,
    pub stop_after: StopAfter,
    pub warmup: Duration,
    pub concurrency: usize,
    /// Requests per second in total (open loop); `None` is a closed loop.
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub threads: usize,
    pub json: Option<PathBuf>,
    pub max_error_rate: Option<f64>,
    pub verify: bool,
    pub scrape: Option<Endpoint>,
    pub seed: u64,
    /// Print a progress line on stderr each second. Off by default; `main`
    /// turns it on when stderr is a terminal.
    pub live: bool,
}

impl Config {
    /// Parses a command line (the first item is the program name) into a config.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args).map_err(|e| anyhow::anyhow!("{e}"))?;
        Config::try_from(args)
    }
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Config> {
        let targets = a
            .target
            .split(',')
            .map(|url| Endpoint::parse(url.trim()).context("--target"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mix: Mix = a.mix.parse().context("--mix")?;
        ensure!(a.tenants >= 1, "--tenants must be at least 1");
        ensure!(a.keys >= 1, "--keys must be at least 1");
        ensure!(
            a.keys <= u32::MAX as usize && a.tenants <= u32::MAX as usize,
            "--keys and --tenants must fit in 32 bits"
        );
        ensure!(a.concurrency >= 1, "--concurrency must be at least 1");
        ensure!(a.batch_size >= 1, "--batch-size must be at least 1");
        ensure!(
            a.zipf_s.is_finite() && a.zipf_s >= 0.0,
            "--zipf-s must be a finite number ≥ 0, got {}",
            a.zipf_s
        );
        for (flag, dist, n) in [
            ("--tenants", a.tenant_dist, a.tenants),
            ("--keys", a.key_dist, a.keys),
        ] {
            ensure!(
                dist != DistKind::Zipf || n <= MAX_ZIPF_TABLE,
                "{flag} {n} is too large for a zipf table (at most {MAX_ZIPF_TABLE})"
            );
        }
        if let Some(rate) = a.rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number, got {rate}"
            );
        }
        if let Some(f) = a.max_error_rate {
            ensure!(
                (0.0..=1.0).contains(&f),
                "--max-error-rate is a fraction in [0, 1], got {f}"
            );
        }
        ensure!(!a.timeout.is_zero(), "--timeout must be positive");
        let stop_after = match (a.requests, a.duration) {
            (Some(n), _) => {
                ensure!(n >= 1, "--requests must be at least 1");
                StopAfter::Requests(n)
            }
            (None, Some(d)) => {
                ensure!(!d.is_zero(), "--duration must be positive");
                StopAfter::Duration(d)
            }
            (None, None) => StopAfter::Duration(Duration::from_secs(10)),
        };
        if let Some(bucket) = &a.bucket {
            ensure!(
                !bucket.is_empty()
                    && bucket
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "--bucket {bucket:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            );
        }
        let threads = match a.threads {
            Some(n) => {
                ensure!(n >= 1, "--threads must be at least 1");
                n
            }
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let scrape = a
            .scrape
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .context("--scrape")?;
        Ok(Config {
            targets,
            tenants: a.tenants,
            tenant_dist: a.tenant_dist,
            zipf_s: a.zipf_s,
            mix,
            keys: a.keys,
            key_dist: a.key_dist,
            value_size: a.value_size,
            batch_size: a.batch_size,
            bucket: a.bucket,
            stop_after,
            warmup: a.warmup,
            concurrency: a.concurrency,
            rate: a.rate,
            timeout: a.timeout,
            threads,
            json: a.json,
            max_error_rate: a.max_error_rate,
            verify: a.verify,
            scrape,
            seed: a.seed.unwrap_or_else(rand::random),
            live: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::Op;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_args(std::iter::once("loadgen").chain(args.iter().copied()))
    }

    fn err(args: &[&str]) -> String {
        format!("{:#}", parse(args).expect_err("should be rejected"))
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.targets[0].to_string(), "http://127.0.0.1:8080");
        assert_eq!((c.tenants, c.keys, c.value_size), (100, 1000, 100));
        assert_eq!(c.concurrency, 32);
        assert_eq!(c.stop_after, StopAfter::Duration(Duration::from_secs(10)));
        assert_eq!(c.warmup, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.rate, None);
        assert_eq!(c.mix.fraction(Op::Get), 0.8);
        assert!(!c.verify && !c.live);
    }

    #[test]
    fn parses_a_full_command_line() {
        let c = parse(&[
            "--target=http://localhost:9000",
            "--tenants=3",
            "--tenant-dist=zipf",
            "--zipf-s=1.2",
            "--mix=hello=100",
            "--requests=500",
            "--warmup=0s",
            "-c4",
            "--rate=250.5",
            "--timeout=150ms",
            "--threads=1",
            "--max-error-rate=0.01",
            "--verify",
            "--scrape=http://127.0.0.1:9095/metrics",
            "--bucket=cache",
            "--seed=9",
        ])
        .expect("valid");
        assert_eq!(c.stop_after, StopAfter::Requests(500));
        assert_eq!(c.timeout, Duration::from_millis(150));
        assert_eq!(c.rate, Some(250.5));
        assert_eq!(c.tenant_dist, DistKind::Zipf);
        assert_eq!(c.scrape.map(|e| e.path), Some("/metrics".to_owned()));
        assert_eq!((c.threads, c.seed), (1, 9));
    }

    #[test]
    fn several_targets_are_comma_separated() {
        let c = parse(&["--target=http://127.0.0.1:1, http://localhost:2/base"]).expect("valid");
        let shown: Vec<String> = c.targets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["http://127.0.0.1:1", "http://localhost:2/base"]);
        assert!(err(&["--target=http://a:1,"]).contains("--target"));
    }

    #[test]
    fn rejects_invalid_values() {
        assert!(err(&["--mix=get=0"]).contains("--mix"));
        assert!(err(&["--mix=fly=1"]).contains("unknown op"));
        assert!(err(&["--tenants=0"]).contains("--tenants"));
        assert!(err(&["-c0"]).contains("--concurrency"));
        assert!(err(&["--rate=0"]).contains("--rate"));
        assert!(err(&["--max-error-rate=2"]).contains("fraction"));
        assert!(err(&["--target=https://x"]).contains("only http"));
        assert!(err(&["--bucket=a/b"]).contains("--bucket"));
        assert!(err(&["--duration=1s", "--requests=5"]).contains("cannot be used with"));
        assert!(err(&["--duration=soon"]).contains("--duration"));
        assert!(err(&["--key-dist=zipf", "--keys=20000000"]).contains("too large"));
    }
}

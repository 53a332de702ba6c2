//! Command-line arguments (`Args`, parsed by clap) and the validated run
//! configuration (`Config`) built from them. Everything is checked here,
//! before a socket is opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue};

use crate::conn::{Endpoint, Tls};
use crate::dist::DistKind;
use crate::mix::Mix;
use crate::template::{self, Expect, Template, Templates};
use crate::tenant::TenantSet;

/// Largest key space or tenant count a Zipf table is built for (8 bytes each).
const MAX_ZIPF_TABLE: usize = 10_000_000;

/// The base URL when neither a URL nor --target is given.
const DEFAULT_TARGET: &str = "http://127.0.0.1:8080";

/// Tenants when --tenants is not given: t0 … t99.
const DEFAULT_TENANTS: usize = 100;

/// Drive HTTP/1.1 keep-alive load at the runner's tenants (or any HTTP/1.1
/// server) and report throughput, latency (HdrHistogram, microseconds) per
/// route, and errors.
///
/// What is sent, in one of three ways:
///
/// - URL: that one request, shaped by -m, -H, -d or --body-file, e.g.
///   `loadgen -c 32 http://127.0.0.1:8080/t/app/hello`. `{tenant}` and `{key}`
///   in its path are filled in per request from --tenants and --keys; it
///   cannot be combined with --target, --templates, --mix or --verify.
///
/// - --templates FILE: weighted request templates (TOML), each sent to
///   --target.
///
/// - neither: the default guest's built-in ops, by --mix, over --tenants at
///   --target.
///
/// A response with a status other than the one expected counts as an error.
/// --json - writes the JSON report to stdout and the table to stderr.
///
/// Exit status: 0 on success; 1 on a usage or setup error; 2 when the error
/// rate exceeds --max-error-rate; 3 when --verify found a correctness
/// violation; 4 when the target is unreachable: no connection within 1 s at
/// the start (the message names the URL and the error), or no request of the
/// run got a response.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// The request to send, as a full URL: http://HOST:PORT/PATH?QUERY.
    /// `{tenant}` and `{key}` in the path are filled in per request.
    #[arg(
        value_name = "URL",
        conflicts_with_all = ["templates", "verify"]
    )]
    pub url: Option<String>,

    /// The URL's method, case-insensitive [default: GET, or POST with a body].
    #[arg(long, short = 'm', requires = "url")]
    pub method: Option<String>,

    /// A header sent with every request, `Name: value`; repeatable. `Host`
    /// replaces the target's.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The URL's request body.
    #[arg(long, short = 'd', requires = "url", conflicts_with = "body_file")]
    pub body: Option<String>,

    /// The URL's request body, read from FILE.
    #[arg(long, requires = "url", value_name = "FILE")]
    pub body_file: Option<PathBuf>,

    /// Statuses that count as success, codes and classes (200,404 or 2xx):
    /// for the URL, and for templates that set no `expect` [default: 2xx,3xx].
    #[arg(long, value_name = "LIST")]
    pub expect_status: Option<String>,

    /// Weighted request templates: a TOML file of [[template]] tables
    /// (name, weight, method, path, headers, body or body_file, expect).
    /// A path without a leading '/' is relative to /t/{tenant}/.
    #[arg(long, value_name = "FILE", conflicts_with = "verify")]
    pub templates: Option<PathBuf>,

    /// Base URL of the runner's tenant ingress [default: http://127.0.0.1:8080].
    /// Several, comma-separated, for runners that share one store: each
    /// connection sends its requests to each in turn, so with --verify a
    /// write through one runner is read back through another.
    #[arg(long, env = "LOADGEN_TARGET")]
    pub target: Option<String>,

    /// CA certificates (PEM) that https:// targets' certificates are
    /// checked against, in place of the system's trusted ones.
    #[arg(long, env = "LOADGEN_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Tenants: a count N (t0 … t{N-1}), names (a,b,c), or names with one
    /// inclusive range (shop-{0..99}); used by the built-in ops and by
    /// `{tenant}` in paths [default: 100].
    #[arg(long, env = "LOADGEN_TENANTS", value_name = "N|LIST|PATTERN")]
    pub tenants: Option<String>,

    /// How a request's tenant is chosen (zipf: t0 is the hottest).
    #[arg(long, value_enum, default_value_t = DistKind::Uniform)]
    pub tenant_dist: DistKind,

    /// Exponent of the Zipf distributions (0 is uniform; larger is more skewed).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,

    /// Built-in op mix as op=weight pairs. Ops: hello, get, set, delete,
    /// incr, list, batch (batch-get, batch-set and batch-delete in equal
    /// parts), or those three by name.
    #[arg(long, env = "LOADGEN_MIX", default_value = DEFAULT_MIX)]
    pub mix: String,

    /// Key-space size per tenant, for the built-in ops and `{key}` (k0 … k{N-1}).
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,

    /// How a request's key is chosen (zipf: the first key is the hottest).
    #[arg(long, value_enum, default_value_t = DistKind::Uniform)]
    pub key_dist: DistKind,

    /// Size of each written value in bytes (built-in ops).
    #[arg(long, default_value_t = 100, conflicts_with_all = ["url", "templates"])]
    pub value_size: usize,

    /// Keys per batch request (built-in ops).
    #[arg(long, default_value_t = 10, conflicts_with_all = ["url", "templates"])]
    pub batch_size: usize,

    /// Key-value bucket to address (adds ?bucket=NAME; built-in ops); the
    /// guest's default if unset.
    #[arg(long, conflicts_with_all = ["url", "templates"])]
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

    /// Also write the report as JSON to FILE; `-` writes it to stdout, and
    /// the table to stderr instead.
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

    /// Seed for tenant, key, op and template choices; the report records it
    /// [default: random].
    #[arg(long)]
    pub seed: Option<u64>,

    /// `--tenants` came from `LOADGEN_TENANTS`, not the command line.
    #[arg(skip)]
    pub tenants_from_env: bool,
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopAfter {
    Duration(Duration),
    Requests(u64),
}

/// What the requests are.
#[derive(Debug, Clone)]
pub enum Workload {
    /// The default guest's built-in ops, by weight (`--mix`).
    Ops(Mix),
    /// Request templates, by weight: one from a URL, or a `--templates` file.
    Templates(Templates),
}

impl Workload {
    /// Whether requests name a tenant, so `--tenants` means something.
    pub fn uses_tenant(&self) -> bool {
        match self {
            Workload::Ops(_) => true,
            Workload::Templates(t) => t.iter().any(|t| t.path.uses_tenant()),
        }
    }

    /// Routes are indexed `0..route_count()` in per-route tables: by
    /// `Op as usize`, or by template.
    pub fn route_count(&self) -> usize {
        match self {
            Workload::Ops(_) => crate::mix::Op::ALL.len(),
            Workload::Templates(t) => t.len(),
        }
    }

    /// The routes a run can send, in report order: each one's index and name.
    pub fn routes(&self) -> Vec<(usize, String)> {
        match self {
            Workload::Ops(mix) => mix
                .ops()
                .map(|op| (op as usize, op.name().to_owned()))
                .collect(),
            Workload::Templates(t) => t.iter().map(|t| t.name.clone()).enumerate().collect(),
        }
    }
}

/// Where `--json` writes the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonOut {
    /// `--json -`: to stdout; the table then goes to stderr.
    Stdout,
    File(PathBuf),
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// At least one.
    pub targets: Vec<Endpoint>,
    /// For each target, how its connections speak TLS, if they do.
    pub tls: Vec<Option<Tls>>,
    pub tenants: TenantSet,
    pub tenant_dist: DistKind,
    pub zipf_s: f64,
    pub workload: Workload,
    /// `-H`, in order: sent with every request (`Host` instead of the
    /// target's).
    pub headers: Vec<(HeaderName, HeaderValue)>,
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
    pub json: Option<JsonOut>,
    pub max_error_rate: Option<f64>,
    pub verify: bool,
    pub scrape: Option<Endpoint>,
    pub seed: u64,
    /// Print a progress line on stderr each second. Off by default; `main`
    /// turns it on when stderr is a terminal.
    pub live: bool,
}

/// The built-in op mix when none is given.
const DEFAULT_MIX: &str = "get=80,set=20";

impl Args {
    /// Parses a command line (the first item is the program name).
    ///
    /// A setting from the environment (`LOADGEN_TARGET`, `LOADGEN_MIX`,
    /// `LOADGEN_TENANTS`) is a default, as a shell profile sets it: where
    /// it does not apply (a URL names its own target and request, a
    /// templates file its requests, a request names no tenant) it is left
    /// out; the same flag on the command line is refused.
    pub fn parse_command_line<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::parser::ValueSource;
        use clap::{CommandFactory as _, FromArgMatches as _};
        let mut command = Args::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut a = Args::from_arg_matches(&matches)?;
        let source = |id: &str| matches.value_source(id);
        let given = |id: &str| source(id) == Some(ValueSource::CommandLine);
        let mut clash = |flag: &str, with: &str| {
            command.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("the argument '{flag}' cannot be used with '{with}'"),
            )
        };
        if a.url.is_some() {
            if given("target") {
                return Err(clash("--target <TARGET>", "[URL]"));
            }
            a.target = None;
        }
        if a.url.is_some() || a.templates.is_some() {
            if given("mix") {
                let with = if a.url.is_some() {
                    "[URL]"
                } else {
                    "--templates <FILE>"
                };
                return Err(clash("--mix <MIX>", with));
            }
            a.mix = DEFAULT_MIX.to_string();
        }
        a.tenants_from_env = source("tenants") == Some(ValueSource::EnvVariable);
        Ok(a)
    }
}

impl Config {
    /// Parses a command line (the first item is the program name) into a config.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::parse_command_line(args).map_err(|e| anyhow::anyhow!("{e}"))?;
        Config::try_from(args)
    }
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Config> {
        let default_expect = a
            .expect_status
            .as_deref()
            .map(str::parse::<Expect>)
            .transpose()
            .context("--expect-status")?;
        let (targets, workload) = match (&a.url, &a.templates) {
            (Some(url), _) => {
                let (base, path) = template::split_url(url)?;
                let method = a
                    .method
                    .as_deref()
                    .map(template::parse_method)
                    .transpose()
                    .context("--method")?;
                let body = match (&a.body, &a.body_file) {
                    (Some(text), _) => Bytes::from(text.clone()),
                    (None, Some(file)) => Bytes::from(
                        std::fs::read(file)
                            .with_context(|| format!("--body-file: reading {}", file.display()))?,
                    ),
                    (None, None) => Bytes::new(),
                };
                // -H goes with every request, on the connection (see `Config::headers`).
                let template = Template::new(
                    None,
                    method,
                    path,
                    Vec::new(),
                    body,
                    default_expect.unwrap_or_else(Expect::success),
                );
                (
                    vec![base],
                    Workload::Templates(Templates::new(vec![template])?),
                )
            }
            (None, templates) => {
                let targets = a
                    .target
                    .as_deref()
                    .unwrap_or(DEFAULT_TARGET)
                    .split(',')
                    .map(|url| Endpoint::parse(url.trim()).context("--target"))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let workload = match templates {
                    Some(file) => Workload::Templates(
                        Templates::from_file(file, default_expect.unwrap_or_else(Expect::success))
                            .context("--templates")?,
                    ),
                    None => {
                        ensure!(
                            default_expect.is_none(),
                            "--expect-status applies to a URL or --templates; the built-in \
                             ops (--mix) know their own statuses"
                        );
                        Workload::Ops(a.mix.parse().context("--mix")?)
                    }
                };
                (targets, workload)
            }
        };
        let tenants = match &a.tenants {
            // A default from the environment, for requests that name none.
            Some(_) if a.tenants_from_env && !workload.uses_tenant() => {
                TenantSet::count(DEFAULT_TENANTS)
            }
            Some(text) => {
                ensure!(
                    workload.uses_tenant(),
                    "--tenants: no request names a tenant; put {{tenant}} in the URL's path \
                     (or a template's), or leave --tenants out"
                );
                text.parse::<TenantSet>().context("--tenants")?
            }
            None => TenantSet::count(DEFAULT_TENANTS),
        };
        let headers = a
            .headers
            .iter()
            .map(|h| template::parse_header(h).context("--header"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let json = a.json.map(|path| {
            if path == Path::new("-") {
                JsonOut::Stdout
            } else {
                JsonOut::File(path)
            }
        });
        ensure!(a.keys >= 1, "--keys must be at least 1");
        ensure!(a.keys <= u32::MAX as usize, "--keys must fit in 32 bits");
        ensure!(a.concurrency >= 1, "--concurrency must be at least 1");
        ensure!(a.batch_size >= 1, "--batch-size must be at least 1");
        ensure!(
            a.zipf_s.is_finite() && a.zipf_s >= 0.0,
            "--zipf-s must be a finite number ≥ 0, got {}",
            a.zipf_s
        );
        for (flag, dist, n) in [
            ("--tenants", a.tenant_dist, tenants.len()),
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
        if scrape.as_ref().is_some_and(|s| s.tls) {
            bail!(
                "--scrape: give the metrics URL as http://; the admin listener takes it beside https"
            );
        }
        let tls = targets
            .iter()
            .map(|t| {
                t.tls
                    .then(|| Tls::new(&t.host, a.cacert.as_deref()))
                    .transpose()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Config {
            tls,
            targets,
            tenants,
            tenant_dist: a.tenant_dist,
            zipf_s: a.zipf_s,
            workload,
            headers,
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
            json,
            max_error_rate: a.max_error_rate,
            verify: a.verify,
            scrape,
            // Below 2^53, so it survives a trip through JSON tools that read
            // numbers as doubles (jq, JavaScript).
            seed: a.seed.unwrap_or_else(|| rand::random::<u64>() >> 11),
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

    fn templates(c: &Config) -> &Templates {
        match &c.workload {
            Workload::Templates(t) => t,
            Workload::Ops(_) => panic!("built-in ops, not templates"),
        }
    }

    /// The path template `index` writes for tenant 1 and key 2.
    fn path(c: &Config, index: usize) -> String {
        let mut out = bytes::BytesMut::new();
        templates(c)
            .get(index)
            .path
            .write(&mut out, &c.tenants, 1, 2);
        String::from_utf8(out.to_vec()).expect("ASCII")
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.targets[0].to_string(), "http://127.0.0.1:8080");
        assert_eq!(c.tenants, TenantSet::count(100));
        assert_eq!((c.keys, c.value_size), (1000, 100));
        assert_eq!(c.concurrency, 32);
        assert_eq!(c.stop_after, StopAfter::Duration(Duration::from_secs(10)));
        assert_eq!(c.warmup, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.rate, None);
        let Workload::Ops(mix) = &c.workload else {
            panic!("the default is the built-in ops")
        };
        assert_eq!(mix.fraction(Op::Get), 0.8);
        assert!(!c.verify && !c.live);
        assert!(c.headers.is_empty() && c.json.is_none());
        // A random seed stays below 2^53, exact as a JSON number.
        assert!(c.seed < 1 << 53);
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
        assert!(err(&["--target=ftp://x"]).contains("http and https are supported"));
        assert!(err(&["--scrape=https://x:1/metrics"]).contains("--scrape"));
        assert!(err(&["--bucket=a/b"]).contains("--bucket"));
        assert!(err(&["--duration=1s", "--requests=5"]).contains("cannot be used with"));
        assert!(err(&["--duration=soon"]).contains("--duration"));
        assert!(err(&["--key-dist=zipf", "--keys=20000000"]).contains("too large"));
        assert!(err(&["--tenants=a/b"]).contains("--tenants"));
        assert!(err(&["--tenant-dist=zipf", "--tenants=x{1..20000000}"]).contains("too large"));
    }

    #[test]
    fn tenants_as_a_count_a_list_or_a_pattern() {
        let c = parse(&["--tenants=3"]).expect("valid");
        assert_eq!(c.tenants.name(2), "t2");
        let c = parse(&["--tenants=shop,blog"]).expect("valid");
        assert_eq!((c.tenants.len(), c.tenants.name(1)), (2, "blog".into()));
        let c = parse(&["--tenants=shop-{0..99}"]).expect("valid");
        assert_eq!(
            (c.tenants.len(), c.tenants.name(99)),
            (100, "shop-99".into())
        );
    }

    #[test]
    fn a_url_is_one_request() {
        let c = parse(&["http://127.0.0.1:9000/t/app/hello?x=1"]).expect("valid");
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.targets[0].to_string(), "http://127.0.0.1:9000");
        let t = templates(&c);
        assert_eq!(t.len(), 1);
        let hello = t.get(0);
        assert_eq!(hello.name, "GET /t/app/hello?x=1");
        assert_eq!((hello.method.as_str(), hello.body.len()), ("GET", 0));
        assert_eq!(format!("{:?}", hello.expect), "200-399");
        assert_eq!(path(&c, 0), "/t/app/hello?x=1");
        // No placeholder: no tenant, and --tenants would mean nothing.
        assert!(!c.workload.uses_tenant());
        assert!(
            err(&["http://h:1/t/app/hello", "--tenants=5"]).contains("no request names a tenant")
        );
    }

    #[test]
    fn a_url_with_method_headers_and_body() {
        let c = parse(&[
            "-m",
            "put",
            "-H",
            "X-Api-Key: k",
            "--header=Host: example.com",
            "-d",
            "value",
            "--expect-status=204,4xx",
            "--tenants=shop-{0..9}",
            "http://localhost:8080/t/{tenant}/kv/{key}",
        ])
        .expect("valid");
        let t = templates(&c).get(0);
        assert_eq!((t.method.as_str(), &t.body[..]), ("PUT", &b"value"[..]));
        assert_eq!(format!("{:?}", t.expect), "204,400-499");
        assert_eq!(path(&c, 0), "/t/shop-1/kv/k2");
        let headers: Vec<String> = c
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().expect("ASCII")))
            .collect();
        assert_eq!(headers, ["x-api-key: k", "host: example.com"]);
        // A body without -m is a POST, as with curl.
        let c = parse(&["-d", "x", "http://h:1/p"]).expect("valid");
        assert_eq!(templates(&c).get(0).method.as_str(), "POST");
        // --body-file reads the body once.
        let file = std::env::temp_dir().join(format!("loadgen-body-{}", std::process::id()));
        std::fs::write(&file, b"from a file").expect("write");
        let c = parse(&["--body-file", file.to_str().expect("UTF-8"), "http://h:1/p"]);
        let _ = std::fs::remove_file(&file);
        assert_eq!(
            &templates(&c.expect("valid")).get(0).body[..],
            b"from a file"
        );
    }

    #[test]
    fn a_url_excludes_the_other_ways_of_choosing_requests() {
        for other in [
            "--target=http://h:2",
            "--templates=t.toml",
            "--mix=hello=1",
            "--verify",
            "--bucket=b",
            "--value-size=5",
        ] {
            assert!(
                err(&["http://h:1/x", other]).contains("cannot be used with"),
                "{other}"
            );
        }
        // -m, -d and --body-file shape the URL's request: no URL, no use.
        for alone in [&["-m", "GET"][..], &["-d", "x"], &["--body-file", "f"]] {
            assert!(err(alone).contains("required"), "{alone:?}");
        }
        assert!(err(&["-d", "x", "--body-file=f", "http://h:1/"]).contains("cannot be used with"));
        assert!(err(&["-H", "nocolon", "http://h:1/"]).contains("--header"));
        assert!(err(&["-m", "G T", "http://h:1/"]).contains("--method"));
        assert!(err(&["--body-file=/nonexistent/body", "http://h:1/"]).contains("--body-file"));
        assert!(err(&["--expect-status=2yy", "http://h:1/"]).contains("--expect-status"));
        assert!(err(&["--expect-status=200"]).contains("built-in"));
        assert!(err(&["h:1/x"]).contains("no scheme"));
    }

    #[test]
    fn templates_from_a_file_go_to_the_target() {
        let file = std::env::temp_dir().join(format!("loadgen-config-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "[[template]]\nname = \"hello\"\nweight = 9\npath = \"hello\"\n\
             [[template]]\nname = \"health\"\npath = \"/healthz\"\n",
        )
        .expect("write");
        let f = file.to_str().expect("UTF-8");
        let c = parse(&[
            "--templates",
            f,
            "--target=http://h:1/base",
            "--tenants=a,b",
        ]);
        let expect_404 = parse(&["--templates", f, "--expect-status=404"]);
        let mixed = parse(&["--templates", f, "--mix=get=1"]);
        let _ = std::fs::remove_file(&file);
        let c = c.expect("valid");
        assert_eq!(c.targets[0].to_string(), "http://h:1/base");
        assert!(c.workload.uses_tenant());
        assert_eq!(
            c.workload.routes(),
            [(0, "hello".to_owned()), (1, "health".to_owned())]
        );
        assert_eq!(path(&c, 0), "/t/b/hello");
        assert_eq!(path(&c, 1), "/healthz");
        // --expect-status is the default for templates that set none.
        let t = templates(expect_404.as_ref().expect("valid")).get(0).expect;
        assert_eq!(format!("{t:?}"), "404");
        assert!(format!("{:#}", mixed.expect_err("bad")).contains("cannot be used with"));
        assert!(err(&["--templates=/nonexistent.toml"]).contains("--templates: reading"));
    }

    #[test]
    fn json_dash_is_stdout() {
        let c = parse(&["--json", "-"]).expect("valid");
        assert_eq!(c.json, Some(JsonOut::Stdout));
        let c = parse(&["--json", "r.json"]).expect("valid");
        assert_eq!(c.json, Some(JsonOut::File("r.json".into())));
    }
}
